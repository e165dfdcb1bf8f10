"""Family `regress` (series forecasting): MSE or MAE loss; MAE and RMSE reported in the data's
own units, since the targets are standardised for training; a forecast plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.config import Experiment
from ablab.data.datamodules import SeriesDataModule
from ablab.families.base import (
    Family,
    Loggable,
    Sums,
    Task,
    build_error,
    network_regularizers,
    optimizer_hparams,
)
from ablab.figures import Figure, plt
from ablab.models import build
from ablab.models.window import Windowed


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
        self._sums = Sums()
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
        self.record_train(loss, objective, len(y))
        return objective

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.max_norm is not None:
            regularize.apply_max_norm(self.net, self.hparams.max_norm)

    def _eval_step(self, batch) -> None:
        *inputs, y = batch
        pred = self(*inputs)
        err = pred - y
        self._sums.add(absolute=err.abs().sum(), squares=err.pow(2).sum(), count=len(y))
        self._preds.append(pred.detach())

    def _eval_end(self, prefix: str) -> None:
        sums = self._sums.read()
        n, scale = max(sums.get("count", 0), 1), self.hparams.scale
        mse, mae = sums.get("squares", 0.0) / n, sums.get("absolute", 0.0) / n
        self.publish(prefix, {
            "loss": mse if self.hparams.loss == "mse" else mae,
            "mae": mae * scale,
            "rmse": math.sqrt(mse) * scale,
        })  # fmt: skip

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
        self.test_predictions = torch.cat(self._preds).cpu() if self._preds else None


class Regress(Family):
    name = "regress"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> SeriesDataModule:
        return SeriesDataModule.from_experiment(exp, processed_dir, fold)

    def module(self, exp: Experiment, data: SeriesDataModule) -> RegressionTask:
        try:
            net = build(exp.model, data.input_shape, 1)  # one output: the next value
        except ValueError as exc:
            raise build_error(exp, exc) from None
        if exp.model.arch != "rnn":  # sees the window whole: the batch's lengths are unread
            net = Windowed(net)
        network_regularizers(net, exp)
        reg = exp.train.regularize
        return RegressionTask(
            net, data.meta["std"], exp.train.regression_loss, **optimizer_hparams(exp),
            l1=reg.l1, l2=reg.l2, max_norm=reg.max_norm,
        )  # fmt: skip

    def loggable_model(self, exp: Experiment, module: RegressionTask, data) -> Loggable:
        """The forecaster: raw windows -> the next value, in the data's units."""
        mean, std = data.meta["mean"], data.meta["std"]
        windows = data.tensors["test"].tensors[0][:3, :, 0] * std + mean
        meta = {"mean": mean, "std": std, "window": int(data.meta["window"])}
        return Loggable("forecaster", module.net.eval(), meta, windows.numpy())

    def artifacts(self, exp: Experiment, module: RegressionTask, data, title: str) -> dict:
        """Test-period forecasts against the actual values, in the data's units."""
        actual = data.tensors["test"].tensors[-1] * data.meta["std"] + data.meta["mean"]
        predicted = module.test_predictions * data.meta["std"] + data.meta["mean"]
        first_year = data.meta["split_years"]["test"][0]
        figure = forecast_figure(
            first_year, actual.tolist(), predicted.tolist(), f"{title}: one-step test forecasts"
        )
        return {"forecast.png": figure}


def forecast_figure(
    first_year: int, actual: Sequence[float], predicted: Sequence[float], title: str
) -> Figure:
    """Actual values and one-step-ahead forecasts over the test years."""
    years = np.arange(first_year, first_year + len(actual))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.plot(years, actual, marker=".", color="black", label="actual")
    ax.plot(years, predicted, marker=".", color="tab:red", label="forecast")
    ax.set_xlabel("year")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig
