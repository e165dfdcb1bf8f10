"""Generators and discriminators for images in [-1, 1]: the MLP GAN (Goodfellow et al. 2014),
DCGAN (Radford et al. 2015), their class-conditional forms (the class into both networks:
one-hot after z in the generator, a projection in the discriminator),
and CycleGAN's image-to-image mapper and PatchGAN discriminator (Zhu et al. 2017). No in-place
activations: explanations and hooks read these networks too."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.functional import one_hot
from torch.nn.utils.parametrizations import spectral_norm

from ablab.models.layers import halvable


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(layer) if on else layer


class Generator(nn.Module):
    """z (and a class, when conditional) -> image. `body` maps the latent (+ one-hot class)
    vector to the image."""

    def __init__(self, body: nn.Module, latent_size: int, num_classes: int) -> None:
        super().__init__()
        self.body, self.latent_size, self.num_classes = body, latent_size, num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, one_hot(labels, self.num_classes).to(z.dtype)], 1)
        return self.body(z)


class Discriminator(nn.Module):
    """image (and its class, when conditional) -> one logit per image: real or generated.
    `features` maps the image to a vector h of `width`; the logit is a linear function of h.
    A conditional discriminator takes the class by `conditioning`: `concat` (Mirza & Osindero
    2014) appends it to the input, one-hot after the flat image (mlp) or as one constant plane
    per class (conv), and `features` was built for the wider input; `projection` (Miyato &
    Koyama 2018) adds <embed(class), h> to the logit."""

    def __init__(self, features: nn.Module, width: int, num_classes: int, spectral: bool,
                 conditioning: str = "projection", planes: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.features, self.num_classes = features, num_classes
        self.head = _sn(nn.Linear(width, 1), spectral)
        self.concat = bool(num_classes) and conditioning == "concat"
        self.planes = planes
        project = num_classes and conditioning == "projection"
        self.embed = nn.Embedding(num_classes, width) if project else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.concat:
            code = one_hot(labels, self.num_classes).to(x.dtype)
            if self.planes:
                x = torch.cat([x, code[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
            else:
                x = torch.cat([x.flatten(1), code], 1)
        h = self.features(x)
        logit = self.head(h)[:, 0]
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(1)
        return logit


def build_mlp_gan(
    image_shape: tuple[int, ...], hidden: Sequence[int], latent_size: int, num_classes: int = 0,
    spectral: bool = False, dropout: float = 0.0, conditioning: str = "projection",
    batch_norm: bool = False,
) -> tuple[Generator, Discriminator]:  # fmt: skip
    """Dense generator (`hidden` widths, BatchNorm if asked, ReLU; tanh out) and discriminator
    (the widths reversed, LeakyReLU 0.2, dropout)."""
    pixels = int(torch.tensor(image_shape).prod())
    layers: list[nn.Module] = []
    fan_in = latent_size + num_classes
    for width in hidden:
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        layers += [nn.BatchNorm1d(width), nn.ReLU()] if batch_norm else [nn.ReLU()]
        fan_in = width
    layers += [nn.Linear(fan_in, pixels), nn.Tanh(), nn.Unflatten(1, tuple(image_shape))]
    generator = Generator(nn.Sequential(*layers), latent_size, num_classes)
    layers = [nn.Flatten()]
    fan_in = pixels + (num_classes if conditioning == "concat" else 0)
    for width in reversed(hidden):
        layers += [_sn(nn.Linear(fan_in, width), spectral), nn.LeakyReLU(0.2)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    features = nn.Sequential(*layers)
    return generator, Discriminator(features, fan_in, num_classes, spectral, conditioning)


def build_dcgan(
    image_shape: tuple[int, ...], channels: Sequence[int], latent_size: int,
    num_classes: int = 0, spectral: bool = False, dropout: float = 0.0,
    conditioning: str = "projection",
) -> tuple[Generator, Discriminator]:  # fmt: skip
    """DCGAN: the generator projects z to channels[0] maps of size H / 2^k, then k strided
    transposed convolutions (BatchNorm, ReLU; tanh out) double it back; the discriminator is
    the mirror (strided convs, LeakyReLU 0.2, BatchNorm after the first; no BatchNorm with
    spectral norm), then one linear logit. k = len(channels); H and W divisible by 2^k."""
    c = image_shape[0]
    k = len(channels)
    h0, w0 = halvable(image_shape, k, f"dcgan with {k} channel entries")
    widths = list(channels)
    layers: list[nn.Module] = [
        nn.Linear(latent_size + num_classes, widths[0] * h0 * w0, bias=False),
        nn.BatchNorm1d(widths[0] * h0 * w0), nn.ReLU(), nn.Unflatten(1, (widths[0], h0, w0)),
    ]  # fmt: skip
    for i in range(k):
        out = widths[i + 1] if i + 1 < k else c
        last = i + 1 == k
        layers.append(nn.ConvTranspose2d(widths[i], out, 4, 2, 1, bias=last))
        layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
    generator = Generator(nn.Sequential(*layers), latent_size, num_classes)
    layers = []
    fan_in = c + (num_classes if conditioning == "concat" else 0)
    for i, width in enumerate(reversed(widths)):
        norm = i > 0 and not spectral
        layers.append(_sn(nn.Conv2d(fan_in, width, 4, 2, 1, bias=not norm), spectral))
        if norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.LeakyReLU(0.2))
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Flatten())
    features = nn.Sequential(*layers)
    width = fan_in * h0 * w0
    return generator, Discriminator(features, width, num_classes, spectral, conditioning, True)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1), nn.InstanceNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1), nn.InstanceNorm2d(width),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def build_mapper(image_channels: int, width: int, residual_blocks: int) -> nn.Sequential:
    """CycleGAN's generator at small scale: conv, one strided conv down, residual blocks,
    one transposed conv up, conv to the image (instance norm, ReLU, tanh out)."""
    return nn.Sequential(
        nn.Conv2d(image_channels, width, 3, 1, 1), nn.InstanceNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.InstanceNorm2d(2 * width), nn.ReLU(),
        *[_Residual(2 * width) for _ in range(residual_blocks)],
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.InstanceNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, image_channels, 3, 1, 1), nn.Tanh(),
    )  # fmt: skip


def build_patch_discriminator(image_channels: int, width: int, spectral: bool = False):
    """PatchGAN: a map of logits, one per overlapping patch (two strided convs, then a conv)."""
    norm = [] if spectral else [nn.InstanceNorm2d(2 * width)]
    return nn.Sequential(
        _sn(nn.Conv2d(image_channels, width, 4, 2, 1), spectral), nn.LeakyReLU(0.2),
        _sn(nn.Conv2d(width, 2 * width, 4, 2, 1), spectral), *norm, nn.LeakyReLU(0.2),
        _sn(nn.Conv2d(2 * width, 1, 3, 1, 1), spectral),
    )  # fmt: skip
