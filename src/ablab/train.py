"""One experiment end to end: data -> network -> Lightning fit/test -> MLflow run -> results/."""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
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
from ablab.data.datamodules import (
    ImageDataModule,
    PairsDataModule,
    SeriesDataModule,
    TextDataModule,
)
from ablab.files import write_atomic
from ablab.models import build, count_parameters
from ablab.tasks.base import DivergedError
from ablab.tasks.classify import ClassificationTask, confusion_matrix, scores_from_confusion
from ablab.tasks.regress import RegressionTask
from ablab.tasks.translate import Seq2SeqTask

# Data lives in memory as tensors: worker processes would only add start-up cost.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*`isinstance\\(treespec, LeafSpec\\)`.*")

# Lightning's start-up banner and tips; our EpochLogger prints one line per epoch instead.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

TEST_METRICS = ("test_loss", "test_accuracy", "test_macro_f1")
REGRESSION_METRICS = ("test_loss", "test_mae", "test_rmse")
SEQ2SEQ_METRICS = ("test_loss", "test_accuracy", "test_char_accuracy")  # accuracy: exact match


def slug(text: str) -> str:
    """A class name as a metric-name fragment: 'T-shirt/top' -> 't_shirt_top'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def write_results(folder: Path, metrics: dict[str, float], history: list[dict]) -> None:
    """results/<experiment>/metrics.json (DVC metrics) and curves.csv (DVC plots)."""
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}  # DVC reads strict JSON
    write_atomic(folder / "metrics.json", json.dumps(finite, indent=2) + "\n")
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
        outputs = len(data.classes) or 1  # a series: one value
        meta = data.meta
        vocab = meta.get("vocab_size", meta.get("source_vocab_size"))
        net = build(exp.model, data.input_shape, outputs, vocab, meta.get("target_vocab_size"))
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
        reg.disturb_label, reg.max_norm, weights, track_grad_norms=exp.model.arch == "rnn",
    )  # fmt: skip


def _fit(
    exp: Experiment, data: ImageDataModule, run_id: str, fast_dev_run: bool | int,
    extra_callbacks: list[pl.Callback] | None = None,
) -> RunResult:  # fmt: skip
    """Train, test and log one model into the active MLflow run `run_id`."""
    pl.seed_everything(exp.seed, workers=True, verbose=False)
    if exp.model.arch == "tfidf":
        return _fit_tfidf(exp, data, run_id)
    net = _network(exp, data)
    regression = isinstance(data, SeriesDataModule)
    pairs = isinstance(data, PairsDataModule)
    if regression:
        task = _regression_task(exp, net, data)
    elif pairs:
        hp = exp.train
        task = Seq2SeqTask(net, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum,
                           hp.schedule.model_dump(), hp.max_epochs)  # fmt: skip
    else:
        task = _task(exp, net, data)
    hp = exp.train
    logged = exp.model_dump(exclude={"name"})
    logged["data"] = {k: data.meta[k] for k in ("val_fraction", "train_size", "val_size")}
    logged["data"]["data_hash"] = data.meta["data_hash"]
    logged["parameters"] = count_parameters(net)
    params = tracking.flatten(logged)
    tracking.log_params(run_id, params)
    with tempfile.TemporaryDirectory(prefix="ablab-ckpt-") as ckpt_dir:
        callbacks = _callbacks(exp, run_id, ckpt_dir) + list(extra_callbacks or [])
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
    names = REGRESSION_METRICS if regression else SEQ2SEQ_METRICS if pairs else TEST_METRICS
    metrics = {k: float(trainer.callback_metrics[k]) for k in names}
    per_class = {}
    if not (regression or pairs):
        scores = scores_from_confusion(task.test_confusion)
        per_class = _per_class(task.test_confusion, data.classes)
        if exp.skew is not None:
            metrics["test_minority_recall"] = float(scores["recall"][exp.skew.classes].mean())
    best = _best_row(history, hp.early_stopping.monitor)
    tested = best if hp.test_checkpoint == "best" or not history else history[-1]
    nan = float("nan")
    summary = {
        **metrics,
        "best_epoch": int(best.get("epoch", 0)),
        **{f"best_{k}": best[k] for k in ("val_loss", "val_accuracy", "val_mae") if k in best},
        # how far validation loss sits above training loss in the epoch that was tested
        "train_val_gap": tested.get("val_loss", nan) - tested.get("train_loss", nan),
        "epochs_trained": len(history),
        "seconds_per_epoch": (
            sum(r["epoch_seconds"] for r in history) / len(history) if history else 0.0
        ),
        "parameters": count_parameters(net),
    }
    tracking.log_metrics(run_id, {**summary, **per_class}, step=len(history))
    if regression:
        _log_forecast(exp, task, data, history)
    elif pairs:
        _log_translations(exp, net, data, history)
    else:
        _log_artifacts(exp, net, task.test_confusion, data, history, per_class)
    return RunResult(run_id, summary, history, params)


def _regression_task(exp: Experiment, net: torch.nn.Module, data) -> RegressionTask:
    hp, reg = exp.train, exp.train.regularize
    return RegressionTask(
        net, data.meta["std"], hp.regression_loss, hp.optimizer, hp.lr, hp.weight_decay,
        hp.momentum, hp.schedule.model_dump(), hp.max_epochs, reg.l1, reg.l2, reg.max_norm,
    )  # fmt: skip


def _log_forecast(exp: Experiment, task: RegressionTask, data, history: list[dict]) -> None:
    """Test-period forecasts against the actual values, in the data's units."""
    title = mlflow.active_run().info.run_name
    actual = data.tensors["test"].tensors[-1] * data.meta["std"] + data.meta["mean"]
    predicted = task.test_predictions * data.meta["std"] + data.meta["mean"]
    first_year = data.meta["split_years"]["test"][0]
    fig = figures.forecast_figure(
        first_year, actual.tolist(), predicted.tolist(), f"{title}: one-step test forecasts"
    )
    mlflow.log_figure(fig, "forecast.png")
    figures.close(fig)
    _log_curves_and_params(exp, history, title)


