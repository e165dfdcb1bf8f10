"""`ablab diagnose <experiment | run name | run id>`: find the run in the MLflow store, rebuild
what the checklist reads from its logged metrics, params and tags, run the checks of
`ablab.diagnose` (and, on demand, Lightning's learning-rate finder on the same experiment),
and quote what the suites measured for each suggestion."""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablab import diagnose, machine, tracking
from ablab.config import ConfigError, Experiment, Params

# the metrics logged once per epoch (step = epoch), besides grad_norm/<layer>
PER_EPOCH = ("train_loss", "train_objective", "val_loss", "val_accuracy", "val_macro_f1",
             "val_mae", "lr")  # fmt: skip


def find_run(client: MlflowClient, experiment_id: str, params: Params, what: str) -> Run:
    """An experiment's latest run of its own (not a suite's or a study's), a run by its name
    (e.g. regularization/baseline/seed1; the latest of that name), or a run id."""
    if what in params.experiments:
        query = (f"tags.`ablab.experiment` = '{what}' and tags.`ablab.stage` = 'train' "
                 "and tags.`ablab.suite` = ''")  # fmt: skip
        found = [r for r in client.search_runs([experiment_id], query, order_by=["start_time DESC"])
                 if not {"ablab.fold", "ablab.study"} & set(r.data.tags)]  # fmt: skip
        if not found:
            raise ConfigError(f"experiment {what!r} has no run in the store: `ablab train {what}`")
        return found[0]
    named = client.search_runs(
        [experiment_id], f"attributes.run_name = '{what}'", order_by=["start_time DESC"]
    )
    if named:
        return named[0]
    try:
        return client.get_run(what)
    except MlflowException as exc:
        if not tracking.absent(exc):  # the store itself failed: say so as MLflow does
            raise
        raise ConfigError(
            f"{what!r} is not an experiment in params.yaml, a run name or a run id in the store; "
            f"experiments: {', '.join(params.experiments)}"
        ) from None


def record(client: MlflowClient, run: Run) -> diagnose.RunRecord:
    """The checklist's view of a logged run: per-epoch rows from the metric histories (step =
    epoch), the latest value of every metric, the params and where the run came from."""
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    per_epoch = [k for k in run.data.metrics if k in PER_EPOCH or k.startswith("grad_norm/")]
    for key in per_epoch:
        for point in client.get_metric_history(run.info.run_id, key):
            rows[point.step][key] = point.value
    tags = run.data.tags
    results = {**run.data.metrics, **tracking.read_summary(tags), **_per_class(run)}
    epochs = results.get("epochs_trained")
    history = [{"epoch": step, **values} for step, values in sorted(rows.items())
               if epochs is None or step < epochs]  # fmt: skip
    return diagnose.RunRecord(
        history, results, dict(run.data.params), tags.get("ablab.failure", ""),
        tags.get("ablab.experiment", ""), tags.get("ablab.suite", ""),
        tags.get("ablab.variant", ""),
    )  # fmt: skip


PER_CLASS = "per_class_metrics.json"


def _per_class(run: Run) -> dict[str, float]:
    """A classifier's per-class test scores, from the artifact its run logged; {} for a run
    that logged none (not a classifier): the imbalance check then has nothing to read."""
    import mlflow

    names = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    if PER_CLASS not in names:
        return {}
    return mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{PER_CLASS}")


def resolved_experiment(params: Params, run: diagnose.RunRecord, seed: int) -> Experiment:
    """The experiment the run trained: a suite's variant, else the experiment itself."""
    if run.suite and run.suite in params.suites:
        for unit in params.suite_runs(run.suite):
            if unit.variant == run.variant and unit.seed == seed:
                return unit.experiment
    return params.experiment(run.experiment).model_copy(update={"seed": seed})


def find_lr(params: Params, exp: Experiment, root: Path) -> float:
    """Lightning's learning-rate finder on a fresh copy of the experiment's module."""
    import lightning.pytorch as pl
    from lightning.pytorch.tuner import Tuner

    from ablab.families import family

    pl.seed_everything(exp.seed, verbose=False)
    fam = family(exp.task)
    data = fam.data(exp, root / "data" / "processed")
    data.setup()
    module = fam.module(exp, data)
    # the finder's temporary checkpoint goes to a folder of its own, removed afterwards
    with tempfile.TemporaryDirectory(prefix="ablab-lr-find-") as folder:
        trainer = pl.Trainer(accelerator=machine.accelerator(exp.train.accelerator),
                             devices=exp.train.devices, precision=exp.train.precision,
                             logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, default_root_dir=folder)  # fmt: skip
        finder = Tuner(trainer).lr_find(module, datamodule=data, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    return math.nan if suggestion is None else float(suggestion)


def run_diagnose(params: Params, root: Path, what: str, lr_find: bool = False) -> list[str]:
    """The findings on one run as printable lines (with commands and suite measurements)."""
    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    run = find_run(client, experiment_id, params, what)
    rec = record(client, run)
    findings = diagnose.diagnose(rec, params.diagnose)
    notes = []
    if lr_find:
        seed = int(run.data.tags.get("ablab.seed", params.seed))
        suggested = find_lr(params, resolved_experiment(params, rec, seed), Path(root))
        extra = diagnose.lr_finder(rec, suggested, params.diagnose)
        findings += [extra] if extra is not None else []
        notes.append(diagnose.lr_finder_note(rec, suggested, params.diagnose))
    related = [rec.suite] if rec.suite else []
    related += [n for n, s in params.suites.items() if s.experiment == rec.experiment]
    reports = diagnose.suite_rows(root, list(dict.fromkeys(related)))
    findings = diagnose.complete(rec, findings, reports)
    title = f"{run.info.run_name} ({run.info.run_id}, {run.info.status})"
    if not findings:
        return [f"{title}: no check fired", *notes]
    return [f"{title}:"] + [f"- {f.line()}" for f in findings] + notes
