"""Optuna: space, sampler, pruner and storage from params; one trial = one MLflow child run of
the study's parent run. Studies resume; a worker that dies leaves its trial FAIL (heartbeat)
and the trial is run again; N workers on one machine, or many machines on one storage."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from ablab import figures, resume, studies, tracking
from ablab.config import ConfigError, Params, SearchDimension, TuneParams
from ablab.families import DivergedError
from ablab.files import write_atomic
from ablab.studies import masked, storage_url
from ablab.train import train

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# a trial asked for after the budget was taken (two workers asking at the same moment): it
# gives way untrained, PRUNED with this user attr, and counts nowhere
SURPLUS = "surplus"


def counted(trials: list) -> list:
    """The trials that count against n_trials: all but those that gave way as surplus."""
    return [t for t in trials if not t.user_attrs.get(SURPLUS)]


def _surplus(study: optuna.Study, number: int, n_trials: int | None) -> bool:
    """Whether n_trials trials numbered before `number` have finished, run or wait already."""
    if n_trials is None:
        return False
    states = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
    ahead = [t for t in counted(study.get_trials(deepcopy=False, states=states))
             if t.number < number]  # fmt: skip
    return len(ahead) >= n_trials


# our own line per trial says what Optuna's INFO lines say; heartbeats and the retry callback
# are "experimental" in Optuna 5 but are the documented way to survive dead workers
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(tune: TuneParams, root: Path) -> RDBStorage:
    """The tune section's study storage (studies.open_storage)."""
    return studies.open_storage(storage_url(tune, root), tune.heartbeat_seconds, tune.max_retry)


def sampler(tune: TuneParams) -> optuna.samplers.BaseSampler:
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=tune.seed)
    if tune.sampler == "grid":
        grid = {name: dim.choices for name, dim in tune.space.items()}
        return optuna.samplers.GridSampler(grid, seed=tune.seed)
    if tune.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=tune.seed)
    return optuna.samplers.TPESampler(seed=tune.seed)


def pruner(tune: TuneParams, max_epochs: int) -> optuna.pruners.BasePruner:
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, name: str, dim: SearchDimension) -> Any:
    if dim.type == "categorical":
        return trial.suggest_categorical(name, dim.choices)
    if dim.type == "int":
        step = int(dim.step or 1)
        return trial.suggest_int(name, int(dim.low), int(dim.high), step=step, log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)


def load_study(params: Params, root: Path) -> optuna.Study:
    tune = params.tune
    max_epochs = params.tuned_experiment(_lowest(tune)).train.max_epochs
    study = optuna.create_study(
        storage=open_storage(tune, root),
        study_name=tune.study_name,
        direction=params.tune_direction(),
        sampler=sampler(tune),
        pruner=pruner(tune, max_epochs),
        load_if_exists=True,
    )
    if study.metric_names != [tune.metric]:  # the objective's name in optuna-dashboard
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and still so in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([tune.metric])
    return study


def _lowest(tune: TuneParams) -> dict[str, Any]:
    return {k: d.lowest() for k, d in tune.space.items()}


def parent_run(params: Params, root: Path, study: optuna.Study) -> str:
    """The study's MLflow parent run: found by its tags when the study resumes, else created
    with the search space as params."""
    tune = params.tune
    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    found = client.search_runs(
        [experiment_id],
        f"tags.`ablab.study` = '{tune.study_name}' and tags.`ablab.stage` = 'tune' "
        "and tags.`ablab.role` = 'study'",
    )
    if found:
        return found[0].info.run_id
    storage = masked(storage_url(tune, root))  # never a password
    tags = {"ablab.study": tune.study_name, "ablab.stage": "tune", "ablab.role": "study",
            "ablab.experiment": tune.experiment, "ablab.optuna_storage": storage,
            "mlflow.note.content": f"Optuna study `{tune.study_name}` in `{storage}`: trial "
            "runs are this run's children; watch the study with `ablab dashboard`."}  # fmt: skip
    tags.update(tracking.origin_tags(root))
    run = client.create_run(experiment_id, run_name=f"tune/{tune.study_name}", tags=tags)
    space = {k: {f: v for f, v in d.model_dump().items() if v is not None}
             for k, d in tune.space.items()}  # fmt: skip
    logged = tune.model_dump(exclude={"space", "storage"})
    logged["storage"] = storage
    logged["space"] = space
    tracking.log_params(run.info.run_id, tracking.flatten(logged))
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


class _Pruning(PyTorchLightningPruningCallback):
    """optuna-integration's callback; it reports the monitored metric every epoch."""


