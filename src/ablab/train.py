"""One experiment end to end: data -> family -> Lightning fit/test -> MLflow run -> results/.
Knows no family by name: every difference between tasks lives in `ablab.families`."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from ablab import diagnose, figures, machine, resume, tracking
from ablab.config import DiagnoseParams, Experiment, Params, higher_is_better
from ablab.epoch_logger import EpochLogger
from ablab.families import DivergedError, Family, Fit, family
from ablab.files import write_atomic
from ablab.models import count_parameters, dead_relu_fraction
from ablab.optim import MomentumRamp

# Data lives in memory as tensors: worker processes would only add start-up cost.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*`isinstance\\(treespec, LeafSpec\\)`.*")
# a resumed run's best-epoch folder (ablab.resume) holds that epoch's weights: as it should
warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")

# Lightning's start-up banner and tips; our EpochLogger prints one line per epoch instead.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def curve_columns(fam: Family) -> list[str]:
    """curves.csv's columns for a family: its per-epoch values, the learning rate and time."""
    return ["epoch", *fam.train_metrics, *fam.epoch_metrics, "lr", "epoch_seconds"]


def write_results(
    folder: Path, metrics: dict[str, float], history: list[dict], columns: list[str],
    curves_png: bytes,
) -> None:  # fmt: skip
    """results/<experiment>/: metrics.json (DVC metrics), curves.csv (a column per value),
    and DVC's plots: epochs.csv (one row per epoch and value, for templates/epochs.json) and
    curves.png (the run's learning-curves picture, which needs no network to view)."""
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}  # DVC reads strict JSON
    write_atomic(folder / "metrics.json", json.dumps(finite, indent=2) + "\n")
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in columns))
    write_atomic(folder / "curves.csv", "\n".join(lines) + "\n")
    write_atomic(folder / "epochs.csv", epochs_csv(history, columns))
    write_atomic(folder / "curves.png", curves_png)


NOT_PLOTTED = ("epoch", "lr", "epoch_seconds", "train_objective")


def epochs_csv(history: list[dict], columns: list[str], curve: str | None = None) -> str:
    """Per-epoch values in long form, `epoch,metric,curve,value`: a `*_loss` is metric loss
    with its prefix as the curve (train, val; a GAN's d and g), a `val_*` metric * of curve
    val, anything else its own metric on the training curve. `curve` overrides the curve
    (a suite's variant)."""
    rows = ["epoch,metric,curve,value"]
    for row in history:
        for c in columns:
            if c in NOT_PLOTTED or row.get(c) is None or not math.isfinite(row[c]):
                continue
            if c.endswith("_loss"):
                metric, kind = "loss", c.removesuffix("_loss")
            elif c.startswith("val_"):
                metric, kind = c.removeprefix("val_"), "val"
            else:
                metric, kind = c, "train"
            rows.append(f"{row['epoch']},{metric},{curve or kind},{row[c]:.6g}")
    return "\n".join(rows) + "\n"


@dataclass
class RunResult:
    """What one trained experiment left: its MLflow run, summary metrics and epoch history."""

    run_id: str
    summary: dict[str, float]
    history: list[dict] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)  # as logged to MLflow
    # per test example {"target", "prediction"} where the family gives them (paired tests)
    predictions: dict[str, np.ndarray] | None = None
    curves_png: bytes | None = None  # the learning curves, as logged to MLflow


def predictions_csv(predictions: dict[str, np.ndarray]) -> str:
    """The test predictions as the run's artifact: one line per test example, in test order."""
    rows = zip(predictions["target"].tolist(), predictions["prediction"].tolist(), strict=True)
    return "index,target,prediction\n" + "".join(f"{i},{t},{p}\n" for i, (t, p) in enumerate(rows))


