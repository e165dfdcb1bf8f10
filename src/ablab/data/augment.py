"""Batch image augmentation: every example draws its own shift, flip, rotation, erasing,
brightness and contrast, all in a few tensor operations per batch (torchvision's v2 transforms
draw once per batch)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def affine(
    x: torch.Tensor, shift: int = 0, hflip: bool = False, rotation: float = 0.0,
    fill: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Random integer shift of up to `shift` pixels, mirror with probability 0.5, rotation of up
    to +/- `rotation` degrees; uncovered pixels take `fill` (the background's value)."""
    n, _, h, w = x.shape
    device = x.device  # every draw on the batch's device: no tensor crosses
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(rotation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    ones = torch.ones(n, device=device)
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if hflip else ones
    # affine_grid works in [-1, 1] coordinates, so a shift of k pixels is 2k / size
    tx = torch.randint(-shift, shift + 1, (n,), device=device).float() * 2 / w
    ty = torch.randint(-shift, shift + 1, (n,), device=device).float() * 2 / h
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with zeros: move the background to zero first
    return F.grid_sample(x - fill, grid, mode="bilinear", align_corners=False) + fill


def erase(x: torch.Tensor, probability: float, value: float = 0.0) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): with `probability`, blank a rectangle covering 2-33%
    of the image, aspect ratio 0.3-3.3, at a random place."""
    n, _, h, w = x.shape
    device = x.device
    area = torch.empty(n, device=device).uniform_(0.02, 0.33) * h * w
    ratio = torch.exp(torch.empty(n, device=device).uniform_(math.log(0.3), math.log(1 / 0.3)))
    eh = (area * ratio).sqrt().round().clamp(1, h).long()
    ew = (area / ratio).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, device=device) * (h - eh + 1)).long()
    left = (torch.rand(n, device=device) * (w - ew + 1)).long()
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + ew).view(n, 1, 1))
    )
    chosen = (torch.rand(n, device=device) < probability).view(n, 1, 1)
    return x.masked_fill((inside & chosen).unsqueeze(1), value)


def jitter(
    x: torch.Tensor, brightness: float, contrast: float, mean: float = 0.0, std: float = 1.0
) -> torch.Tensor:
    """ColorJitter's brightness and contrast, a factor per image: pixels (x * std + mean, in
    [0, 1]) times a factor from [1 - brightness, 1 + brightness]; then moved from the image's
    own mean by a factor from [1 - contrast, 1 + contrast]; clipped to [0, 1] after each, and
    normalised back."""
    n = len(x)
    shape = (n,) + (1,) * (x.dim() - 1)
    pixels = x * std + mean
    if brightness:
        factor = torch.empty(shape, device=x.device).uniform_(1 - brightness, 1 + brightness)
        pixels = (pixels * factor).clamp_(0.0, 1.0)
    if contrast:
        factor = torch.empty(shape, device=x.device).uniform_(1 - contrast, 1 + contrast)
        centre = pixels.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        pixels = (centre + (pixels - centre) * factor).clamp_(0.0, 1.0)
    return (pixels - mean) / std


def augment(
    x: torch.Tensor, shift: int = 0, hflip: bool = False, rotation: float = 0.0,
    erasing: float = 0.0, fill: float = 0.0, brightness: float = 0.0, contrast: float = 0.0,
    mean: float = 0.0, std: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """Every enabled transformation, in the order brightness/contrast (on pixels: the data's
    `mean` and `std` undo the normalisation), shift/flip/rotate, then erase; erased pixels
    become 0, the mean of normalised data (torchvision's default)."""
    if brightness or contrast:
        x = jitter(x, brightness, contrast, mean, std)
    if shift or hflip or rotation:
        x = affine(x, shift, hflip, rotation, fill)
    if erasing:
        x = erase(x, erasing)
    return x
