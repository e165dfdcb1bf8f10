"""The verdict rule is calibrated on a real suite's predictions (tests/fixtures/null_suite.npz:
one recipe trained with 12 seeds, written by tests/fixtures/make_null_suite.py).

A null suite is a baseline and two variants of 4 seeds each, the 12 seeds dealt out at random
and the test examples resampled: every side comes from the same distribution, with the real
seed-to-seed noise and the real correlation between examples. Over many of them the rule must
say `better` or `worse` in at most 5% (α = 0.05). Then each suite's first variant gets a true
improvement of the size the suite reports as detectable (its seed count, its spread, Holm's
first step): the rule must say `better` in at least 80%. The rule is `stats.compare`, the
function the report calls; the permutation test runs with 200 swaps here (1,000 in reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ablab import stats

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "null_suite.npz"
SUITES = 300
PER_SIDE = 4
SWAPS = 200


@pytest.fixture(scope="module")
def seeds() -> tuple[np.ndarray, np.ndarray]:
    """(targets, predictions: one row per seed) of the fixture."""
    with np.load(FIXTURE) as arrays:
        target = arrays["target"].astype(np.int64)
        rows = [arrays[k].astype(np.int64) for k in sorted(arrays.files) if k != "target"]
    return target, np.stack(rows)


def _evidence(target: np.ndarray, sides: dict[str, np.ndarray], resamples: stats.Resamples):
    """(per-seed accuracies by side, each variant's comparison across test examples): what
    the rule decides from, for every side but "baseline" (rows: seeds, paired in order)."""
    values = {name: {s: float((row == target).mean()) for s, row in enumerate(rows)}
              for name, rows in sides.items()}  # fmt: skip
    others = [name for name in sides if name != "baseline"]
    tests = {v: stats.test_level("accuracy", target, list(sides[v]), list(sides["baseline"]), 10,
                                 resamples, permutations=SWAPS) for v in others}  # fmt: skip
    return values, tests


def _decide(evidence, rule=stats.compare) -> dict[str, stats.Comparison]:
    values, tests = evidence
    variants = {v: values[v] for v in tests}
    return rule(values["baseline"], variants, tests, True, 0.01)


def _null_suites(target: np.ndarray, predictions: np.ndarray, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        order = rng.permutation(len(predictions))
        examples = rng.integers(0, len(target), len(target))  # a resampled test set
        sides = {name: predictions[order[i * PER_SIDE:(i + 1) * PER_SIDE]][:, examples]
                 for i, name in enumerate(("baseline", "a", "b"))}  # fmt: skip
        yield target[examples], sides, rng


def _plant(target: np.ndarray, rows: np.ndarray, size: float,
           rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Each seed's predictions with round(size * n) of its mistakes put right, the examples
    taken in one random order for every seed (a better model fixes the same hard cases)."""
    order = rng.permutation(len(target))
    out = rows.copy()
    for row in out:
        wrong = order[row[order] != target[order]]
        fix = wrong[: round(size * len(target))]
        row[fix] = target[fix]
    return out


@pytest.fixture(scope="module")
def null_suites(seeds) -> list[dict]:
    """Per null suite: its evidence, the rule's verdicts, and the verdict on the first
    variant once the suite's own detectable difference is planted in it."""
    target, predictions = seeds
    resamples = stats.Resamples(len(target), count=SWAPS, seed=0)
    out = []
    for tgt, sides, rng in _null_suites(target, predictions, SUITES):
        evidence = _evidence(tgt, sides, resamples)
        decided = _decide(evidence)
        planted = {**sides, "a": _plant(tgt, sides["a"], decided["a"].detectable, rng)}
        found = _decide(_evidence(tgt, planted, resamples))["a"].verdict
        out.append({"evidence": evidence, "verdicts": [c.verdict for c in decided.values()],
                    "planted": found})  # fmt: skip
    return out


def _false_rates(suites: list[dict], rule=None) -> tuple[float, float]:
    """(share of null comparisons that came out better/worse, share of null suites with any)."""
    words = [[c.verdict for c in _decide(s["evidence"], rule).values()] if rule else s["verdicts"]
             for s in suites]  # fmt: skip
    hits = [sum(w in ("better", "worse") for w in suite) for suite in words]
    return sum(hits) / sum(len(w) for w in words), sum(h > 0 for h in hits) / len(hits)


def test_the_fixture_is_one_recipe_with_real_seed_noise(seeds):
    target, predictions = seeds
    accuracy = (predictions == target).mean(1)
    assert predictions.shape == (12, 10000)
    assert 0.4 < accuracy.mean() < 0.8
    assert accuracy.std() > 0.003  # seeds differ: the noise the seed-level test must absorb
    # two seeds disagree on many examples: pooled per-example tests would call them different
    assert (predictions[0] != predictions[1]).mean() > 0.1


def test_the_verdict_rule_is_calibrated_and_has_its_stated_power(null_suites):
    false_rate, family_rate = _false_rates(null_suites)
    power = np.mean([s["planted"] == "better" for s in null_suites])
    assert false_rate <= 0.05, f"better/worse in {false_rate:.1%} of null comparisons"
    assert family_rate <= 0.05, f"a suite with a verdict in {family_rate:.1%} of null suites"
    assert power >= 0.80, f"a planted detectable difference found in {power:.1%}"


def test_a_rule_without_the_seed_level_test_is_caught(null_suites):
    """The mutation the calibration exists to catch: deciding on the test examples alone
    (pooled McNemar's mistake: two seeds of one recipe are two different models, so the test
    examples tell them apart) says better/worse in many null suites."""

    def examples_only(baseline, variants, tests, higher, smallest):
        real = stats.compare(baseline, variants, tests, higher, smallest)
        loose = {}
        for name, c in real.items():
            decided = c.test_p_holm < stats.ALPHA
            word = ("better" if c.test.diff > 0 else "worse") if decided else c.verdict
            loose[name] = stats.Comparison(c.seeds, c.p_holm, c.test, c.test_p_holm,
                                           c.detectable, word)  # fmt: skip
        return loose

    false_rate, _ = _false_rates(null_suites, examples_only)
    assert false_rate > 0.2
