"""Training that resumes: `ablab train` SIGKILLed mid-training, then run again, continues the
same MLflow run from the last finished epoch (not from epoch 0) and ends with the bytes of
metrics.json a run never interrupted writes; no checkpoint is left behind anywhere."""

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import load
from ablab.resume import CHECKPOINTS
from ablab.train import run_experiment
from tests.conftest import TINY_PARAMS, digits_project, store_runs

# every kind of state a resumed run needs back: dropout, augmentation and input noise draw
# from the random streams, the batches' order from the data module's generator, a plateau
# schedule and early stopping keep counters, Adam its moments, the best epoch its weights
TRAIN = {
    "max_epochs": 24, "optimizer": "adam", "lr": 0.01,
    "schedule": {"name": "plateau", "patience": 1, "gamma": 0.5},
    "early_stopping": {"enabled": True, "patience": 4},
    "augment": {"shift": 1}, "regularize": {"input_noise": 0.1},
}  # fmt: skip


def make_root(root: Path, digits_root: Path, **train) -> Path:
    tree = copy.deepcopy(TINY_PARAMS)
    tree["train"].update({**TRAIN, **train})
    tree["experiments"]["cnn"]["model"]["dropout"] = 0.3
    return digits_project(root, digits_root, tree)


def without_time(csv: str) -> list[list[str]]:
    rows = [line.split(",") for line in csv.splitlines()]
    drop = rows[0].index("epoch_seconds")
    return [row[:drop] + row[drop + 1 :] for row in rows]


def test_a_killed_training_resumes_its_run_and_ends_as_if_never_stopped(
    tmp_path, digits_root, capsys
):
    reference = make_root(tmp_path / "reference", digits_root)
    run_experiment(load(reference / "params.yaml"), "cnn", reference)
    (uninterrupted,) = store_runs(reference)
    epochs = len((reference / "results" / "cnn" / "curves.csv").read_text().splitlines()) - 1
    assert epochs > 6  # long enough to be killed in the middle

    root = make_root(tmp_path / "killed", digits_root)
    trainer = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "train", "cnn"],
        env={**os.environ, "ABLAB_ROOT": str(root)}, cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in trainer.stdout:  # killed once epoch 3 has been logged
        if line.startswith("epoch   3"):
            trainer.send_signal(signal.SIGKILL)
            break
    trainer.wait(timeout=60)
    assert trainer.returncode == -signal.SIGKILL
    (killed,) = store_runs(root)
    assert killed.info.status == "RUNNING"  # what a SIGKILL leaves
    assert list((root / CHECKPOINTS).glob("*/last.ckpt"))

    capsys.readouterr()
    run_experiment(load(root / "params.yaml"), "cnn", root)
    out = capsys.readouterr().out
    assert "resuming from" in out
    resumed_epochs = [int(line.split()[1]) for line in out.splitlines() if line.startswith("epoch")]
    assert resumed_epochs[0] >= 3 and resumed_epochs[-1] == epochs - 1  # not from epoch 0

    # the same bytes as the run that was never stopped, and the same curves but for time
    mine, theirs = (r / "results" / "cnn" for r in (root, reference))
    assert (mine / "metrics.json").read_bytes() == (theirs / "metrics.json").read_bytes()
    assert without_time((mine / "curves.csv").read_text()) == without_time(
        (theirs / "curves.csv").read_text())  # fmt: skip

    # one MLflow run, the killed one, finished, with each epoch logged once
    (run,) = store_runs(root)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    client = MlflowClient(tracking.tracking_uri(root))
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(epochs))
    assert run.data.metrics["test_accuracy"] == uninterrupted.data.metrics["test_accuracy"]

    # nothing left: no checkpoint in the project, none in the temp dir
    assert not [p for p in (root / CHECKPOINTS).iterdir()]
    assert not [p for p in (reference / CHECKPOINTS).iterdir()]


def test_a_killed_cross_validation_keeps_its_finished_folds(tmp_path, digits_root, capsys):
    """k-fold: killed in fold 2, run again: fold 1 is read back (not trained again), fold 2
    resumes its own child run, and metrics.json (means and stds over folds) is the same."""
    folds = {"folds": 3, "max_epochs": 4, "early_stopping": {"enabled": False}}
    reference = make_root(tmp_path / "reference", digits_root, **folds)
    run_experiment(load(reference / "params.yaml"), "cnn", reference)

    root = make_root(tmp_path / "killed", digits_root, **folds)
    trainer = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "train", "cnn"],
        env={**os.environ, "ABLAB_ROOT": str(root)}, cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    epochs = 0
    for line in trainer.stdout:  # the second epoch of fold 2
        epochs += line.startswith("epoch")
        if epochs == 6:
            trainer.send_signal(signal.SIGKILL)
            break
    trainer.wait(timeout=60)
    assert list((root / CHECKPOINTS).glob("*/fold1.json"))

    capsys.readouterr()
    run_experiment(load(root / "params.yaml"), "cnn", root)
    out = capsys.readouterr().out
    assert "resuming from" in out and "fold2" in out
    assert sum(line.startswith("epoch") for line in out.splitlines()) < 8  # not fold 1 again
    mine, theirs = (r / "results" / "cnn" / "metrics.json" for r in (root, reference))
    assert mine.read_bytes() == theirs.read_bytes()
    names = sorted(r.info.run_name for r in store_runs(root))
    assert names == ["cnn", "cnn/fold1", "cnn/fold2", "cnn/fold3"]
    assert all(r.info.status == "FINISHED" for r in store_runs(root))
    assert not list((root / CHECKPOINTS).iterdir())
