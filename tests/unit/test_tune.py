"""The tune stage on digits with SQLite: space validation, storage errors, resume, NaN."""

import copy
import json
import re
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ablab import studies, tracking
from ablab.config import ConfigError, load
from ablab.studies import StorageError, masked
from ablab.tune import load_study, parent_run, run_tune, work
from tests.conftest import TINY_PARAMS

TUNE = {
    "experiment": "mlp",
    "n_trials": 4,
    "sampler": "random",
    "common": {"train.max_epochs": 3},
    "space": {
        "train.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "model.width": {"type": "categorical", "choices": [16, 32]},
    },
    "registry": {"name": "unit-mlp"},
}


def write(folder, tune, digits_root=None):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["tune"] = tune
    (folder / "params.yaml").write_text(yaml.safe_dump(tree))
    if digits_root is not None and not (folder / "data").exists():
        (folder / "data").symlink_to(digits_root / "data")
    return folder / "params.yaml"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"space": {"model.widht": {"type": "int", "low": 1, "high": 4}}},
         "tune.model.widht: unknown key"),
        ({"space": {"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}},
         "low 0.1 > high 0.01"),
        ({"space": {"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
         "log scale needs low > 0"),
        ({"sampler": "bayes"}, "tune.sampler: got 'bayes'; allowed: 'tpe', 'random'"),
        ({"pruner": "early"}, "tune.pruner: got 'early'"),
        ({"experiment": "resnet"}, "tune.experiment: unknown experiment 'resnet'"),
        ({"space": {"train.optimizer": {"type": "categorical", "choices": ["adamm"]}}},
         "tune.train.optimizer: got 'adamm'"),
    ],
)  # fmt: skip
def test_bad_search_spaces_fail_at_load(tmp_path, change, expected):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, {**TUNE, **change}))
    assert expected in str(err.value)


def test_unreachable_storage_is_named_with_its_password_masked(tmp_path, digits_root):
    url = "postgresql+psycopg2://me:hunter2-secret@127.0.0.1:1/nostudy"
    params = load(write(tmp_path, {**TUNE, "storage": url}, digits_root))
    with pytest.raises(StorageError) as err:
        run_tune(params, tmp_path)
    message = str(err.value)
    assert "postgresql+psycopg2://me:***@127.0.0.1:1/nostudy" in message
    assert "hunter2-secret" not in message
    assert not (tmp_path / "results" / "tune").exists()
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():  # no orphan parent run
        client = MlflowClient(tracking.tracking_uri(tmp_path))
        experiment = client.get_experiment_by_name("ablab-test")
        assert experiment is None or not client.search_runs([experiment.experiment_id])
    assert masked("sqlite:////x/y.db") == "sqlite:////x/y.db"
    assert masked("notaurl") == "notaurl"  # as typed, not made into "notaurl://***"


