"""What every task shares: evaluation hooks around `_reset_eval`/`_eval_step`/`_eval_end`,
training losses summed per epoch (not `self.log` per step: ~0.5 ms a call here), and the
optimizer and learning-rate schedule from the hyperparameters."""

from __future__ import annotations

import math

import lightning.pytorch as pl

from ablab.optim import make_optimizer, make_scheduler


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Task(pl.LightningModule):
    """Subclasses save hyperparameters optimizer, lr, weight_decay, momentum, schedule and
    max_epochs, and implement `_reset_eval`, `_eval_step(batch)` and `_eval_end(prefix)`."""

    def __init__(self) -> None:
        super().__init__()
        self._train_sums = [0.0, 0.0, 0]  # loss * n, objective * n, n

    def record_train(self, loss: float, objective: float, n: int) -> None:
        """One step's losses; raises DivergedError when the objective is not finite."""
        if not math.isfinite(objective):
            raise DivergedError(f"training loss is {objective} at step {self.global_step}")
        self._train_sums[0] += loss * n
        self._train_sums[1] += objective * n
        self._train_sums[2] += n

    def epoch_extras(self) -> dict[str, float]:
        """The epoch's mean train_loss and train_objective (read by the epoch logger); resets."""
        loss, objective, n = self._train_sums
        self._train_sums = [0.0, 0.0, 0]
        return {"train_loss": loss / n, "train_objective": objective / n} if n else {}

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