@dataclass
class Diagnosis:
    """The end-of-run checklist (ablab.diagnose): its thresholds and where the run came from."""

    thresholds: DiagnoseParams = field(default_factory=DiagnoseParams)
    suite: str = ""
    variant: str = ""

    def log(self, exp: Experiment, run_id: str, history: list[dict], results: dict[str, float],
            params: dict[str, str], failure: str = "") -> None:  # fmt: skip
        """diagnosis.md and the ablab.diagnosis.<check> tags into the active run; one line."""
        record = diagnose.RunRecord(
            history, results, params, failure, exp.name, self.suite, self.variant
        )
        findings = diagnose.complete(record, diagnose.diagnose(record, self.thresholds), [])
        mlflow.set_tags(diagnose.tags(findings))
        mlflow.log_text(diagnose.markdown(record, findings), "diagnosis.md")
        names = ", ".join(f.check for f in findings) or "no finding"
        print(f"diagnosis: {names} (diagnosis.md; ablab diagnose {run_id})", flush=True)


def _best_row(history: list[dict], task: str, monitor: str) -> dict:
    rows = [r for r in history if monitor in r]
    if not rows:
        return {}
    pick = max if higher_is_better(task, monitor) else min
    return pick(rows, key=lambda r: r[monitor])


def _callbacks(exp: Experiment, fam: Family, run_id: str | None, ckpt_dir: Path):
    stop = exp.train.early_stopping
    mode = "max" if higher_is_better(exp.task, stop.monitor) else "min"
    callbacks: list[pl.Callback] = [
        EpochLogger(run_id, fam.epoch_metrics),
        ModelCheckpoint(dirpath=ckpt_dir, monitor=stop.monitor, mode=mode, save_weights_only=True),
    ]
    if stop.enabled:
        callbacks.append(
            EarlyStopping(monitor=stop.monitor, mode=mode, patience=stop.patience,
                          min_delta=stop.min_delta)
        )  # fmt: skip
    schedule = exp.train.schedule
    if schedule.momentum_epochs:
        callbacks.append(
            MomentumRamp(schedule.momentum_start, exp.train.momentum, schedule.momentum_epochs)
        )
    return callbacks


# values about how training went rather than how good the model is: MLflow tags (summary.*)
TRAINING_FACTS = ("best_epoch", "best_val_loss", "best_val_accuracy", "best_val_mae",
                  "best_val_frechet_distance", "epochs_trained", "seconds_per_epoch",
                  "parameters", "dead_relu_fraction")  # fmt: skip


TIMINGS = ("seconds_per_epoch",)


def _epoch_summary(exp: Experiment, history: list[dict], module) -> dict[str, float]:
    """What the epochs say, for every family: the best epoch by the early-stopping monitor,
    its validation values, the train-val gap in the tested epoch, time and size."""
    hp = exp.train
    best = _best_row(history, exp.task, hp.early_stopping.monitor)
    out: dict[str, float] = {"best_epoch": int(best.get("epoch", 0))}
    kept = ("val_loss", "val_accuracy", "val_mae", "val_frechet_distance")
    out.update({f"best_{k}": best[k] for k in kept if k in best})
    if history:
        tested = best if hp.test_checkpoint == "best" else history[-1]
        nan = float("nan")
        # how far validation loss sits above training loss in the epoch that was tested
        out["train_val_gap"] = tested.get("val_loss", nan) - tested.get("train_loss", nan)
    out["epochs_trained"] = len(history)
    out["seconds_per_epoch"] = (
        sum(r["epoch_seconds"] for r in history) / len(history) if history else 0.0
    )
    out["parameters"] = count_parameters(module) if isinstance(module, torch.nn.Module) else 0
    return out


def learning_curves_png(fam: Family, history: list[dict], title: str) -> bytes:
    """Train and validation loss per epoch beside the family's other validation values."""
    others = [m for m in fam.epoch_metrics if m != "val_loss"]
    return figures.png_bytes(figures.curves_figure(history, f"{title}: learning curves", others))


def progress_bar() -> bool:
    """Lightning's per-batch bar: in a terminal, unless ABLAB_PROGRESS=0 (parallel workers)."""
    return sys.stderr.isatty() and os.environ.get("ABLAB_PROGRESS", "1") != "0"


