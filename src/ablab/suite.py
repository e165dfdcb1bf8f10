"""One ablation suite: every (variant, seed) a unit of the suite's Optuna study (ablab.units),
trained as its own MLflow run, the child of the suite's parent run; a diverging run recorded and
not retried; a unit finished before (a killed `dvc repro`) never trained again; then
results/suites/<suite>/ for the report: runs.json, metrics.json and predictions.npz (every
run's test predictions, for the report's paired test-set comparisons)."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablab import ensembles, resume, stats, studies, tracking, units
from ablab.config import (
    ENTRIES,
    Params,
    Suite,
    SuiteRun,
    higher_is_better,
    nest_overrides,
    report_metrics,
)
from ablab.families import DivergedError
from ablab.files import write_atomic
from ablab.layout import suites_dir
from ablab.pretrain import pretrained_dir
from ablab.train import epochs_csv, train


def run_suite(
    params: Params,
    suite_name: str,
    root: Path,
    processed_dir: Path | None = None,
    results_dir: Path | None = None,
    fast_dev_run: bool | int = False,
    recipe: str = "default",
    workers: int = 1,
    worker_command: list[str] | None = None,
) -> dict:
    """Train every (variant, seed) of suite `suite_name` that its study has not finished, each
    as one MLflow run under the suite's parent run, in this process (`workers` 1) or in
    `workers` processes running `worker_command` (`ablab suite NAME --worker ...`); then write
    predictions.npz, metrics.json and runs.json and return runs.json's content. A unit that
    diverged is recorded, not retried; any other error ends the parent run FAILED (KILLED on an
    interrupt), stops the suite and writes nothing; finished units stay finished."""
    root = Path(root)
    started = time.monotonic()
    runs = params.suite_runs(suite_name)  # raises ConfigError naming an unknown suite
    suite = params.suites[suite_name]
    processed = Path(processed_dir or root / "data" / "processed")
    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    study, heartbeat = units.unit_study(params, suite_name, runs, root, processed, recipe,
                                        fast_dev_run)  # fmt: skip
    parent_id = _parent_run(suite_name, suite, experiment_id, root, client, recipe, study)
    units.enqueue_missing(study, runs)
    reused = units.finished_units(study, runs)
    if reused:
        left = len(runs) - len(reused)
        print(f"{suite_name}: {len(reused)} of {len(runs)} units already finished in study "
              f"{study.study_name}; training the other {left}", flush=True)  # fmt: skip
    helpers = []
    try:
        if workers > 1 and worker_command:  # this process is one of the workers
            helpers, threads = units.spawn_workers(worker_command, workers - 1,
                                                   {"ABLAB_SUITE_PARENT": parent_id})  # fmt: skip
            runs = [_with_threads(r, threads) for r in runs]
        train_unit = unit_trainer(params, suite_name, root, processed, recipe, parent_id,
                                  study, fast_dev_run)  # fmt: skip
        units.work(study, runs, train_unit, params.suite_headline(suite_name), heartbeat)
        if helpers:  # then what they left: a unit whose worker died late, queued again
            units.wait_for(helpers)
            units.work(study, runs, train_unit, params.suite_headline(suite_name), heartbeat)
    except BaseException as exc:
        for helper in helpers:
            helper.kill()
        killed = isinstance(exc, KeyboardInterrupt | SystemExit)
        client.set_terminated(parent_id, RunStatus.to_string(
            RunStatus.KILLED if killed else RunStatus.FAILED))  # fmt: skip
        lost = studies.storage_lost(exc)
        if lost is not None:
            raise studies.storage_down(params, root, lost) from None
        _add_seconds(study, time.monotonic() - started)
        raise
    zombies = units.close_zombies(client, parent_id)  # killed where no retry resumed them
    resume.discard(tracking.store_root(root), set(zombies))
    client.set_terminated(parent_id)
    _add_seconds(study, time.monotonic() - started)
    return _write_results(params, suite_name, root, results_dir, recipe, parent_id, study)


def _add_seconds(study, seconds: float) -> None:
    """The suite's wall time over all its sittings (a killed run goes on later), on the study."""
    study.set_user_attr("seconds", float(study.user_attrs.get("seconds", 0.0)) + seconds)


