"""A tiny suite on digits: tags, a diverging variant, k-fold child runs, then the report."""

import copy
import json

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import load
from ablab.report import run_report
from ablab.suite import run_suite
from ablab.train import train
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


def test_seeds_differ_and_repeat(suite_root, tmp_path):
    root, report, _ = suite_root
    base = [r["summary"]["test_loss"] for r in report["runs"][:2]]
    assert base[0] != base[1]  # a seed changes the initialisation, the shuffle, the subset
    # the same unit trained again, in another store: the same numbers, bit for bit
    (tmp_path / "data").symlink_to(root / "data")
    unit = load(root / "params.yaml").suite_runs("tiny")[1]  # baseline, seed 2
    again = train(unit.experiment, tmp_path, "ablab-test", run_name="tiny/baseline/seed2")
    assert again.summary["test_loss"] == base[1]
    assert again.summary["test_accuracy"] == report["runs"][1]["summary"]["test_accuracy"]


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


def test_units_are_children_of_the_suite_run_which_carries_the_verdicts(suite_root):
    root, report, tables = suite_root
    client, runs = runs_by_name(root)
    parent = runs["suite/tiny"]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_id == report["parent_run_id"]
    assert parent.data.tags["ablab.role"] == "suite"
    unit = runs["tiny/dropconnect/seed1"]
    assert unit.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # every compared variant's verdict: a tag on the parent and on each of its runs
    table = tables["tiny"].set_index("variant")
    verdict = table.loc["dropconnect", "verdict_test_accuracy"]
    assert parent.data.tags["ablab.verdict.dropconnect"] == verdict
    word = next(w for w in ("better", "worse", "no difference", "underpowered")
                if verdict.startswith(w))  # fmt: skip
    assert unit.data.tags["ablab.verdict"] == word
    assert unit.data.tags["ablab.verdict_detail"] == verdict


def test_test_predictions_are_saved_per_run_and_compared_per_example(suite_root):
    root, report, tables = suite_root
    client, runs = runs_by_name(root)
    unit = runs["tiny/baseline/seed2"]
    text = client.download_artifacts(unit.info.run_id, "test_predictions.csv")
    lines = open(text).read().splitlines()
    assert lines[0] == "index,target,prediction"
    with np.load(root / "results" / "suites" / "tiny" / "predictions.npz") as arrays:
        assert set(arrays.files) == {"target", "baseline/seed1", "baseline/seed2",
                                     "dropconnect/seed1", "dropconnect/seed2"}  # fmt: skip
        assert len(lines) - 1 == len(arrays["target"])
        pred = arrays["baseline/seed2"]
        # the saved predictions give back the run's own test accuracy
        accuracy = float((pred == arrays["target"]).mean())
    assert accuracy == pytest.approx(report["runs"][1]["summary"]["test_accuracy"], abs=1e-6)
    row = tables["tiny"].set_index("variant").loc["dropconnect"]
    assert 1 / 1001 <= row["test_p_test_accuracy"] <= 1
    assert row["test_delta_test_accuracy_low"] <= row["test_delta_test_accuracy_high"]
    assert row["test_delta_test_accuracy"] == pytest.approx(row["delta_test_accuracy"], abs=1e-6)


def test_every_run_is_diagnosed_and_diagnose_reads_the_store(suite_root, monkeypatch, capsys):
    from ablab.cli import main

    root, _, _ = suite_root
    client, runs = runs_by_name(root)
    failed = runs["tiny/exploding/seed1"]
    assert failed.data.tags["ablab.diagnosis.learning_rate_too_high"] == "true"
    text = open(client.download_artifacts(failed.info.run_id, "diagnosis.md")).read()
    assert "lower the learning rate" in text and "ablab suite tiny --set" in text
    healthy = runs["tiny/baseline/seed1"]
    assert 0.0 <= float(healthy.data.tags["summary.dead_relu_fraction"]) <= 1.0
    assert any(k.startswith("grad_norm/") for k in healthy.data.metrics)  # every arch
    assert "diagnosis.md" in {a.path for a in client.list_artifacts(healthy.info.run_id)}
    monkeypatch.setenv("ABLAB_ROOT", str(root))
    capsys.readouterr()
    main(["diagnose", "tiny/exploding/seed1", "--params", str(root / "params.yaml")])
    out = capsys.readouterr().out
    assert "FAILED" in out and "learning_rate_too_high" in out
    assert "the run diverged" in out and "lower the learning rate" in out
    with pytest.raises(SystemExit) as err:
        main(["diagnose", "no-such-run", "--params", str(root / "params.yaml")])
    assert err.value.code == 2
    assert "is not an experiment in params.yaml, a run name or a run id" in capsys.readouterr().err


