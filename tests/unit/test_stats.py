"""The suite statistics against hand computations and a second library (statsmodels,
scikit-learn), never against the scipy call the code itself makes."""

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
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


@pytest.mark.parametrize("b, c", [(12, 3), (40, 38), (0, 6), (5, 0), (250, 205)])
def test_mcnemar_matches_statsmodels_exact(b, c):
    both, neither = 700, 100
    v = np.array([1] * both + [1] * b + [0] * c + [0] * neither, bool)
    w = np.array([1] * both + [0] * b + [1] * c + [0] * neither, bool)
    got_b, got_c, p = stats.mcnemar(v, w)
    assert (got_b, got_c) == (b, c)
    table = [[both, b], [c, neither]]
    assert p == pytest.approx(sm_mcnemar(table, exact=True).pvalue)


def test_mcnemar_by_hand_and_pooled_over_seeds():
    # b=3, c=0: p = 2 * 0.5**3 = 0.25
    v = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    w = np.array([[0, 0, 1, 0], [0, 1, 0, 0]], bool)
    assert stats.mcnemar(v, w) == (3, 0, pytest.approx(0.25))
    assert stats.mcnemar(w, w)[2] == 1.0


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
    test = stats.TestLevel(0.02, 0.012, 0.028)
    assert stats.verdict(seeds, 0.01, test, 0.001, 0.01, True, 0.01) == "better"
    assert stats.verdict(seeds, 0.01, test, 0.001, 0.01, False, 0.01) == "worse"  # a loss
    # the test set does not agree after Holm: not a verdict
    assert stats.verdict(seeds, 0.01, test, 0.2, 0.01, True, 0.01).startswith("underpowered")
    # neither significant, every interval within ±0.004
    small = _paired(0.001, -0.003, 0.004, 0.6)
    small_test = stats.TestLevel(0.001, -0.002, 0.003)
    text = stats.verdict(small, 0.9, small_test, 0.7, 0.01, True, 0.005)
    assert text == "no difference larger than 0.004"
    wide = _paired(0.001, -0.03, 0.04, 0.6)
    assert stats.verdict(wide, 0.9, small_test, 0.7, 0.01, True, 0.05) == (
        "underpowered (detects ≥ 0.05)"
    )
    # no predictions (e.g. cross-validated runs): the seeds decide
    assert stats.verdict(seeds, 0.01, None, math.nan, 0.01, True, 0.01) == "better"
