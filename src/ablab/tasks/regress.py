"""Regression (series forecasting): MSE or MAE loss; MAE and RMSE reported in the data's own
units, since the targets are standardised for training."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.tasks.base import Task


class RegressionTask(Task):
    def __init__(
        self,
        net: nn.Module,
        scale: float = 1.0,  # target std: errors * scale are in the data's units
        loss: str = "mse",
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        schedule: dict | None = None,
        max_epochs: int = 1,
        l1: float = 0.0,
        l2: float = 0.0,
        max_norm: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self._reset_eval()
        self.test_predictions: torch.Tensor | None = None

    def _reset_eval(self) -> None:
        self._abs, self._sq, self._count = 0.0, 0.0, 0
        self._preds: list[torch.Tensor] = []

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs).squeeze(-1)

    def _loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, y) if self.hparams.loss == "mse" else F.l1_loss(pred, y)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        *inputs, y = batch
        pred = self(*inputs)
        loss = self._loss(pred, y)
        hp = self.hparams
        objective = loss + regularize.penalty(self.net, hp.l1, hp.l2) if hp.l1 or hp.l2 else loss
        self.record_train(loss.item(), objective.item(), len(y))
        return objective

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.max_norm is not None:
            regularize.apply_max_norm(self.net, self.hparams.max_norm)

    def _eval_step(self, batch) -> None:
        *inputs, y = batch
        pred = self(*inputs)
        err = pred - y
        self._abs += err.abs().sum().item()
        self._sq += err.pow(2).sum().item()
        self._count += len(y)
        self._preds.append(pred.detach())

    def _eval_end(self, prefix: str) -> None:
        n, scale = max(self._count, 1), self.hparams.scale
        mse, mae = self._sq / n, self._abs / n
        self.log(f"{prefix}_loss", mse if self.hparams.loss == "mse" else mae)
        self.log(f"{prefix}_mae", mae * scale)
        self.log(f"{prefix}_rmse", math.sqrt(mse) * scale)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
        self.test_predictions = torch.cat(self._preds) if self._preds else None
