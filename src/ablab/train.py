"""One experiment end to end: data -> network -> Lightning fit/test -> MLflow run -> results/."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from ablab import figures, regularize, tracking
from ablab.config import ConfigError, Experiment, Params
from ablab.data.datamodules import ImageDataModule
from ablab.files import write_atomic
from ablab.models import build, count_parameters
from ablab.tasks.classify import ClassificationTask, DivergedError, scores_from_confusion

# Data lives in memory as tensors: worker processes would only add start-up cost.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*`isinstance\\(treespec, LeafSpec\\)`.*")

# Lightning's start-up banner and tips; our EpochLogger prints one line per epoch instead.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

TEST_METRICS = ("test_loss", "test_accuracy", "test_macro_f1")


def slug(text: str) -> str:
    """A class name as a metric-name fragment: 'T-shirt/top' -> 't_shirt_top'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def write_results(folder: Path, metrics: dict[str, float], history: list[dict]) -> None:
    """results/<experiment>/metrics.json (DVC metrics) and curves.csv (DVC plots)."""
    write_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    columns = ["epoch", *tracking.EPOCH_METRICS, "lr", "epoch_seconds"]
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in columns))
    write_atomic(folder / "curves.csv", "\n".join(lines) + "\n")


@dataclass
class RunResult:
    """What one trained experiment left: its MLflow run, summary metrics and epoch history."""

    run_id: str
    summary: dict[str, float]
    history: list[dict] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)  # as logged to MLflow


def _best_row(history: list[dict], monitor: str) -> dict:
    rows = [r for r in history if monitor in r]
    if not rows:
        return {}
    pick = min if monitor == "val_loss" else max
    return pick(rows, key=lambda r: r[monitor])


def _callbacks(exp: Experiment, run_id: str | None, ckpt_dir: str) -> list[pl.Callback]:
    stop = exp.train.early_stopping
    mode = "min" if stop.monitor == "val_loss" else "max"
    callbacks: list[pl.Callback] = [
        tracking.EpochLogger(run_id),
        ModelCheckpoint(dirpath=ckpt_dir, monitor=stop.monitor, mode=mode, save_weights_only=True),
    ]
    if stop.enabled:
        callbacks.append(
            EarlyStopping(monitor=stop.monitor, mode=mode, patience=stop.patience,
                          min_delta=stop.min_delta)
        )  # fmt: skip
    return callbacks


def _network(exp: Experiment, data: ImageDataModule) -> torch.nn.Module:
    """The experiment's network with its network-side regularizers in place."""
    try:
        net = build(exp.model, data.input_shape, len(data.classes))
    except ValueError as exc:
        raise ConfigError(f"params.yaml: experiments.{exp.name}.model: {exc}") from None
    reg = exp.train.regularize
    if reg.dropconnect:
        regularize.add_dropconnect(net, reg.dropconnect)
    if reg.hidden_noise:
        regularize.add_hidden_noise(net, reg.hidden_noise)
    return net


def _task(exp: Experiment, net: torch.nn.Module, data: ImageDataModule) -> ClassificationTask:
    hp, reg = exp.train, exp.train.regularize
    weights = None
    if hp.imbalance == "weighted_loss":
        weights = regularize.class_weights(data.train_labels, len(data.classes))
    return ClassificationTask(
        net, len(data.classes), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum,
        hp.schedule.model_dump(), hp.max_epochs, reg.label_smoothing, reg.l1, reg.l2,
        reg.disturb_label, reg.max_norm, weights,
    )  # fmt: skip


