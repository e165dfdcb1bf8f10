"""Pieces every model family shares: activations by name and weight initialisation."""

from __future__ import annotations

import torch
from torch import nn


class IdentityActivation(nn.Identity):
    """No nonlinearity (`identity`): a network of these is linear. Its own class, so that what
    looks for activations (hidden noise) finds it and not every nn.Identity."""


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": IdentityActivation,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def halvable(image_shape: tuple[int, ...], times: int, what: str) -> tuple[int, int]:
    """The image's height and width after `times` halvings; ValueError (naming `what`) when
    they are not divisible by 2^times."""
    height, width = image_shape[-2:]
    if height % 2**times or width % 2**times:
        raise ValueError(
            f"{what} halves the image {times} times: {height}x{width} is not divisible by "
            f"{2**times}; use fewer channels entries"
        )
    return height // 2**times, width // 2**times


def dense_classifier(
    fan_in: int,
    widths: list[int] | tuple[int, ...],
    num_classes: int,
    activation_name: str,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> list[nn.Module]:
    """[Linear -> BatchNorm? -> activation -> Dropout?] per width, then Linear to the classes."""
    layers: list[nn.Module] = []
    for width in widths:
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation(activation_name))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return layers


def initialise(net: nn.Module, scheme: str, activation_name: str, scale: float = 1.0) -> None:
    """Re-initialise linear and conv weights: xavier (glorot) or kaiming (he); biases to zero.
    Then every such weight times `scale` (1.0 leaves them as they are)."""
    relu_like = activation_name in ("relu", "leaky_relu", "elu", "gelu")
    for module in net.modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        if scheme == "xavier":
            gain = nn.init.calculate_gain("tanh" if activation_name == "tanh" else "linear")
            nn.init.xavier_uniform_(module.weight, gain=gain)
        elif scheme == "kaiming":
            nonlinearity = "relu" if relu_like else "linear"
            nn.init.kaiming_normal_(module.weight, nonlinearity=nonlinearity)
        if scheme != "default" and module.bias is not None:
            nn.init.zeros_(module.bias)
        if scale != 1.0:
            with torch.no_grad():
                module.weight.mul_(scale)
