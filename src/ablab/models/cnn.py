"""Convolutional network: conv blocks, then a fully connected classifier head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ablab.models.layers import activation, dense_classifier, initialise


def build_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    stride: int = 1,
    padding: str = "same",
    pool: str = "max",
    batch_norm: bool = False,
    dropout: float = 0.0,
    head: Sequence[int] = (128,),
    head_dropout: float = 0.0,
    readout: str = "flatten",
    activation_name: str = "relu",
    init: str = "default",
    init_scale: float = 1.0,
    channels_last: bool = True,
) -> nn.Sequential:
    """[Conv -> BatchNorm? -> activation -> pool(2)? -> Dropout?] per channel count -> head
    (`readout` "gap": global average pooling per channel before it, else flattened maps).
    With `channels_last` the weights are stored channels-last after initialisation, so the
    convolutions run in that layout (oneDNN's on CPU) whatever the input's."""
    layers: list[nn.Module] = []
    in_channels = input_shape[0]
    pad = kernel_size // 2 if padding == "same" else 0
    for out_channels in channels:
        layers.append(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(activation(activation_name))
        if pool != "none":
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_channels = out_channels
    features = nn.Sequential(*layers)
    try:
        with torch.no_grad():
            shape = features(torch.zeros(1, *input_shape)).shape
    except RuntimeError:
        shape = (1, 0, 0, 0)
    if min(shape[2:]) < 1:
        raise ValueError(
            f"the conv blocks shrink a {tuple(input_shape)} input to nothing: use fewer blocks, "
            "padding 'same', or pool 'none'"
        )
    if readout == "gap":
        layers.append(nn.AdaptiveAvgPool2d(1))
    layers.append(nn.Flatten())
    fan_in = shape[1] if readout == "gap" else shape[1] * shape[2] * shape[3]
    layers += dense_classifier(fan_in, list(head), num_classes, activation_name, head_dropout)
    net = nn.Sequential(*layers)
    initialise(net, init, activation_name, init_scale)
    return net.to(memory_format=torch.channels_last) if channels_last else net
