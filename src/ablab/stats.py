"""The statistics of a suite's comparisons, in numpy and scipy only (no torch, no MLflow).

Two kinds of uncertainty, kept apart:
- across seeds (training randomness): variant and baseline share seeds (initialisation, data
  order, subset), so they are compared paired by seed: per-seed differences, paired t-test,
  its 95% CI, Cohen's d_z and the smallest difference the seed count could detect;
- across test examples (the finite test set): both are scored on the same test examples, so
  they are compared with the example as the unit: a paired permutation test that swaps the
  two sides' predictions example by example (every seed at once, so an example counts once,
  however many seeds scored it) and a paired bootstrap CI, both on the seed-averaged metric
  difference.
Holm-Bonferroni adjusts either family of p-values across the variants of a suite; a verdict
needs both (`verdict`), and tests/unit/test_calibration.py checks on null suites resampled from
a real suite that it says `better`/`worse` in at most 5% of them."""

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
    p: float  # paired t-test, two-sided; NaN below two seeds or where nothing differs
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
    if sd == 0.0:  # every seed moved by the same amount: t is infinite (p 0, as scipy's) unless
        # there was nothing to move (0/0: no p)
        p = 0.0 if diff != 0 else math.nan
        return Paired(n, diff, diff, diff, p, 0.0, math.nan)
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
    return _counts(code[rows], k)


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
        self._draws: np.ndarray | None = None  # (n, count): how often each drew each example

    def metric(self, metric: str, target, prediction, k: int, classes=None) -> np.ndarray:
        """The metric on every resample: (count,)."""
        fn = METRICS[metric]
        return np.concatenate(
            [fn(confusions(target, prediction, k, rows), classes) for rows in self.chunks]
        )

    def mean(self, values: np.ndarray) -> np.ndarray:
        """The mean of one value per example on every resample: (count,). Examples whose
        value is 0 (most, for a difference between two good models) add nothing, so only the
        others are read, from how often each resample drew each example."""
        if self._draws is None:  # example by resample, so an example's row is contiguous
            self._draws = np.concatenate(
                [np.stack([np.bincount(r, minlength=self.n) for r in rows]).astype(np.float32)
                 for rows in self.chunks]
            ).T.copy()  # fmt: skip
        nonzero = np.flatnonzero(values)
        return np.asarray(values, float)[nonzero] @ self._draws[nonzero] / self.n


@dataclass(frozen=True)
class TestLevel:
    """Variant minus baseline on the test examples, averaged over the paired seeds."""

    diff: float
    low: float  # 95% percentile interval of the paired bootstrap
    high: float
    p: float = math.nan  # paired permutation test over examples, two-sided


def bootstrap_diff(variant: list[np.ndarray], baseline: list[np.ndarray],
                   observed: float) -> TestLevel:  # fmt: skip
    """From per-seed resampled metric values (same resamples on both sides), the CI of the
    seed-averaged difference, centred on the observed one."""
    if not variant:
        return TestLevel(math.nan, math.nan, math.nan)
    delta = np.mean([v - b for v, b in zip(variant, baseline, strict=True)], axis=0)
    return _interval(delta, observed)