def _per_class(confusion: torch.Tensor, classes: list[str]) -> dict[str, float]:
    scores = scores_from_confusion(confusion)
    return {
        f"test_{kind}_{slug(cls)}": float(scores[kind][i])
        for i, cls in enumerate(classes)
        for kind in ("precision", "recall", "f1")
    }


def _fit_tfidf(exp: Experiment, data: ImageDataModule, run_id: str) -> RunResult:
    """The linear text baseline (scikit-learn), logged like a network: same metrics, tags and
    confusion matrix, no epochs. The texts go through the networks' tokenizer."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from ablab.data.text import tokenize

    m = exp.model
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(
        tokenizer=tokenize, lowercase=False, token_pattern=None, sublinear_tf=True,
        ngram_range=(1, m.ngram_max), min_df=m.min_df,
    )  # fmt: skip
    x_train = vectorizer.fit_transform(data.texts("train"))
    weighted = exp.train.imbalance == "weighted_loss"
    model = LogisticRegression(C=m.C, max_iter=2000, class_weight="balanced" if weighted else None)
    model.fit(x_train, data.train_labels.numpy())
    seconds = time.perf_counter() - started
    y_test = data.tensors["test"].tensors[-1]
    probs = model.predict_proba(vectorizer.transform(data.texts("test")))
    preds = torch.from_numpy(probs.argmax(1))
    confusion = confusion_matrix(preds, y_test, len(data.classes))
    scores = scores_from_confusion(confusion)
    params = tracking.flatten(
        {**exp.model_dump(exclude={"name"}), "data": {"train_size": data.meta["train_size"]},
         "features": len(vectorizer.vocabulary_)}
    )  # fmt: skip
    tracking.log_params(run_id, params)
    summary = {
        "test_loss": float(log_loss(y_test.numpy(), probs, labels=range(len(data.classes)))),
        "test_accuracy": float(scores["accuracy"]),
        "test_macro_f1": float(scores["macro_f1"]),
        "best_epoch": 0,
        "epochs_trained": 0,
        "seconds_per_epoch": seconds,  # the one fit
        "parameters": int(model.coef_.size + model.intercept_.size),
    }
    per_class = _per_class(confusion, data.classes)
    tracking.log_metrics(run_id, {**summary, **per_class})
    title = mlflow.active_run().info.run_name
    fig = figures.confusion_figure(confusion.numpy(), data.classes, f"{title}: test confusion")
    mlflow.log_figure(fig, "confusion_matrix.png")
    figures.close(fig)
    mlflow.log_dict(per_class, "per_class_metrics.json")
    return RunResult(run_id, summary, [], params)


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
) -> RunResult:
    """Train and test one resolved experiment as one MLflow run (k-fold: a parent run with a
    child run per fold). A diverging loss raises DivergedError after marking the run FAILED.
    Any exception leaving here carries the MLflow run's id as `run_id`."""
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
    tags.update(extra_tags or {})
    run_name = run_name or exp.name
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        try:
            if not folds:
                return _fit(exp, data, run.info.run_id, fast_dev_run, extra_callbacks)
            return _cross_validate(exp, data, processed_dir, run.info.run_id, tags, fast_dev_run)
        except BaseException as exc:
            if not getattr(exc, "run_id", None):
                exc.run_id = run.info.run_id
            raise


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


