"""Autoencoders: an encoder to a dense code, a decoder back to the image. Dense (stacked, with
optionally tied weights) or convolutional (transposed-conv or upsampling decoder). The decoder
returns logits; `forward` applies the sigmoid, so images live in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ablab.models.layers import activation, halvable

CODE_ACTIVATIONS = {"linear": nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class TiedLinear(nn.Module):
    """The transpose of an encoder layer: y = x W^T' = x W + b, W shared with `source`, only the
    bias its own. The source is held outside the module tree so its weight counts once."""

    def __init__(self, source: nn.Linear) -> None:
        super().__init__()
        self._source = [source]
        self.bias = nn.Parameter(torch.zeros(source.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._source[0].weight.t(), self.bias)


class Autoencoder(nn.Module):
    """(images N x C x H x W in [0, 1]) -> (reconstructions in [0, 1], codes N x code_size).

    `encoder` and `decoder` are Sequentials of blocks; for a dense net, block i of the encoder
    and block depth-1-i of the decoder mirror each other (`pairs`, used by layer-wise
    pretraining)."""

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, image_shape) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.image_shape = tuple(image_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code).reshape(-1, *self.image_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(x)
        return torch.sigmoid(self.decode_logits(code)), code

    def pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(encoder block, its mirror decoder block), input side first."""
        blocks = list(self.decoder)
        return list(zip(self.encoder, reversed(blocks), strict=True))


def _dense_block(fan_in: int, fan_out: int, act: nn.Module | None) -> nn.Sequential:
    return nn.Sequential(nn.Linear(fan_in, fan_out), *([act] if act is not None else []))


def build_dense_autoencoder(
    image_shape: Sequence[int], hidden: Sequence[int], code_size: int,
    activation_name: str = "relu", code_activation: str = "linear", tied: bool = False,
) -> Autoencoder:  # fmt: skip
    """Flatten -> hidden layers -> code; the decoder mirrors it (tied: the same weights,
    transposed). The encoder's input block flattens; the decoder's output block has no
    activation (the sigmoid is in `forward`)."""
    sizes = [math.prod(image_shape), *hidden, code_size]
    encoder, decoder = [], []
    for i in range(len(sizes) - 1):
        last = i == len(sizes) - 2
        act = CODE_ACTIVATIONS[code_activation]() if last else activation(activation_name)
        block = _dense_block(sizes[i], sizes[i + 1], act)
        if i == 0:
            block = nn.Sequential(nn.Flatten(), *block)
        encoder.append(block)
    for i in reversed(range(len(sizes) - 1)):
        linear = [m for m in encoder[i] if isinstance(m, nn.Linear)][0]
        layer = TiedLinear(linear) if tied else nn.Linear(sizes[i + 1], sizes[i])
        decoder.append(nn.Sequential(layer, *([activation(activation_name)] if i else [])))
    return Autoencoder(nn.Sequential(*encoder), nn.Sequential(*decoder), image_shape)


def build_conv_autoencoder(
    image_shape: Sequence[int], channels: Sequence[int], code_size: int,
    activation_name: str = "relu", code_activation: str = "linear",
    decoder: str = "transposed",
) -> Autoencoder:  # fmt: skip
    """[Conv 3x3 -> activation -> max-pool 2] per channel count -> dense code; the decoder
    goes dense -> feature map, then per block a stride-2 transposed conv (or nearest upsampling
    and a 3x3 conv) back to the image's channels."""
    c_in = image_shape[0]
    blocks = len(channels)
    height, width = halvable(image_shape, blocks, f"a conv autoencoder with {blocks} blocks")
    layers: list[nn.Module] = []
    fan_in = c_in
    for c in channels:
        layers += [nn.Conv2d(fan_in, c, 3, padding=1), activation(activation_name), nn.MaxPool2d(2)]
        fan_in = c
    small = (channels[-1], height, width)
    layers += [nn.Flatten(), nn.Linear(math.prod(small), code_size)]
    layers.append(CODE_ACTIVATIONS[code_activation]())
    up: list[nn.Module] = [nn.Linear(code_size, math.prod(small)), activation(activation_name)]
    up.append(nn.Unflatten(1, small))
    outs = [*reversed(channels[:-1]), c_in]
    fan_in = channels[-1]
    for i, c in enumerate(outs):
        if decoder == "transposed":
            up.append(nn.ConvTranspose2d(fan_in, c, 3, stride=2, padding=1, output_padding=1))
        else:
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(fan_in, c, 3, padding=1)]
        if i < len(outs) - 1:
            up.append(activation(activation_name))
        fan_in = c
    return Autoencoder(nn.Sequential(*layers), nn.Sequential(*up), image_shape)
