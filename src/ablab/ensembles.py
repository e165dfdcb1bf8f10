"""Ensembles from a suite's saved test probabilities, no retraining: a variant's seed models
averaged (their class probabilities) are one model, scored beside its members. An ensemble is
one model, so it is compared with the mean member across test examples: a paired bootstrap
over the test set (the same resamples for the ensemble and every member) gives the CI of
ensemble minus mean member and a two-sided p. numpy only."""

from __future__ import annotations

import base64

import numpy as np

from ablab.config import higher_is_better
from ablab.stats import ALPHA

# what an ensemble and its members are scored in (the classifier's metrics: their directions
# are declared there)
METRICS = ("test_accuracy", "test_nll", "test_ece")
ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017)
RESAMPLES = 1000


def encode(probabilities: np.ndarray) -> str:
    """N x K probabilities as base64 float16 (what a suite unit keeps on its trial)."""
    return base64.b64encode(np.asarray(probabilities, dtype="<f2").tobytes()).decode("ascii")


def decode(text: str, examples: int) -> np.ndarray:
    """The `examples` x K float32 probabilities `encode` wrote."""
    flat = np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)
    return flat.reshape(examples, -1)


def combine(members: list[np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities: the members' mean."""
    return np.mean(np.stack(members), axis=0)


def _per_example(probabilities: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per test example: correct (0/1), negative log-likelihood, confidence, its ECE bin."""
    confidence = probabilities.max(1)
    chosen = probabilities[np.arange(len(target)), target]
    return {
        "correct": (probabilities.argmax(1) == target).astype(float),
        "nll": -np.log(np.clip(chosen, 1e-7, None)),
        "confidence": confidence,
        "bin": np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1),
    }


def _scores(parts: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric for every row of `weights` (R x N: how often each example is drawn)."""
    total = weights.sum(1)
    out = {"test_accuracy": weights @ parts["correct"] / total,
           "test_nll": weights @ parts["nll"] / total}  # fmt: skip
    gap = np.zeros(len(weights))
    for b in range(ECE_BINS):
        inside = parts["bin"] == b
        if inside.any():  # |sum of (correct - confidence)| in the bin, over all examples
            gap += np.abs(weights[:, inside] @ (parts["correct"] - parts["confidence"])[inside])
    out["test_ece"] = gap / total
    return out


def evaluate(target: np.ndarray, members: list[np.ndarray], seed: int = 0,
             resamples: int = RESAMPLES) -> dict:  # fmt: skip
    """The ensemble of `members` (each N x K test probabilities, in test order) against its
    mean member, per metric: both values, the difference, its paired bootstrap 95% CI and
    two-sided p, and a verdict (better / worse where the CI excludes 0, else no difference
    shown)."""
    target = np.asarray(target, dtype=np.int64)
    n = len(target)
    rng = np.random.default_rng(seed)
    draws = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    weights = np.vstack([np.ones((1, n)), draws]).astype(np.float32)  # row 0: the test set
    ensemble = _scores(_per_example(combine(members), target), weights)
    each = [_scores(_per_example(m, target), weights) for m in members]
    out = {"members": len(members), "examples": n, "metrics": {}}
    for metric in METRICS:
        mean_member = np.mean([s[metric] for s in each], axis=0)
        delta = ensemble[metric] - mean_member
        low, high = np.percentile(delta[1:], [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        tail = min((delta[1:] <= 0).sum(), (delta[1:] >= 0).sum())
        p = min(1.0, 2 * (tail + 1) / (resamples + 1))
        word = "no difference shown"
        if low > 0 or high < 0:
            word = "better" if (delta[0] > 0) == higher_is_better("classify", metric) else "worse"
        out["metrics"][metric] = {
            "ensemble": float(ensemble[metric][0]), "mean_member": float(mean_member[0]),
            "members": [float(s[metric][0]) for s in each], "diff": float(delta[0]),
            "low": float(low), "high": float(high), "p": float(p), "verdict": word,
        }  # fmt: skip
    return out
