"""Matplotlib figures every family shares: a run's learning curves; a suite's overlays and bars.
A family's own pictures live in its module, drawn with the `plt` imported from here (which
sets the file-only backend first)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display here, and none needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def curves_figure(
    history: Sequence[dict[str, float]], title: str, metrics: Sequence[str] = ("val_accuracy",)
) -> Figure:
    """Train and validation loss per epoch, and beside it the other per-epoch `metrics`."""
    epochs = [row["epoch"] for row in history]
    shown = [m for m in metrics if any(m in row for row in history)]
    fig, axes = plt.subplots(1, 2 if shown else 1, figsize=(10 if shown else 5.5, 4))
    loss_ax = axes[0] if shown else axes
    for name in ("train_loss", "val_loss"):
        values = [row.get(name, np.nan) for row in history]
        loss_ax.plot(epochs, values, marker="o", label=name)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    for name in shown:
        axes[1].plot(epochs, [row.get(name, np.nan) for row in history], marker="o", label=name)
    if shown:
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel(shown[0] if len(shown) == 1 else "value")
        if len(shown) > 1:
            axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (then closed): one picture for MLflow and for DVC."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    close(fig)
    return buffer.getvalue()


def overlay_figure(
    curves: dict[str, tuple[Sequence[int], Sequence[float]]], highlight: str, title: str
) -> Figure:
    """One line per variant (epoch -> value); the highlighted one (the baseline) black."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.cm.tab20(np.linspace(0, 1, 20))  # 20 distinct colours: suites have >10 lines
    for i, (name, (epochs, values)) in enumerate(curves.items()):
        if not epochs:
            continue
        style = {"color": colours[i % 20]}
        if name == highlight:
            style = {"color": "black", "linewidth": 2.5, "zorder": 3}
        ax.plot(epochs, values, marker=".", label=name, **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_loss")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def bars_figure(
    names: Sequence[str], means: Sequence[float], stds: Sequence[float], highlight: str,
    label: str, title: str,
) -> Figure:  # fmt: skip
    """Horizontal bars with error bars; a variant without a value is marked 'diverged'."""
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(names) + 1.4))
    y = np.arange(len(names))
    values = np.nan_to_num(np.asarray(means, float), nan=0.0)
    errors = np.nan_to_num(np.asarray(stds, float), nan=0.0)
    colours = ["black" if n == highlight else "tab:blue" for n in names]
    ax.barh(y, values, xerr=errors, color=colours, capsize=3)
    finite = [m for m in means if not np.isnan(m)]
    if finite and min(finite) > 0:  # zoom in: differences are small next to the values
        span = max(finite) - min(finite)
        ax.set_xlim(max(0.0, min(finite) - max(span, 0.01) * 1.5), max(finite) + max(span, 0.01))
    for i, m in enumerate(means):
        if np.isnan(m):
            ax.text(ax.get_xlim()[0], i, " diverged", va="center", color="tab:red")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