def _fit(
    exp: Experiment, data: ImageDataModule, run_id: str, fast_dev_run: bool | int
) -> RunResult:
    """Train, test and log one model into the active MLflow run `run_id`."""
    pl.seed_everything(exp.seed, workers=True, verbose=False)
    net = _network(exp, data)
    task = _task(exp, net, data)
    hp = exp.train
    logged = exp.model_dump(exclude={"name"})
    logged["data"] = {k: data.meta[k] for k in ("val_fraction", "train_size", "val_size")}
    logged["data"]["data_hash"] = data.meta["data_hash"]
    logged["parameters"] = count_parameters(net)
    params = tracking.flatten(logged)
    tracking.log_params(run_id, params)
    with tempfile.TemporaryDirectory(prefix="ablab-ckpt-") as ckpt_dir:
        callbacks = _callbacks(exp, run_id, ckpt_dir)
        trainer = pl.Trainer(
            max_epochs=hp.max_epochs,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=callbacks,
            default_root_dir=ckpt_dir,
            fast_dev_run=fast_dev_run,
            gradient_clip_val=hp.regularize.grad_clip,
        )
        try:
            trainer.fit(task, datamodule=data)
        except DivergedError as exc:
            mlflow.set_tag("ablab.failure", f"diverged: {exc}")
            exc.run_id = run_id
            raise
        best = hp.test_checkpoint == "best" and not fast_dev_run
        trainer.test(task, datamodule=data, ckpt_path="best" if best else None, verbose=False)
    history = callbacks[0].history
    metrics = {k: float(trainer.callback_metrics[k]) for k in TEST_METRICS}
    scores = scores_from_confusion(task.test_confusion)
    per_class = {}
    for i, cls in enumerate(data.classes):
        for kind in ("precision", "recall", "f1"):
            per_class[f"test_{kind}_{slug(cls)}"] = float(scores[kind][i])
    if exp.skew is not None:
        metrics["test_minority_recall"] = float(scores["recall"][exp.skew.classes].mean())
    best = _best_row(history, hp.early_stopping.monitor)
    tested = best if hp.test_checkpoint == "best" or not history else history[-1]
    nan = float("nan")
    summary = {
        **metrics,
        "best_epoch": int(best.get("epoch", 0)),
        "best_val_loss": best.get("val_loss", nan),
        "best_val_accuracy": best.get("val_accuracy", nan),
        # how far validation loss sits above training loss in the epoch that was tested
        "train_val_gap": tested.get("val_loss", nan) - tested.get("train_loss", nan),
        "epochs_trained": len(history),
        "seconds_per_epoch": (
            sum(r["epoch_seconds"] for r in history) / len(history) if history else 0.0
        ),
        "parameters": count_parameters(net),
    }
    tracking.log_metrics(run_id, {**summary, **per_class}, step=len(history))
    example = data.tensors["test"].tensors[0][:2].numpy()
    _log_artifacts(exp, net, task.test_confusion, data.classes, history, per_class, example)
    return RunResult(run_id, summary, history, params)


def train(
    exp: Experiment,
    root: Path,
    mlflow_experiment: str,
    processed_dir: Path | None = None,
    fast_dev_run: bool | int = False,
    suite: str = "",
    variant: str = "",
    run_name: str | None = None,
) -> RunResult:
    """Train and test one resolved experiment as one MLflow run (k-fold: a parent run with a
    child run per fold). A diverging loss raises DivergedError after marking the run FAILED."""
    root = Path(root)
    processed_dir = Path(processed_dir or root / "data" / "processed")
    torch.set_num_threads(exp.train.threads)
    folds = exp.train.folds
    data = ImageDataModule.for_experiment(exp, processed_dir, fold=(folds, 0) if folds else None)
    data.setup()
    experiment_id = tracking.use_store(root, mlflow_experiment)
    tags = tracking.run_tags(
        exp.name, exp.seed, data.meta["data_hash"], "train", root, suite=suite, variant=variant
    )
    run_name = run_name or exp.name
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        if not folds:
            return _fit(exp, data, run.info.run_id, fast_dev_run)
        return _cross_validate(exp, data, processed_dir, run.info.run_id, tags, fast_dev_run)


def _cross_validate(
    exp: Experiment, first: ImageDataModule, processed_dir: Path, parent_id: str,
    tags: dict[str, str], fast_dev_run: bool | int,
) -> RunResult:  # fmt: skip
    """One child run per fold; the parent gets each summary metric's mean and std over folds."""
    k = exp.train.folds
    mlflow.set_tag("ablab.folds", str(k))
    parent = mlflow.active_run().info
    folds: list[RunResult] = []
    for i in range(k):
        data = first if i == 0 else ImageDataModule.for_experiment(exp, processed_dir, (k, i))
        data.setup()
        child_tags = {**tags, "ablab.fold": str(i + 1)}
        name = f"{parent.run_name}/fold{i + 1}"
        with mlflow.start_run(
            experiment_id=parent.experiment_id, run_name=name, nested=True, tags=child_tags
        ) as child:
            try:
                folds.append(_fit(exp, data, child.info.run_id, fast_dev_run))
            except DivergedError as exc:
                mlflow.set_tag("ablab.failure", f"diverged in fold {i + 1}: {exc}")
                exc.run_id = parent_id
                raise
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
    results_dir: Path | None = None,
    fast_dev_run: bool | int = False,
) -> dict[str, float]:
    """Train and test experiment `name` of params.yaml, write results/<name>/; its summary."""
    root = Path(root)
    exp = params.experiment(name)
    result = train(exp, root, params.mlflow_experiment, processed_dir, fast_dev_run)
    write_results(Path(results_dir or root / "results") / name, result.summary, result.history)
    return result.summary


def _log_artifacts(exp, net, confusion, classes, history, per_class, example) -> None:
    title = mlflow.active_run().info.run_name
    fig = figures.confusion_figure(confusion.numpy(), classes, f"{title}: test confusion")
    mlflow.log_figure(fig, "confusion_matrix.png")
    figures.close(fig)
    if history:
        fig = figures.curves_figure(history, f"{title}: learning curves")
        mlflow.log_figure(fig, "learning_curves.png")
        figures.close(fig)
    mlflow.log_dict(exp.model_dump(mode="json"), "params.yaml")
    mlflow.log_dict(per_class, "per_class_metrics.json")
    if exp.train.log_model:
        mlflow.pytorch.log_model(
            net.eval(), name="model", input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )  # fmt: skip
