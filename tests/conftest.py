"""Shared fixtures: real digits data (scikit-learn ships it) and tiny params."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "seed": 7,
    "mlflow_experiment": "ablab-test",
    "data": {"dataset": "digits", "val_fraction": 0.15, "test_fraction": 0.2},
    "train": {
        "max_epochs": 2,
        "lr": 0.01,
        "batch_size": 64,
        "threads": 1,
        "log_model": False,
        "early_stopping": {"enabled": True, "patience": 2},
    },
    "experiments": {
        "mlp": {"task": "classify", "model": {"arch": "mlp", "depth": 1, "width": 32}},
        "cnn": {"task": "classify", "model": {"arch": "cnn", "channels": [4, 8], "head": [16]}},
    },
    "suites": {
        "reg": {
            "experiment": "mlp",
            "seeds": [1, 2],
            "variants": {"baseline": {}, "dropout": {"model.dropout": 0.5}},
        }
    },
    "tune": {
        "experiment": "mlp",
        "n_trials": 2,
        "sampler": "random",
        "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
        "registry": {"name": "tiny-mlp"},
    },
    "explain": {"experiments": []},  # dvc.yaml's explain@ stages read the list
}

# `pytest -n N`: the N workers share the machine's cores, so each process's torch gets its share
# (two workers each running two threads on two cores ran some tests 7x slower than alone); the
# repo's params say train.threads 2, so the tests that train from them override it to this
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # subprocesses
os.environ.pop("MLFLOW_TRACKING_URI", None)  # no test logs to a server named in the environment
if WORKERS > 1:
    import torch

    torch.set_num_threads(THREADS)


# a real headless browser for the UI and plots tests: Debian's chromium (`make test` installs it)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_SECONDS = 90  # the most one page may take to load and render


def text(html: str) -> str:
    html = re.sub(r"<script.*?</script>|<style.*?</style>", "", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def chromium(url: str, *extra: str) -> str:
    """The page's DOM once rendered (charts included), or with --screenshot a picture of it."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw", "--virtual-time-budget=30000",
            "--window-size=1400,900", *extra, url]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=BROWSER_SECONDS)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_until_answers(url: str, process: subprocess.Popen, seconds: float = 120,
                       log: Path | None = None) -> None:  # fmt: skip
    """Wait for a server `process` to answer at `url`; fail (with its log's tail) if it exits
    or takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    while not answers(url):
        tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
        assert process.poll() is None, f"the server exited: {url}\n{tail}"
        assert time.monotonic() < deadline, f"no answer from {url} in {seconds} s\n{tail}"
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test writes to the user's cache or to a server named in the environment."""
    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    # mlflow.set_tracking_uri exports the variable, which would send the next test's module
    # fixture (set up before this fixture runs again) to this test's store
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def tiny_params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    return path


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    """A project root with digits fetched and preprocessed, shared by the session's tests."""
    from ablab.data.preprocess import preprocess
    from ablab.data.sources import fetch

    root = tmp_path_factory.mktemp("digits-root")
    fetch("digits", root / "data" / "raw")
    preprocess("digits", root / "data" / "raw", root / "data" / "processed", 0.15, 0.2, 7)
    return root


def digits_project(root: Path, digits_root: Path, tree: dict) -> Path:
    """A project root holding `tree` as params.yaml and the session's digits data."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    (root / "data").symlink_to(digits_root / "data")
    return root


def store_runs(root: Path, query: str = "") -> list:
    """The runs in the `ablab-test` experiment of the project's store (none: no experiment)."""
    from mlflow.tracking import MlflowClient

    from ablab import tracking

    client = MlflowClient(tracking.tracking_uri(root))
    experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow_experiment"])
    return client.search_runs([experiment.experiment_id], query) if experiment else []


def write_random_processed(folder: Path, dataset: str, per_split: int = 40, seed: int = 0) -> None:
    """Tiny random data with the shape and classes of `dataset`, for shape-level smoke runs."""
    from ablab.data.preprocess import save
    from ablab.data.sources import SOURCES

    source = SOURCES[dataset]
    rng = np.random.default_rng(seed)
    n = 3 * per_split
    images = rng.integers(0, 256, size=(n, *source.image_shape), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(source.classes)
    idx = np.arange(n)
    splits = {
        "train": idx[:per_split],
        "val": idx[per_split : 2 * per_split],
        "test": idx[2 * per_split :],
    }
    extra = {"kind": "image", "image_shape": list(source.image_shape)}
    save(dataset, folder, {"images": images}, labels, splits, seed, 0.1, extra)


def write_random_text(folder: Path, dataset: str, per_split: int = 40, seed: int = 0) -> None:
    """Tiny random token data with the classes of a text dataset."""
    import json

    from ablab.data.preprocess import save
    from ablab.data.sources import SOURCES

    source = SOURCES[dataset]
    rng = np.random.default_rng(seed)
    n, max_len = 3 * per_split, 12
    lengths = rng.integers(1, max_len + 1, n)
    tokens = rng.integers(2, 50, (n, max_len)) * (np.arange(max_len) < lengths[:, None])
    labels = np.arange(n, dtype=np.int64) % len(source.classes)
    idx = np.arange(n)
    splits = {"train": idx[:per_split], "val": idx[per_split : 2 * per_split],
              "test": idx[2 * per_split :]}  # fmt: skip
    vocab = ["<pad>", "<oov>", *(f"w{i}" for i in range(2, 50))]
    texts = [" ".join(vocab[t] for t in row[:k]) for row, k in zip(tokens, lengths, strict=True)]
    extra = {"kind": "text", "max_len": max_len, "vocab_size": len(vocab)}
    files = {"vocab.json": json.dumps(vocab), "texts.json": json.dumps(texts)}
    arrays = {"tokens": tokens.astype(np.int64), "lengths": lengths.astype(np.int64)}
    save(dataset, folder, arrays, labels, splits, seed, 0.1, extra, files)
