"""Activation maximization: the input a class (or a channel of a layer) responds to most,
found by gradient ascent on the pixels from noise (Erhan et al. 2009; Simonyan et al. 2014).
Without help the ascent finds adversarial noise; the usual regularisers keep it an image:
a random shift of the input each step (jitter), a Gaussian blur every few steps, an L2
penalty, and pixels clamped to [0, 1]. No library ships this for plain PyTorch models, so it is
ablab's (about forty lines)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from ablab.config.explain import ActivationMaxParams


def maximize(
    objective: Callable[[torch.Tensor], torch.Tensor], n: int, shape: tuple[int, ...],
    cfg: ActivationMaxParams, seed: int, center: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """n images (n x shape, pixels in [0, 1]), image i ascending objective(images)[i], from
    noise around `center` (the data's mean pixel), which the L2 penalty pulls towards."""
    generator = torch.Generator().manual_seed(seed)
    x = center + 0.1 * torch.randn(n, *shape, generator=generator)
    x = x.clamp(0, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=cfg.lr)
    j = cfg.jitter
    for step in range(cfg.steps):
        dy, dx = (int(v) for v in torch.randint(-j, j + 1, (2,), generator=generator))
        shifted = torch.roll(x, shifts=(dy, dx), dims=(-2, -1)) if j else x
        score = objective(shifted)
        loss = -score.sum() + cfg.l2 * ((x - center) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                sigma = (0,) * (x.dim() - 2) + (cfg.blur_sigma, cfg.blur_sigma)
                x.copy_(torch.from_numpy(gaussian_filter(x.numpy(), sigma=sigma)))
            x.clamp_(0, 1)
    return x.detach()


def classes(model: nn.Module, num_classes: int, shape: tuple[int, ...],
            cfg: ActivationMaxParams, seed: int, center: float = 0.5) -> torch.Tensor:  # fmt: skip
    """One image per class: image c ascends class c's logit."""
    index = torch.arange(num_classes).view(-1, 1)
    logit = lambda x: model(x).gather(1, index)[:, 0]  # noqa: E731
    return maximize(logit, num_classes, shape, cfg, seed, center)


def channels(model: nn.Module, layer: nn.Module, count: int, shape: tuple[int, ...],
             cfg: ActivationMaxParams, seed: int, center: float = 0.5,
             unit: bool = False) -> torch.Tensor:  # fmt: skip
    """One image per channel of `layer` (its first `count`): image k ascends channel k's mean
    activation, or with `unit` the activation of its one unit at the map's centre (what that
    unit's receptive field holds)."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(out))

    def objective(x: torch.Tensor) -> torch.Tensor:
        seen.clear()
        model(x)
        maps = seen[-1][torch.arange(len(x)), torch.arange(len(x))]
        if unit:
            return maps[:, maps.shape[-2] // 2, maps.shape[-1] // 2]
        return maps.mean((-2, -1))

    try:
        return maximize(objective, count, shape, cfg, seed, center)
    finally:
        handle.remove()
