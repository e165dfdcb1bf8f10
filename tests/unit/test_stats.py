"""The suite statistics against hand computations and a second library (statsmodels,
scikit-learn, scipy's permutation test, which ablab does not call), never against the call the
code itself makes."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import f1_score, recall_score
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from ablab import stats


def test_paired_seeds_by_hand():
    # differences 0.03, 0.01, 0.05: mean 0.03, sd 0.02, se 0.02/sqrt(3), t = 2.598, df 2;
    # t(0.975, 2) = 4.302653, two-sided p(|t|>2.598, df 2) = 0.12168
    base = {1: 0.80, 2: 0.82, 3: 0.81}
    var = {1: 0.83, 2: 0.83, 3: 0.86, 4: 0.99}  # seed 4 has no pair: dropped
    r = stats.paired_seeds(base, var)
    assert r.n == 3
    assert r.diff == pytest.approx(0.03)
    assert r.sd == pytest.approx(0.02)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert (r.low, r.high) == pytest.approx((0.03 - half, 0.03 + half), rel=1e-6)
    assert r.p == pytest.approx(0.12168, abs=5e-5)
    assert r.d_z == pytest.approx(1.5)


def test_paired_is_more_powerful_than_unpaired_when_seeds_agree():
    # seeds move both sides together: the spread across seeds is large, the differences' small
    base = {1: 0.70, 2: 0.80, 3: 0.90}
    var = {1: 0.71, 2: 0.81, 3: 0.915}
    assert stats.paired_seeds(base, var).p < 0.05


def test_paired_edge_cases():
    assert stats.paired_seeds({1: 0.5}, {1: 0.6}).diff == pytest.approx(0.1)
    assert math.isnan(stats.paired_seeds({1: 0.5}, {1: 0.6}).p)
    assert stats.paired_seeds({1: 0.5}, {2: 0.6}).n == 0
    flat = stats.paired_seeds({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6})
    assert flat.diff == 0 and math.isnan(flat.p)
    # every seed moved by exactly the same amount (a deterministic ceiling, e.g. a tagger
    # that reads one way): t is infinite, p 0 as scipy gives it, not "no evidence"
    base, var = {1: 0.7683, 2: 0.7683, 3: 0.7683}, {1: 1.0, 2: 1.0, 3: 1.0}
    shifted = stats.paired_seeds(base, var)
    reference = scipy_stats.ttest_rel(list(var.values()), list(base.values()))
    assert shifted.p == reference.pvalue == 0.0
    assert (shifted.low, shifted.high) == pytest.approx((0.2317, 0.2317))
    better = stats.compare(base, {"both_ways": var}, {"both_ways": None}, True, 0.01)
    assert better["both_ways"].verdict == "better"


@pytest.mark.parametrize("n", [3, 5, 8])
def test_detectable_difference_matches_statsmodels_power(n):
    sd = 0.004
    effect = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert stats.detectable(sd, n) == pytest.approx(effect * sd, rel=1e-3)
    # a stricter level (Holm's first step over 4 variants) needs a larger difference
    assert stats.detectable(sd, n, alpha=0.0125) > stats.detectable(sd, n)
    assert math.isnan(stats.detectable(sd, 1))


def test_holm_matches_statsmodels_and_keeps_nan():
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    expected = multipletests(p, method="holm")[1]
    assert stats.holm(p) == pytest.approx(list(expected))
    # by hand: sorted 0.005*5, 0.01*4, 0.03*3, 0.04*2, 0.2*1, made monotone
    assert stats.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.2])
    with_nan = stats.holm([0.01, math.nan, 0.04])
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1])
    assert with_nan[2] == pytest.approx(0.04)


def test_permutation_p_matches_scipys_exact_paired_test():
    # 12 examples, 3 seeds: scipy enumerates all 2^12 sign flips of the per-example share
    # differences (an exact paired permutation test); ablab draws 20,000 example swaps
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 12)
    variant = [np.where(rng.random(12) < 0.8, y, 1 - y) for _ in range(3)]
    baseline = [np.where(rng.random(12) < 0.5, y, 1 - y) for _ in range(3)]
    share = np.mean(
        [(v == y).astype(float) - (b == y) for v, b in zip(variant, baseline, strict=True)], 0
    )
    exact = scipy_stats.permutation_test((share,), np.mean, permutation_type="samples",
                                         n_resamples=10**6).pvalue  # fmt: skip
    got = stats.permutation_p("accuracy", y, variant, baseline, 2, count=20000)
    assert got == pytest.approx(exact, abs=0.01)


def test_an_example_counts_once_however_many_seeds_scored_it():
    """Three seeds that made the same predictions are one piece of evidence, not three: the
    p-value of the test examples does not shrink (pooled McNemar's would, by about 3x in z)."""
    rng = np.random.default_rng(4)
    n = 2000
    y = rng.integers(0, 3, n)
    base = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
    better = base.copy()
    fix = np.flatnonzero(base != y)[:25]  # +0.0125 on 2,000 examples
    better[fix] = y[fix]
    one = stats.permutation_p("accuracy", y, [better], [base], 3)
    three = stats.permutation_p("accuracy", y, [better] * 3, [base] * 3, 3)
    assert one == three
    assert one < 0.01  # 25 examples fixed, none broken: a clear difference on one seed
    assert stats.permutation_p("accuracy", y, [base] * 3, [base] * 3, 3) == 1.0


def test_permutation_p_of_a_metric_that_is_not_a_mean_over_examples():
    rng = np.random.default_rng(5)
    n = 1500
    y = rng.integers(0, 4, n)
    base = np.where(rng.random(n) < 0.7, y, (y + 1) % 4)
    better = base.copy()
    fix = np.flatnonzero((base != y) & (y == 3))[:60]  # class 3's recall and F1 rise
    better[fix] = y[fix]
    assert stats.permutation_p("macro_f1", y, [better], [base], 4, count=500) < 0.01
    assert stats.permutation_p("minority_recall", y, [better], [base], 4, [3], count=500) < 0.01
    assert stats.permutation_p("macro_f1", y, [base], [base], 4, count=200) == 1.0
    # swapping labels (variant <-> baseline) flips the difference but not the p
    assert stats.permutation_p("macro_f1", y, [base], [better], 4, count=500) == pytest.approx(
        stats.permutation_p("macro_f1", y, [better], [base], 4, count=500)
    )


def test_test_level_bootstrap_of_accuracy_matches_the_confusion_path():
    rng = np.random.default_rng(6)
    n = 800
    y = rng.integers(0, 3, n)
    runs = [np.where(rng.random(n) < q, y, (y + 1) % 3) for q in (0.8, 0.75, 0.82, 0.7)]
    boot = stats.Resamples(n, count=300, seed=0)
    fast = stats.test_level("accuracy", y, runs[:2], runs[2:], 3, boot, permutations=100)
    slow = stats.test_level(
        "accuracy", y, runs[:2], runs[2:], 3, boot, permutations=100,
        variant_resampled=[boot.metric("accuracy", y, r, 3) for r in runs[:2]],
        baseline_resampled=[boot.metric("accuracy", y, r, 3) for r in runs[2:]],
    )  # fmt: skip
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high))
    assert fast.diff == pytest.approx(np.mean([(r == y).mean() for r in runs[:2]])
                                      - np.mean([(r == y).mean() for r in runs[2:]]))  # fmt: skip
    assert fast.p == slow.p