def objective_for(params: Params, root: Path, parent_id: str, threads: int):
    tune = params.tune
    client = MlflowClient()

    def objective(trial: optuna.Trial) -> float:
        if _surplus(trial.study, trial.number, tune.n_trials):
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned()
        values = {name: suggest(trial, name, dim) for name, dim in tune.space.items()}
        exp = params.tuned_experiment(values)
        train_params = exp.train.model_copy(update={"threads": threads, "log_model": False})
        exp = exp.model_copy(update={"train": train_params})
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        tags = {"mlflow.parentRunId": parent_id, "ablab.study": tune.study_name,
                "ablab.trial": str(trial.number), "ablab.stage": "tune"}  # fmt: skip
        if retry_of is not None:
            tags["ablab.retry_of"] = str(retry_of)
            _close_orphans(client, parent_id, retry_of, root)
        name = f"tune/{tune.study_name}/trial-{trial.number}"
        try:
            result = train(exp, root, params.mlflow_experiment, run_name=name, extra_tags=tags,
                           thresholds=params.diagnose,
                           extra_callbacks=[_Pruning(trial, tune.metric)])  # fmt: skip
        except optuna.TrialPruned:
            run_id = _run_id(client, parent_id, trial.number)
            _link(trial, client, run_id)
            client.set_tag(run_id, "ablab.trial_state", "PRUNED")
            client.set_terminated(run_id, "KILLED")
            raise
        except DivergedError as exc:
            run_id = getattr(exc, "run_id", None) or _run_id(client, parent_id, trial.number)
            _link(trial, client, run_id)
            client.set_tag(run_id, "ablab.trial_state", "FAIL")
            trial.set_user_attr("failure", f"diverged: {exc}")
            return math.nan  # Optuna records NaN as FAIL; the study goes on
        history = [r[tune.metric] for r in result.history if tune.metric in r]
        best = (max if params.tune_direction() == "maximize" else min)(history)
        _link(trial, client, result.run_id)
        client.set_tag(result.run_id, "ablab.trial_state", "COMPLETE")
        client.log_metric(result.run_id, f"objective_{tune.metric}", best)
        return best

    return objective


def _link(trial: optuna.Trial, client: MlflowClient, run_id: str) -> None:
    """The trial's MLflow run, as user attributes optuna-dashboard shows with the trial."""
    experiment_id = client.get_run(run_id).info.experiment_id
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("mlflow_run_url", tracking.run_url(experiment_id, run_id))


