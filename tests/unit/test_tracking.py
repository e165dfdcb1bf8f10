import os
import subprocess
import sys
import tempfile

import mlflow
import pytest
import sqlalchemy
import torch
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import ConfigError

LOG_ONE_RUN = """
import sys, mlflow
from ablab import tracking
eid = tracking.use_store(sys.argv[1], "ablab")
with mlflow.start_run(experiment_id=eid):
    mlflow.log_param("worker", sys.argv[2])
"""


def test_processes_starting_together_on_a_new_store_all_log(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    workers = [
        subprocess.Popen([sys.executable, "-c", LOG_ONE_RUN, str(tmp_path), str(i)], env=env)
        for i in range(3)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("ablab").experiment_id])
    assert sorted(r.data.params["worker"] for r in runs) == ["0", "1", "2"]


def test_a_new_store_is_a_copy_of_one_empty_store_at_mlflows_schema(tmp_path, monkeypatch):
    """MLflow's migrations run once per MLflow version, not once per new project store: each
    new store is a copy of one empty store (no experiment in it), at MLflow's latest schema,
    and each copy keeps its own runs."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    stores = {name: tmp_path / name / "mlruns" / "mlflow.db" for name in ("a", "b")}

    def rows(db, sql: str) -> list:
        engine = sqlalchemy.create_engine(f"sqlite:///{db}")
        with engine.connect() as connection:
            found = [tuple(row) for row in connection.execute(sqlalchemy.text(sql))]
        engine.dispose()
        return found

    for name in stores:
        with mlflow.start_run(experiment_id=tracking.use_store(tmp_path / name, "x")):
            mlflow.log_param("store", name)
    empty = tmp_path / "tmp" / f"ablab-mlflow-{mlflow.__version__}-empty.db"
    assert rows(empty, "select count(*) from experiments") == [(0,)]
    for name, db in stores.items():
        latest = _get_latest_schema_revision()
        assert rows(db, "select version_num from alembic_version") == [(latest,)]
        client = MlflowClient(tracking.tracking_uri(tmp_path / name))
        runs = client.search_runs([client.get_experiment_by_name("x").experiment_id])
        assert [r.data.params["store"] for r in runs] == [name]
        assert [p.name for p in db.parent.glob("mlflow.db*")] == ["mlflow.db"]


def test_use_store_leaves_mlflow_tracking_uri_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.use_store(tmp_path / "a", "x")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.tracking_uri(tmp_path / "b").endswith(f"{tmp_path}/b/mlruns/mlflow.db")


def test_flatten_nested_params():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": "1",
        "a.c.d": "[1, 2]",
        "e": "None",
    }


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path, monkeypatch):
    import socket
    import time

    import pytest

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.perf_counter()
    with pytest.raises(tracking.StoreUnreachable, match=f"MLFLOW_TRACKING_URI={uri}: no MLflow"):
        tracking.use_store(tmp_path, "ablab-test")
    assert time.perf_counter() - start < 10  # MLflow's own client retries for minutes


def test_the_experiment_opens_on_the_runs_table_with_a_description(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    tracking.use_store(tmp_path, "ablab")
    tags = client.get_experiment_by_name("ablab").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI traces
    assert tags["mlflow.note.content"].startswith("ablab: one run per trained model")
    # a store made before these tags existed gets them on its next use
    old = client.create_experiment("older")
    tracking.use_store(tmp_path, "older")
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_moved_checkout_is_named_not_logged_into_the_old_folder(tmp_path, monkeypatch):
    """The store records absolute artifact paths: a copy of the project would write its runs'
    files into the original's mlruns/artifacts. The copy's first command says so instead."""
    import shutil

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.use_store(tmp_path / "first", "ablab-test")
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    with pytest.raises(ConfigError) as err:
        tracking.use_store(tmp_path / "copy", "ablab-test")
    message = str(err.value)
    assert f"{tmp_path / 'copy' / 'mlruns' / 'mlflow.db'}: this store keeps" in message
    assert f"{(tmp_path / 'first').as_uri()}/mlruns/artifacts/ablab-test" in message
    assert "moved or copied" in message
    tracking.use_store(tmp_path / "first", "ablab-test")  # the original is fine


def test_every_run_says_where_it_ran(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train@mlp")
    tags = tracking.origin_tags(tmp_path)
    assert tags["ablab.dvc_stage"] == "train@mlp"
    cores = f"{os.cpu_count()} cores, {torch.get_num_threads()} threads, "
    assert cores in tags["ablab.machine"]
    assert tags["ablab.versions"].startswith(f"torch {torch.__version__}")
    assert "MKL" in tags["ablab.versions"] and "oneDNN" in tags["ablab.versions"]
    monkeypatch.delenv("DVC_STAGE")
    assert "ablab.dvc_stage" not in tracking.origin_tags(tmp_path)
