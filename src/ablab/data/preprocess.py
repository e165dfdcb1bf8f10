"""Raw files -> data/processed/<dataset>/: arrays (uint8 images, or token ids and lengths),
int64 labels, split indices, meta.json; text datasets also keep vocab.json and texts.json."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ablab.data import dates, long_range, mnist_m
from ablab.data.sources import SOURCES, DataError
from ablab.data.text import build_vocab, decode_bytes, encode, tokenize

FORMAT_VERSION = 2


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
    if name == "mnist_m":
        digits, labels, n_train = read_raw("mnist", raw_dir)
        photos = [mnist_m.read_photo(folder / f.name) for f in SOURCES[name].files]
        images = mnist_m.blend(digits, photos)
        built = mnist_m.images_md5(images)
        if built != SOURCES[name].built_md5:
            raise DataError(
                f"{folder}: MNIST-M built with md5 {built}, expected {SOURCES[name].built_md5} "
                "(the photos or the JPEG decoder differ from the locked versions: "
                "pip install -r requirements.lock)"
            )
        return images, labels, n_train
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


def content_hash(arrays: dict[str, np.ndarray], labels: np.ndarray,
                 splits: dict[str, np.ndarray]) -> str:  # fmt: skip
    h = hashlib.sha256()
    ordered = [arrays[k] for k in sorted(arrays)]
    for array in (*ordered, labels, *(splits[k] for k in ("train", "val", "test"))):
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
    return save(
        name, out_dir, {"images": images}, labels, splits, seed, val_fraction,
        extra={"kind": "image", "image_shape": list(images.shape[1:])},
    )  # fmt: skip


def save(
    name: str,
    out_dir: Path,
    arrays: dict[str, np.ndarray],
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    seed: int,
    val_fraction: float,
    extra: dict | None = None,
    files: dict[str, str] | None = None,
) -> dict:
    """Write out_dir/name atomically (a temporary folder renamed into place): every array as
    <name>.npy, labels, splits, meta.json with `extra`, and the text `files`."""
    source = SOURCES[name]
    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": name,
        **(extra or {}),
        "num_classes": len(source.classes),
        "classes": list(source.classes),
        "split_sizes": {k: int(len(v)) for k, v in splits.items()},
        "seed": seed,
        "val_fraction": val_fraction,
        "data_hash": content_hash(arrays, labels, splits),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        for key, array in arrays.items():
            np.save(tmp / f"{key}.npy", array)
        np.save(tmp / "labels.npy", labels)
        np.savez(tmp / "splits.npz", **splits)
        for file, text in (files or {}).items():
            (tmp / file).write_text(text)
            (tmp / file).chmod(0o644)
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
    """(images, labels, splits, meta) of one processed image dataset."""
    arrays, labels, splits, meta = load_arrays(folder, ("images",))
    return arrays["images"], labels, splits, meta


def load_arrays(
    folder: Path, names: tuple[str, ...], mmap: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict]:
    """(arrays by name, labels, splits, meta) of one processed dataset; a clear error if absent.
    `mmap`: the arrays memory-mapped, read only where indexed (large datasets, few rows)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: no processed data; run `dvc repro preprocess` first")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: old format; run `dvc repro preprocess` again")
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)
              for name in names}  # fmt: skip
    labels = np.load(folder / "labels.npy")
    with np.load(folder / "splits.npz") as z:
        splits = {k: z[k] for k in ("train", "val", "test")}
    return arrays, labels, splits, meta


