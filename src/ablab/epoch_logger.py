"""The Lightning callback that logs each epoch's metrics to MLflow as training goes (step =
epoch), keeps the history and prints one line per epoch. Apart from tracking.py so that the
commands that only read the store (claims, report) do not import Lightning."""

from __future__ import annotations

import time
from collections.abc import Sequence

import lightning.pytorch as pl
from mlflow.tracking import MlflowClient

from ablab.tracking import log_metrics


class EpochLogger(pl.Callback):
    """Once per epoch: log the epoch's metrics to MLflow (step = epoch) and keep a history.
    `metrics` are the validation values the family reports (read from Lightning's
    callback_metrics); the module's `epoch_extras()` adds training losses and the like."""

    def __init__(self, run_id: str | None, metrics: Sequence[str], echo: bool = True) -> None:
        self.run_id = run_id
        self.metrics = tuple(metrics)
        self.echo = echo
        self.history: list[dict[str, float]] = []
        self._started = 0.0
        self._lr: float | None = None
        self._logged_through = -1  # a resumed run: epochs MLflow already has are not re-logged

    def state_dict(self) -> dict:
        """Lightning's checkpoint of this callback: the epochs so far."""
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])
        if self.run_id and self.history:
            key = next(k for k in self.history[-1] if k != "epoch")
            steps = MlflowClient().get_metric_history(self.run_id, key)
            self._logged_through = max((m.step for m in steps), default=-1)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        # read now: Lightning steps epoch schedulers before on_train_epoch_end
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook, so val_* are current.
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for name in self.metrics:
            if name in metrics:
                row[name] = float(metrics[name])
        row["epoch_seconds"] = time.perf_counter() - self._started
        if self._lr is not None:  # the rate this epoch trained with
            row["lr"] = float(self._lr)
        extras = getattr(pl_module, "epoch_extras", None)
        if extras is not None:
            row.update(extras())
        self.history.append(row)
        if self.run_id and not trainer.sanity_checking and row["epoch"] > self._logged_through:
            values = {k: v for k, v in row.items() if k != "epoch"}
            log_metrics(self.run_id, values, step=trainer.current_epoch)
        if self.echo:
            shown = "  ".join(
                f"{k} {v:.4f}" for k, v in row.items() if k != "epoch" and "/" not in k
            )
            print(f"epoch {trainer.current_epoch:3d}  {shown}", flush=True)
