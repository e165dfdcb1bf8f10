"""Raw files -> data/processed/<dataset>/: uint8 images, int64 labels, split indices, meta.json."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ablab.data.sources import SOURCES, DataError

FORMAT_VERSION = 1


def _read_idx(path: Path, kind: str) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(data[:4], "big")
    if kind == "images":
        if magic != 2051:
            raise DataError(f"{path}: not an IDX image file (magic {magic}, expected 2051)")
        n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, rows, cols)
    if magic != 2049:
        raise DataError(f"{path}: not an IDX label file (magic {magic}, expected 2049)")
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


def read_raw(name: str, raw_dir: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(images, labels, n_official_train): train pool first; None where no official test split."""
    folder = Path(raw_dir) / name
    missing = [f.name for f in SOURCES[name].files if not (folder / f.name).exists()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; run `dvc repro fetch` first")
    if name == "digits":
        table = np.loadtxt(folder / "digits.csv.gz", delimiter=",", dtype=np.float64)
        # 8x8 grey levels 0..16 -> 0..255 so every dataset is uint8 on the same scale
        images = np.rint(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
        return images, table[:, 64].astype(np.int64), None
    x_train = _read_idx(folder / "train-images-idx3-ubyte.gz", "images")
    y_train = _read_idx(folder / "train-labels-idx1-ubyte.gz", "labels")
    x_test = _read_idx(folder / "t10k-images-idx3-ubyte.gz", "images")
    y_test = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", "labels")
    images = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test])
    return images, labels, len(x_train)


def make_splits(
    labels: np.ndarray, n_train: int | None, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified, seeded split indices; val is carved from the training pool."""
    all_idx = np.arange(len(labels))
    if n_train is None:
        pool, test = train_test_split(
            all_idx, test_size=test_fraction, stratify=labels, random_state=seed
        )
    else:
        pool, test = all_idx[:n_train], all_idx[n_train:]
    train, val = train_test_split(
        pool, test_size=val_fraction, stratify=labels[pool], random_state=seed
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def content_hash(images: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for array in (images, labels, *(splits[k] for k in ("train", "val", "test"))):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def preprocess(
    name: str, raw_dir: Path, out_dir: Path, val_fraction: float, test_fraction: float, seed: int
) -> dict:
    """Read raw files, split them, and write out_dir/name; return meta."""
    images, labels, n_train = read_raw(name, raw_dir)
    if len(images) != len(labels):
        raise DataError(f"{raw_dir / name}: {len(images)} images but {len(labels)} labels")
    splits = make_splits(labels, n_train, val_fraction, test_fraction, seed)
    return save(name, out_dir, images, labels, splits, seed, val_fraction)


def save(
    name: str,
    out_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    seed: int,
    val_fraction: float,
) -> dict:
    """Write out_dir/name atomically: a temporary folder renamed into place."""
    source = SOURCES[name]
    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": name,
        "image_shape": list(images.shape[1:]),
        "num_classes": len(source.classes),
        "classes": list(source.classes),
        "split_sizes": {k: int(len(v)) for k, v in splits.items()},
        "seed": seed,
        "val_fraction": val_fraction,
        "data_hash": content_hash(images, labels, splits),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        np.savez(tmp / "splits.npz", **splits)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        final = out_dir / name
        if final.exists():
            shutil.rmtree(final)
        tmp.chmod(0o755)  # mkdtemp makes 0700
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def load_processed(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict]:
    """(images, labels, splits, meta) of one processed dataset, with a clear error if absent."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: no processed data; run `dvc repro preprocess` first")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: old format; run `dvc repro preprocess` again")
    images = np.load(folder / "images.npy")
    labels = np.load(folder / "labels.npy")
    with np.load(folder / "splits.npz") as z:
        splits = {k: z[k] for k in ("train", "val", "test")}
    return images, labels, splits, meta
