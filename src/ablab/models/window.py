"""Forecasters that see a fixed window of past values at once (no recurrence): a 1-D CNN over
the window, and `Windowed`, which lets any such network take a series batch's (windows,
lengths) as a recurrent network does."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ablab.models.layers import activation, dense_classifier


class Windowed(nn.Module):
    """(windows N x T x 1, lengths) -> `net(windows)`: every window is T long, so the lengths a
    series batch carries for recurrent networks are not needed here."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class _ChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)  # N x T x C -> N x C x T, as Conv1d reads it


def build_conv1d(
    input_shape: tuple[int, ...], num_outputs: int, channels: Sequence[int] = (16,),
    kernel_size: int = 3, activation_name: str = "relu", head: Sequence[int] = (32,),
    dropout: float = 0.0,
) -> nn.Sequential:  # fmt: skip
    """Windows (N x T x C) -> [Conv1d k (same padding) -> activation] per channel count ->
    flatten -> Dropout? -> [Linear -> activation] per head width -> Linear to the outputs."""
    steps, fan_in = input_shape
    layers: list[nn.Module] = [_ChannelsFirst()]
    for c in channels:
        layers += [nn.Conv1d(fan_in, c, kernel_size, padding="same"), activation(activation_name)]
        fan_in = c
    layers.append(nn.Flatten())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += dense_classifier(fan_in * steps, list(head), num_outputs, activation_name)
    return nn.Sequential(*layers)
