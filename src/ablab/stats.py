"""The statistics of a suite's comparisons, in numpy and scipy only (no torch, no MLflow).

Two kinds of uncertainty, kept apart:
- across seeds (training randomness): variant and baseline share seeds (initialisation, data
  order, subset), so they are compared paired by seed: per-seed differences, paired t-test,
  its 95% CI, Cohen's d_z and the smallest difference the seed count could detect;
- across test examples (the finite test set): within a seed both are scored on the same test
  examples, so they are compared paired by example: McNemar's exact test on the correctness
  of the two prediction vectors and a paired bootstrap CI of the metric difference.
Holm-Bonferroni adjusts either family of p-values across the variants of a suite."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Paired:
    """Variant minus baseline over the seeds both finished."""

    n: int
    diff: float  # mean of the per-seed differences
    low: float  # 95% CI (t, n - 1 degrees of freedom); NaN below two seeds
    high: float
    p: float  # paired t-test, two-sided; NaN below two seeds or without spread
    sd: float  # standard deviation of the per-seed differences
    d_z: float  # effect size: diff / sd


def mean_curve(report: dict, variant: str, key: str) -> tuple[list[int], list[float]]:
    """A suite variant's per-epoch `key` averaged over its runs that have a history (a run
    that diverged has none): (epochs, means), epochs where no run has a value left out."""
    histories = [r["history"] for r in report["runs"] if r["variant"] == variant and r["history"]]
    epochs, means = [], []
    for epoch in range(max((len(h) for h in histories), default=0)):
        vals = [
            h[epoch][key] for h in histories if len(h) > epoch and h[epoch].get(key) is not None
        ]
        if vals:
            epochs.append(epoch)
            means.append(float(np.mean(vals)))
    return epochs, means


def paired_seeds(baseline: dict[int, float], variant: dict[int, float]) -> Paired:
    """Pair by seed the values both sides have (a diverged seed drops out of the pair)."""
    seeds = sorted(set(baseline) & set(variant))
    d = np.array([variant[s] - baseline[s] for s in seeds], dtype=float)
    n = len(d)
    if n == 0:
        return Paired(0, *(math.nan,) * 6)
    diff = float(d.mean())
    if n < 2:
        return Paired(1, diff, *(math.nan,) * 5)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return Paired(n, diff, diff, diff, math.nan, 0.0, math.nan)
    se = sd / math.sqrt(n)
    t = diff / se
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return Paired(n, diff, diff - half, diff + half, p, sd, diff / sd)


def detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test on n pairs, whose
    differences spread by `sd`, detects at level `alpha` with probability `power` (exact,
    from the noncentral t). NaN below two pairs or without a spread."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(effect: float) -> float:  # effect in units of sd (Cohen's d_z)
        nc = effect * math.sqrt(n)
        wrong_tail = np.nan_to_num(stats.nct.cdf(-crit, df, nc))  # NaN where it underflows
        return stats.nct.sf(crit, df, nc) + wrong_tail - power

    high = 1.0
    while shortfall(high) < 0:  # widen the bracket while the power is still short
        high *= 2
        if high > 1e4:
            return math.nan
    return float(optimize.brentq(shortfall, 1e-6, high)) * sd


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and
    does not count as a hypothesis."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def mcnemar(variant_correct: np.ndarray, baseline_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test: (b, c, p) with b = examples only the variant gets right, c = only
    the baseline; two-sided exact binomial p on the b + c discordant pairs. Arrays may stack
    several seeds (rows): the discordant pairs are summed over them."""
    v = np.asarray(variant_correct, dtype=bool)
    w = np.asarray(baseline_correct, dtype=bool)
    b, c = int((v & ~w).sum()), int((~v & w).sum())
    if b + c == 0:
        return b, c, 1.0
    p = min(1.0, 2 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))
    return b, c, p


# per-example metrics: from a stack of confusion matrices (resamples, K, K) to (resamples,)
def _recall(cm: np.ndarray) -> np.ndarray:
    actual = cm.sum(2)
    return np.divide(np.diagonal(cm, axis1=1, axis2=2), actual, out=np.zeros_like(actual),
                     where=actual > 0)  # fmt: skip


def _accuracy(cm: np.ndarray, classes=None) -> np.ndarray:
    return np.trace(cm, axis1=1, axis2=2) / np.maximum(cm.sum((1, 2)), 1)


