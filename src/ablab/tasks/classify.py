"""Classification: cross-entropy with the loss-side regularizers (label smoothing, class
weights, DisturbLabel, L1/L2 penalties, max-norm), accuracy, macro-F1, per-class metrics and a
confusion matrix at test time."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.tasks.base import Task


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
        track_grad_norms: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "class_weights"])
        self.net = net
        self.num_classes = num_classes
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._grad_sums: dict[str, float] = {}
        self._grad_steps = 0
        self._reset_eval()
        self.test_confusion: torch.Tensor | None = None

    def _reset_eval(self) -> None:
        self._loss_sum = 0.0
        self._count = 0
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

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
        value = objective.item()
        loss = value if plain else F.cross_entropy(logits.detach(), y).item()
        self.record_train(loss, value, len(y))
        return objective

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.max_norm is not None:
            regularize.apply_max_norm(self.net, self.hparams.max_norm)

    def on_before_optimizer_step(self, optimizer) -> None:
        # per-layer gradient norms (weight matrices only), summed here and averaged per epoch
        if not self.hparams.track_grad_norms:
            return
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                if p.grad is not None and p.dim() > 1:
                    norm = torch.linalg.vector_norm(p.grad).item()
                    self._grad_sums[name] = self._grad_sums.get(name, 0.0) + norm
        self._grad_steps += 1

    def epoch_extras(self) -> dict[str, float]:
        """The training losses, and grad_norm/<parameter>: the epoch's mean gradient norm."""
        extras = super().epoch_extras()
        steps = max(self._grad_steps, 1)
        extras.update({f"grad_norm/{k}": v / steps for k, v in self._grad_sums.items()})
        self._grad_sums, self._grad_steps = {}, 0
        return extras

    def _eval_step(self, batch) -> None:
        *inputs, y = batch
        logits = self(*inputs)
        self._loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        self._count += len(y)
        self._confusion += confusion_matrix(logits.argmax(1), y, self.num_classes)

    def _eval_end(self, prefix: str) -> torch.Tensor:
        scores = scores_from_confusion(self._confusion)
        self.log(f"{prefix}_loss", self._loss_sum / max(self._count, 1))
        self.log(f"{prefix}_accuracy", scores["accuracy"].float())
        self.log(f"{prefix}_macro_f1", scores["macro_f1"].float())
        confusion = self._confusion.clone()
        self._reset_eval()
        return confusion

    def on_test_epoch_end(self) -> None:
        self.test_confusion = self._eval_end("test")