def read_texts(name: str, raw_dir: Path) -> tuple[list[str], np.ndarray, int | None, int]:
    """(texts, labels, n_official_train, undecodable): the raw texts of a text dataset; bytes
    that are not UTF-8 are replaced (and counted), never a crash."""
    folder = Path(raw_dir) / name
    missing = [f.name for f in SOURCES[name].files if not (folder / f.name).exists()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; run `dvc repro fetch` first")
    classes = SOURCES[name].classes
    if name == "tweets":
        path = folder / SOURCES[name].files[0].name
        text, bad = decode_bytes(path.read_bytes())
        table = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
        if list(table.columns[:3]) != ["sentiment", "confidence", "text"]:
            raise DataError(f"{path}: expected columns sentiment,confidence,text")
        unknown = set(table["sentiment"]) - set(classes)
        if unknown:
            raise DataError(f"{path}: unknown sentiment labels {sorted(unknown)}")
        labels = table["sentiment"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        undecodable = sum(1 for t in table["text"] if "\ufffd" in t) if bad else 0
        return list(table["text"]), labels.astype(np.int64), None, undecodable
    return read_imdb(folder / SOURCES[name].files[0].name)


def read_imdb(archive: Path) -> tuple[list[str], np.ndarray, int, int]:
    """The 25k train and 25k test reviews of aclImdb_v1.tar.gz, read straight from the
    archive: nothing is extracted, so no member can write anywhere."""
    texts: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    undecodable = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[0] != "aclImdb":
                continue
            _, split, label, file = parts
            if split in texts and label in ("neg", "pos") and file.endswith(".txt"):
                text, bad = decode_bytes(tar.extractfile(member).read())
                undecodable += bad
                texts[split].append((text.replace("<br />", " "), int(label == "pos")))
    if not texts["train"] or not texts["test"]:
        raise DataError(f"{archive}: no aclImdb/{{train,test}}/{{neg,pos}}/*.txt members")
    rows = sorted(texts["train"]) + sorted(texts["test"])  # archive order is not guaranteed
    labels = np.array([label for _, label in rows], dtype=np.int64)
    return [t for t, _ in rows], labels, len(texts["train"]), undecodable


_LINKS = re.compile(r"(https?://|www\.)\S+|@\w+")
_TRAILING_TAGS = re.compile(r"(\s*#\w+)+\s*$")
_NOT_WORD = re.compile(r"[^a-z0-9\s]+")


def twin_key(text: str) -> str:
    """What near-twins share: the text lowercased without URLs, @mentions, trailing hashtags,
    a leading RT and punctuation, spaces collapsed ("RT @a: Great flight!! http://t.co/x #yay"
    and "great flight" are twins). A text with nothing left keeps its own exact form."""
    lowered = text.lower()
    words = _NOT_WORD.sub(" ", _TRAILING_TAGS.sub("", _LINKS.sub(" ", lowered))).split()
    if words[:1] == ["rt"]:
        words = words[1:]
    return " ".join(words) or " ".join(lowered.split())


def deduplicate(texts: list[str], labels: np.ndarray, n_train: int | None):
    """One text per group of near-twins (twin_key), so that no twin can land in two splits:
    the group's first text with its majority label; a group whose labels tie (e.g. one
    positive and one negative copy) is dropped whole, its label being a coin toss.
    Returns (texts, labels, n_train, removed, tied groups dropped)."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(twin_key(text), []).append(i)
    keep, ties = [], 0
    for members in groups.values():
        counts = Counter(int(labels[i]) for i in members).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            ties += 1
            continue
        keep.append(next(i for i in members if labels[i] == counts[0][0]))
    keep.sort()
    kept_train = None if n_train is None else sum(1 for i in keep if i < n_train)
    return [texts[i] for i in keep], labels[keep], kept_train, len(texts) - len(keep), ties


def preprocess_text(
    name: str, raw_dir: Path, out_dir: Path, val_fraction: float, test_fraction: float,
    seed: int, vocab_size: int, min_freq: int, max_len: int,
) -> dict:  # fmt: skip
    """Read, deduplicate, split, tokenize; the vocabulary from the training split only."""
    texts, labels, n_train, undecodable = read_texts(name, raw_dir)
    texts, labels, n_train, duplicates, ties = deduplicate(texts, labels, n_train)
    splits = make_splits(labels, n_train, val_fraction, test_fraction, seed)
    tokens = [tokenize(t) for t in texts]
    vocab = build_vocab((tokens[i] for i in splits["train"]), vocab_size, min_freq)
    ids, lengths, counts = encode(tokens, vocab, max_len)
    extra = {
        "kind": "text",
        "max_len": max_len,
        "vocab_size": len(vocab),
        "min_freq": min_freq,
        "duplicates_removed": duplicates,  # near-twins (twin_key), tied groups included
        "tied_twin_groups_dropped": ties,
        "undecodable_texts": undecodable,
        "empty_texts": counts["empty"],
        "truncated_texts": counts["truncated"],
        "oov_rate": round(counts["oov_tokens"] / max(counts["tokens"], 1), 4),
    }
    files = {"vocab.json": json.dumps(vocab) + "\n", "texts.json": json.dumps(texts) + "\n"}
    arrays = {"tokens": ids, "lengths": lengths}
    return save(name, out_dir, arrays, labels, splits, seed, val_fraction, extra, files)


def preprocess_series(
    name: str, raw_dir: Path, out_dir: Path, val_fraction: float, test_fraction: float,
    seed: int, window: int,
) -> dict:  # fmt: skip
    """(window of past values -> next value) examples, split in time order: the first part
    trains, the next validates, the last tests, so no split sees its own future."""
    path = Path(raw_dir) / name / SOURCES[name].files[0].name
    if not path.exists():
        raise DataError(f"{path}: missing; run `dvc repro fetch` first")
    table = pd.read_csv(path)
    values = table["SUNACTIVITY"].to_numpy(np.float32)
    if len(values) <= window + 10:
        raise DataError(f"{path}: {len(values)} values; data.series.window {window} is too long")
    windows = np.lib.stride_tricks.sliding_window_view(values[:-1], window).copy()
    targets = values[window:].copy()
    n = len(targets)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    idx = np.arange(n)
    splits = {"train": idx[: n - n_test - n_val], "val": idx[n - n_test - n_val : n - n_test],
              "test": idx[n - n_test :]}  # fmt: skip
    years = table["YEAR"].to_numpy()[window:]
    extra = {
        "kind": "series",
        "window": window,
        "target": "SUNACTIVITY",
        "split_years": {k: [int(years[v[0]]), int(years[v[-1]])] for k, v in splits.items()},
    }
    return save(name, out_dir, {"windows": windows}, targets, splits, seed, val_fraction, extra)


def preprocess_dates(
    name: str, out_dir: Path, val_fraction: float, test_fraction: float, seed: int,
    examples: int,
) -> dict:  # fmt: skip
    """Generate the date-format pairs (by seed) and split them at random."""
    sources, targets = dates.generate(examples, seed)
    source_vocab, target_vocab = dates.char_vocab(sources), dates.char_vocab(targets)
    source_len = max(len(s) for s in sources)
    source = dates.encode_chars(sources, source_vocab, source_len, eos=False)
    target = dates.encode_chars(targets, target_vocab, max(len(t) for t in targets) + 1, eos=True)
    lengths = np.array([len(s) for s in sources], dtype=np.int64)
    idx = np.arange(examples)
    pool, test = train_test_split(idx, test_size=test_fraction, random_state=seed)
    train, val = train_test_split(pool, test_size=val_fraction, random_state=seed)
    splits = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    extra = {"kind": "translation", "source_vocab_size": len(source_vocab),
             "target_vocab_size": len(target_vocab)}  # fmt: skip
    files = {
        "source_vocab.json": json.dumps(source_vocab) + "\n",
        "target_vocab.json": json.dumps(target_vocab) + "\n",
        "texts.json": json.dumps(list(zip(sources, targets, strict=True))) + "\n",
    }
    arrays = {"source": source, "source_lengths": lengths, "target": target}
    labels = np.zeros(examples, dtype=np.int64)  # no classes
    return save(name, out_dir, arrays, labels, splits, seed, val_fraction, extra, files)


def preprocess_date_tagging(
    name: str, out_dir: Path, val_fraction: float, test_fraction: float, seed: int,
    examples: int,
) -> dict:  # fmt: skip
    """Generate the written dates with each character's field (by seed), split at random,
    stratified by written form (the labels are the form's index)."""
    texts, fields, forms = dates.generate_tagged(examples, seed)
    vocab = dates.char_vocab(texts)
    max_len = max(len(t) for t in texts)
    tokens = dates.encode_chars(texts, vocab, max_len, eos=False)
    tags = np.full((len(texts), max_len), dates.IGNORE, dtype=np.int64)
    for row, row_tags in enumerate(fields):
        tags[row, : len(row_tags)] = row_tags
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    labels = np.array(forms, dtype=np.int64)
    splits = make_splits(labels, None, val_fraction, test_fraction, seed)
    extra = {"kind": "tagging", "max_len": max_len, "vocab_size": len(vocab),
             "fields": dates.FIELDS}  # fmt: skip
    files = {"vocab.json": json.dumps(vocab) + "\n", "texts.json": json.dumps(texts) + "\n"}
    arrays = {"tokens": tokens, "lengths": lengths, "tags": tags}
    return save(name, out_dir, arrays, labels, splits, seed, val_fraction, extra, files)


def preprocess_long_range(
    name: str, out_dir: Path, val_fraction: float, test_fraction: float, seed: int
) -> dict:
    """Generate the long-range sequences (by seed) and split them at random, stratified."""
    tokens, labels = long_range.generate(long_range.EXAMPLES, seed)
    splits = make_splits(labels, None, val_fraction, test_fraction, seed)
    lengths = np.full(len(tokens), tokens.shape[1], dtype=np.int64)
    extra = {"kind": "text", "max_len": int(tokens.shape[1]), "vocab_size": len(long_range.VOCAB)}
    texts = [" ".join(long_range.VOCAB[i] for i in row) for row in tokens]
    files = {"vocab.json": json.dumps(long_range.VOCAB) + "\n",
             "texts.json": json.dumps(texts) + "\n"}  # fmt: skip
    arrays = {"tokens": tokens, "lengths": lengths}
    return save(name, out_dir, arrays, labels, splits, seed, val_fraction, extra, files)


def preprocess_dataset(name: str, raw_dir: Path, out_dir: Path, knobs: dict) -> str:
    """Preprocess one dataset by its kind with the resolved knobs (Params.preprocess_knobs, as
    the `datasets` stage writes them); returns the line saying what came out."""
    seed, val, test = knobs["seed"], knobs["val_fraction"], knobs["test_fraction"]
    kind = knobs["kinds"][name]
    first = ""  # a text dataset's vocabulary line
    if name == "long_range":
        meta = preprocess_long_range(name, out_dir, val, test, seed)
    elif kind == "text":
        t = knobs["text"]
        meta = preprocess_text(name, raw_dir, out_dir, val, test, seed, t["vocab_size"],
                               t["min_freq"], t["max_len"])  # fmt: skip
        counts = ", ".join(f"{k} {meta[k]}" for k in (
            "duplicates_removed", "tied_twin_groups_dropped", "undecodable_texts",
            "empty_texts", "truncated_texts", "oov_rate"))  # fmt: skip
        first = f"{name}: vocab {meta['vocab_size']}, {counts}\n"
    elif kind == "tagging":
        meta = preprocess_date_tagging(name, out_dir, val, test, seed, knobs["dates"]["examples"])
    elif kind == "translation":
        meta = preprocess_dates(name, out_dir, val, test, seed, knobs["dates"]["examples"])
    elif kind == "series":
        meta = preprocess_series(name, raw_dir, out_dir, val, test, seed, knobs["series"]["window"])
    else:
        meta = preprocess(name, raw_dir, out_dir, val, test, seed)
    return f"{first}{name}: splits {meta['split_sizes']}, data hash {meta['data_hash']}"
