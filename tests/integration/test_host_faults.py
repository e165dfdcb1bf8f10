"""Faults across hosts (the README's "Several machines"): the MLflow server restarted mid-suite,
PostgreSQL down mid-run. A file of its own beside test_hosts.py, so that two test workers can
take them side by side."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_PARAMS
from tests.integration.postgres import Postgres
from tests.integration.test_hosts import TrackingServer, finish, host, launch

pytestmark = pytest.mark.integration


def test_the_tracking_server_restarted_mid_suite_is_waited_for(tmp_path, digits_root, monkeypatch):
    """The MLflow server goes away mid-unit and comes back on the same address: the worker
    says it waits, retries, then carries on; the unit ends with one FINISHED run."""
    tree = {
        **TINY_PARAMS,
        "train": {**TINY_PARAMS["train"], "max_epochs": 50, "early_stopping": {"enabled": False}},
        "suites": {"restart": {"experiment": "mlp", "seeds": [1], "variants": {"a": {}}}},
    }  # fmt: skip
    server = TrackingServer(f"sqlite:///{tmp_path}/server.db", tmp_path).start()
    try:
        folder = host(tmp_path / "host", tree, digits_root)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # retries 1, 2, 4 s apart
        suite = launch(folder, server.url, "suite", "restart")
        client = MlflowClient(server.url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow_experiment"])
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any(r.data.metrics.get("val_loss") is not None and r.info.status == "RUNNING"
                   and r.info.run_name.count("/") == 2 for r in runs):  # fmt: skip
                break
            time.sleep(0.2)
        server.stop()
        time.sleep(3)  # a few epochs' logging finds no server
        server.start()
        out = finish(suite)
        assert "tracking server" in out and "retrying" in out, out[-3000:]
        runs = client.search_runs([experiment.experiment_id], "tags.`ablab.suite` = 'restart'")
        units = sorted(
            (r.info.run_name, r.info.status) for r in runs if r.info.run_name.count("/") == 2
        )
        assert units == [("restart/a/seed1", "FINISHED")]
        report = json.loads((folder / "results" / "suites" / "restart" / "runs.json").read_text())
        assert [r["status"] for r in report["runs"]] == ["finished"]
    finally:
        server.stop()


def test_the_database_down_mid_suite_is_one_clear_message(tmp_path, digits_root):
    """PostgreSQL stops mid-unit: the command exits non-zero with one line naming the storage
    (password masked), no traceback; no unit is marked done that was not finished."""
    import optuna
    from optuna.trial import TrialState

    from tests.integration.postgres import PASSWORD

    database = Postgres().start()
    try:
        tree = {
            **TINY_PARAMS,
            "train": {**TINY_PARAMS["train"], "max_epochs": 40,
                      "early_stopping": {"enabled": False}},
            "tune": {**TINY_PARAMS["tune"], "storage": database.url, "heartbeat_seconds": 1},
            "suites": {"down": {"experiment": "mlp", "seeds": [1], "variants": {"a": {}}}},
        }  # fmt: skip
        folder = host(tmp_path / "host", tree, digits_root)
        suite = launch(folder, None, "suite", "down")
        storage = optuna.storages.RDBStorage(database.url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            trials = (
                optuna.load_study(study_name=names[0], storage=storage).get_trials()
                if names
                else []
            )
            if any(t.state == TrialState.RUNNING for t in trials):
                break
            time.sleep(0.2)
        storage.remove_session()
        storage.engine.dispose()
        database.halt()
        out, _ = suite.communicate(timeout=180)
        assert suite.returncode != 0
        lines = [line for line in out.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "tune.storage" in lines[0] and "***" in lines[0], out[-12000:]
        assert PASSWORD not in out and "Traceback" not in out, out[-3000:]
        database.resume()
        storage = optuna.storages.RDBStorage(database.url)
        trials = optuna.load_study(study_name=names[0], storage=storage).get_trials()
        assert not [t for t in trials if t.state == TrialState.COMPLETE]
        storage.engine.dispose()
    finally:
        database.stop()
