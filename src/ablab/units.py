"""A suite's (variant, seed) units as trials of one Optuna study on the shared storage
(ablab.studies): each unit is an enqueued trial carrying its name; a worker pops a waiting
trial, trains it, and stores its row and test predictions on the trial. A finished unit is never
trained again; a worker that dies (SIGKILL) stops its heartbeat, so its trial fails after two
intervals and is queued again (at most `tune.max_retry` times); retried on the same machine,
it resumes the dead worker's MLflow run from its last epoch (ablab.resume).

Each unit is known by what it trains (`unit_id`: its resolved experiment, seed included), not
by its place in the suite: a variant added trains only its own units, one removed or renamed
trains nothing. The study's name holds a hash of what every unit depends on beside that: the
data and ablab's code (a change of either is a new study)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ablab import studies
from ablab.config import Params, SuiteRun
from ablab.config.load import datasets_of, trained_tree
from ablab.imports import code_hash

UNIT = "unit"  # the trial's user attr naming its unit as first queued: "<variant>/seed<n>"
UNIT_ID = "unit_id"  # and what the unit trains, hashed (unit_id)


def unit_key(run: SuiteRun) -> str:
    return f"{run.variant}/seed{run.seed}"


def unit_id(run: SuiteRun) -> str:
    """What the unit trains (`trained_tree`: its resolved experiment, seed included, without
    the thread count), whatever its variant is called; two variants that resolve alike share
    their units."""
    what = trained_tree(run.experiment)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def finished_units(study: optuna.Study, runs: list[SuiteRun]) -> list[dict]:
    """The rows of the suite's units that a trial has finished (a removed variant's are left
    out)."""
    done = finished(study)
    return [done[unit_id(run)] for run in runs if unit_id(run) in done]


def study_key(runs: list[SuiteRun], processed_dir: Path, recipe: str,
              fast_dev_run: bool | int) -> str:  # fmt: skip
    """A hash of what every unit's numbers depend on beside its own experiment: the processed
    data (each dataset's hash) and the ablab source that trains them; any change means a new
    study."""
    datasets = sorted({d for run in runs for d in datasets_of(run.experiment)})
    data = {}
    for name in datasets:
        meta = Path(processed_dir) / name / "meta.json"
        data[name] = json.loads(meta.read_text()).get("data_hash") if meta.exists() else None
    # the suite's module and all it imports; not the command line or the report, whose edits
    # change no number
    what = {"data": data, "code": code_hash("ablab.suite"), "recipe": recipe,
            "fast_dev_run": fast_dev_run}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def unit_study(params: Params, suite_name: str, runs: list[SuiteRun], root: Path,
               processed_dir: Path, recipe: str,
               fast_dev_run: bool | int = False) -> tuple[optuna.Study, int]:  # fmt: skip
    """(the suite's study, created or loaded, the storage's heartbeat interval in seconds)."""
    storage, heartbeat = studies.params_storage(params, root)
    key = study_key(runs, processed_dir, recipe, fast_dev_run)
    name = f"suite/{suite_name}/{recipe}/{key}"
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
    return study, heartbeat


def _trials(study: optuna.Study, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=states or None)


def finished(study: optuna.Study) -> dict[str, dict]:
    """unit id -> its row, for every unit with a COMPLETE trial."""
    return {t.user_attrs[UNIT_ID]: t.user_attrs["row"]
            for t in _trials(study, TrialState.COMPLETE)
            if UNIT_ID in t.user_attrs and "row" in t.user_attrs}  # fmt: skip


def enqueue_missing(study: optuna.Study, runs: list[SuiteRun]) -> None:
    """Queue, in the suite's order, every unit that no trial has finished, holds or waits for:
    new units (a variant added), and those whose trials failed (a call that crashed, a worker
    that died more often than retried)."""
    live = {t.user_attrs.get(UNIT_ID) for t in _trials(
        study, TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}  # fmt: skip
    for run in runs:
        if unit_id(run) not in live:
            live.add(unit_id(run))  # two variants that resolve alike: queued once
            study.enqueue_trial({}, user_attrs={UNIT: unit_key(run), UNIT_ID: unit_id(run)})


def work(study: optuna.Study, runs: list[SuiteRun],
         train_unit: Callable[[SuiteRun], tuple[dict, dict | None]], headline: str,
         heartbeat: int, wait: bool = True) -> None:  # fmt: skip
    """Train waiting units one after the other until none waits; with `wait`, until none
    runs either: a unit another worker holds is waited for (polled each second), and one whose
    worker died fails by heartbeat after two intervals and is trained here."""
    by_id: dict[str, SuiteRun] = {}
    for run in runs:
        by_id.setdefault(unit_id(run), run)

    def objective(trial: optuna.Trial) -> float:
        key = trial.user_attrs.get(UNIT_ID)
        if key not in by_id:  # no unit waited any more: Optuna made a fresh trial
            trial.set_user_attr("spare", True)
            raise optuna.TrialPruned()
        if _duplicate(study, key, trial.number):
            trial.set_user_attr("duplicate", True)
            raise optuna.TrialPruned()
        row, predicted = train_unit(by_id[key])
        trial.set_user_attr("row", row)
        if predicted:
            trial.set_user_attr("predictions", {k: np.asarray(v).tolist()
                                                for k, v in predicted.items()})  # fmt: skip
        value = row["summary"].get(headline)
        return float(value) if isinstance(value, float | int) and math.isfinite(value) else 0.0

    studies.drain(study, objective, heartbeat, wait)


def _duplicate(study: optuna.Study, key: str, number: int) -> bool:
    """Whether unit `key` (a unit id) is another trial's: finished, or held or queued by a
    trial numbered before this one. Two commands on two machines that queued the missing units
    at the same moment queue them twice; the later copy of each gives way, so no unit trains
    twice."""
    for t in _trials(study, TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING):
        if t.number != number and t.user_attrs.get(UNIT_ID) == key:
            if t.state == TrialState.COMPLETE or t.number < number:
                return True
    return False


def spawn_workers(command: list[str], count: int,
                  env: dict[str, str]) -> tuple[list[subprocess.Popen], int]:  # fmt: skip
    """`count` processes running `command` (`ablab suite NAME --worker ...`) beside this one,
    the machine's cores shared among all; (the processes, torch threads per worker)."""
    threads = max(1, (os.cpu_count() or 1) // (count + 1))
    env = {**os.environ, **env, "ABLAB_SUITE_THREADS": str(threads), "ABLAB_PROGRESS": "0"}
    return [subprocess.Popen(command, env=env) for _ in range(count)], threads


def wait_for(procs: list[subprocess.Popen]) -> None:
    """Until every worker has exited; a killed one is noted (its unit is queued again)."""
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"note: worker exit codes {codes}; finished units are kept", flush=True)


def collect(study: optuna.Study, runs: list[SuiteRun]) -> tuple[list[dict], dict]:
    """(runs.json's rows in the suite's order, each under its variant's current name; test
    predictions by "<variant>/seed<n>"); a unit left without a finished trial (its worker died
    every time) is a `failed` row."""
    rows, predictions = [], {}
    done = {t.user_attrs[UNIT_ID]: t for t in _trials(study, TrialState.COMPLETE)
            if UNIT_ID in t.user_attrs and "row" in t.user_attrs}  # fmt: skip
    for run in runs:
        key, trial = unit_key(run), done.get(unit_id(run))
        if trial is None:
            tries = sum(1 for t in _trials(study, TrialState.FAIL)
                        if t.user_attrs.get(UNIT_ID) == unit_id(run))  # fmt: skip
            rows.append({"variant": run.variant, "seed": run.seed, "status": "failed",
                         "failure": f"its worker died {tries} times", "run_id": "",
                         "summary": {}, "history": []})  # fmt: skip
            continue
        rows.append({**trial.user_attrs["row"], "variant": run.variant, "seed": run.seed})
        if "predictions" in trial.user_attrs:
            predictions[key] = {
                k: np.asarray(v) for k, v in trial.user_attrs["predictions"].items()
            }
    return rows, predictions


def close_zombies(client: MlflowClient, parent_id: str) -> list[str]:
    """Once every unit is done no worker trains any: a child run still RUNNING was left by a
    killed worker; it is closed as KILLED. Returns their ids."""
    query = f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'"
    experiment_id = client.get_run(parent_id).info.experiment_id
    zombies = [r.info.run_id for r in client.search_runs([experiment_id], query)]
    for run_id in zombies:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return zombies
