"""Sequence to sequence: teacher-forced cross-entropy, greedy decoding, exact-match accuracy."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ablab.data.dates import BOS_ID, PAD_ID
from ablab.tasks.base import Task


class Seq2SeqTask(Task):
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
        value = loss.item()
        self.record_train(value, value, len(target))
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
