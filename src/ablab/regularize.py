"""What a regularization technique adds to a network or a loss: L1/L2 penalties, DropConnect,
DisturbLabel, Gaussian noise, max-norm. Plain torch; the task decides when to call them."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ablab.models.layers import ACTIVATIONS

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def penalized_weights(net: nn.Module) -> list[torch.Tensor]:
    """The weights penalties and max-norm act on: linear and conv kernels, not biases or BN."""
    return [m.weight for m in net.modules() if isinstance(m, _WEIGHTED)]


def penalty(net: nn.Module, l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """l1 * sum |w| + l2 * sum w^2 over `penalized_weights` (0 when both are 0)."""
    weights = penalized_weights(net)
    # no weight at all: a 0-d CPU zero, which any device's loss takes as a scalar
    total = weights[0].new_zeros(()) if weights else torch.zeros(())
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.pow(2).sum()
    return total


def apply_max_norm(net: nn.Module, max_norm: float) -> None:
    """Rescale each unit's incoming weight vector to L2 norm <= max_norm (Srivastava et al.)."""
    with torch.no_grad():
        for w in penalized_weights(net):
            w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=max_norm))


class DropConnectLinear(nn.Linear):
    """A linear layer whose weights are dropped with probability p in training (Wan et al.
    2013), one mask per batch, kept weights scaled by 1/(1-p); plain linear in eval."""

    p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return F.linear(x, self.weight, self.bias)
        mask = torch.empty_like(self.weight).bernoulli_(1.0 - self.p)
        return F.linear(x, self.weight * mask / (1.0 - self.p), self.bias)


def add_dropconnect(net: nn.Module, p: float) -> int:
    """Turn every hidden linear layer (all but the last) into DropConnect; returns how many."""
    linears = [m for m in net.modules() if type(m) is nn.Linear]
    for layer in linears[:-1]:
        layer.__class__ = DropConnectLinear  # same parameters, same state_dict keys
        layer.p = p
    return len(linears) - 1


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training; the identity in eval."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0:
            return x
        return x + torch.randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


def add_hidden_noise(net: nn.Module, std: float) -> int:
    """Follow every activation with GaussianNoise(std); returns how many were added."""
    added = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, tuple(ACTIVATIONS.values())):
                setattr(parent, name, nn.Sequential(child, GaussianNoise(std)))
                added += 1
    return added


def disturb_labels(
    y: torch.Tensor, alpha: float, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DisturbLabel (Xie et al. 2016): each label is replaced, with probability alpha, by a class
    drawn uniformly (possibly itself), so about alpha * (C-1)/C of the labels change."""
    if alpha == 0:
        return y
    redraw = torch.rand(y.shape, generator=generator, device=y.device) < alpha
    random = torch.randint(0, num_classes, y.shape, generator=generator, device=y.device)
    return torch.where(redraw, random, y)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weights N / (C * count_c) for a weighted loss: a balanced set gets all ones."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), 0.0)
    return weights.float()
