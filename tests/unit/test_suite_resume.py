"""Nothing redone, nothing lost: a suite process SIGKILLed in the middle of a unit, then run
again, trains only the units that had not finished, resumes the killed unit's MLflow run from
its last epoch (no run left RUNNING), and ends with the numbers of a suite never interrupted;
a diverged unit is recorded once and not retried."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ablab import tracking, units
from ablab.config import load
from ablab.suite import run_suite
from tests.conftest import TINY_PARAMS, digits_project, store_runs

SUITE = {
    "experiment": "mlp",
    "seeds": [1, 2],
    "common": {"train.max_epochs": 6, "train.early_stopping.enabled": False},
    "variants": {"baseline": {}, "dropout": {"model.dropout": 0.5}},
}


def make_root(root: Path, digits_root: Path) -> Path:
    tree = copy.deepcopy(TINY_PARAMS)
    tree["suites"] = {"resumable": SUITE}
    tree["tune"]["heartbeat_seconds"] = 1  # a dead worker's unit is stale after 2 s
    return digits_project(root, digits_root, tree)


def child_runs(root: Path) -> list:
    runs = store_runs(root, "tags.`ablab.suite` = 'resumable'")
    return [r for r in runs if r.info.run_name.count("/") == 2]  # units, not the parent


def test_a_killed_suite_trains_only_what_is_missing_and_ends_as_if_never_stopped(
    tmp_path, digits_root, capsys
):
    (tmp_path / "reference").mkdir()
    reference = make_root(tmp_path / "reference", digits_root)
    run_suite(load(reference / "params.yaml"), "resumable", reference)

    root = tmp_path / "killed"
    root.mkdir()
    make_root(root, digits_root)
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "suite", "resumable"],
        env={**os.environ, "ABLAB_ROOT": str(root)}, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # two units finished, the third training
        runs = child_runs(root)
        states = [r.info.status for r in runs]
        if states.count("FINISHED") == 2 and "RUNNING" in states:
            break
        assert worker.poll() is None, "the suite ended before it could be killed"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    (zombie,) = [r for r in child_runs(root) if r.info.status == "RUNNING"]

    capsys.readouterr()
    report = run_suite(load(root / "params.yaml"), "resumable", root)
    assert "2 of 4 units already finished" in capsys.readouterr().out
    runs = child_runs(root)
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FINISHED"] * 4, statuses  # 2 + the 2 missing trained
    assert zombie.info.run_id in {r.info.run_id for r in runs}  # the killed unit's run, resumed
    for unit in ("baseline/seed1", "baseline/seed2", "dropout/seed1", "dropout/seed2"):
        done = [r for r in runs if r.info.run_name == f"resumable/{unit}"
                and r.info.status == "FINISHED"]  # fmt: skip
        assert len(done) == 1, unit
    assert [r["status"] for r in report["runs"]] == ["finished"] * 4
    parent = MlflowClient(tracking.tracking_uri(root)).get_run(report["parent_run_id"])
    assert parent.info.status == "FINISHED"
    for name in ("metrics.json", "runs.json"):
        mine = json.loads((root / "results" / "suites" / "resumable" / name).read_text())
        theirs = json.loads((reference / "results" / "suites" / "resumable" / name).read_text())
        if name == "runs.json":  # the same numbers; run ids and the study's parent differ
            mine = [(r["variant"], r["seed"], r["summary"], r["history"]) for r in mine["runs"]]
            theirs = [(r["variant"], r["seed"], r["summary"], r["history"])
                      for r in theirs["runs"]]  # fmt: skip
            mine = [(v, s, {k: x for k, x in m.items() if k != "seconds_per_epoch"},
                     [{k: x for k, x in e.items() if k != "epoch_seconds"} for e in h])
                    for v, s, m, h in mine]  # fmt: skip
            theirs = [(v, s, {k: x for k, x in m.items() if k != "seconds_per_epoch"},
                       [{k: x for k, x in e.items() if k != "epoch_seconds"} for e in h])
                      for v, s, m, h in theirs]  # fmt: skip
        assert mine == theirs, name

    # a third call trains nothing at all
    again = run_suite(load(root / "params.yaml"), "resumable", root)
    assert len(child_runs(root)) == 4 and again["runs"] == report["runs"]


def test_a_diverged_unit_is_recorded_once_and_not_retried(tmp_path, digits_root):
    root = make_root(tmp_path, digits_root)
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["suites"]["resumable"] = {
        "experiment": "mlp", "seeds": [1],
        "variants": {"exploding": {"train": {"optimizer": "sgd", "lr": 10.0,
                                             "regularize": {"l2": 1.0}}}},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    params = load(root / "params.yaml")
    first = run_suite(params, "resumable", root)
    assert first["runs"][0]["status"] == "diverged"
    second = run_suite(params, "resumable", root)
    assert second["runs"] == first["runs"]
    assert len(child_runs(root)) == 1  # trained once


@pytest.mark.parametrize(("change", "retrained"), [
    ("train.lr=0.02", True), ("diagnose.overfit_gap=0.5", False),
])  # fmt: skip
def test_a_unit_is_reused_only_for_the_same_experiment(tmp_path, digits_root, change, retrained):
    """A unit is known by its resolved experiment: a training knob makes new units (every one
    trained), a knob the units do not read reuses them all."""
    root = make_root(tmp_path, digits_root)
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["suites"]["resumable"]["seeds"] = [1]
    tree["suites"]["resumable"]["common"]["train.max_epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    first = run_suite(load(root / "params.yaml"), "resumable", root)
    second = run_suite(load(root / "params.yaml", [change]), "resumable", root)
    assert second["study"] == first["study"]  # the same data and code: one study
    assert len(child_runs(root)) == (4 if retrained else 2)


def test_a_suite_that_grows_trains_only_what_is_new(tmp_path, digits_root, capsys):
    """A variant added trains its own seeds only; one removed or renamed trains nothing, and
    the suite's rows are those of its variants as they are now named."""
    root = make_root(tmp_path, digits_root)
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["suites"]["resumable"]["common"]["train.max_epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    first = run_suite(load(root / "params.yaml"), "resumable", root)
    assert len(child_runs(root)) == 4  # 2 variants x 2 seeds
    grown = "suites.resumable.variants.wide={model.width: 64}"
    second = run_suite(load(root / "params.yaml", [grown]), "resumable", root)
    assert len(child_runs(root)) == 6  # only wide's two seeds trained
    assert "4 of 6 units already finished" in capsys.readouterr().out
    assert second["runs"][:4] == first["runs"]
    assert [r["variant"] for r in second["runs"][4:]] == ["wide", "wide"]
    variants = tree["suites"]["resumable"]["variants"]
    renamed = {"plain" if name == "baseline" else name: v for name, v in variants.items()}
    shrunk = load(root / "params.yaml", [f"suites.resumable.variants={json.dumps(renamed)}",
                                         "suites.resumable.baseline=plain"])  # fmt: skip
    third = run_suite(shrunk, "resumable", root)
    assert len(child_runs(root)) == 6  # nothing trained: wide removed, baseline renamed
    assert [r["variant"] for r in third["runs"]] == ["plain", "plain", *[
        r["variant"] for r in first["runs"][2:]]]  # fmt: skip
    assert [r["run_id"] for r in third["runs"]] == [r["run_id"] for r in first["runs"]]


def test_a_unit_queued_twice_is_trained_once(tmp_path, digits_root):
    """Two commands on two machines that queue the missing units at the same moment queue
    each twice: the later copy gives way (a PRUNED trial marked duplicate), nothing trains
    twice, and runs.json is the suite's."""
    root = make_root(tmp_path, digits_root)
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["suites"]["resumable"]["seeds"] = [1]
    tree["suites"]["resumable"]["common"]["train.max_epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    params = load(root / "params.yaml")
    runs = params.suite_runs("resumable")
    study, _ = units.unit_study(params, "resumable", runs, root, root / "data" / "processed",
                                "default")  # fmt: skip
    units.enqueue_missing(study, runs)
    for run in runs:  # what the other machine queued in the same instant
        study.enqueue_trial({}, user_attrs={units.UNIT: units.unit_key(run),
                                            units.UNIT_ID: units.unit_id(run)})  # fmt: skip
    report = run_suite(params, "resumable", root)
    assert [r["status"] for r in report["runs"]] == ["finished"] * 2
    assert len(child_runs(root)) == 2
    trials = study.get_trials()
    duplicates = [t for t in trials if t.user_attrs.get("duplicate")]
    assert len(duplicates) == 2 and all(t.state == TrialState.PRUNED for t in duplicates)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
