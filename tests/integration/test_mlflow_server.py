"""Training logs to a real `mlflow server` process on loopback; read back with MlflowClient."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_PARAMS, answers, free_port, wait_until_answers

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_answers(f"{url}/health", process, log=tmp_path / "server.log")
        yield url, tmp_path
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        log.close()


def test_train_logs_to_server_and_client_reads_it_back(mlflow_server, digits_root, tmp_path):
    url, server_dir = mlflow_server
    root = tmp_path / "project"
    root.mkdir()
    (root / "data").symlink_to(digits_root / "data")
    params = dict(TINY_PARAMS, train={**TINY_PARAMS["train"], "log_model": True})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "ABLAB_ROOT": str(root)}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ablab"),
            "train",
            "mlp",
            "--params",
            str(root / "params.yaml"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert not (root / "mlruns").exists()  # everything went to the server

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("ablab-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["ablab.experiment"] == "mlp"
    assert run.data.params["model.depth"] == "1"
    assert 0.5 < run.data.metrics["test_accuracy"] <= 1.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "learning_curves.png", "params.yaml"} <= names
    png = client.download_artifacts(run.info.run_id, "confusion_matrix.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((server_dir / "server-artifacts").rglob("confusion_matrix.png"))


def test_ablab_ui_stopped_by_sigterm_leaves_no_server_listening(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ABLAB_ROOT": str(tmp_path)}
    ui = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "ui", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_answers(f"{url}/health", ui)
        ui.terminate()  # SIGTERM, as a service manager or `kill` sends it
        assert ui.wait(timeout=30) == 0
        time.sleep(1)
        assert not answers(f"{url}/health")  # the server and its workers are gone
        with socket.socket() as s:
            # no listener left (closed connections' TIME_WAIT may linger: SO_REUSEADDR)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # the port is free again
    finally:
        if ui.poll() is None:
            ui.kill()


def test_ablab_dashboard_serves_the_tune_study_and_stops_with_sigterm(tmp_path):
    """optuna-dashboard on the tune section's storage lists the study, its objective named
    after the metric; SIGTERM stops it."""
    import json

    import optuna

    from ablab.config import load
    from ablab.studies import storage_url

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    tune = load(tmp_path / "params.yaml").tune
    optuna.create_study(storage=storage_url(tune, tmp_path), study_name="suite/reg/default/x")
    study = optuna.create_study(storage=storage_url(tune, tmp_path), study_name=tune.study_name)
    study.set_metric_names([tune.metric])
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"mlflow_run_id": "abc"}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ABLAB_ROOT": str(tmp_path)}
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "dashboard", "--port", str(port),
         "--params", str(tmp_path / "params.yaml")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        wait_until_answers(f"{url}/api/studies", dashboard, seconds=60)
        with urllib.request.urlopen(f"{url}/api/studies", timeout=10) as resp:
            studies = json.loads(resp.read())["study_summaries"]
        (shown,) = [s for s in studies if s["study_name"] == tune.study_name]
        # the printed address opens the tune study's page, not the list of every suite's
        page = f"{url}/dashboard/studies/{shown['study_id']}"
        assert f" on {page} (the tune study 'ablab'; every study: " in dashboard.stdout.readline()
        assert answers(page)
        with urllib.request.urlopen(f"{url}/api/studies/{shown['study_id']}", timeout=10) as resp:
            detail = json.loads(resp.read())
        assert detail["objective_names"] == [tune.metric]
        assert {"key": "mlflow_run_id", "value": "abc"} in detail["trials"][0]["user_attrs"]
        dashboard.terminate()
        assert dashboard.wait(timeout=30) == 0
        time.sleep(1)
        assert not answers(f"{url}/api/studies")
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
