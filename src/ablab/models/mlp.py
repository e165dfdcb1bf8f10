"""Multi-layer perceptron: depth hidden layers of one width."""

from __future__ import annotations

import math

from torch import nn

from ablab.models.layers import activation, initialise


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 256,
    activation_name: str = "relu",
    init: str = "default",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Flatten -> [Linear -> BatchNorm? -> activation -> Dropout?] x depth -> Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation(activation_name))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    net = nn.Sequential(*layers)
    initialise(net, init, activation_name)
    return net
