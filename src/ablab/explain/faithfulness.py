"""Numbers that say whether a map can be trusted.

Deletion and insertion (Petsiuk et al. 2018, RISE): remove (insert) pixels in the map's order,
most important first, and follow the top-1 softmax probability of the class explained; deletion
sets pixels to 0, insertion starts from a blurred copy and puts the original pixels back. The
area under each curve (trapezoid, the x axis the fraction of pixels, so in [0, 1]) is the score:
a faithful map deletes fast (low deletion AUC) and inserts fast (high insertion AUC). Random and
pixel-intensity orders are the baselines (on MNIST deleting to 0 only removes ink, so brightest
first is hard to beat).

Randomization (Adebayo et al. 2018): the Spearman correlation between the maps of the trained
network and of the same network with every weight re-initialised; a map that barely changes
does not explain the model."""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata
from torch import nn

BATCH = 512  # images per forward pass in the curves


def pixel_order(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """N x (H*W) pixel indices, most important first; ties (an all-zero map: every pixel) in
    a random order, so a map that says nothing scores as the random order does."""
    flat = maps.flatten(1)
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in flat])
    ranked = torch.argsort(-flat.gather(1, shuffle), dim=1, stable=True)
    return shuffle.gather(1, ranked)


def random_order(n: int, pixels: int, generator: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(pixels, generator=generator) for _ in range(n)])


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Insertion's starting image: each channel blurred (Gaussian, `sigma` pixels)."""
    return torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma))).to(x.dtype)


@torch.no_grad()
def curves(model: nn.Module, x: torch.Tensor, target: torch.Tensor, order: torch.Tensor,
           steps: int, start: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(deletion, insertion): N x (steps + 1) probabilities of `target`, after removing
    (inserting) the first round(k / steps * H * W) pixels of `order`, k = 0..steps."""
    n, _, h, w = x.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1).contiguous())
    rank = rank.view(n, 1, h, w)
    deletion, insertion = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    for k in range(steps + 1):
        shown = rank < round(k / steps * h * w)  # the pixels removed / inserted so far
        for i in range(0, n, BATCH):
            sl = slice(i, i + BATCH)
            both = torch.cat([torch.where(shown[sl], 0.0, x[sl]),
                              torch.where(shown[sl], x[sl], start[sl])])  # fmt: skip
            probs = torch.softmax(model(both), dim=1)
            t = target[sl].repeat(2)
            picked = probs.gather(1, t.view(-1, 1))[:, 0].numpy()
            m = len(t) // 2
            deletion[sl, k], insertion[sl, k] = picked[:m], picked[m:]
    return deletion, insertion


def auc(curve: np.ndarray) -> np.ndarray:
    """Per row, the trapezoid area under a curve sampled at evenly spaced x in [0, 1]."""
    steps = curve.shape[1] - 1
    return (curve.sum(1) - (curve[:, 0] + curve[:, -1]) / 2) / steps


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every layer's weights re-initialised (its own init), so that
    nothing learned is left; buffers such as the normalisation stay."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in twin.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return twin.eval()


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per image, the Spearman correlation of two N x H x W maps (0 where either is flat)."""
    ra, rb = (rankdata(m.flatten(1).numpy(), axis=1) for m in (a, b))
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    norm = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.divide((ra * rb).sum(1), norm, out=np.zeros(len(ra)), where=norm > 0)
