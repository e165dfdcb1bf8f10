"""The explain pictures: test images with each method's map over them, the
activation-maximization grid, and the faithfulness table with its curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ablab.figures import Figure, plt


def _show(ax, image: torch.Tensor) -> None:
    """An image C x H x W in [0, 1]: grey for one channel, colour for three."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(array, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def examples_figure(images: torch.Tensor, captions: Sequence[str],
                    maps: dict[str, torch.Tensor], title: str) -> Figure:  # fmt: skip
    """A row per image: the image (captioned true / predicted / confidence), then each
    method's map over it (scaled to its own range; a flat map stays blank)."""
    methods = list(maps)
    fig, axes = plt.subplots(len(images), 1 + len(methods),
                             figsize=(1.3 * (1 + len(methods)), 1.35 * len(images)),
                             squeeze=False)  # fmt: skip
    for row, (image, caption) in enumerate(zip(images, captions, strict=True)):
        _show(axes[row, 0], image)
        axes[row, 0].set_ylabel(caption, fontsize=6, rotation=0, ha="right", va="center")
        for col, method in enumerate(methods, 1):
            heat = maps[method][row]
            low, span = float(heat.min()), float(heat.max() - heat.min())
            _show(axes[row, col], image.mean(0, keepdim=True) * 0.6)
            shown = (heat - low) / span if span > 0 else torch.zeros_like(heat)  # flat: blank
            axes[row, col].imshow(shown.numpy(), cmap="jet", alpha=0.55, vmin=0, vmax=1)
            if row == 0:
                axes[row, col].set_title(method, fontsize=7)
    axes[0, 0].set_title("image", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return fig


def activation_max_figure(class_images: torch.Tensor, classes: Sequence[str],
                          channel_images: torch.Tensor | None, layer: str,
                          title: str) -> Figure:  # fmt: skip
    """Top row: the input each class's logit is highest for; bottom row: each channel's."""
    rows = 1 if channel_images is None or not len(channel_images) else 2
    cols = max(len(class_images), len(channel_images) if rows == 2 else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, name) in enumerate(zip(class_images, classes, strict=True)):
        _show(axes[0, i], image)
        axes[0, i].axis("on")
        axes[0, i].set_title(name, fontsize=6)
    if rows == 2:
        for k, image in enumerate(channel_images):
            _show(axes[1, k], image)
            axes[1, k].axis("on")
            axes[1, k].set_title(f"{layer} ch {k}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def filters_figure(weights: torch.Tensor, first_images: torch.Tensor,
                   last_images: torch.Tensor, title: str) -> Figure:  # fmt: skip
    """Top row: the first conv layer's filters (each scaled to its own range; colour filters
    in colour); middle: the input a centre unit of each responds to most; bottom: the same for
    the last conv layer's channels (Zeiler & Fergus 2014's question: edges first, parts
    later?)."""
    cols = max(len(weights), len(last_images))
    fig, axes = plt.subplots(3, cols, figsize=(1.2 * cols, 4.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, w in enumerate(weights):
        w = (w - w.min()) / (w.max() - w.min()).clamp_min(1e-12)
        _show(axes[0, k], w)
        axes[0, k].set_title(f"filter {k}", fontsize=6)
    for row, images, name in ((1, first_images, "first"), (2, last_images, "last")):
        for k, image in enumerate(images):
            _show(axes[row, k], image)
            axes[row, k].set_title(f"{name} conv ch {k}", fontsize=6)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    return fig


def faithfulness_figure(table: dict[str, dict[str, float]], curves: dict[str, np.ndarray],
                        threshold: float, title: str) -> Figure:  # fmt: skip
    """Left: mean deletion and insertion curves per order; right: the table (deletion AUC,
    lower is better; insertion AUC, higher; randomization correlation, lower; failing
    sanity marked)."""
    size = (15, 0.35 * len(table) + 3.2)
    widths = {"width_ratios": [1, 1, 1.4]}
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=size, gridspec_kw=widths)
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    for i, (name, pair) in enumerate(curves.items()):
        x = np.linspace(0, 1, pair.shape[1])
        style = {"color": "black" if name in ("random", "intensity") else colours[i % 10],
                 "linestyle": "--" if name in ("random", "intensity") else "-"}  # fmt: skip
        left.plot(x, pair[0], label=name, **style)
        middle.plot(x, pair[1], label=name, **style)
    left.set_title("deletion (lower area is better)", fontsize=9)
    middle.set_title("insertion (higher area is better)", fontsize=9)
    for ax in (left, middle):
        ax.set_xlabel("fraction of pixels")
        ax.set_ylabel("probability of the class")
    left.legend(fontsize=7)
    right.axis("off")
    header = ["order", "deletion AUC", "insertion AUC", "randomization ρ"]
    rows = []
    for name, row in table.items():
        rho = row.get("randomization_rank_correlation")
        flag = " (fails)" if rho is not None and rho >= threshold else ""
        rows.append([name, f"{row['deletion_auc']:.3f}", f"{row['insertion_auc']:.3f}",
                     "" if rho is None else f"{rho:.2f}{flag}"])  # fmt: skip
    cells = right.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    cells.scale(1, 1.3)
    cells.auto_set_font_size(False)
    cells.set_fontsize(8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
