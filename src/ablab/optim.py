"""Optimizer and learning-rate schedule from params."""

from __future__ import annotations

from collections.abc import Iterable

import lightning.pytorch as pl
import torch


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """weight_decay is decoupled for adamw (Loshchilov & Hutter) and coupled (L2) elsewhere."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            parameters, lr=lr, momentum=momentum, nesterov=name == "nesterov",
            weight_decay=weight_decay,
        )  # fmt: skip
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


PER_STEP = ("inverse_power",)  # schedules stepped after every optimizer step, not every epoch


def inverse_power(progress: float, rate: float, power: float) -> float:
    """The factor on the learning rate at training progress p in [0, 1]: 1 / (1 + rate p)^power."""
    return (1.0 + rate * min(max(progress, 0.0), 1.0)) ** -power


def momentum_at(epoch: int, start: float, end: float, epochs: int) -> float:
    """Momentum rising linearly from `start` at epoch 0 to `end` at epoch `epochs`, then held."""
    if epochs <= 0:
        return end
    return start + (end - start) * min(epoch / epochs, 1.0)


class MomentumRamp(pl.Callback):
    """Sets every optimizer's momentum to momentum_at(epoch, ...) as each epoch starts (a
    resumed fit gets its epoch's value)."""

    def __init__(self, start: float, end: float, epochs: int) -> None:
        self.start, self.end, self.epochs = start, end, epochs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        momentum = momentum_at(trainer.current_epoch, self.start, self.end, self.epochs)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["momentum"] = momentum


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    max_epochs: int,
    step_size: int = 5,
    gamma: float = 0.5,
    patience: int = 2,
    warmup_epochs: int = 0,
    rate: float = 10.0,
    power: float = 0.75,
    total_steps: int | None = None,
    **_momentum,  # the schedule's momentum ramp: MomentumRamp's, not the learning rate's
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """A per-epoch schedule (None for "none"); cosine anneals to 0 over the epochs after warm-up.
    inverse_power is per step (PER_STEP) and needs `total_steps`, the steps of the whole fit."""
    sched = torch.optim.lr_scheduler
    rest = max(max_epochs - warmup_epochs, 1)
    if name == "inverse_power":
        if not total_steps:
            raise ValueError("the inverse_power schedule needs the fit's total_steps")
        return sched.LambdaLR(optimizer, lambda s: inverse_power(s / total_steps, rate, power))
    if name == "none":
        main = None
    elif name == "step":
        main = sched.StepLR(optimizer, step_size=step_size, gamma=gamma)
    elif name == "exponential":
        main = sched.ExponentialLR(optimizer, gamma=gamma)
    elif name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=rest)
    elif name == "plateau":
        if warmup_epochs:
            raise ValueError("warm-up does not combine with the plateau schedule")
        return sched.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience)
    else:
        raise ValueError(f"unknown schedule {name!r}")
    if not warmup_epochs:
        return main
    warmup = sched.LinearLR(optimizer, start_factor=0.1, total_iters=warmup_epochs)
    if main is None:
        return warmup
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warmup_epochs])