def run_worker(params: Params, suite_name: str, root: Path, parent_id: str,
               recipe: str = "default", threads: int | None = None) -> None:  # fmt: skip
    """One of `ablab suite NAME --workers N`'s processes: train waiting units of the suite's
    study until none waits (`threads`: torch threads per unit, the machine's cores shared)."""
    root = Path(root)
    runs = [_with_threads(r, threads) for r in params.suite_runs(suite_name)]
    processed = root / "data" / "processed"
    tracking.use_store(root, params.mlflow_experiment)
    study, heartbeat = units.unit_study(params, suite_name, params.suite_runs(suite_name), root,
                                        processed, recipe)  # fmt: skip
    train_unit = unit_trainer(params, suite_name, root, processed, recipe, parent_id, study)
    # leaves when nothing waits: the command that started it waits out the rest
    units.work(study, runs, train_unit, params.suite_headline(suite_name), heartbeat, wait=False)


def _with_threads(run: SuiteRun, threads: int | None) -> SuiteRun:
    """The unit with `threads` torch threads (a worker's share of the cores); None: as is."""
    if not threads:
        return run
    train = run.experiment.train.model_copy(update={"threads": threads})
    return run.model_copy(update={"experiment": run.experiment.model_copy(update={"train": train})})


def unit_trainer(params: Params, suite_name: str, root: Path, processed: Path, recipe: str,
                 parent_id: str, study, fast_dev_run: bool | int = False):  # fmt: skip
    """train_unit(run) -> (runs.json's row, test predictions or None): one unit as an MLflow
    child run of `parent_id`, with a progress line first."""
    total = len(params.suite_runs(suite_name))
    headline, started, trained = params.suite_headline(suite_name), time.monotonic(), [0]
    task = params.experiments[params.suites[suite_name].experiment].task
    ensemble = params.suites[suite_name].ensemble

    def train_unit(run: SuiteRun) -> tuple[dict, dict | None]:
        done = units.finished_units(study, params.suite_runs(suite_name))
        name = f"{suite_name}/{run.variant}/seed{run.seed}"
        best = best_so_far(done, headline, task)
        print(progress_line(len(done) + 1, total, name, time.monotonic() - started, best,
                            headline, trained[0]), flush=True)  # fmt: skip
        row = {"variant": run.variant, "seed": run.seed}
        predicted = None
        try:
            result = train(
                run.experiment, root, params.mlflow_experiment, processed, fast_dev_run,
                suite=suite_name, variant=run.variant, run_name=name,
                extra_tags={"mlflow.parentRunId": parent_id, "ablab.recipe": recipe},
                thresholds=params.diagnose,
                pretrained_dir=pretrained_dir(root, suite_name, recipe),
            )  # fmt: skip
        except DivergedError as exc:  # diverged or collapsed: recorded, the suite goes on
            print(f"  {exc.kind}: {exc}; the suite goes on", flush=True)
            row.update(status=exc.kind, failure=str(exc), run_id=getattr(exc, "run_id", ""))
            row.update(summary={}, history=[])
        else:
            row.update(status="finished", failure="", run_id=result.run_id)
            row.update(
                summary=_finite(result.summary), history=[_finite(h) for h in result.history]
            )
            predicted = kept_predictions(result.predictions, ensemble)
        trained[0] += 1
        return row, predicted

    return train_unit


def kept_predictions(predicted: dict | None, ensemble: bool) -> dict | None:
    """What a unit keeps of its test predictions: targets and predicted classes, and with
    `ensemble` its class probabilities (base64 float16: `ensembles.encode`)."""
    if not predicted:
        return predicted
    kept = {k: v for k, v in predicted.items() if k != "probability"}
    if ensemble and "probability" in predicted:
        kept["probability"] = ensembles.encode(predicted["probability"])
    return kept


