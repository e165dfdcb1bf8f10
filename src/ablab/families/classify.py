"""Family `classify`: images or token sequences -> classes. Cross-entropy with the loss-side
regularizers (label smoothing, class weights, DisturbLabel, L1/L2 penalties, max-norm),
accuracy, macro-F1, per-class metrics and a confusion matrix at test time; the TF-IDF +
logistic-regression baseline is the same family without a network."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.config import DATASETS, Experiment
from ablab.config.pretraining import pretraining, pretraining_key
from ablab.data.augment import affine
from ablab.data.datamodules import ImageDataModule, TextDataModule
from ablab.data.text import OOV_ID, TOKENIZER
from ablab.families.base import (
    Family,
    Fit,
    Loggable,
    Sums,
    Task,
    build_error,
    network_regularizers,
    optimizer_hparams,
    own_random_stream,
)
from ablab.families.masked_lm import mlm_network
from ablab.figures import Figure, plt
from ablab.models import build
from ablab.models.transformer import recording_attention


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[i, j] = examples of true class i predicted as j."""
    flat = target * num_classes + preds
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accuracy, per-class precision/recall/F1 and macro-F1; 0 where a ratio is undefined."""
    cm = cm.double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
    return {
        "accuracy": tp.sum() / cm.sum().clamp(min=1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": f1.mean(),
    }


class ClassificationTask(Task):
    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        schedule: dict | None = None,
        max_epochs: int = 1,
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        disturb_label: float = 0.0,
        max_norm: float | None = None,
        class_weights: torch.Tensor | None = None,
        gan_augment: dict | None = None,  # Classify.run adds a GAN's images before fitting
        ae_augment: dict | None = None,  # Classify.run adds decoded images before fitting
        test_shift: int = 0,  # also score the test images moved by up to this many pixels
        background: float = 0.0,  # the value a moved image's uncovered pixels take
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "class_weights"])
        self.net = net
        self.num_classes = num_classes
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._reset_eval()
        self.test_confusion: torch.Tensor | None = None
        self.test_predictions: dict[str, np.ndarray] = {}
        # a network that starts pretrained (`ablab.config.pretraining`): the experiment that
        # pretrains it, its key, and the MLflow run it was pretrained in (once loaded)
        self.pretrain: Experiment | None = None
        self.pretrain_key = ""
        self.pretrained_run = ""

    def _reset_eval(self) -> None:
        self._sums = Sums()
        self._confusion: torch.Tensor | None = None  # made on the device of the first batch
        # (targets, predictions, class probabilities) per batch
        self._seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def objective(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What training minimises: the (smoothed, weighted) cross-entropy plus the penalties."""
        hp = self.hparams
        loss = F.cross_entropy(
            logits, y, weight=self.class_weights, label_smoothing=hp.label_smoothing
        )
        if hp.l1 or hp.l2:
            loss = loss + regularize.penalty(self.net, hp.l1, hp.l2)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        *inputs, y = batch  # (x, y), or (tokens, lengths, y) for sequences
        logits = self(*inputs)
        targets = regularize.disturb_labels(y, self.hparams.disturb_label, self.num_classes)
        objective = self.objective(logits, targets)
        # train_loss is the plain cross-entropy on the true labels, comparable with val_loss
        # whatever the regularizers add to the objective
        hp = self.hparams
        plain = not (hp.label_smoothing or hp.l1 or hp.l2 or hp.disturb_label) and (
            self.class_weights is None
        )
        loss = objective if plain else F.cross_entropy(logits.detach(), y)
        self.record_train(loss, objective, len(y))
        return objective

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.max_norm is not None:
            regularize.apply_max_norm(self.net, self.hparams.max_norm)

    def _eval_step(self, batch) -> torch.Tensor:
        """Sums a validation or test batch's loss and confusion; returns its logits."""
        *inputs, y = batch
        logits = self(*inputs)
        preds = logits.argmax(1)
        self._sums.add(loss=F.cross_entropy(logits, y, reduction="sum"), count=len(y))
        batch = confusion_matrix(preds, y, self.num_classes)
        self._confusion = batch if self._confusion is None else self._confusion + batch
        return logits

    def _eval_end(self, prefix: str) -> torch.Tensor:
        """The split's values, read from the device once; the confusion matrix, on the host."""
        sums = self._sums.read()
        confusion = self._confusion.cpu() if self._confusion is not None else torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.long)  # fmt: skip
        scores = scores_from_confusion(confusion)
        self.publish(prefix, {
            "loss": sums.get("loss", 0.0) / max(sums.get("count", 0), 1),
            "accuracy": scores["accuracy"].float(),
            "macro_f1": scores["macro_f1"].float(),
        })  # fmt: skip
        self._reset_eval()
        return confusion

    def test_step(self, batch, batch_idx: int) -> None:
        logits = self._eval_step(batch).detach()
        # kept for the test predictions only (validation keeps none)
        self._seen.append((batch[-1], logits.argmax(1), logits.float().softmax(1)))
        if self.hparams.test_shift:
            x, y = batch
            shifted = shifted_test_images(x, self.hparams.test_shift, self.hparams.background,
                                          batch_idx)  # fmt: skip
            self._sums.add(shifted_correct=(self(shifted).argmax(1) == y).sum())

    def on_test_epoch_end(self) -> None:
        targets, preds, probabilities = zip(*self._seen, strict=True)
        self.test_predictions = {"target": torch.cat(targets).cpu().numpy(),
                                 "prediction": torch.cat(preds).cpu().numpy(),
                                 "probability": torch.cat(probabilities).cpu().numpy()}  # fmt: skip
        shifted = None
        if self.hparams.test_shift:
            sums = self._sums.read()
            shifted = sums["shifted_correct"] / max(sums["count"], 1)
        self.test_confusion = self._eval_end("test")
        if shifted is not None:
            drop = self.test_results["test_accuracy"] - shifted
            self.publish("test", {"shifted_accuracy": shifted, "shift_drop": drop})


