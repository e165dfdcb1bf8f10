"""Which training examples, how often: subsets, skew, folds, over/under-sampling, weighted
sampling. Index arithmetic on label arrays; no data is copied here."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split


def stratified_subset(idx: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` of the indices `idx`, class proportions kept (all of them if size >= len)."""
    if size >= len(idx):
        return idx
    kept, _ = train_test_split(idx, train_size=size, stratify=labels[idx], random_state=seed)
    return np.sort(kept)


def skew(
    idx: np.ndarray, labels: np.ndarray, classes: list[int], keep: float, seed: int
) -> np.ndarray:
    """Keep only a `keep` fraction (at least one) of each class in `classes`."""
    rng = np.random.default_rng(seed)
    out = [idx[~np.isin(labels[idx], classes)]]
    for c in classes:
        members = idx[labels[idx] == c]
        count = max(1, round(keep * len(members))) if len(members) else 0
        out.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(out))


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """A copy of `labels` with round(fraction * n) of them, picked at random, replaced by a
    different class drawn uniformly (symmetric label noise)."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    picked = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    shift = rng.integers(1, num_classes, size=len(picked))  # never the same class
    out[picked] = (labels[picked] + shift) % num_classes
    return out


def outlying_targets(targets: np.ndarray, fraction: float, size: float, seed: int) -> np.ndarray:
    """A copy of (standardised) regression `targets` with round(fraction * n) of them, picked
    at random, moved up or down (at random) by `size`."""
    rng = np.random.default_rng(seed)
    out = targets.copy()
    picked = rng.choice(len(targets), size=round(fraction * len(targets)), replace=False)
    out[picked] += rng.choice([-size, size], size=len(picked))
    return out


def fold(
    idx: np.ndarray, labels: np.ndarray, folds: int, index: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold `index` of a stratified k-fold split of `idx`: (train indices, validation indices)."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, val = list(splitter.split(idx, labels[idx]))[index]
    return idx[train], idx[val]


RESAMPLING = ("oversample", "undersample", "combined")


def resample(idx: np.ndarray, labels: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Every class brought to one count: the largest class's by random oversampling (drawn
    with replacement), the smallest's by undersampling (without), or (combined) the mean
    class count, the larger classes undersampled and the smaller oversampled. The mean, not the
    median: where most classes are large (the imbalance suite cuts 4 of 10), the median is the
    largest count and "combined" would be plain oversampling."""
    rng = np.random.default_rng(seed)
    groups = [idx[labels[idx] == c] for c in np.unique(labels[idx])]
    sizes = [len(g) for g in groups]
    targets = {"oversample": max(sizes), "undersample": min(sizes),
               "combined": round(float(np.mean(sizes)))}  # fmt: skip
    if method not in targets:
        raise ValueError(f"unknown resampling method {method!r}; known: {', '.join(targets)}")
    target = targets[method]
    parts = [
        rng.choice(g, target, replace=False) if len(g) >= target
        else np.concatenate([g, rng.choice(g, target - len(g), replace=True)])
        for g in groups
    ]  # fmt: skip
    return np.sort(np.concatenate(parts))


def balanced_order(labels: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Each epoch's batches of len(labels) indices drawn with replacement, each class equally
    likely (as WeightedRandomSampler draws them)."""
    counts = torch.bincount(labels).double()
    weights = 1.0 / counts[labels]
    n = len(labels)
    return lambda: torch.multinomial(weights, n, True, generator=generator).split(batch_size)