def _log_curves_and_params(exp: Experiment, history: list[dict], title: str) -> None:
    """What every trained run logs: its learning curves and its resolved params."""
    if history:
        fig = figures.curves_figure(history, f"{title}: learning curves")
        mlflow.log_figure(fig, "learning_curves.png")
        figures.close(fig)
    mlflow.log_dict(exp.model_dump(mode="json"), "params.yaml")


def _log_artifacts(exp, net, confusion, data, history, per_class) -> None:
    title = mlflow.active_run().info.run_name
    fig = figures.confusion_figure(confusion.numpy(), data.classes, f"{title}: test confusion")
    mlflow.log_figure(fig, "confusion_matrix.png")
    figures.close(fig)
    _log_curves_and_params(exp, history, title)
    mlflow.log_dict(per_class, "per_class_metrics.json")
    if isinstance(data, TextDataModule):
        mlflow.log_dict(data.vocab, "vocab.json")
        if getattr(net, "attention", None) is not None:
            _log_attention(net, data, title)
    elif exp.train.log_model:
        example = data.tensors["test"].tensors[0][:2].numpy()
        mlflow.pytorch.log_model(
            net.eval(), name="model", input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )  # fmt: skip


def _log_attention(net, data: TextDataModule, title: str, count: int = 6) -> None:
    """A heat map of the attention weights over the tokens of test examples, two per class."""
    labels = data.tensors["test"].tensors[2]
    per_class = max(count // len(data.classes), 1)
    picks = torch.cat([torch.nonzero(labels == c).flatten()[:per_class]
                       for c in range(len(data.classes))])  # fmt: skip
    tokens, lengths, labels = (t[picks] for t in data.tensors["test"].tensors)
    net.eval()
    with torch.no_grad():
        preds = net(tokens, lengths).argmax(1)
    weights = net.last_attention
    rows = []
    for i in range(len(tokens)):
        words = [data.vocab[t] for t in tokens[i, : lengths[i]].tolist()]
        label = f"true {data.classes[labels[i]]}, predicted {data.classes[preds[i]]}"
        rows.append((words, weights[i, : lengths[i]].tolist(), label))
    fig = figures.attention_figure(rows, f"{title}: attention over test tweets")
    mlflow.log_figure(fig, "attention.png")
    figures.close(fig)


def _log_translations(exp: Experiment, net, data: PairsDataModule, history, count: int = 4):
    """Greedy decodings of the first test pairs and, with attention, their heat maps."""
    from ablab.data.dates import BOS_ID, EOS_ID

    title = mlflow.active_run().info.run_name
    source, lengths, target = (t[:count] for t in data.tensors["test"].tensors)
    net.eval()
    decoded = net.greedy(source, lengths, target.shape[1], BOS_ID)
    rows = []
    for i in range(count):
        chars = [data.source_vocab[t] for t in source[i, : lengths[i]].tolist()]
        out = []
        for t in decoded[i].tolist():
            if t == EOS_ID:
                break
            out.append(data.target_vocab[t])
        rows.append({"source": "".join(chars), "decoded": "".join(out)})
        if net.last_attention is not None:
            weights = net.last_attention[i, : len(out), : lengths[i]].numpy()
            fig = figures.alignment_figure(chars, out, weights, f"{title}: attention")
            mlflow.log_figure(fig, f"attention_{i}.png")
            figures.close(fig)
    mlflow.log_dict(rows, "test_decodings.json")
    _log_curves_and_params(exp, history, title)