def _write_results(params: Params, suite_name: str, root: Path, results_dir: Path | None,
                   recipe: str, parent_id: str, study) -> dict:  # fmt: skip
    """runs.json, metrics.json, epochs.csv and predictions.npz from the study's units."""
    runs = params.suite_runs(suite_name)
    suite = params.suites[suite_name]
    task = params.experiments[suite.experiment].task
    rows, predictions = units.collect(study, runs)
    skew = runs[0].experiment.skew
    report = {
        "suite": suite_name,
        "experiment": suite.experiment,
        "family": task,
        "baseline": suite.baseline_name(),
        "headline": params.suite_headline(suite_name),
        "metrics": list(report_metrics(task)),  # what the report tabulates, in order
        "compared": list(ENTRIES[task].compared),  # and compares with the baseline
        "per_example": dict(ENTRIES[task].per_example),  # compared per test example too
        "minority_classes": list(skew.classes) if skew else [],
        "smallest_effect": suite.smallest_effect,
        "parent_run_id": parent_id,
        "study": study.study_name,
        "recipe": recipe,
        "seconds": round(float(study.user_attrs.get("seconds", 0.0)), 1),  # every sitting's
        "seeds": list(suite.seeds),
        "common": _describe(nest_overrides(suite.common)),
        "variants": {n: _describe(o) or "(none)" for n, o in suite.variant_overrides().items()},
        "runs": rows,
    }
    if suite.ensemble:
        report["ensembles"] = ensemble_rows(report, predictions)
    folder = Path(results_dir or suites_dir(root)) / suite_name
    # runs.json last: the report reads it first, so its presence means the rest is written
    write_atomic(folder / "predictions.npz", predictions_npz(predictions))
    write_atomic(folder / "metrics.json", json.dumps(variant_means(report), indent=2) + "\n")
    write_atomic(folder / "epochs.csv", variant_curves(report, ENTRIES[task].epoch_metrics))
    write_atomic(folder / "runs.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    return report


def ensemble_rows(report: dict, predictions: dict[str, dict]) -> dict[str, dict]:
    """Per variant with at least two finished seeds that kept probabilities: its seed models'
    ensemble against its mean member (`ensembles.evaluate`)."""
    out = {}
    for variant in report["variants"]:
        keys = [f"{variant}/seed{r['seed']}" for r in report["runs"]
                if r["variant"] == variant and r["status"] == "finished"]  # fmt: skip
        kept = [predictions[k] for k in keys if "probability" in predictions.get(k, {})]
        if len(kept) < 2:
            continue
        target = np.asarray(kept[0]["target"])
        members = [ensembles.decode(str(k["probability"]), len(target)) for k in kept]
        out[variant] = ensembles.evaluate(target, members)
    return out


def variant_curves(report: dict, metrics: tuple[str, ...]) -> str:
    """DVC's plot of a suite: per variant and epoch, the mean over its seeds of each per-epoch
    validation value (`stats.mean_curve`; epochs.csv's long form, the variant as the curve)."""
    rows = ["epoch,metric,curve,value"]
    for variant in report["variants"]:
        by_epoch: dict[int, dict[str, float]] = {}
        for m in metrics:
            for epoch, mean in zip(*stats.mean_curve(report, variant, m), strict=True):
                by_epoch.setdefault(epoch, {"epoch": epoch})[m] = mean
        history = [by_epoch[e] for e in sorted(by_epoch)]
        rows += epochs_csv(history, list(metrics), curve=variant).splitlines()[1:]
    return "\n".join(rows) + "\n"


def _parent_run(
    suite_name: str, suite: Suite, experiment_id: str, root: Path, client: MlflowClient,
    recipe: str, study,
) -> str:  # fmt: skip
    """The suite's MLflow parent run (its units are children; the report tags it): the one
    the study started with, running again, when a killed or failed call left it."""
    found = study.user_attrs.get("mlflow_parent_run_id")
    if found:
        try:
            active = client.get_run(found).info.lifecycle_stage == "active"
        except MlflowException as exc:
            if not tracking.absent(exc):  # the store could not be asked: that is an error
                raise
            active = False
        if active:
            client.update_run(found, status="RUNNING")
            return found
        print(f"{suite_name}: the study's parent run {found} is deleted or not in this store "
              "(another MLFLOW_TRACKING_URI?): a new parent run holds the units from here",
              flush=True)  # fmt: skip
    tags = {"ablab.suite": suite_name, "ablab.stage": "suite", "ablab.role": "suite",
            "ablab.experiment": suite.experiment, "ablab.recipe": recipe}  # fmt: skip
    tags.update(tracking.origin_tags(root))
    suffix, dvc_tags = tracking.dvc_experiment()
    tags.update(dvc_tags)
    name = f"suite/{suite_name}" + ("/full" if recipe == "full" else "") + suffix
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    logged = {"seeds": suite.seeds, "baseline": suite.baseline_name(),
              "variants": list(suite.variant_overrides()), "common": suite.common}  # fmt: skip
    tracking.log_params(run.info.run_id, tracking.flatten(logged))
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    client.set_tag(run.info.run_id, "ablab.study", study.study_name)
    return run.info.run_id


def predictions_npz(predictions: dict[str, dict[str, np.ndarray]]) -> bytes:
    """One array per run ("<variant>/seed<n>": its test predictions) and "target" (the test
    labels, the same for every run)."""
    arrays: dict[str, np.ndarray] = {}
    for key, pred in predictions.items():
        target = np.asarray(pred["target"], dtype=np.int16)
        if "target" in arrays and not np.array_equal(arrays["target"], target):
            raise ValueError(f"run {key} was tested on other examples than the suite's first run")
        arrays["target"] = target
        arrays[key] = np.asarray(pred["prediction"], dtype=np.int16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def best_so_far(rows: list[dict], metric: str, task: str) -> tuple[str, float] | None:
    """The finished unit with the best `metric` so far: ("variant/seedN", value), or None."""
    scored = [(f"{r['variant']}/seed{r['seed']}", r["summary"][metric])
              for r in rows if metric in r.get("summary", {})]  # fmt: skip
    if not scored:
        return None
    pick = max if higher_is_better(task, metric) else min
    return pick(scored, key=lambda item: item[1])


def progress_line(
    i: int, total: int, name: str, elapsed: float, best: tuple[str, float] | None, metric: str,
    trained: int | None = None,
) -> str:  # fmt: skip
    """`[i/total] name`, then (once a unit was trained in `elapsed`: `trained` of them, i - 1
    if None) the time left at that pace and the best unit yet: one line per unit, as readable
    in a DVC log as in a terminal."""
    line = f"[{i}/{total}] {name}"
    trained = i - 1 if trained is None else trained
    if trained > 0:
        left = elapsed / trained * (total - i + 1)
        line += f" · {int(left // 60)}m{int(left % 60):02d}s left"
    if best is not None:
        line += f" · best so far {best[0]} {metric} {best[1]:.4f}"
    return line


def _finite(values: dict) -> dict:
    """NaN and inf become None, so runs.json stays strict JSON."""
    return {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in values.items()
    }


def _describe(overrides: dict) -> str:
    """A variant's overrides as one line: 'model.dropout=0.3, train.lr=0.01'."""
    flat: list[str] = []

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                shown = value if isinstance(value, str) else json.dumps(value)
                flat.append(f"{prefix}{key}={shown}")

    walk(overrides, "")
    return ", ".join(flat)


def variant_means(report: dict) -> dict[str, dict[str, float]]:
    """Per variant, the mean over finished seeds of the summary metrics (DVC's metrics file)."""
    out: dict[str, dict[str, float]] = {}
    for variant in report["variants"]:
        rows = [r for r in report["runs"] if r["variant"] == variant]
        done = [r for r in rows if r["status"] == "finished"]
        entry: dict[str, float] = {"diverged": len(rows) - len(done)}
        for key in report["metrics"]:
            values = [r["summary"].get(key) for r in done]
            if values and all(v is not None for v in values):
                entry[key] = round(float(np.mean(values)), 6)
        out[variant] = entry
    return out
