"""Sequence to sequence: teacher-forced cross-entropy, greedy decoding, exact-match accuracy."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from ablab.data.dates import BOS_ID, PAD_ID
from ablab.optim import make_optimizer, make_scheduler
from ablab.tasks.classify import DivergedError


class Seq2SeqTask(pl.LightningModule):
    def __init__(
        self, net: nn.Module, optimizer: str = "adam", lr: float = 1e-3,
        weight_decay: float = 0.0, momentum: float = 0.9, schedule: dict | None = None,
        max_epochs: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self._reset_eval()

    def _reset_eval(self) -> None:
        self._loss_sum, self._tokens, self._exact, self._chars, self._count = 0.0, 0, 0, 0, 0

    def _logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        source, lengths, target = batch
        bos = torch.full_like(target[:, :1], BOS_ID)
        return self.net(source, lengths, torch.cat([bos, target[:, :-1]], 1)), target

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        logits, target = self._logits(batch)
        loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=PAD_ID)
        if not math.isfinite(loss.item()):
            raise DivergedError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(target))
        return loss

    def _eval_step(self, batch) -> None:
        logits, target = self._logits(batch)
        real = target != PAD_ID
        self._loss_sum += F.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=PAD_ID, reduction="sum"
        ).item()
        self._tokens += int(real.sum())
        source, lengths, _ = batch
        decoded = self.net.greedy(source, lengths, target.shape[1], BOS_ID)
        right = (decoded == target) | ~real
        self._exact += int(right.all(1).sum())
        self._chars += int(((decoded == target) & real).sum())
        self._count += len(target)

    def _eval_end(self, prefix: str) -> None:
        self.log(f"{prefix}_loss", self._loss_sum / max(self._tokens, 1))
        self.log(f"{prefix}_accuracy", self._exact / max(self._count, 1))  # exact match
        self.log(f"{prefix}_char_accuracy", self._chars / max(self._tokens, 1))
        self._reset_eval()

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._reset_eval()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = make_optimizer(
            self.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum
        )
        scheduler = make_scheduler(
            optimizer, max_epochs=hp.max_epochs, **(hp.schedule or {"name": "none"})
        )
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val_loss"},
        }
