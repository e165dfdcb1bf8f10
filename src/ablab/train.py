"""One experiment end to end: data -> network -> Lightning fit/test -> MLflow run -> results/."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from ablab import figures, tracking
from ablab.config import ConfigError, Experiment, Params
from ablab.data.datamodules import ImageDataModule
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


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, path)


def write_results(folder: Path, metrics: dict[str, float], history: list[dict]) -> None:
    """results/<experiment>/metrics.json (DVC metrics) and curves.csv (DVC plots)."""
    _write_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    columns = ["epoch", *tracking.EPOCH_METRICS, "lr", "epoch_seconds"]
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in columns))
    _write_atomic(folder / "curves.csv", "\n".join(lines) + "\n")


def _best_epoch(history: list[dict], monitor: str) -> int:
    rows = [r for r in history if monitor in r]
    if not rows:
        return 0
    pick = min if monitor == "val_loss" else max
    return int(pick(rows, key=lambda r: r[monitor])["epoch"])


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


def run_experiment(
    params: Params,
    name: str,
    root: Path,
    processed_dir: Path | None = None,
    results_dir: Path | None = None,
    fast_dev_run: bool = False,
    suite: str = "",
    variant: str = "",
) -> dict[str, float]:
    """Train and test experiment `name`; one MLflow run; returns the test metrics."""
    root = Path(root)
    exp = params.experiment(name)
    processed_dir = Path(processed_dir or root / "data" / "processed")
    torch.set_num_threads(exp.train.threads)
    pl.seed_everything(exp.seed, workers=True, verbose=False)

    data = ImageDataModule(processed_dir / exp.dataset, exp.train.batch_size, exp.seed, exp.subset)
    data.setup()
    try:
        net = build(exp.model, data.input_shape, len(data.classes))
    except ValueError as exc:
        raise ConfigError(f"params.yaml: experiments.{name}.model: {exc}") from None
    hp = exp.train
    task = ClassificationTask(
        net, len(data.classes), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum,
        hp.label_smoothing, hp.schedule.model_dump(), hp.max_epochs,
    )  # fmt: skip

    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    tags = tracking.run_tags(
        name, exp.seed, data.meta["data_hash"], "train", root, suite=suite, variant=variant
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
        run_id = run.info.run_id
        logged = exp.model_dump(exclude={"name"})
        logged["data"] = {
            "val_fraction": data.meta["val_fraction"],
            "train_size": data.meta["train_size"],
            "data_hash": data.meta["data_hash"],
        }
        logged["parameters"] = count_parameters(net)
        tracking.log_params(run_id, tracking.flatten(logged))
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
            )
            try:
                trainer.fit(task, datamodule=data)
            except DivergedError as exc:
                mlflow.set_tag("ablab.failure", f"diverged: {exc}")
                raise
            trainer.test(task, datamodule=data, ckpt_path=None if fast_dev_run else "best",
                         verbose=False)  # fmt: skip
        history = callbacks[0].history
        metrics = {k: float(trainer.callback_metrics[k]) for k in TEST_METRICS}
        scores = scores_from_confusion(task.test_confusion)
        per_class = {}
        for i, cls in enumerate(data.classes):
            for kind in ("precision", "recall", "f1"):
                per_class[f"test_{kind}_{slug(cls)}"] = float(scores[kind][i])
        best = _best_epoch(history, hp.early_stopping.monitor)
        summary = {
            **metrics,
            "best_epoch": best,
            "epochs_trained": len(history),
            "seconds_per_epoch": (
                sum(r["epoch_seconds"] for r in history) / len(history) if history else 0.0
            ),
            "parameters": count_parameters(net),
        }
        tracking.log_metrics(run_id, {**summary, **per_class}, step=len(history))
        example = data.tensors["test"].tensors[0][:2].numpy()
        _log_artifacts(exp, net, task.test_confusion, data.classes, history, per_class, example)
    write_results(Path(results_dir or root / "results") / name, summary, history)
    return summary


def _log_artifacts(exp, net, confusion, classes, history, per_class, example) -> None:
    fig = figures.confusion_figure(confusion.numpy(), classes, f"{exp.name}: test confusion")
    mlflow.log_figure(fig, "confusion_matrix.png")
    figures.close(fig)
    if history:
        fig = figures.curves_figure(history, f"{exp.name}: learning curves")
        mlflow.log_figure(fig, "learning_curves.png")
        figures.close(fig)
    mlflow.log_dict(exp.model_dump(mode="json"), "params.yaml")
    mlflow.log_dict(per_class, "per_class_metrics.json")
    if exp.train.log_model:
        mlflow.pytorch.log_model(
            net.eval(), name="model", input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )  # fmt: skip
