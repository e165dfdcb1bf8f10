"""Two workers on one study in a real PostgreSQL; one is SIGKILLed mid-trial. The study still
finishes with every trial accounted for and the killed trial run again, once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.conftest import TINY_PARAMS
from tests.integration.postgres import PASSWORD, Postgres

pytestmark = pytest.mark.integration
N_TRIALS = 4


@pytest.fixture(scope="module")
def postgres():  # one server for the module: each test uses its own study
    server = Postgres().start()
    yield server
    server.stop()


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, read from /proc (no procps needed)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":  # fields: state, ppid, ...
            kids.append(int(stat.parent.name))
    return kids


def trial_runs_running(root) -> int:
    """How many trials' MLflow runs are RUNNING in the project's store (read once the trials
    run: by then ablab has made the store)."""
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("ablab-test")
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    return sum("ablab.trial" in r.data.tags for r in runs)


def test_two_workers_one_killed_every_trial_accounted_for(postgres, digits_root, tmp_path):
    tree = {
        **TINY_PARAMS,
        "train": {**TINY_PARAMS["train"], "max_epochs": 60, "threads": 1,
                  "early_stopping": {"enabled": False}},
        "tune": {
            "experiment": "mlp", "n_trials": N_TRIALS, "pruner": "none", "sampler": "random",
            "storage": postgres.url, "study_name": "killed", "heartbeat_seconds": 1,
            "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.05, "log": True}},
            "registry": {"name": "pg-mlp"},
        },
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    (tmp_path / "data").symlink_to(digits_root / "data")
    env = {**os.environ, "ABLAB_ROOT": str(tmp_path)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ablab.cli", "tune", "--workers", "2", "--params",
         str(tmp_path / "params.yaml")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    storage = optuna.storages.RDBStorage(postgres.url)
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
        except KeyError:
            continue  # not created yet
        running = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
        helpers = children(launcher.pid)  # the command is one worker, the helper the other
        if len(running) == 2 and len(helpers) == 1 and trial_runs_running(tmp_path) == 2:
            os.kill(helpers[0], signal.SIGKILL)  # both mid-trial, each with its MLflow run
            killed = helpers[0]
    assert killed is not None, "never saw two trials running at once"
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output

    trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(failed) == 1, [t.state for t in trials]  # the killed worker's trial
    assert len(finished) >= N_TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = [
        t
        for t in trials
        if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == failed[0].number
    ]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE  # retried, once
    assert retries[0].params == failed[0].params

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("ablab-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("ablab.role") == "study"]
    assert len(parent) == 1
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    by_trial = {r.data.tags["ablab.trial"]: r for r in kids}
    orphan = by_trial[str(failed[0].number)]
    assert orphan.info.status == "FAILED" and orphan.data.tags["ablab.trial_state"] == "FAIL"
    assert by_trial[str(retries[0].number)].data.tags["ablab.retry_of"] == str(failed[0].number)
    for run in runs:  # the password never reaches MLflow
        assert all(PASSWORD not in v for v in run.data.params.values())
    assert "***" in parent[0].data.params["storage"]
    metrics = json.loads((Path(tmp_path) / "results" / "tune" / "metrics.json").read_text())
    assert metrics["trials_fail"] == 1 and metrics["trials_complete"] >= N_TRIALS
    assert "registered" not in metrics  # workers and the search register nothing (`ablab tuned`)


def test_a_suite_on_two_workers_survives_one_killed_mid_unit(postgres, digits_root, tmp_path):
    """`ablab suite NAME --workers 2` on PostgreSQL: one worker SIGKILLed mid-unit; its unit
    fails by heartbeat and is trained again, resuming the dead worker's run; every (variant,
    seed) ends with exactly one run, FINISHED, none is left RUNNING, runs.json is complete."""
    from ablab import tracking

    tree = {
        **TINY_PARAMS,
        "train": {**TINY_PARAMS["train"], "max_epochs": 40, "threads": 1,
                  "early_stopping": {"enabled": False}},
        "tune": {**TINY_PARAMS["tune"], "storage": postgres.url, "heartbeat_seconds": 1},
        # the command's worker takes the long unit first, so the helper, which starts seconds
        # later, still finds it mid-unit when it takes a short one
        "suites": {"pg": {"experiment": "mlp", "seeds": [1],
                          "variants": {"a": {"train.max_epochs": 240}, "b": {},
                                       "c": {"model.dropout": 0.3}}}},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    (tmp_path / "data").symlink_to(digits_root / "data")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ablab.cli", "suite", "pg", "--workers", "2", "--params",
         str(tmp_path / "params.yaml")],
        env={**os.environ, "ABLAB_ROOT": str(tmp_path)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = MlflowClient(tracking.tracking_uri(tmp_path))

    def units() -> list:
        experiment = client.get_experiment_by_name("ablab-test")
        if experiment is None:
            return []
        found = client.search_runs([experiment.experiment_id], "tags.`ablab.suite` = 'pg'")
        return [r for r in found if r.info.run_name.count("/") == 2]

    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.1)
        helpers = children(launcher.pid)  # the command is one worker, the helper the other
        running = [r for r in units() if r.info.status == "RUNNING"]
        if len(helpers) == 1 and len(running) == 2:
            os.kill(helpers[0], signal.SIGKILL)
            killed = helpers[0]
    assert killed is not None, "never saw both workers mid-unit"
    out, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, out[-3000:]
    runs = units()
    for variant in ("a", "b", "c"):
        name = f"pg/{variant}/seed1"
        states = [r.info.status for r in runs if r.info.run_name == name]
        assert states.count("FINISHED") == 1, (name, states)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(runs) == 3  # the killed worker's unit resumed its own run (ablab.resume)
    assert not list((tmp_path / "checkpoints").iterdir())  # and nothing is left behind
    report = json.loads((tmp_path / "results" / "suites" / "pg" / "runs.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["finished"] * 3
