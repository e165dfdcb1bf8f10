"""Pieces for domain adaptation: a classifier's body and head apart, the gradient-reversal
layer and the domain classifier of DANN (Ganin & Lempitsky 2015)."""

from __future__ import annotations

import math

import torch
from torch import nn


def split_head(net: nn.Sequential) -> tuple[nn.Sequential, nn.Linear]:
    """(body, head) of a classifier built by `ablab.models`: the head is its last Linear."""
    head = net[-1]
    if not isinstance(head, nn.Linear):
        raise ValueError(f"expected a network ending in a Linear layer; it ends in {head}")
    return net[:-1], head


def split_features(net: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """(feature extractor, label predictor) of a classifier built by `ablab.models`, as DANN
    splits it: a CNN's conv blocks (flattened) and its dense classifier; an MLP's hidden layers
    and its last Linear."""
    convolutional = any(isinstance(m, nn.Conv2d) for m in net)
    cut = next(i + 1 for i, m in enumerate(net) if isinstance(m, nn.Flatten)) if convolutional \
        else len(net) - 1  # fmt: skip
    return net[:cut], net[cut:]


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by -weight."""
    return _Reverse.apply(x, weight)


def reversal_schedule(progress: float) -> float:
    """lambda_p = 2 / (1 + exp(-10 p)) - 1 over training progress p in [0, 1] (Ganin et al.)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def domain_classifier(features: int, hidden: int) -> nn.Sequential:
    """Features -> hidden layer (BatchNorm, ReLU) -> one logit: source (0) or target (1). The
    BatchNorm keeps the feature extractor from fooling it by scaling features up without
    bound (without it, DANN's target loss ran to 100+ here)."""
    return nn.Sequential(
        nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1)
    )
