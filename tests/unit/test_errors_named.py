"""No swallowed errors: where ablab expects MLflow to say "not there" (a suite's parent run
deleted, no champion yet, a run with no per-class scores, an unknown run id) it says so in a
line or a message; anything else MLflow raises (the store failing) propagates."""

import mlflow
import optuna
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.tracking import MlflowClient

from ablab import doctor, tracking
from ablab.config import ConfigError, load
from ablab.suite import _parent_run
from ablab.tuned import train_tuned
from tests.conftest import TINY_PARAMS
from tests.unit.test_config import write


@pytest.fixture
def store(tmp_path):
    experiment_id = tracking.use_store(tmp_path, "ablab-test")
    return tmp_path, experiment_id, MlflowClient()


def _failing(*args, **kwargs):
    raise MlflowException("the database is locked", error_code=INTERNAL_ERROR)


def test_a_deleted_parent_run_is_named_and_replaced(store, capsys):
    root, experiment_id, client = store
    params = load(write(root, TINY_PARAMS))
    study = optuna.create_study()
    first = _parent_run("reg", params.suites["reg"], experiment_id, root, client, "default", study)
    assert _parent_run("reg", params.suites["reg"], experiment_id, root, client, "default",
                       study) == first  # fmt: skip
    client.delete_run(first)
    second = _parent_run("reg", params.suites["reg"], experiment_id, root, client, "default", study)
    assert second != first
    out = capsys.readouterr().out
    assert f"the study's parent run {first} is deleted or not in this store" in out


def test_a_store_that_fails_is_not_taken_for_a_missing_parent(store, monkeypatch):
    root, experiment_id, client = store
    params = load(write(root, TINY_PARAMS))
    study = optuna.create_study()
    _parent_run("reg", params.suites["reg"], experiment_id, root, client, "default", study)
    monkeypatch.setattr(MlflowClient, "get_run", _failing)
    with pytest.raises(MlflowException, match="the database is locked"):
        _parent_run("reg", params.suites["reg"], experiment_id, root, client, "default", study)


def test_diagnose_names_an_unknown_run_and_lets_a_failing_store_raise(store, monkeypatch):
    root, experiment_id, client = store
    params = load(write(root, TINY_PARAMS))
    with pytest.raises(ConfigError, match="'0123abc' is not an experiment in params.yaml, a run"):
        doctor.find_run(client, experiment_id, params, "0123abc")
    monkeypatch.setattr(MlflowClient, "get_run", _failing)
    with pytest.raises(MlflowException, match="the database is locked"):
        doctor.find_run(client, experiment_id, params, "0123abc")


def test_a_run_without_per_class_scores_has_none(store):
    root, experiment_id, client = store
    run = client.create_run(experiment_id)
    assert doctor._per_class(run) == {}
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_dict({"precision/a": 0.5}, doctor.PER_CLASS)
    assert doctor._per_class(client.get_run(run.info.run_id)) == {"precision/a": 0.5}


def test_tuned_says_there_is_no_champion_yet_and_lets_a_failing_store_raise(
    tmp_path, monkeypatch, capsys
):
    params = load(write(tmp_path, TINY_PARAMS))
    (tmp_path / "results" / "tune").mkdir(parents=True)
    (tmp_path / "results" / "tune" / "best_params.yaml").write_text("train.lr: 0.01\n")
    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", _failing)
    with pytest.raises(MlflowException, match="the database is locked"):
        train_tuned(params, tmp_path)
    assert "no tiny-mlp@champion in the store yet" not in capsys.readouterr().out
