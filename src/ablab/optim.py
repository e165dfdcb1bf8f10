"""Optimizer from params: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw."""

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
