"""On a CUDA GPU (skipped, saying so, where there is none): every family trains a few batches
there, with its steps' tensors on the device; a run SIGKILLed at epoch 3 and resumed ends with
the bytes of a run never stopped; bf16-mixed trains; two suite workers share the GPU."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import load
from ablab.suite import run_suite
from ablab.train import run_experiment, train
from tests.conftest import TINY_PARAMS, digits_project, store_runs
from tests.unit.test_device_placement import Watched, tiny_case
from tests.unit.test_families import TINY

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA GPU here: tests/gpu runs where torch finds one",
    ),  # fmt: skip
]


@pytest.mark.parametrize("task", list(TINY))
def test_every_family_trains_on_the_gpu(task, tmp_path):
    exp = tiny_case(tmp_path, task, accelerator="gpu")
    watched = Watched()  # as on the CPU: no tensor off the device, nothing read back
    result = train(exp, tmp_path, "placement", fast_dev_run=2, extra_callbacks=[watched])
    assert not watched.mode.found, "\n".join(sorted(set(watched.mode.found)))
    run = MlflowClient(tracking.tracking_uri(tmp_path)).get_run(result.run_id)
    assert run.data.tags["ablab.device"].startswith("cuda (")


def _cuda_root(root: Path, digits_root: Path, **train) -> Path:
    tree = copy.deepcopy(TINY_PARAMS)
    tree["train"].update({"max_epochs": 12, "accelerator": "gpu", "lr": 0.01,
                          "early_stopping": {"enabled": False},
                          "regularize": {"input_noise": 0.1}, **train})  # fmt: skip
    tree["experiments"]["cnn"]["model"]["dropout"] = 0.3
    return digits_project(root, digits_root, tree)


def test_a_killed_gpu_run_resumes_to_the_same_bytes(tmp_path, digits_root):
    """CUDA's random streams travel in the checkpoint: dropout and input noise draw there."""
    reference = _cuda_root(tmp_path / "reference", digits_root)
    run_experiment(load(reference / "params.yaml"), "cnn", reference)
    again = _cuda_root(tmp_path / "again", digits_root)
    run_experiment(load(again / "params.yaml"), "cnn", again)
    same = (again / "results" / "cnn" / "metrics.json").read_bytes()
    assert same == (reference / "results" / "cnn" / "metrics.json").read_bytes()  # repeatable

    root = _cuda_root(tmp_path / "killed", digits_root)
    trainer = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "train", "cnn"],
        env={**os.environ, "ABLAB_ROOT": str(root), "DVC_STAGE": "train@cnn"}, cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in trainer.stdout:
        if line.startswith("epoch   3"):
            trainer.send_signal(signal.SIGKILL)
            break
    trainer.wait(timeout=120)
    run_experiment(load(root / "params.yaml"), "cnn", root)
    mine = (root / "results" / "cnn" / "metrics.json").read_bytes()
    assert mine == (reference / "results" / "cnn" / "metrics.json").read_bytes()


def test_bf16_mixed_trains(tmp_path, digits_root):
    root = _cuda_root(tmp_path, digits_root, precision="bf16-mixed", max_epochs=3)
    summary = run_experiment(load(root / "params.yaml"), "cnn", root)
    assert 0.3 < summary["test_accuracy"] <= 1.0


def test_two_workers_share_the_gpu(tmp_path, digits_root):
    root = _cuda_root(tmp_path, digits_root, max_epochs=2)
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["suites"]["reg"]["seeds"] = [1, 2, 3, 4]
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    command = [sys.executable, "-m", "ablab.cli", "suite", "reg", "--worker", "--params",
               str(root / "params.yaml")]  # fmt: skip
    os.environ["ABLAB_ROOT"] = str(root)
    try:
        report = run_suite(load(root / "params.yaml"), "reg", root, workers=2,
                           worker_command=command)  # fmt: skip
    finally:
        os.environ.pop("ABLAB_ROOT")
    assert [r["status"] for r in report["runs"]] == ["finished"] * 8
    runs = [r for r in store_runs(root) if r.info.run_name.count("/") == 2]
    assert len(runs) == 8 and all(r.data.tags["ablab.device"].startswith("cuda (") for r in runs)
