"""Optimizer and learning-rate schedule from params."""

from __future__ import annotations

from collections.abc import Iterable

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


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    max_epochs: int,
    step_size: int = 5,
    gamma: float = 0.5,
    patience: int = 2,
    warmup_epochs: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """A per-epoch schedule (None for "none"); cosine anneals to 0 over the epochs after warm-up."""
    sched = torch.optim.lr_scheduler
    rest = max(max_epochs - warmup_epochs, 1)
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