def test_diagnose_an_experiment_with_the_lr_finder(suite_root, monkeypatch, capsys):
    from ablab.cli import main

    root, _, _ = suite_root
    monkeypatch.setenv("ABLAB_ROOT", str(root))
    params = ["--params", str(root / "params.yaml")]
    slow = ["experiments.mlp.train.lr=1.0e-6", "experiments.mlp.train.max_epochs=3"]
    main(["train", "mlp", *params, *(x for s in slow for x in ("--set", s))])
    out = capsys.readouterr().out  # where to look, at the end
    run_id = out.split("MLflow run ")[1].split(":")[0]
    assert "http://127.0.0.1:5000/#/experiments/" in out
    assert f"/runs/{run_id}?workflowType=machine_learning\n" in out
    # outside DVC, beside DVC's output (results/mlp/), under the run's own name
    written = "results/adhoc/mlp/train.lr=1.0e-6,train.max_epochs=3/metrics.json"
    assert f"({written}; the runs: ablab ui)" in out.splitlines()[-1]
    assert (root / written).exists() and not (root / "results" / "mlp").exists()
    main(["diagnose", "mlp", "--lr-find", *params])
    out = capsys.readouterr().out
    assert out.startswith("mlp/train.lr=1.0e-6,train.max_epochs=3 (") and "FINISHED" in out
    # at lr 1e-6 the loss barely moves, and the finder suggests a far larger rate
    assert "learning_rate_too_low" in out and "lr_finder" in out
    assert "ablab train mlp --set experiments.mlp.train.lr=" in out
    assert "learning-rate finder: suggests" in out.splitlines()[-1]
    assert not (root / ".ablab-lr-find").exists()  # the finder's checkpoint folder is gone


def test_full_recipe_is_one_command_into_results_full(suite_root, monkeypatch, capsys):
    from ablab.cli import main

    root, _, _ = suite_root
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["suites"]["tiny"]["full"] = {
        "seeds": [3], "common": {"train.max_epochs": 1},
        "variants": {"wide": {"model.width": 64}},
    }  # fmt: skip
    (root / "full.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("ABLAB_ROOT", str(root))
    main(["suite", "tiny", "--full", "--params", str(root / "full.yaml")])
    main(["report", "--full", "--params", str(root / "full.yaml")])
    full = json.loads((root / "results" / "full" / "suites" / "tiny" / "runs.json").read_text())
    assert full["recipe"] == "full" and full["seeds"] == [3]
    assert [r["variant"] for r in full["runs"]] == [
        "baseline", "dropconnect", "exploding", "kfold", "wide"
    ]  # fmt: skip
    assert (root / "results" / "full" / "report" / "tiny.md").exists()
    # the default suite's results are untouched
    default = json.loads((root / "results" / "suites" / "tiny" / "runs.json").read_text())
    assert default["seeds"] == [1, 2] and default["recipe"] == "default"
    client, runs = runs_by_name(root)
    assert runs["suite/tiny/full"].data.tags["ablab.recipe"] == "full"
    assert runs["tiny/wide/seed3"].data.tags["ablab.recipe"] == "full"


def test_variant_means_by_hand():
    """Means over finished seeds only; a diverged seed is counted, not averaged in."""
    from ablab.suite import variant_means

    report = {
        "variants": {"base": "", "fast": ""},
        "metrics": ["test_accuracy", "test_loss"],
        "runs": [
            {"variant": "base", "status": "finished",
             "summary": {"test_accuracy": 0.80, "test_loss": 0.50}},
            {"variant": "base", "status": "finished",
             "summary": {"test_accuracy": 0.90, "test_loss": 0.30}},
            {"variant": "fast", "status": "finished",
             "summary": {"test_accuracy": 0.70, "test_loss": 0.60}},
            {"variant": "fast", "status": "diverged", "summary": {}},
        ],
    }  # fmt: skip
    means = variant_means(report)
    assert means["base"] == {"diverged": 0, "test_accuracy": 0.85, "test_loss": 0.4}
    assert means["fast"] == {"diverged": 1, "test_accuracy": 0.7, "test_loss": 0.6}


def test_each_unit_line_says_the_time_left_and_the_best_so_far():
    from ablab.suite import best_so_far, progress_line

    rows = [
        {"variant": "a", "seed": 1, "summary": {"test_accuracy": 0.8, "test_loss": 0.5}},
        {"variant": "b", "seed": 1, "summary": {"test_accuracy": 0.9, "test_loss": 0.7}},
        {"variant": "c", "seed": 1, "summary": {}},
    ]  # fmt: skip  (c diverged)
    assert best_so_far([], "test_accuracy", "classify") is None
    assert best_so_far(rows, "test_accuracy", "classify") == ("b/seed1", 0.9)
    assert best_so_far(rows, "test_loss", "classify") == ("a/seed1", 0.5)  # lower is better
    assert progress_line(1, 4, "s/a/seed1", 0.0, None, "test_accuracy") == "[1/4] s/a/seed1"
    line = progress_line(4, 5, "s/d/seed1", 90.0, ("b/seed1", 0.9), "test_accuracy")
    assert line == "[4/5] s/d/seed1 · 1m00s left · best so far b/seed1 test_accuracy 0.9000"


def test_a_suites_dvc_plot_is_each_variants_mean_over_its_finished_seeds():
    from ablab.suite import variant_curves

    def run(variant, status, losses):
        history = [{"epoch": e, "val_loss": v} for e, v in enumerate(losses)]
        return {"variant": variant, "status": status, "history": history}

    report = {"variants": {"a": "", "b": ""}, "runs": [
        run("a", "finished", [1.0, 0.5]), run("a", "finished", [0.8, 0.3]),
        run("b", "finished", [2.0]), run("b", "diverged", []),  # as run_suite records one
    ]}  # fmt: skip
    assert variant_curves(report, ("val_loss",)).splitlines() == [
        "epoch,metric,curve,value",
        "0,loss,a,0.9",
        "1,loss,a,0.4",
        "0,loss,b,2",
    ]
