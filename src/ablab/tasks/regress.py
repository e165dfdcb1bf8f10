"""Regression (series forecasting): MSE or MAE loss; MAE and RMSE reported in the data's own
units, since the targets are standardised for training."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.optim import make_optimizer, make_scheduler
from ablab.tasks.classify import DivergedError


class RegressionTask(pl.LightningModule):
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
        if not math.isfinite(objective.item()):
            raise DivergedError(f"training loss is {objective.item()} at step {self.global_step}")
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train_objective", objective.detach(), on_step=False, on_epoch=True,
                 batch_size=len(y))  # fmt: skip
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
        self.test_predictions = torch.cat(self._preds) if self._preds else None

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