def _macro_f1(cm: np.ndarray, classes=None) -> np.ndarray:
    tp = np.diagonal(cm, axis1=1, axis2=2)
    predicted, actual = cm.sum(1), cm.sum(2)
    denom = predicted + actual  # F1 = 2 tp / (predicted + actual); 0 where both are empty
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    return f1.mean(1)


def _minority_recall(cm: np.ndarray, classes=None) -> np.ndarray:
    return _recall(cm)[:, list(classes)].mean(1)


METRICS: dict[str, Callable[..., np.ndarray]] = {
    "accuracy": _accuracy,
    "macro_f1": _macro_f1,
    "minority_recall": _minority_recall,
}


def confusions(target: np.ndarray, prediction: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """Confusion matrices (len(rows), k, k) of the resamples whose example indices are `rows`
    (one resample per row)."""
    code = np.asarray(target, dtype=np.int64) * k + np.asarray(prediction, dtype=np.int64)
    picked = code[rows] + (np.arange(len(rows)) * k * k)[:, None]
    counts = np.bincount(picked.ravel(), minlength=len(rows) * k * k)
    return counts.reshape(len(rows), k, k).astype(float)


def metric_value(metric: str, target, prediction, k: int, classes=None) -> float:
    """One metric on the whole test set (what the resamples are centred on)."""
    rows = np.arange(len(target))[None, :]
    return float(METRICS[metric](confusions(target, prediction, k, rows), classes)[0])


class Resamples:
    """One fixed set of bootstrap resamples of the test examples (indices drawn with
    replacement), shared by every run of a suite so that all comparisons are paired."""

    def __init__(self, n: int, count: int = 2000, seed: int = 0, chunk: int = 250) -> None:
        rng = np.random.default_rng(seed)
        self.chunks = [
            rng.integers(0, n, size=(min(chunk, count - i), n), dtype=np.int32)
            for i in range(0, count, chunk)
        ]
        self.n = n

    def metric(self, metric: str, target, prediction, k: int, classes=None) -> np.ndarray:
        """The metric on every resample: (count,)."""
        fn = METRICS[metric]
        return np.concatenate(
            [fn(confusions(target, prediction, k, rows), classes) for rows in self.chunks]
        )


@dataclass(frozen=True)
class TestLevel:
    """Variant minus baseline on the test examples, averaged over the paired seeds."""

    diff: float
    low: float  # 95% percentile interval of the paired bootstrap
    high: float


def bootstrap_diff(variant: list[np.ndarray], baseline: list[np.ndarray],
                   observed: float) -> TestLevel:  # fmt: skip
    """From per-seed resampled metric values (same resamples on both sides), the CI of the
    seed-averaged difference, centred on the observed one."""
    if not variant:
        return TestLevel(math.nan, math.nan, math.nan)
    delta = np.mean([v - b for v, b in zip(variant, baseline, strict=True)], axis=0)
    low, high = np.percentile(delta, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return TestLevel(observed, float(low), float(high))


VERDICTS = ("better", "worse", "no difference", "underpowered")


def verdict(seeds: Paired, seed_p_holm: float, test: TestLevel | None, test_p_holm: float,
            smallest_effect: float, higher_is_better: bool, mde: float) -> str:  # fmt: skip
    """better / worse: the seed-level paired test is significant after Holm and the
    test-level evidence agrees (McNemar after Holm where there is one, else the bootstrap CI
    excludes 0). "no difference larger than X": neither is significant and every 95% CI lies
    within ±X <= smallest_effect. Otherwise "underpowered", with the detectable difference."""
    seed_sig = math.isfinite(seed_p_holm) and seed_p_holm < ALPHA
    bounds = [seeds.low, seeds.high]
    test_sig, agree = True, True  # without per-example predictions the seeds decide
    if test is not None and math.isfinite(test.low):
        bounds += [test.low, test.high]
        test_sig = (test.low > 0 or test.high < 0) and (
            not math.isfinite(test_p_holm) or test_p_holm < ALPHA
        )
        agree = np.sign(test.diff) == np.sign(seeds.diff)
    if seed_sig and test_sig and agree:
        return "better" if (seeds.diff > 0) == higher_is_better else "worse"
    if not seed_sig and all(math.isfinite(b) for b in bounds):
        widest = max(abs(b) for b in bounds)
        if widest <= smallest_effect:
            return f"no difference larger than {widest:.2g}"
    return f"underpowered (detects ≥ {mde:.2g})" if math.isfinite(mde) else "underpowered"