def test_study_resumes_under_the_same_parent_and_diverging_trials_fail(
    tmp_path, digits_root, capsys
):
    params = load(write(tmp_path, TUNE, digits_root))
    first = run_tune(params, tmp_path)
    assert first["trials_complete"] + first["trials_pruned"] == 4
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 4 and re.fullmatch(r"trial 3 \w+; finished 4/4; 0m\d\ds left; best [\d.]+",
                                            lines[-1]), lines  # fmt: skip
    more = load(write(tmp_path, {**TUNE, "n_trials": 6}))
    second = run_tune(more, tmp_path)
    assert second["trials_complete"] + second["trials_pruned"] == 6  # 2 more, not 6 more
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("ablab-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ablab.role") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 6
    assert {r.data.tags["ablab.trial_state"] for r in trials} <= {"COMPLETE", "PRUNED"}
    # optuna-dashboard names the objective and links every trial to its MLflow run
    study = optuna.load_study(study_name="ablab", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    assert study.metric_names == [params.tune.metric] == ["val_accuracy"]
    linked = {t.number: t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert linked == {int(r.data.tags["ablab.trial"]): r.info.run_id for r in trials}
    assert all(f"/runs/{t.user_attrs['mlflow_run_id']}?" in t.user_attrs["mlflow_run_url"]
               for t in study.trials)  # fmt: skip
    assert parent.data.tags["ablab.optuna_storage"].endswith("/mlruns/optuna.db")
    assert parent.data.params["space.train.lr.log"] == "True"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "optimization_history.png"} <= artifacts
    assert parent.data.metrics["best_value"] == pytest.approx(second["best_value"])
    best = yaml.safe_load((tmp_path / "results" / "tune" / "best_params.yaml").read_text())
    assert set(best) == {"train.lr", "model.width"}
    # the search registers nothing: `ablab tuned` does, once per best params
    assert not client.search_registered_models()
    saved = json.loads((tmp_path / "results" / "tune" / "metrics.json").read_text())
    assert saved["trials_fail"] == 0

    # a worker died mid-trial (its trial RUNNING, heartbeat stopped), the budget one more than
    # was finished: the next run counts the dead trial against the budget (the trial it would
    # start gives way as surplus), fails it by heartbeat and trains its retry, leaving nothing
    # RUNNING
    beating = load(write(tmp_path, {**TUNE, "n_trials": 7, "heartbeat_seconds": 1}))
    storage = studies.open_storage(f"sqlite:///{tmp_path}/mlruns/optuna.db", 1, 1)
    dead = optuna.load_study(study_name="ablab", storage=storage).ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)  # two heartbeat intervals: stale
    third = run_tune(beating, tmp_path)
    study = optuna.load_study(study_name="ablab", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == TrialState.FAIL and third["trials_fail"] == 1
    assert TrialState.RUNNING not in states.values() and TrialState.WAITING not in states.values()
    retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number
    retried = [t for t in study.trials if retry_of(t) == dead.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert third["trials_complete"] + third["trials_pruned"] == 7  # the surplus one not counted

    # a space where one point diverges: the trial is FAIL with its reason, the study goes on
    l2 = {"type": "categorical", "choices": [0.0, 1000.0]}
    boom = {**TUNE, "study_name": "boom", "sampler": "grid", "n_trials": 2,
            "common": {"train.max_epochs": 2, "train.optimizer": "sgd", "train.lr": 0.01},
            "space": {"train.regularize.l2": l2}}  # fmt: skip
    result = run_tune(load(write(tmp_path, boom)), tmp_path)
    assert result["trials_fail"] >= 1 and result["trials_complete"] >= 1
    study = optuna.load_study(study_name="boom", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed[0].params["train.regularize.l2"] == 1000.0
    assert failed[0].user_attrs["failure"].startswith("diverged: training loss is")


def test_objective_is_the_trials_best_epoch_and_a_hopeless_trial_is_pruned(tmp_path, digits_root):
    """Three sound learning rates, then one that cannot learn: the median pruner stops the
    last one after its warm-up epoch; each finished trial's value is the best val_accuracy
    of its own MLflow run's epochs, and of what it reported to Optuna."""
    from ablab.tune import load_study

    space = {"train.lr": {"type": "float", "low": 1e-7, "high": 0.1, "log": True}}
    forced = {**TUNE, "study_name": "forced", "pruner": "median", "n_trials": 4,
              "common": {"train.max_epochs": 4}, "space": space}  # fmt: skip
    params = load(write(tmp_path, forced, digits_root))
    for lr in (0.05, 0.03, 0.02, 1e-7):
        load_study(params, tmp_path).enqueue_trial({"train.lr": lr})
    run_tune(params, tmp_path)
    study = optuna.load_study(study_name="forced", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trials = sorted(study.trials, key=lambda t: t.number)
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert len(trials[3].intermediate_values) < 4  # stopped before its last epoch
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("ablab-test")
    runs = {r.data.tags.get("ablab.trial"): r for r in client.search_runs(
        [experiment.experiment_id], "tags.`ablab.study` = 'forced'")}  # fmt: skip
    for trial in trials[:3]:
        run = runs[str(trial.number)]
        epochs = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert len(epochs) == 4
        assert trial.value == pytest.approx(max(m.value for m in epochs))
        assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
    assert runs["3"].data.tags["ablab.trial_state"] == "PRUNED"


def test_the_champion_is_trained_once_per_best_params_on_the_full_data(tmp_path, digits_root):
    """`ablab tuned`: the best params on the experiment's own data (not tune.common's subset),
    registered with the alias; run again with the same best params, nothing is trained and the
    alias does not move; new best params make a new version."""
    from ablab.tuned import train_tuned

    searched = {**TUNE, "common": {"train.max_epochs": 2, "data.subset": 200}}
    params = load(write(tmp_path, searched, digits_root))
    (tmp_path / "results" / "tune").mkdir(parents=True)
    best = tmp_path / "results" / "tune" / "best_params.yaml"
    best.write_text(yaml.safe_dump({"train.lr": 0.01, "model.width": 32}))
    first = train_tuned(params, tmp_path)
    assert first["registered"] == "unit-mlp@champion (v1)" and first["test_accuracy"] > 0.5
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    version = client.get_model_version_by_alias("unit-mlp", "champion")
    run = client.get_run(version.run_id)
    assert run.data.params["model.width"] == "32" and run.info.run_name == "tuned/ablab"
    full = json.loads((digits_root / "data" / "processed" / "digits" / "meta.json").read_text())
    assert int(run.data.params["data.train_size"]) == full["split_sizes"]["train"]  # no subset
    again = train_tuned(params, tmp_path)
    assert again["registered"] == "unit-mlp@champion (v1, unchanged)"
    assert again["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert len(client.search_runs([run.info.experiment_id], "tags.`ablab.stage` = 'tuned'")) == 1
    best.write_text(yaml.safe_dump({"train.lr": 0.02, "model.width": 32}))
    assert train_tuned(params, tmp_path)["registered"] == "unit-mlp@champion (v2)"
    saved = json.loads((tmp_path / "results" / "tuned" / "metrics.json").read_text())
    assert saved["registered"] == "unit-mlp@champion (v2)"


def test_a_trial_asked_for_after_the_budget_was_taken_gives_way(tmp_path, digits_root, capsys):
    """Two finished trials and one that another worker runs fill a budget of 3: the trial this
    worker then asks for gives way untrained (PRUNED, user attr `surplus`, counted nowhere).
    The other worker dies; its trial fails by heartbeat and its retry is trained here: 3
    finished, not 4 ("finished 4/3" before)."""
    tune = {**TUNE, "n_trials": 3, "pruner": "none", "heartbeat_seconds": 1}
    params = load(write(tmp_path, tune, digits_root))
    tracking.use_store(tmp_path, params.mlflow_experiment)
    study = load_study(params, tmp_path)
    parent = parent_run(params, tmp_path, study)
    for value in (0.5, 0.6):
        study.enqueue_trial({"train.lr": 0.01, "model.width": 16})
        trial = study.ask()
        study.tell(trial, value)
    storage = studies.open_storage(f"sqlite:///{tmp_path}/mlruns/optuna.db", 1, 1)
    other = optuna.load_study(study_name="ablab", storage=storage).ask()  # the other worker's
    storage.record_heartbeat(other._trial_id)
    work(params, tmp_path, parent, threads=1)
    study = optuna.load_study(study_name="ablab", storage=storage)
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert len(surplus) == 1 and surplus[0].state == TrialState.PRUNED
    counted = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 3 and study.trials[other.number].state == TrialState.FAIL
    out = capsys.readouterr().out
    assert "finished 3/3" in out and "finished 4/3" not in out
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent}'")  # fmt: skip
    assert len(runs) == 1  # the retry; the surplus trial trained nothing