GRAD_PROBE = 256  # test sequences the first step's gradient is measured on


def first_step_grad_norm(net: nn.Module, tokens, lengths, y) -> float:
    """How much of the loss's gradient reaches the first time step of a recurrent classifier:
    the mean over sequences of |d loss / d (first token's embedding)|, the network in eval
    mode (the vanishing gradient that makes a vanilla RNN forget, measured)."""
    captured: list[torch.Tensor] = []

    def keep(module, args, out):
        out.retain_grad()
        captured.append(out)

    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    handle = net.embedding.register_forward_hook(keep)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            tokens, lengths, y = (t.clone().to(device) for t in (tokens, lengths, y))
            F.cross_entropy(net(tokens, lengths), y, reduction="sum").backward()
    finally:
        handle.remove()
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    return float(captured[0].grad[:, 0].norm(dim=-1).mean())


def shifted_test_images(x: torch.Tensor, shift: int, background: float, batch_idx: int):
    """The batch's images each moved by a whole number of pixels, up to `shift` each way,
    drawn from a generator seeded by the batch's index: every model sees the same moves."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(batch_idx)
        return affine(x, shift=shift, fill=background)


class TfidfBaseline:
    """TF-IDF of word n-grams (the networks' tokenizer) -> logistic regression: the linear
    text baseline, trained and tested in one call, no epochs."""

    def __init__(self, ngram_max: int, min_df: int, C: float, balanced: bool) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        from ablab.data.text import tokenize

        self.vectorizer = TfidfVectorizer(
            tokenizer=tokenize, lowercase=False, token_pattern=None, sublinear_tf=True,
            ngram_range=(1, ngram_max), min_df=min_df,
        )  # fmt: skip
        self.model = LogisticRegression(
            C=C, max_iter=2000, class_weight="balanced" if balanced else None
        )
        self.test_results: dict[str, float] = {}
        self.test_confusion: torch.Tensor | None = None
        self.test_predictions: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    def fit_and_test(self, data: TextDataModule) -> None:
        from sklearn.metrics import log_loss

        started = time.perf_counter()
        x_train = self.vectorizer.fit_transform(data.texts("train"))
        self.model.fit(x_train, data.train_labels.numpy())
        self.seconds = time.perf_counter() - started
        y_test = data.tensors["test"].tensors[-1]
        probs = self.model.predict_proba(self.vectorizer.transform(data.texts("test")))
        classes = range(len(data.classes))
        self.test_predictions = {"target": y_test.numpy(), "prediction": probs.argmax(1),
                                 "probability": probs.astype(np.float32)}  # fmt: skip
        self.test_confusion = confusion_matrix(
            torch.from_numpy(probs.argmax(1)), y_test, len(data.classes)
        )
        scores = scores_from_confusion(self.test_confusion)
        self.test_results = {
            "test_loss": float(log_loss(y_test.numpy(), probs, labels=classes)),
            "test_accuracy": float(scores["accuracy"]),
            "test_macro_f1": float(scores["macro_f1"]),
        }

    @property
    def size(self) -> int:
        return int(self.model.coef_.size + self.model.intercept_.size)


class Classify(Family):
    name = "classify"

    def data(self, exp: Experiment, processed_dir: Path, fold=None):
        if DATASETS[exp.dataset][0] == "text":
            return TextDataModule.from_experiment(
                exp, processed_dir, fold, length_buckets=exp.train.length_buckets
            )
        return ImageDataModule.from_experiment(exp, processed_dir, fold)

    def module(self, exp: Experiment, data) -> ClassificationTask | TfidfBaseline:
        hp, reg, m = exp.train, exp.train.regularize, exp.model
        if m.arch == "tfidf":
            return TfidfBaseline(m.ngram_max, m.min_df, m.C, hp.imbalance == "weighted_loss")
        if exp.mlm is not None:  # the masked-token pretraining's network, [MASK] included
            net = mlm_network(exp, data)
        else:
            try:
                net = build(m, data.input_shape, len(data.classes), data.meta.get("vocab_size"))
            except ValueError as exc:
                raise build_error(exp, exc) from None
        network_regularizers(net, exp)
        weights = None
        if hp.imbalance == "weighted_loss":
            weights = regularize.class_weights(data.train_labels, len(data.classes))
        task = ClassificationTask(
            net, len(data.classes), **optimizer_hparams(exp),
            label_smoothing=reg.label_smoothing, l1=reg.l1, l2=reg.l2,
            disturb_label=reg.disturb_label, max_norm=reg.max_norm, class_weights=weights,
            gan_augment=hp.gan_augment.model_dump() if hp.gan_augment.samples else None,
            ae_augment=hp.ae_augment.model_dump() if hp.ae_augment.samples else None,
            test_shift=hp.test_shift,
            background=-data.meta["mean"] / data.meta["std"] if hp.test_shift else 0.0,
        )  # fmt: skip
        if exp.mlm is not None:
            task.pretrain, task.pretrain_key = pretraining(exp), pretraining_key(exp)
        return task

    def run(self, fit: Fit, module, data) -> None:
        if isinstance(module, TfidfBaseline):
            module.fit_and_test(data)
            return
        if module.hparams.gan_augment:
            from ablab.families.generate import add_generated

            add_generated(fit, data, **module.hparams.gan_augment)
        if module.hparams.ae_augment:
            from ablab.families.reconstruct import add_decoded

            add_decoded(fit, data, **module.hparams.ae_augment)
        if module.pretrain is not None and module.pretrain.task == "masked_lm":
            state = pretrained_encoder(fit, module, data)
            module.net.load_state_dict(state, strict=False)  # the head stays new
        super().run(fit, module, data)

    def fitted_tags(self, exp: Experiment, module) -> dict[str, str]:
        pretrained = getattr(module, "pretrained_run", "")
        return {"ablab.pretrained_run": pretrained} if pretrained else {}

    def params(self, exp: Experiment, module, data) -> dict:
        if isinstance(module, TfidfBaseline):
            sizes = {"train_size": data.meta["train_size"]}
            return {**exp.model_dump(exclude={"name"}), "data": sizes}
        return super().params(exp, module, data)

    def fitted_params(self, exp: Experiment, module, data) -> dict:
        if isinstance(module, TfidfBaseline):
            return {"features": len(module.vectorizer.vocabulary_)}
        return {}

    def summary(self, exp: Experiment, module, data) -> dict[str, float]:
        out: dict[str, float] = {}
        if exp.skew is not None:
            recall = scores_from_confusion(module.test_confusion)["recall"]
            out["test_minority_recall"] = float(recall[exp.skew.classes].mean())
        if exp.train.test_shift:
            out.update({k: module.test_results[k] for k in ("test_shifted_accuracy",
                                                            "test_shift_drop")})  # fmt: skip
        if exp.model.arch == "rnn":
            tokens, lengths, y = data.tensors["test"][:GRAD_PROBE]
            out["first_step_grad_norm"] = first_step_grad_norm(module.net, tokens, lengths, y)
        if isinstance(module, TfidfBaseline):
            out.update(best_epoch=0, epochs_trained=0, seconds_per_epoch=module.seconds,
                       parameters=module.size)  # fmt: skip
        return out

    def details(self, exp: Experiment, module, data) -> dict[str, float]:
        scores = scores_from_confusion(module.test_confusion)
        return {
            f"test_{kind}_{slug(cls)}": float(scores[kind][i])
            for i, cls in enumerate(data.classes)
            for kind in ("precision", "recall", "f1")
        }

    def artifacts(self, exp: Experiment, module, data, title: str) -> dict[str, object]:
        out: dict[str, object] = {
            "confusion_matrix.png": confusion_figure(
                module.test_confusion.numpy(), data.classes, f"{title}: test confusion"
            ),
            "per_class_metrics.json": self.details(exp, module, data),
        }
        if isinstance(data, TextDataModule) and not isinstance(module, TfidfBaseline):
            out["vocab.json"] = data.vocab
            if getattr(module.net, "attention", None) is not None:
                out["attention.png"] = _attention(module.net, data, title)
        return out

    def predictions(self, exp: Experiment, module, data) -> dict[str, np.ndarray]:
        return module.test_predictions

    def loggable_model(self, exp: Experiment, module, data) -> Loggable | None:
        if isinstance(module, TfidfBaseline):
            return None  # scikit-learn, not a network: refused at load
        if isinstance(data, TextDataModule):
            tokens, lengths, _ = data.tensors["test"].tensors
            meta = {"tokenizer": TOKENIZER, "vocab": data.vocab, "oov_id": OOV_ID,
                    "max_len": int(data.meta["max_len"]), "classes": data.classes}  # fmt: skip
            example = {"texts": data.texts("test")[:3], "tokens": tokens[:3],
                       "lengths": lengths[:3]}  # fmt: skip
            return Loggable("text_classifier", module.net.eval(), meta, example)
        return image_classifier(module.net, data)


def image_classifier(net: nn.Module, data) -> Loggable:
    """An image classifier as serving logs it: the training split's normalisation, the class
    names, the image shape, and two test images as uint8 pixels."""
    mean, std = data.meta["mean"], data.meta["std"]
    meta = {"mean": mean, "std": std, "classes": data.classes,
            "image_shape": list(data.input_shape)}  # fmt: skip
    raw = data.tensors["test"].tensors[0][:2] * std + mean  # two test images in [0, 1]
    example = (raw.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Loggable("image_classifier", net.eval(), meta, example)


def pretrained_encoder(fit: Fit, module: ClassificationTask, data) -> dict[str, torch.Tensor]:
    """The masked-token-pretrained network's weights without its head: the `pretrain`
    stage's, else pretrained here (the same recipe, in its own seeded random stream so the
    fine-tuning draws what it would after loading)."""
    found = fit.pretrained(module.pretrain_key)
    if found is not None:
        state, module.pretrained_run = found
    else:
        from ablab.families.masked_lm import MaskedLm

        job = module.pretrain
        with own_random_stream(job.seed):
            mlm_data = MaskedLm().data(job, data.folder.parent)
            mlm_data.setup("fit")
            mlm = MaskedLm().module(job, mlm_data)
            fit.plain_fit(mlm, mlm_data.train_dataloader(), job.train.max_epochs)
        state = mlm.net.state_dict()
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def slug(text: str) -> str:
    """A class name as a metric-name fragment: 'T-shirt/top' -> 't_shirt_top'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _attention(net, data: TextDataModule, title: str, count: int = 6) -> Figure:
    """A heat map of the attention weights over the tokens of test examples, two per class."""
    labels = data.tensors["test"].tensors[2]
    per_class = max(count // len(data.classes), 1)
    picks = torch.cat([torch.nonzero(labels == c).flatten()[:per_class]
                       for c in range(len(data.classes))])  # fmt: skip
    tokens, lengths, labels = (t[picks] for t in data.tensors["test"].tensors)
    net.eval()
    with torch.no_grad(), recording_attention(net):
        preds = net(tokens, lengths).argmax(1)
    weights = net.last_attention
    rows = []
    for i in range(len(tokens)):
        words = [data.vocab[t] for t in tokens[i, : lengths[i]].tolist()]
        label = f"true {data.classes[labels[i]]}, predicted {data.classes[preds[i]]}"
        rows.append((words, weights[i, : lengths[i]].tolist(), label))
    return attention_figure(rows, f"{title}: attention over test tweets")


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix with counts in the cells."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    return fig


def attention_figure(rows: Sequence[tuple[list[str], list[float], str]], title: str) -> Figure:
    """One strip per example: its tokens, shaded by attention weight, with a caption."""
    width = max(len(words) for words, _, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(0.7 * width + 1, 24), 1.1 * len(rows)))
    for ax, (words, weights, caption) in zip(np.atleast_1d(axes), rows, strict=True):
        ax.imshow([weights], cmap="Reds", aspect="auto", vmin=0, vmax=max(weights))
        ax.set_xticks(range(len(words)), words, rotation=40, ha="right", fontsize=7)
        ax.set_yticks([])
        ax.set_title(caption, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
