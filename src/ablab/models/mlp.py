"""Multi-layer perceptron: depth hidden layers of one width."""

from __future__ import annotations

import math

from torch import nn

from ablab.models.layers import dense_classifier, initialise


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 256,
    activation_name: str = "relu",
    init: str = "default",
    dropout: float = 0.0,
    batch_norm: bool = False,
    input_dropout: float = 0.0,
    init_scale: float = 1.0,
    output_dropout: float = 0.0,
) -> nn.Sequential:
    """Flatten -> Dropout? -> [Linear -> BatchNorm? -> activation -> Dropout?] x depth ->
    Linear -> Dropout? (the input and output Dropouts only where their rate is > 0, so other
    layouts keep their keys; the output one drops logits in training, as the course warns
    against)."""
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        layers.append(nn.Dropout(input_dropout))
    layers += dense_classifier(
        math.prod(input_shape), [width] * depth, num_classes, activation_name, dropout, batch_norm
    )
    if output_dropout:
        layers.append(nn.Dropout(output_dropout))
    net = nn.Sequential(*layers)
    initialise(net, init, activation_name, init_scale)
    return net