def test_metrics_on_confusions_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.6, y, rng.integers(0, 5, 400))
    pred[pred == 4] = 3  # class 4 never predicted: its F1 is 0
    assert stats.metric_value("accuracy", y, pred, 5) == pytest.approx(np.mean(y == pred))
    assert stats.metric_value("macro_f1", y, pred, 5) == pytest.approx(
        f1_score(y, pred, average="macro", labels=range(5), zero_division=0)
    )
    recall = recall_score(y, pred, average=None, labels=range(5), zero_division=0)
    assert stats.metric_value("minority_recall", y, pred, 5, [1, 4]) == pytest.approx(
        recall[[1, 4]].mean()
    )
    # one resample by hand: the metric on the picked examples
    rows = rng.integers(0, 400, (1, 400))
    cm = stats.confusions(y, pred, 5, rows)
    assert stats.METRICS["macro_f1"](cm)[0] == pytest.approx(
        f1_score(y[rows[0]], pred[rows[0]], average="macro", labels=range(5), zero_division=0)
    )


def test_paired_bootstrap_covers_the_truth_and_is_paired():
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 3, n)
    base = np.where(rng.random(n) < 0.80, y, (y + 1) % 3)
    better = base.copy()
    fix = np.flatnonzero(base != y)[:60]  # the variant fixes 60 mistakes: +0.03 exactly
    better[fix] = y[fix]
    boot = stats.Resamples(n, count=1000, seed=0)
    observed = stats.metric_value("accuracy", y, better, 3) - stats.metric_value(
        "accuracy", y, base, 3
    )
    r = stats.bootstrap_diff(
        [boot.metric("accuracy", y, better, 3)], [boot.metric("accuracy", y, base, 3)], observed
    )
    assert r.diff == pytest.approx(0.03)
    assert 0 < r.low < 0.03 < r.high
    # paired: far narrower than the unpaired spread of either accuracy (about ±0.018)
    assert r.high - r.low < 0.02
    same = stats.Resamples(n, count=1000, seed=0).metric("accuracy", y, base, 3)
    assert np.array_equal(same, boot.metric("accuracy", y, base, 3))  # seeded: reproducible


def _paired(diff, low, high, p):
    return stats.Paired(3, diff, low, high, p, 0.01, diff / 0.01)


def test_verdicts():
    seeds = _paired(0.02, 0.01, 0.03, 0.004)
    test = stats.TestLevel(0.02, 0.012, 0.028, 0.001)
    assert stats.verdict(seeds, 0.01, test, 0.001, 0.01, True, 0.01) == "better"
    assert stats.verdict(seeds, 0.01, test, 0.001, 0.01, False, 0.01) == "worse"  # a loss
    # the test set does not agree after Holm: not a verdict
    assert stats.verdict(seeds, 0.01, test, 0.2, 0.01, True, 0.01).startswith("underpowered")
    # significant on the test examples the other way: not a verdict either
    against = stats.TestLevel(-0.01, -0.02, -0.004, 0.001)
    assert stats.verdict(seeds, 0.01, against, 0.001, 0.01, True, 0.01).startswith("underpowered")
    # the test examples alone never decide: the seeds are not significant
    assert stats.verdict(seeds, 0.2, test, 0.001, 0.01, True, 0.01).startswith("underpowered")
    # neither significant, every interval within ±0.004
    small = _paired(0.001, -0.003, 0.004, 0.6)
    small_test = stats.TestLevel(0.001, -0.002, 0.003, 0.5)
    text = stats.verdict(small, 0.9, small_test, 0.7, 0.01, True, 0.005)
    assert text == "no difference larger than 0.004"
    wide = _paired(0.001, -0.03, 0.04, 0.6)
    assert stats.verdict(wide, 0.9, small_test, 0.7, 0.01, True, 0.05) == (
        "underpowered (detects ≥ 0.05)"
    )
    # no predictions (e.g. cross-validated runs): the seeds decide
    assert stats.verdict(seeds, 0.01, None, math.nan, 0.01, True, 0.01) == "better"
