import csv
import json
import math

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking, train
from ablab.config import load
from ablab.train import run_experiment
from tests.conftest import TINY_PARAMS


@pytest.fixture(scope="module")
def trained(digits_root, tmp_path_factory):
    """The tiny mlp trained twice on digits with the same params, and once with another seed."""
    import yaml

    folder = tmp_path_factory.mktemp("train")
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(path, ["train.log_model=true"])
    processed = digits_root / "data" / "processed"
    first = run_experiment(params, "mlp", folder, processed_dir=processed)
    first_results = (folder / "results" / "mlp" / "metrics.json").read_text()
    second = run_experiment(params, "mlp", folder, processed_dir=processed)
    return folder, first, second, first_results


def test_same_params_give_identical_metrics(trained):
    _, first, second, _ = trained
    for key in ("test_loss", "test_accuracy", "test_macro_f1", "best_epoch", "parameters"):
        assert first[key] == second[key], key


def test_results_files(trained):
    folder, first, _, first_results = trained
    metrics = json.loads((folder / "results" / "mlp" / "metrics.json").read_text())
    assert set(metrics) >= {"test_loss", "test_accuracy", "test_macro_f1"}
    assert metrics["test_accuracy"] > 0.5  # two epochs on digits learn something
    before = json.loads(first_results)
    for key in ("test_loss", "test_accuracy", "test_macro_f1", "best_epoch"):
        assert before[key] == metrics[key], key
    with (folder / "results" / "mlp" / "curves.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(rows[0])


def test_mlflow_run_holds_params_epoch_metrics_tags_and_artifacts(trained):
    folder, first, _, _ = trained
    client = MlflowClient(tracking.tracking_uri(folder))
    experiment = client.get_experiment_by_name("ablab-test")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.width"] == "32"
    assert run.data.params["train.optimizer"] == "adam"
    assert run.data.params["dataset"] == "digits"
    tags = run.data.tags
    assert tags["ablab.experiment"] == "mlp" and tags["ablab.seed"] == "7"
    assert tags["ablab.stage"] == "train" and len(tags["ablab.data_hash"]) == 16
    assert run.data.metrics["test_accuracy"] == pytest.approx(first["test_accuracy"])
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1]
    # the charts page holds curves and results: every one-value metric is a result
    single = {
        k for k in run.data.metrics if len(client.get_metric_history(run.info.run_id, k)) == 1
    }
    assert single == set(first) - set(train.TRAINING_FACTS)
    summary = tracking.read_summary(tags)
    assert summary["best_epoch"] == first["best_epoch"] and summary["parameters"] > 0
    assert 0.0 <= summary["dead_relu_fraction"] <= 1.0
    per_class = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/per_class_metrics.json")
    assert 0.0 <= per_class["test_recall_3"] <= 1.0
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "learning_curves.png", "params.yaml"} <= names
    models = client.search_logged_models([experiment.experiment_id])
    assert any(m.source_run_id == run.info.run_id for m in models)
    assert str(folder / "mlruns" / "artifacts") in run.info.artifact_uri


def test_schedule_is_applied_and_lr_logged_per_epoch(digits_root, tmp_path):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(path, ["train.schedule={name: step, step_size: 1, gamma: 0.5}"])
    run_experiment(params, "mlp", tmp_path, processed_dir=digits_root / "data" / "processed")
    with (tmp_path / "results" / "mlp" / "curves.csv").open() as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == [0.01, 0.005]


def test_the_allocator_keeps_freed_memory_unless_switched_off(monkeypatch):
    import platform

    from ablab.allocator import keep_freed_memory

    monkeypatch.setenv("ABLAB_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("ABLAB_KEEP_FREED_MEMORY")
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True


def test_a_dvc_experiment_logs_to_the_projects_store_named_and_tagged(
    digits_root, tmp_path, monkeypatch
):
    """`dvc exp run --queue` trains in a temporary copy and sets DVC_ROOT to the project,
    DVC_EXP_NAME and DVC_EXP_BASELINE_REV: the run goes to the project's store, not the copy's."""
    project, copy = tmp_path / "project", tmp_path / "copy"
    copy.mkdir()
    path = copy / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(path, ["train.max_epochs=1"])
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.setenv("DVC_EXP_NAME", "brave-owl")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    run_experiment(params, "mlp", copy, processed_dir=digits_root / "data" / "processed")
    assert not (copy / "mlruns").exists()  # nothing in the copy DVC deletes
    assert (copy / "results" / "mlp" / "metrics.json").exists()  # DVC's outputs stay there
    client = MlflowClient(f"sqlite:///{project.resolve()}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id])
    assert run.info.run_name == "mlp/brave-owl"
    assert run.data.tags["ablab.dvc_experiment"] == "brave-owl"
    assert run.data.tags["ablab.dvc_baseline"] == "a" * 40
    assert (project / "mlruns" / "artifacts").is_dir()


def test_ablab_train_names_its_run_after_the_overrides(digits_root, tmp_path, monkeypatch):
    from ablab.cli import main, run_name

    assert run_name("cnn", []) == "cnn"
    assert run_name("cnn", ["experiments.cnn.train.lr=0.003", "experiments.mlp.x=1", "seed=3"]) == (
        "cnn/train.lr=0.003,seed=3"
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    (tmp_path / "data").symlink_to(digits_root / "data")
    monkeypatch.setenv("ABLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    main(["train", "mlp", "--params", str(tmp_path / "params.yaml"),
          "--set", "experiments.mlp.train.max_epochs=1"])  # fmt: skip
    client = MlflowClient(f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id])
    assert run.info.run_name == "mlp/train.max_epochs=1"


def test_the_batch_bar_shows_in_a_terminal_only_and_not_for_parallel_workers(monkeypatch):
    import sys

    from ablab.train import progress_bar

    monkeypatch.delenv("ABLAB_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert progress_bar() is False  # a DVC log, a pipe: one line per epoch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert progress_bar() is True
    monkeypatch.setenv("ABLAB_PROGRESS", "0")  # set by `ablab tune --workers N` for its workers
    assert progress_bar() is False


def test_dvc_plot_rows_name_each_value_by_metric_and_curve():
    from ablab.train import epochs_csv

    first = {"epoch": 0, "train_loss": 0.9, "train_objective": 1.0, "val_loss": 0.8,
             "val_accuracy": 0.7, "domain_accuracy": 0.6, "d_loss": 1.2, "lr": 0.1}  # fmt: skip
    history = [first, {"epoch": 1, "train_loss": 0.5, "val_loss": math.nan, "val_accuracy": 0.8}]
    columns = ["epoch", "train_loss", "train_objective", "domain_accuracy", "d_loss",
               "val_loss", "val_accuracy", "lr"]  # fmt: skip
    assert epochs_csv(history, columns).splitlines() == [
        "epoch,metric,curve,value",
        "0,loss,train,0.9", "0,domain_accuracy,train,0.6", "0,loss,d,1.2", "0,loss,val,0.8",
        "0,accuracy,val,0.7",
        "1,loss,train,0.5", "1,accuracy,val,0.8",  # a NaN is left out
    ]  # fmt: skip