def _interval(delta: np.ndarray, observed: float, p: float = math.nan) -> TestLevel:
    low, high = np.percentile(delta, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return TestLevel(observed, float(low), float(high), p)


def permutation_p(metric: str, target, variant: list[np.ndarray], baseline: list[np.ndarray],
                  k: int, classes=None, count: int = 1000, seed: int = 0,
                  chunk: int = 250) -> float:  # fmt: skip
    """Two-sided p of the paired permutation test whose unit is the test example: under the
    null that the two sides are exchangeable on every example, each example's predictions are
    swapped between variant and baseline with probability 1/2, for every seed pair at once
    (one coin per example, however many seeds scored it), and the seed-averaged difference in
    `metric` recomputed; p = (1 + swaps at least as extreme as observed) / (1 + count)."""
    if not variant:
        return math.nan
    rng = np.random.default_rng(seed)
    target = np.asarray(target, dtype=np.int64)
    if metric == "accuracy":  # a swap flips the sign of the example's share difference
        share = np.mean([(v == target).astype(float) - (b == target)
                         for v, b in zip(variant, baseline, strict=True)], axis=0)  # fmt: skip
        share = share[share != 0]  # an example both sides score alike adds 0 either way
        observed = abs(share.sum())
        extreme = 0
        for start in range(0, count, chunk):
            rows = min(chunk, count - start)
            bits = rng.integers(0, 256, size=(rows, -(-len(share) // 8)), dtype=np.uint8)
            flips = np.unpackbits(bits, axis=1, count=len(share)).astype(float)
            swapped = share.sum() - 2 * (flips @ share)  # the flipped examples change sign
            extreme += int((np.abs(swapped) >= observed - 1e-9).sum())
        return (1 + extreme) / (1 + count)
    fn = METRICS[metric]
    codes = [(target * k + np.asarray(v, dtype=np.int64), target * k + np.asarray(b, np.int64))
             for v, b in zip(variant, baseline, strict=True)]  # fmt: skip
    everything = np.arange(len(target))[None, :]

    def diff(swap: np.ndarray) -> np.ndarray:  # (rows, n) masks -> (rows,) differences
        out = np.zeros(len(swap))
        for cv, cb in codes:
            out += fn(_counts(np.where(swap, cb, cv), k), classes)
            out -= fn(_counts(np.where(swap, cv, cb), k), classes)
        return out / len(codes)

    observed = abs(float(diff(np.zeros_like(everything, dtype=bool))[0]))
    extreme = 0
    for start in range(0, count, chunk):
        swap = rng.integers(0, 2, size=(min(chunk, count - start), len(target))).astype(bool)
        extreme += int((np.abs(diff(swap)) >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + count)


def _counts(codes: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (rows, k, k) from per-row codes target * k + prediction."""
    rows = len(codes)
    picked = codes + (np.arange(rows) * k * k)[:, None]
    return np.bincount(picked.ravel(), minlength=rows * k * k).reshape(rows, k, k).astype(float)


def test_level(metric: str, target, variant: list[np.ndarray], baseline: list[np.ndarray],
               k: int, resamples: Resamples, classes=None, permutations: int = 1000,
               variant_resampled: list[np.ndarray] | None = None,
               baseline_resampled: list[np.ndarray] | None = None) -> TestLevel:  # fmt: skip
    """Variant minus baseline across test examples, seeds paired (lists in seed order): the
    observed seed-averaged difference, its paired bootstrap CI and the permutation p. The
    runs' resampled metric values may be passed in (a report computes each run's once)."""
    if not variant:
        return TestLevel(math.nan, math.nan, math.nan)
    observed = float(np.mean([metric_value(metric, target, v, k, classes)
                              - metric_value(metric, target, b, k, classes)
                              for v, b in zip(variant, baseline, strict=True)]))  # fmt: skip
    p = permutation_p(metric, target, variant, baseline, k, classes, permutations)
    if metric == "accuracy" and variant_resampled is None:
        target = np.asarray(target)
        share = np.mean([(v == target).astype(float) - (b == target)
                         for v, b in zip(variant, baseline, strict=True)], axis=0)  # fmt: skip
        return _interval(resamples.mean(share), observed, p)
    v = variant_resampled or [resamples.metric(metric, target, x, k, classes) for x in variant]
    b = baseline_resampled or [resamples.metric(metric, target, x, k, classes) for x in baseline]
    delta = np.mean([a - c for a, c in zip(v, b, strict=True)], axis=0)
    return _interval(delta, observed, p)


VERDICTS = ("better", "worse", "no difference", "underpowered")


def verdict(seeds: Paired, seed_p_holm: float, test: TestLevel | None, test_p_holm: float,
            smallest_effect: float, higher_is_better: bool, mde: float) -> str:  # fmt: skip
    """better / worse: the seed-level paired t-test is significant after Holm and the
    test-level permutation test is too (after Holm), with the same sign; without per-example
    predictions the seeds decide. "no difference larger than X": the seeds are not
    significant and every 95% CI lies within ±X <= smallest_effect. Otherwise
    "underpowered", with the detectable difference."""
    seed_sig = math.isfinite(seed_p_holm) and seed_p_holm < ALPHA
    bounds = [seeds.low, seeds.high]
    test_sig, agree = True, True  # without per-example predictions the seeds decide
    if test is not None and math.isfinite(test.diff):
        bounds += [test.low, test.high]
        test_sig = math.isfinite(test_p_holm) and test_p_holm < ALPHA
        agree = np.sign(test.diff) == np.sign(seeds.diff)
    if seed_sig and test_sig and agree:
        return "better" if (seeds.diff > 0) == higher_is_better else "worse"
    if not seed_sig and all(math.isfinite(b) for b in bounds):
        widest = max(abs(b) for b in bounds)
        if widest <= smallest_effect:
            return f"no difference larger than {widest:.2g}"
    return f"underpowered (detects ≥ {mde:.2g})" if math.isfinite(mde) else "underpowered"


@dataclass(frozen=True)
class Comparison:
    """One variant against the baseline: both kinds of evidence, Holm-adjusted over the
    suite's variants, the detectable difference and the verdict."""

    seeds: Paired
    p_holm: float
    test: TestLevel | None
    test_p_holm: float
    detectable: float
    verdict: str


def compare(baseline: dict[int, float], variants: dict[str, dict[int, float]],
            tests: dict[str, TestLevel | None], higher_is_better: bool,
            smallest_effect: float) -> dict[str, Comparison]:  # fmt: skip
    """Every variant's per-seed values against the baseline's (`tests`: each variant's
    comparison across test examples on the seeds both have, or None): paired t-tests and
    permutation p-values each Holm-adjusted over the variants, the detectable difference at
    Holm's first step, and the verdict (`verdict`)."""
    names = list(variants)
    paired = {v: paired_seeds(baseline, variants[v]) for v in names}
    p_holm = dict(zip(names, holm([paired[v].p for v in names]), strict=True))
    test_p = [tests[v].p if tests.get(v) is not None else math.nan for v in names]
    test_holm = dict(zip(names, holm(test_p), strict=True))
    alpha = ALPHA / max(sum(math.isfinite(paired[v].p) for v in names), 1)
    out = {}
    for v in names:
        mde = detectable(paired[v].sd, paired[v].n, alpha)
        word = (verdict(paired[v], p_holm[v], tests.get(v), test_holm[v], smallest_effect,
                        higher_is_better, mde) if paired[v].n else "no pairs")  # fmt: skip
        out[v] = Comparison(paired[v], p_holm[v], tests.get(v), test_holm[v], mde, word)
    return out
