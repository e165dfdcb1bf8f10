"""Matplotlib figures: a run's confusion matrix and learning curves; a suite's overlays and bars."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display here, and none needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix with counts in the cells."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    return fig


def curves_figure(history: Sequence[dict[str, float]], title: str) -> Figure:
    """Train and validation loss, and validation accuracy, per epoch."""
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("train_loss", "val_loss"):
        values = [row.get(name, np.nan) for row in history]
        loss_ax.plot(epochs, values, marker="o", label=name)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [row.get("val_accuracy", np.nan) for row in history], marker="o")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("val_accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


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


def attention_figure(rows: Sequence[tuple[list[str], list[float], str]], title: str) -> Figure:
    """One strip per example: its tokens, shaded by attention weight, with a caption."""
    width = max(len(words) for words, _, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(0.7 * width + 1, 24), 1.1 * len(rows)))
    for ax, (words, weights, caption) in zip(np.atleast_1d(axes), rows, strict=True):
        ax.imshow([weights], cmap="Reds", aspect="auto", vmin=0, vmax=max(weights))
        ax.set_xticks(range(len(words)), words, rotation=40, ha="right", fontsize=7)
        ax.set_yticks([])
        ax.set_title(caption, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def forecast_figure(
    first_year: int, actual: Sequence[float], predicted: Sequence[float], title: str
) -> Figure:
    """Actual values and one-step-ahead forecasts over the test years."""
    years = np.arange(first_year, first_year + len(actual))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.plot(years, actual, marker=".", color="black", label="actual")
    ax.plot(years, predicted, marker=".", color="tab:red", label="forecast")
    ax.set_xlabel("year")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def alignment_figure(
    source: Sequence[str], output: Sequence[str], weights: np.ndarray, title: str
) -> Figure:
    """Attention of each output character (rows) over the source characters (columns)."""
    fig, ax = plt.subplots(figsize=(0.3 * len(source) + 1.5, 0.3 * len(output) + 1.2))
    ax.imshow(weights, cmap="Greys", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(source)), [c if c != " " else "␣" for c in source], fontsize=7)
    ax.set_yticks(range(len(output)), output, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
