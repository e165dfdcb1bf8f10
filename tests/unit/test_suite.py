"""A tiny suite on digits: tags, a diverging variant, k-fold child runs, then the report."""

import copy
import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import load
from ablab.report import run_report
from ablab.suite import run_suite
from tests.conftest import TINY_PARAMS

SUITE = {
    "experiment": "mlp",
    "seeds": [1, 2],
    "common": {"train.max_epochs": 2},
    "variants": {
        "baseline": {},
        "dropconnect": {"train.regularize.dropconnect": 0.3},
        # the L2 step multiplies weights by (1 - 2 lr l2) = -19: overflow in a few dozen steps
        "exploding": {"train": {"optimizer": "sgd", "lr": 10.0, "regularize": {"l2": 1.0}}},
        "kfold": {"train.folds": 3},
    },
}


@pytest.fixture(scope="module")
def suite_root(digits_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    tree = copy.deepcopy(TINY_PARAMS)
    tree["suites"] = {"tiny": SUITE}
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    (root / "data").symlink_to(digits_root / "data")
    params = load(root / "params.yaml")
    report = run_suite(params, "tiny", root)
    tables = run_report(params, root)
    return root, report, tables


def runs_by_name(root):
    client = MlflowClient(tracking.tracking_uri(root))
    experiment = client.get_experiment_by_name("ablab-test")
    return client, {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_every_run_is_tagged_and_a_diverging_one_fails_without_stopping_the_suite(suite_root):
    root, report, _ = suite_root
    statuses = [(r["variant"], r["seed"], r["status"]) for r in report["runs"]]
    assert statuses == [
        ("baseline", 1, "finished"), ("baseline", 2, "finished"),
        ("dropconnect", 1, "finished"), ("dropconnect", 2, "finished"),
        ("exploding", 1, "diverged"), ("exploding", 2, "diverged"),
        ("kfold", 1, "finished"), ("kfold", 2, "finished"),
    ]  # fmt: skip
    _, runs = runs_by_name(root)
    for variant, seed, status in statuses:
        run = runs[f"tiny/{variant}/seed{seed}"]
        assert run.data.tags["ablab.suite"] == "tiny"
        assert run.data.tags["ablab.variant"] == variant
        assert run.data.tags["ablab.seed"] == str(seed)
        assert run.info.status == ("FINISHED" if status == "finished" else "FAILED")
    failed = runs["tiny/exploding/seed1"]
    assert failed.data.tags["ablab.failure"].startswith("diverged: training loss is")
    assert report["runs"][4]["failure"].startswith("training loss is")
    assert report["runs"][4]["run_id"] == failed.info.run_id
    assert runs["tiny/dropconnect/seed1"].data.params["train.regularize.dropconnect"] == "0.3"
    metrics = json.loads((root / "results" / "suites" / "tiny" / "metrics.json").read_text())
    assert metrics["exploding"] == {"diverged": 2}
    assert metrics["baseline"]["diverged"] == 0 and metrics["baseline"]["test_accuracy"] > 0.5


def test_seeds_differ_and_repeat(suite_root):
    _, report, _ = suite_root
    base = [r["summary"]["test_loss"] for r in report["runs"][:2]]
    assert base[0] != base[1]  # a seed changes the initialisation, the shuffle, the subset


def test_kfold_runs_a_child_per_fold_and_reports_mean_and_std(suite_root):
    root, report, _ = suite_root
    client, runs = runs_by_name(root)
    parent = runs["tiny/kfold/seed1"]
    children = [
        r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    assert sorted(r.info.run_name for r in children) == [
        f"tiny/kfold/seed1/fold{i}" for i in (1, 2, 3)
    ]
    assert sorted(r.data.tags["ablab.fold"] for r in children) == ["1", "2", "3"]
    accuracies = [r.data.metrics["test_accuracy"] for r in children]
    assert parent.data.metrics["test_accuracy"] == pytest.approx(sum(accuracies) / 3)
    assert parent.data.metrics["test_accuracy_std"] > 0
    assert parent.data.metrics["folds"] == 3
    assert parent.data.params["train.folds"] == "3"
    summary = report["runs"][6]["summary"]
    assert summary["test_accuracy"] == pytest.approx(parent.data.metrics["test_accuracy"])
    # each fold validates on a third of train + val
    sizes = [int(r.data.params["data.val_size"]) for r in children]
    assert max(sizes) - min(sizes) <= 10 and sum(sizes) > 1293


def test_report_tables_plots_and_mlflow_run(suite_root):
    root, report, tables = suite_root
    folder = root / "results" / "report"
    table = tables["tiny"]
    assert list(table["variant"]) == ["baseline", "dropconnect", "exploding", "kfold"]
    base = [r["summary"]["test_accuracy"] for r in report["runs"][:2]]
    row = table.set_index("variant").loc["baseline"]
    assert row["test_accuracy_mean"] == pytest.approx(sum(base) / 2)
    assert row["runs"] == 2 and row["diverged"] == 0
    exploding = table.set_index("variant").loc["exploding"]
    assert exploding["diverged"] == 2
    text = (folder / "tiny.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("| exploding"))
    assert "0/2 (2 diverged)" in line and "diverged |" in line and "nan" not in line.lower()
    for name in ("README.md", "tiny.csv", "summary.csv", "plots/tiny_val_loss.png",
                 "plots/tiny_test_accuracy.png", "plots/tiny_train_val_gap.png"):  # fmt: skip
        assert (folder / name).stat().st_size > 0, name
    client, runs = runs_by_name(root)
    run = runs["report"]
    assert run.data.tags["ablab.stage"] == "report"
    assert run.data.metrics["tiny/baseline/test_accuracy"] == pytest.approx(
        row["test_accuracy_mean"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"README.md", "tiny.csv", "tiny.md", "plots"} <= artifacts