def _run_id(client: MlflowClient, parent_id: str, number: int) -> str:
    run = client.get_run(parent_id)
    runs = client.search_runs(
        [run.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`ablab.trial` = '{number}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id


def _close_orphans(client: MlflowClient, parent_id: str, number: int, root: Path) -> None:
    """The MLflow run of a trial whose worker died is still RUNNING: mark it FAILED; its
    checkpoint goes (the retry is a trial and a run of its own, trained from the start)."""
    run = client.get_run(parent_id)
    orphans = client.search_runs(
        [run.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`ablab.trial` = '{number}' "
        "and attributes.status = 'RUNNING'",
    )
    for orphan in orphans:
        client.set_tag(orphan.info.run_id, "ablab.trial_state", "FAIL")
        client.set_tag(orphan.info.run_id, "ablab.failure", "worker died (heartbeat stale)")
        client.set_terminated(orphan.info.run_id, "FAILED")
    resume.discard(tracking.store_root(root), {o.info.run_id for o in orphans})


class _Budget:
    """Stops the study once n_trials finished (COMPLETE or PRUNED), or as many failed; says
    after each trial how many are finished, the time left at the study's pace since this
    worker started (every worker's trials count) and the best value."""

    def __init__(self, n_trials: int | None) -> None:
        self.n_trials = n_trials
        self.started = time.monotonic()
        self.done_at_start: int | None = None

    def __call__(self, study: optuna.Study, trial) -> None:
        if trial.user_attrs.get(SURPLUS):
            study.stop()
            return
        trials = counted(study.get_trials(deepcopy=False))
        done = sum(t.state in FINISHED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        if self.done_at_start is None:  # the trials finished before this one
            self.done_at_start = done - (trial.state in FINISHED)
        best = _best_value(study)
        shown = "-" if best is None else f"{best:.4f}"
        total = "" if self.n_trials is None else f"/{self.n_trials}"
        line = f"trial {trial.number} {trial.state.name}; finished {done}{total}"
        if self.n_trials is not None and done > self.done_at_start:
            pace = (time.monotonic() - self.started) / (done - self.done_at_start)
            left = max(self.n_trials - done, 0) * pace
            line += f"; {int(left // 60)}m{int(left % 60):02d}s left"
        print(f"{line}; best {shown}", flush=True)
        if self.n_trials is not None and (done >= self.n_trials or failed >= self.n_trials):
            study.stop()


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no complete trial yet
        return None


def work(params: Params, root: Path, parent_id: str, threads: int) -> None:
    """One worker: run trials until the study's budget is spent."""
    tracking.use_store(root, params.mlflow_experiment)  # before any MLflow client is made
    study = load_study(params, root)
    tune = params.tune
    done = sum(t.state in FINISHED for t in counted(study.get_trials(deepcopy=False)))
    objective = objective_for(params, root, parent_id, threads)
    budget = _Budget(tune.n_trials)
    if tune.n_trials is None or done < tune.n_trials:
        study.optimize(objective, timeout=tune.timeout, callbacks=[budget], catch=())
    # then trials still RUNNING: another worker's, waited for, or a dead one's, whose retry
    # is trained here; the study never ends with a trial left RUNNING or a retry never run
    studies.drain(study, objective, tune.heartbeat_seconds, callbacks=[budget])


def run_tune(
    params: Params, root: Path, workers: int = 1, params_file: str = "params.yaml",
    sets: list[str] | None = None, cores: int | None = None,
) -> dict:  # fmt: skip
    """The tune stage: open (or resume) the study, run trials here and in `workers` - 1 more
    processes (threads per worker chosen so that workers x threads <= cores), then report."""
    if params.tune is None:
        raise ConfigError("params.yaml: no tune section")
    root = Path(root)
    study = load_study(params, root)  # StorageError here: nothing created in MLflow yet
    parent_id = parent_run(params, root, study)
    cores = cores or os.cpu_count() or 1
    threads = max(1, cores // workers)
    helpers = []
    if workers > 1:  # this process is one of the workers; the others start beside it
        helpers = _spawn_workers(root, workers - 1, threads, parent_id, params_file, sets or [])
    try:
        work(params, root, parent_id, threads)
    except BaseException as exc:
        for helper in helpers:
            helper.kill()
        lost = studies.storage_lost(exc)
        if lost is not None:
            raise studies.storage_down(params, root, lost) from None
        raise
    codes = [p.wait() for p in helpers]
    if any(codes):
        print(f"note: worker exit codes {codes}; finished trials are kept", flush=True)
    return finish(params, root, study, parent_id)


def _spawn_workers(
    root: Path, workers: int, threads: int, parent_id: str, params_file: str, sets: list[str]
) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "ABLAB_ROOT": str(root),
        "ABLAB_TUNE_PARENT": parent_id,
        "ABLAB_TUNE_THREADS": str(threads),
        "ABLAB_PROGRESS": "0",
    }  # fmt: skip  (workers' bars would overwrite each other)
    command = [sys.executable, "-m", "ablab.cli", "tune", "--worker", "--params", params_file]
    command += [item for s in sets for item in ("--set", s)]
    return [subprocess.Popen(command, env=env) for _ in range(workers)]


def finish(params: Params, root: Path, study: optuna.Study, parent_id: str) -> dict:
    """Best params and counts -> results/tune/; plots, trials CSV and best value -> the parent
    run. Only this process writes them: workers on other machines register nothing."""
    tune = params.tune
    study = optuna.load_study(study_name=tune.study_name, storage=open_storage(tune, root))
    trials = counted(study.get_trials(deepcopy=False))
    counts = {state: sum(t.state == getattr(TrialState, state.upper()) for t in trials)
              for state in ("complete", "pruned", "fail")}  # fmt: skip
    best = _best_value(study)
    metrics = {"best_value": best, **{f"trials_{k}": v for k, v in counts.items()}}
    metrics["epochs_trained"] = sum(len(t.intermediate_values) for t in trials)
    client = MlflowClient()
    tracking.log_metrics(parent_id, {k: v for k, v in metrics.items() if v is not None})
    _log_study_artifacts(study, parent_id)
    folder = root / "results" / "tune"
    best_params = study.best_params if best is not None else {}
    write_atomic(folder / "best_params.yaml", yaml.safe_dump(best_params, sort_keys=True))
    write_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    client.set_terminated(parent_id, "FINISHED")
    return metrics


def _log_study_artifacts(study: optuna.Study, parent_id: str) -> None:
    import optuna.visualization.matplotlib as plots

    with tempfile.TemporaryDirectory() as tmp:
        study.trials_dataframe().to_csv(Path(tmp) / "trials.csv", index=False)
        makers = {"optimization_history.png": plots.plot_optimization_history,
                  "param_importances.png": plots.plot_param_importances,
                  "parallel_coordinate.png": plots.plot_parallel_coordinate}  # fmt: skip
        for file, make in makers.items():
            try:
                ax = make(study)
            except (ValueError, RuntimeError):  # e.g. importances need 2+ complete trials
                continue
            figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            figure.set_size_inches(9, 5)
            figure.savefig(Path(tmp) / file, dpi=100, bbox_inches="tight")
            figures.close(figure)
        MlflowClient().log_artifacts(parent_id, tmp)
