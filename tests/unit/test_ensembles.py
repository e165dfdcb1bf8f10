"""Ensembles from saved test probabilities: the ensemble is the members' mean, its metrics are
the ones it is scored in, its comparison with the mean member is decided across test examples,
a suite keeps probabilities only where it ensembles, and the claims ledger reads the result."""

import copy
import json

import numpy as np
import pytest

from ablab import claims, ensembles
from ablab.config import ConfigError, load
from ablab.suite import ensemble_rows, kept_predictions
from tests.conftest import TINY_PARAMS
from tests.unit.test_config import write


def members(seed: int, n: int = 2000, k: int = 4, count: int = 5):
    """Members that each know the answer with noise of their own: their mean is surer."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, n)
    out = []
    for _ in range(count):
        logits = rng.normal(0, 1.5, (n, k))
        logits[np.arange(n), target] += 1.5
        p = np.exp(logits)
        out.append((p / p.sum(1, keepdims=True)).astype(np.float32))
    return target, out


def test_the_ensemble_is_the_members_mean_and_is_scored_so():
    target, probs = members(0)
    np.testing.assert_allclose(ensembles.combine(probs), np.mean(probs, axis=0))
    result = ensembles.evaluate(target, probs, resamples=200)
    mean = np.mean(probs, axis=0)
    acc = result["metrics"]["test_accuracy"]
    assert acc["ensemble"] == pytest.approx((mean.argmax(1) == target).mean())
    assert acc["members"] == pytest.approx([(p.argmax(1) == target).mean() for p in probs])
    nll = result["metrics"]["test_nll"]
    assert nll["ensemble"] == pytest.approx(-np.log(mean[np.arange(len(target)), target]).mean(),
                                            rel=1e-5)  # fmt: skip
    # independent errors: the mean is right more often and surer where it is
    assert acc["verdict"] == "better" and acc["low"] > 0
    assert nll["verdict"] == "better" and nll["high"] < 0
    assert result["members"] == 5 and result["examples"] == len(target)


def test_ece_by_hand():
    # 4 examples, confidence 0.9 in one bin (3 right, 1 wrong) and 0.6 in another (both wrong)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    target = np.array([0, 0, 0, 0, 1, 0])
    result = ensembles.evaluate(target, [probs, probs], resamples=10)
    # bin 0.9: |3/4 - 0.9| * 4/6; bin 0.6: |0 - 0.6| * 2/6
    expected = abs(0.75 - 0.9) * 4 / 6 + 0.6 * 2 / 6
    assert result["metrics"]["test_ece"]["ensemble"] == pytest.approx(expected, rel=1e-6)


def test_identical_members_make_no_difference():
    target, probs = members(1, count=1)
    result = ensembles.evaluate(target, probs * 3, resamples=200)
    for m in result["metrics"].values():
        assert m["diff"] == pytest.approx(0, abs=1e-6)
        assert m["verdict"] == "no difference shown" and m["p"] > 0.5


def test_probabilities_travel_as_float16_text():
    _, probs = members(2, n=50)
    text = ensembles.encode(probs[0])
    assert isinstance(text, str)
    np.testing.assert_allclose(ensembles.decode(text, 50), probs[0], atol=1e-3)


def test_a_suite_keeps_probabilities_only_where_it_ensembles_and_rows_read_them():
    target, probs = members(3, n=100, count=3)
    predicted = {"target": target, "prediction": probs[0].argmax(1), "probability": probs[0]}
    assert "probability" not in kept_predictions(predicted, ensemble=False)
    assert isinstance(kept_predictions(predicted, ensemble=True)["probability"], str)
    report = {"variants": {"a": "", "b": ""},
              "runs": [{"variant": v, "seed": s, "status": "finished" if s < 3 or v == "a"
                        else "diverged"} for v in "ab" for s in (1, 2, 3)]}  # fmt: skip
    saved = {f"{v}/seed{s}": kept_predictions({**predicted, "probability": probs[s - 1]}, True)
             for v in "ab" for s in (1, 2, 3)}  # fmt: skip
    rows = ensemble_rows(report, {k: {n: np.asarray(x) for n, x in v.items()}
                                  for k, v in saved.items()})  # fmt: skip
    assert rows["a"]["members"] == 3 and rows["b"]["members"] == 2  # b's seed 3 diverged
    direct = ensembles.evaluate(target, [ensembles.decode(ensembles.encode(p), 100)
                                         for p in probs])  # fmt: skip
    assert rows["a"] == direct


SUITE = {"experiment": "mlp", "seeds": [1, 2, 3], "ensemble": True,
         "variants": {"base": {}, "wide": {"model.width": 64}}}  # fmt: skip


def ledger(tmp_path, ensembles_held: dict, comparisons: list[dict]) -> dict[str, str]:
    tree = copy.deepcopy(TINY_PARAMS)
    tree["suites"] = {"s": SUITE}
    tree["claims"] = {"C40": {"claim": "ensembles generalise", "comparisons": comparisons}}
    params = load(write(tmp_path, tree))
    folder = tmp_path / "results" / "suites" / "s"
    folder.mkdir(parents=True, exist_ok=True)
    report = {"suite": "s", "family": "classify", "baseline": "base", "seeds": [1, 2, 3],
              "variants": {"base": "", "wide": ""}, "ensembles": ensembles_held,
              "runs": [{"variant": "base", "seed": s, "status": "finished", "run_id": f"r{s}",
                        "summary": {}, "history": []} for s in (1, 2, 3)]}  # fmt: skip
    (folder / "runs.json").write_text(json.dumps(report))
    (ruling,) = claims.rule(params, tmp_path)
    return {"verdict": ruling.verdict, "detail": ruling.default[0].detail}


def held(diff, low, high, count=3):
    metric = {"ensemble": 0.8 + diff, "mean_member": 0.8, "members": [0.8] * count,
              "diff": diff, "low": low, "high": high, "p": 0.01, "verdict": ""}  # fmt: skip
    return {"base": {"members": count, "examples": 1000,
                     "metrics": {m: metric for m in ensembles.METRICS}}}  # fmt: skip


def test_the_ledger_decides_an_ensemble_comparison(tmp_path):
    up = [{"suite": "s", "variant": "base", "metric": "test_accuracy", "direction": "higher",
           "kind": "ensemble"}]  # fmt: skip
    assert ledger(tmp_path, held(0.02, 0.01, 0.03), up)["verdict"] == "confirmed"
    assert ledger(tmp_path, held(-0.02, -0.03, -0.01), up)["verdict"] == "contradicted"
    assert ledger(tmp_path, held(0.01, -0.01, 0.03), up)["verdict"] == "inconclusive"
    two = ledger(tmp_path, held(0.02, 0.01, 0.03, count=2), up)
    assert two["verdict"] == "not run" and "2 members" in two["detail"]


def test_ensembles_refused_where_they_cannot_be(tmp_path):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["experiments"]["series"] = {
        "task": "regress", "model": {"arch": "mlp"}, "data": {"dataset": "sunspots"},
        "train": {"log_model": False},
    }  # fmt: skip
    tree["suites"] = {"s": {**SUITE, "experiment": "series"}}
    with pytest.raises(ConfigError, match="suites.s.ensemble: averages classifiers'.*regress"):
        load(write(tmp_path, tree))
    tree["suites"] = {"s": {**SUITE, "ensemble": False}}
    tree["claims"] = {"C40": {"claim": "x", "comparisons": [
        {"suite": "s", "variant": "base", "metric": "test_nll", "direction": "lower",
         "kind": "ensemble"}]}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"claims.C40.comparisons\[0\].kind: ensemble reads"):
        load(write(tmp_path, tree))
    tree["suites"] = {"s": SUITE}
    tree["claims"]["C40"]["comparisons"][0]["against"] = "wide"
    with pytest.raises(ConfigError, match="kind ensemble sets a variant's ensemble"):
        load(write(tmp_path, tree))


def test_the_report_run_logs_each_ensemble_under_a_name_mlflow_takes(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ablab import tracking
    from ablab.report import ensemble_markdown, ensemble_metrics

    target, probs = members(4, n=200, count=3)
    report = {"suite": "ensembles", "ensembles": {"plain": ensembles.evaluate(target, probs)}}
    metrics = ensemble_metrics(report)
    assert set(metrics) == {f"ensembles/plain/ensemble_{m}" for m in ensembles.METRICS}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        tracking.log_metrics(run.info.run_id, metrics)
    logged = MlflowClient().get_run(run.info.run_id).data.metrics
    assert logged == pytest.approx(metrics)
    table = ensemble_markdown(report)
    assert table.count("| plain | 3 |") == len(ensembles.METRICS)