def _fit(
    exp: Experiment, data: pl.LightningDataModule, run_id: str, fast_dev_run: bool | int,
    extra_callbacks: list[pl.Callback] | None, diagnosis: Diagnosis | None,
    point: resume.ResumePoint, profiler: pl.profilers.Profiler | None = None,
    pretrained_dir: Path | None = None, weights_path: Path | None = None,
) -> RunResult:  # fmt: skip
    """Train, test and log one model into the active MLflow run `run_id`, then diagnose it
    (`profiler`: Lightning's, for make bench; `weights_path`: where the trained network's
    state dict is saved, for the `pretrain` stage; `point`: the run's checkpoint folder, whose
    last epoch training continues from where a killed process left one)."""
    diagnosis = diagnosis or Diagnosis()
    pl.seed_everything(exp.seed, workers=True, verbose=False)
    fam = family(exp.task)
    module = fam.module(exp, data)
    params = tracking.flatten(fam.params(exp, module, data))
    tracking.log_params(run_id, params)
    hp = exp.train
    resume_from = str(point.last) if point.resumable else None
    if resume_from:
        print(f"resuming from {point.last}", flush=True)
    callbacks = _callbacks(exp, fam, run_id, point.best_dir) + list(extra_callbacks or [])
    callbacks.append(resume.LastEpoch(point.last))  # last: the others' hooks have run
    trainer = pl.Trainer(
        max_epochs=hp.max_epochs,
        accelerator=machine.accelerator(hp.accelerator),
        devices=hp.devices,
        precision=hp.precision,
        deterministic=True,
        logger=False,
        # batches per epoch as Lightning's bar in a terminal; logs (DVC) keep one line each
        enable_progress_bar=progress_bar(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=point.folder,
        fast_dev_run=fast_dev_run,
        profiler=profiler,
        # under manual optimization the module clips inside its step; Lightning refuses this
        gradient_clip_val=(
            hp.regularize.grad_clip if getattr(module, "automatic_optimization", True) else None
        ),
    )
    try:
        fit = Fit(trainer, hp.test_checkpoint, fast_dev_run, pretrained_dir, resume_from,
                  machine.accelerator(hp.accelerator), hp.devices, hp.precision)  # fmt: skip
        try:
            fam.run(fit, module, data)
        finally:  # Lightning moved the module back to the CPU: the data goes back there too
            data.trainer = None
    except DivergedError as exc:
        mlflow.set_tag("ablab.failure", f"{exc.kind}: {exc}")
        exc.run_id = run_id
        history = callbacks[0].history
        diagnosis.log(exp, run_id, history, {}, params, f"{exc.kind}: {exc}")
        raise
    fitted_tags = fam.fitted_tags(exp, module)
    if fitted_tags:
        mlflow.set_tags(fitted_tags)
    if weights_path is not None:
        save_weights(module.net, Path(weights_path))
    fitted = fam.fitted_params(exp, module, data)
    if fitted:
        extra = tracking.flatten(fitted)
        tracking.log_params(run_id, extra)
        params.update(extra)
    history = callbacks[0].history
    extras = fam.summary(exp, module, data)
    epochs = {k: v for k, v in _epoch_summary(exp, history, module).items() if k not in extras}
    summary = {**fam.test_results(exp, module, data), **extras, **epochs}
    details = fam.details(exp, module, data)
    inputs = fam.probe_inputs(data) if isinstance(getattr(module, "net", None), nn.Module) else None
    dead = dead_relu_fraction(module.net, inputs) if inputs is not None else None
    if dead is not None:
        details["dead_relu_fraction"] = dead
    # MLflow's metrics hold the curves and the results; how training went (best epoch, size,
    # time) are tags and the per-class scores an artifact, so no chart has a single dot
    logged = {**summary, **details}
    facts = {k: v for k, v in logged.items() if k in TRAINING_FACTS}
    tracking.log_metrics(
        run_id,
        {k: v for k, v in summary.items() if k not in facts},
        step=len(history),
    )
    tracking.log_summary(run_id, facts)
    title = mlflow.active_run().info.run_name
    artifacts = fam.artifacts(exp, module, data, title)
    curves_png = None
    if history:
        curves_png = learning_curves_png(fam, history, title)
        artifacts["learning_curves.png"] = curves_png
    artifacts["params.yaml"] = exp.model_dump(mode="json")
    predictions = fam.predictions(exp, module, data)
    if predictions:
        artifacts["test_predictions.csv"] = predictions_csv(predictions)
    tracking.log_artifacts(artifacts)
    model = fam.loggable_model(exp, module, data) if hp.log_model else None
    if model is not None:
        from ablab.serving import log_model

        log_model(model)
    diagnosis.log(exp, run_id, history, {**summary, **details}, params)
    return RunResult(run_id, summary, history, params, predictions, curves_png)


def save_weights(net: nn.Module, path: Path) -> None:
    """A network's state dict, written through a temporary file so no half-file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)


def train(
    exp: Experiment,
    root: Path,
    mlflow_experiment: str,
    processed_dir: Path | None = None,
    fast_dev_run: bool | int = False,
    suite: str = "",
    variant: str = "",
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
    thresholds: DiagnoseParams | None = None,
    profiler: pl.profilers.Profiler | None = None,
    pretrained_dir: Path | None = None,
    weights_path: Path | None = None,
) -> RunResult:
    """Train and test one resolved experiment as one MLflow run (k-fold: a parent run with a
    child run per fold), diagnosed by the checklist (`thresholds`: params' diagnose section).
    A diverging loss raises DivergedError after marking the run FAILED. Any exception leaving
    here carries the MLflow run's id as `run_id`."""
    diagnosis = Diagnosis(thresholds or DiagnoseParams(), suite, variant)
    root = Path(root)
    processed_dir = Path(processed_dir or root / "data" / "processed")
    torch.set_num_threads(exp.train.threads)
    folds = exp.train.folds
    fam = family(exp.task)
    data = fam.data(exp, processed_dir, fold=(folds, 0) if folds else None)
    data.setup()
    experiment_id = tracking.use_store(root, mlflow_experiment)
    tags = tracking.run_tags(
        exp.name, exp.seed, data.meta["data_hash"], "train", root, suite=suite, variant=variant
    )
    tags["ablab.family"] = exp.task
    tags["ablab.device"] = machine.device(machine.accelerator(exp.train.accelerator))
    tags.update(fam.tags(exp))
    tags.update(extra_tags or {})
    suffix, dvc_tags = tracking.dvc_experiment()  # a DVC experiment's runs, found in MLflow
    tags.update(dvc_tags)
    run_name = (run_name or exp.name) + suffix
    identity = {"experiment": exp.model_dump(mode="json"), "data_hash": data.meta["data_hash"],
                "store": [mlflow.get_tracking_uri(), experiment_id], "run_name": run_name,
                "suite": suite, "variant": variant, "fast_dev_run": fast_dev_run,
                "pretrained_dir": str(pretrained_dir or ""),
                "weights": str(weights_path or "")}  # fmt: skip
    point = resume.open_point(tracking.store_root(root), resume.run_key(identity))
    resumed = _continued_run(point, experiment_id)
    try:
        with mlflow.start_run(run_id=resumed, experiment_id=experiment_id, run_name=run_name,
                              tags=tags) as run:  # fmt: skip
            point.remember(run.info.run_id)
            try:
                if not folds:
                    result = _fit(exp, data, run.info.run_id, fast_dev_run, extra_callbacks,
                                  diagnosis, point, profiler, pretrained_dir,
                                  weights_path)  # fmt: skip
                else:
                    result = _cross_validate(exp, data, processed_dir, run.info.run_id, tags,
                                             fast_dev_run, diagnosis, point)  # fmt: skip
            except (KeyboardInterrupt, SystemExit):
                mlflow.end_run("KILLED")  # resumed by the next start with the same params
                raise
            except BaseException as exc:
                if not getattr(exc, "run_id", None):
                    exc.run_id = run.info.run_id
                raise
            url = tracking.run_url(run.info.experiment_id, run.info.run_id)
            print(f"MLflow run {run.info.run_id}: {url}", flush=True)
    except (KeyboardInterrupt, SystemExit):
        point.release()  # the checkpoint stays for the next start
        raise
    except BaseException:
        point.finish()
        raise
    point.finish()
    return result


def _continued_run(point: resume.ResumePoint, experiment_id: str) -> str | None:
    """The MLflow run a killed process left in `point` to go on with; None (and the folder
    emptied) where there is none, or it is gone from the store: the run starts afresh."""
    if point.run_id and tracking.can_resume(point.run_id, experiment_id):
        return point.run_id
    point.start_over()
    return None


def _cross_validate(
    exp: Experiment, first: pl.LightningDataModule, processed_dir: Path, parent_id: str,
    tags: dict[str, str], fast_dev_run: bool | int, diagnosis: Diagnosis,
    point: resume.ResumePoint,
) -> RunResult:  # fmt: skip
    """One child run per fold; the parent gets each summary metric's mean and std over folds.
    A fold finished before a kill is read back from `point`, the one in flight resumed."""
    k = exp.train.folds
    mlflow.set_tag("ablab.folds", str(k))
    parent = mlflow.active_run().info
    folds: list[RunResult] = []
    for i in range(k):
        done = point.folder / f"fold{i + 1}.json"
        if done.exists():
            folds.append(RunResult(**json.loads(done.read_text())))
            continue
        data = first if i == 0 else family(exp.task).data(exp, processed_dir, (k, i))
        data.setup()
        child_tags = {**tags, "ablab.fold": str(i + 1)}
        name = f"{parent.run_name}/fold{i + 1}"
        fold_point = point.child(f"fold{i + 1}")
        resumed = _continued_run(fold_point, parent.experiment_id)
        with mlflow.start_run(run_id=resumed, experiment_id=parent.experiment_id, run_name=name,
                              nested=True, tags=child_tags) as child:  # fmt: skip
            fold_point.remember(child.info.run_id)
            try:
                result = _fit(exp, data, child.info.run_id, fast_dev_run, None, diagnosis,
                              fold_point)  # fmt: skip
            except DivergedError as exc:
                mlflow.set_tag("ablab.failure", f"{exc.kind} in fold {i + 1}: {exc}")
                exc.run_id = parent_id
                raise
        kept = {"run_id": result.run_id, "summary": result.summary, "history": result.history,
                "params": result.params}  # fmt: skip
        write_atomic(done, json.dumps(kept))
        fold_point.finish()
        folds.append(RunResult(**kept))
    summary: dict[str, float] = {}
    for key in folds[0].summary:
        values = np.array([f.summary[key] for f in folds], dtype=float)
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std(ddof=1))
    summary["folds"] = k
    tracking.log_params(parent_id, folds[0].params)  # the experiment's, as fold 1 logged them
    tracking.log_metrics(parent_id, summary)
    return RunResult(parent_id, summary, _mean_history([f.history for f in folds]))


def _mean_history(histories: list[list[dict]]) -> list[dict]:
    """Per epoch, the mean of each value over the folds that reached that epoch."""
    rows = []
    for epoch in range(max((len(h) for h in histories), default=0)):
        reached = [h[epoch] for h in histories if len(h) > epoch]
        keys = [k for k in reached[0] if k != "epoch"]
        row = {"epoch": epoch}
        row.update({k: float(np.mean([r[k] for r in reached if k in r])) for k in keys})
        rows.append(row)
    return rows


def run_experiment(
    params: Params,
    name: str,
    root: Path,
    processed_dir: Path | None = None,
    folder: Path | None = None,
    fast_dev_run: bool | int = False,
    run_name: str | None = None,
) -> dict[str, float]:
    """Train and test experiment `name` of params.yaml, write its results to `folder`
    (default results/<name>/, the DVC stage's); return its summary."""
    root = Path(root)
    exp = params.experiment(name)
    result = train(exp, root, params.mlflow_experiment, processed_dir, fast_dev_run,
                   run_name=run_name, thresholds=params.diagnose)  # fmt: skip
    fam = family(exp.task)
    # k-fold and no-epoch runs log no curves picture; DVC's plot needs one all the same
    png = result.curves_png or learning_curves_png(fam, result.history, name)
    # metrics.json: the same params and seed give the same bytes, so no time in it
    kept = {k: v for k, v in result.summary.items() if k.removesuffix("_std") not in TIMINGS}
    write_results(Path(folder or root / "results" / name), kept, result.history,
                  curve_columns(fam), png)  # fmt: skip
    return result.summary
