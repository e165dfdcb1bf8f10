"""The claims ledger on synthetic suites, one per branch of the claim -> verdict mapping
(confirmed, contradicted, inconclusive, not run, two comparisons that disagree, no difference
where an effect or no loss was promised, an exact count, a full-scale record), bad `claims:`
params refused by name, and the repo's own claims all parse and name real suites."""

import copy
import json

import pytest

from ablab import claims, records
from ablab.config import ConfigError, load
from tests.conftest import REPO, TINY_PARAMS
from tests.unit.test_config import write

SUITE = {"experiment": "mlp", "seeds": [1, 2, 3, 4],
         "variants": {"base": {}, "up": {"model.width": 64}, "down": {"model.width": 8},
                      "same": {"model.width": 33}}}  # fmt: skip
# per variant, per seed: test accuracy (and parameters: up has more)
VALUES = {"base": [0.80, 0.82, 0.81, 0.83], "up": [0.85, 0.86, 0.865, 0.875],
          "down": [0.70, 0.73, 0.71, 0.72], "same": [0.8005, 0.8195, 0.8103, 0.8298]}  # fmt: skip


def project(tmp_path, claim_tree: dict, seeds=(1, 2, 3, 4)) -> tuple:
    tree = copy.deepcopy(TINY_PARAMS)
    result = {"up": {"variant": "up", "metric": "test_accuracy"}}
    record = {"name": "s_full", "source": "x", "result": result}
    tree["suites"] = {"s": {**SUITE, "smallest_effect": 0.01, "full": {"record": record}}}
    tree["claims"] = claim_tree
    params = load(write(tmp_path, tree))
    runs = [{"variant": v, "seed": s, "status": "finished", "run_id": f"{v}{s}", "failure": "",
             "history": [], "summary": {"test_accuracy": VALUES[v][i],
                                        "parameters": {"up": 2000, "down": 500}.get(v, 1000)}}
            for v in SUITE["variants"] for i, s in enumerate(seeds)]  # fmt: skip
    folder = tmp_path / "results" / "suites" / "s"
    folder.mkdir(parents=True)
    report = {"suite": "s", "family": "classify", "baseline": "base", "seeds": list(seeds),
              "variants": {v: "" for v in SUITE["variants"]}, "runs": runs,
              "metrics": ["test_accuracy", "parameters"]}  # fmt: skip
    (folder / "runs.json").write_text(json.dumps(report))
    return params, report


def comparison(variant, direction="higher", **extra):
    return {"suite": "s", "variant": variant, "metric": "test_accuracy", "direction": direction,
            **extra}  # fmt: skip


def verdicts(tmp_path, claim_tree, **kwargs) -> dict[str, str]:
    params, _ = project(tmp_path, claim_tree, **kwargs)
    return {r.cid: r.verdict for r in claims.rule(params, tmp_path)}


def test_each_branch_of_the_verdict(tmp_path):
    got = verdicts(tmp_path, {
        "C01": {"claim": "wider is better", "comparisons": [comparison("up")]},
        "C02": {"claim": "narrower is better", "comparisons": [comparison("down")]},
        "C03": {"claim": "33 units beat 32", "comparisons": [comparison("same")]},
        "C04": {"claim": "33 units lose nothing",
                "comparisons": [comparison("same", effect=False)]},
        "C05": {"claim": "width both helps and hurts",
                "comparisons": [comparison("up"), comparison("down")]},
        "C06": {"claim": "wider has more weights",
                "comparisons": [{**comparison("up"), "metric": "parameters", "kind": "exact"}]},
        "C07": {"claim": "untested", "reason": "nothing runs it"},
        "C08": {"claim": "at full size", "comparisons": [
            comparison("up", scale="full", record="s_full")]},
    })  # fmt: skip
    assert got == {
        "C01": "confirmed",  # significant in the claimed direction
        "C02": "contradicted",  # significant the other way
        "C03": "contradicted",  # no difference larger than X, where an effect was promised
        "C04": "confirmed",  # no difference, where no loss was promised
        "C05": "contradicted",  # two comparisons that disagree: one against is enough
        "C06": "confirmed",  # an exact count
        "C07": "not run",  # nothing tests it, and it says why
        "C08": "not run",  # no record of the full recipe yet
    }


def test_too_few_seeds_is_not_a_test_and_the_ledger_says_why(tmp_path):
    params, _ = project(tmp_path, {"C01": {"claim": "wider is better",
                                           "comparisons": [comparison("up")]}},
                        seeds=(1, 2))  # fmt: skip
    (ruling,) = claims.rule(params, tmp_path)
    assert ruling.verdict == "not run"
    assert "2 paired seeds (at least 3 decide)" in ruling.why_not_run()
    assert "not run: 2 paired seeds" in claims.markdown([ruling])


def test_results_older_than_the_claims_variant_are_not_a_run(tmp_path):
    """A suite's results from before params named the variant (a new variant, not yet run):
    that comparison is not run and says so; `ablab claims` does not stop on it."""
    params, report = project(tmp_path, {"C01": {"claim": "wider is better",
                                                "comparisons": [comparison("up")]}})  # fmt: skip
    report["variants"].pop("up")
    report["runs"] = [r for r in report["runs"] if r["variant"] != "up"]
    (tmp_path / "results" / "suites" / "s" / "runs.json").write_text(json.dumps(report))
    (ruling,) = claims.rule(params, tmp_path)
    assert ruling.verdict == "not run"
    assert "results/suites/s/runs.json has no variant up" in ruling.why_not_run()
    assert claims.detail(ruling).count("has no variant up") == 1  # the reason, said once


def test_a_noisy_comparison_is_inconclusive(tmp_path):
    noisy = {"base": [0.80, 0.90, 0.70, 0.85], "up": [0.84, 0.86, 0.78, 0.83]}
    params, report = project(tmp_path, {"C01": {"claim": "wider is better",
                                                "comparisons": [comparison("up")]}})  # fmt: skip
    for row in report["runs"]:
        if row["variant"] in noisy:
            row["summary"]["test_accuracy"] = noisy[row["variant"]][row["seed"] - 1]
    (tmp_path / "results" / "suites" / "s" / "runs.json").write_text(json.dumps(report))
    (ruling,) = claims.rule(params, tmp_path)
    assert ruling.verdict == "inconclusive"
    assert ruling.default[0].detail.startswith("underpowered (detects ≥")


def test_a_full_scale_record_decides_the_headline(tmp_path):
    claim = {"C01": {"claim": "wider is better", "comparisons": [
        comparison("down"), comparison("up", scale="full", record="s_full")]}}  # fmt: skip
    params, report = project(tmp_path, claim)
    report["variants"] = {"base": "", "up": ""}
    report["runs"] = [r for r in report["runs"] if r["variant"] in ("base", "up")]
    record = records.build(params, "s", report, "abc", 60.0, [])
    records.write(tmp_path, record)
    (ruling,) = claims.rule(params, tmp_path)
    assert ruling.default_verdict == "contradicted" and ruling.full_verdict == "confirmed"
    assert ruling.verdict == "confirmed"  # the technique at its proper size decides
    shown = claims.detail(ruling)
    assert "full: s: up vs baseline, test_accuracy: n 4, Δ +0.0475" in shown
    assert "again: ablab suite s --full --record" in shown
    claims.write([ruling], tmp_path / "out")
    assert "| C01 | wider is better |" in (tmp_path / "out" / "claims.md").read_text()
    assert (tmp_path / "out" / "claims.csv").read_text().splitlines()[1].endswith(",confirmed")


@pytest.mark.parametrize("bad, says", [
    ({"suite": "nope"}, "claims.C01.comparisons[0].suite: unknown suite 'nope'"),
    ({"variant": "wide"}, "claims.C01.comparisons[0].variant: got 'wide'"),
    ({"against": "wide"}, "claims.C01.comparisons[0].against: got 'wide'"),
    ({"metric": "test_bleu"}, "claims.C01.comparisons[0].metric: got 'test_bleu'"),
    ({"direction": "up"}, "direction: got 'up'; allowed: 'higher' or 'lower'"),
    ({"scale": "full"}, "scale full reads a record"),
    ({"scale": "full", "record": "other"}, "comparisons[0].record: got 'other'"),
])  # fmt: skip
def test_bad_claims_are_refused_by_key(tmp_path, bad, says):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        project(tmp_path, {"C01": {"claim": "c", "comparisons": [{**comparison("up"), **bad}]}})


def test_a_claim_tests_something_or_says_why(tmp_path):
    with pytest.raises(ConfigError, match="give comparisons, or a reason"):
        project(tmp_path, {"C01": {"claim": "c"}})
    with pytest.raises(ConfigError, match="claims.C1"):
        project(tmp_path, {"C1": {"claim": "c", "reason": "r"}})


def test_the_repo_states_every_claim_of_the_course():
    params = load(REPO / "params.yaml")
    assert sorted(params.claims) == [f"C{i:02d}" for i in range(1, 46)]


def test_a_variant_whose_training_failed_on_every_seed_is_the_worse(tmp_path):
    """Divergence is the failure a claim like "too high a rate" predicts: the side that
    diverged on every seed loses in the model's measures; a partial failure decides nothing
    by itself, and a timing is not a measure of the model."""
    params, report = project(tmp_path, {
        "C01": {"claim": "a rate too high fails", "comparisons": [comparison("down", "lower")]},
        "C02": {"claim": "it does not", "comparisons": [comparison("down")]},
        "C03": {"claim": "the base beats it", "comparisons": [
            comparison("base", against="down")]},
        "C04": {"claim": "wider is faster", "comparisons": [
            {**comparison("down", "lower"), "metric": "seconds_per_epoch"}]},
    })  # fmt: skip
    for row in report["runs"]:
        if row["variant"] == "down":
            row.update(status="diverged", summary={}, failure="non-finite loss")
    folder = tmp_path / "results" / "suites" / "s"
    (folder / "runs.json").write_text(json.dumps(report))
    got = {r.cid: r for r in claims.rule(params, tmp_path)}
    assert {cid: r.verdict for cid, r in got.items()} == {
        "C01": "confirmed",
        "C02": "contradicted",
        "C03": "confirmed",
        "C04": "not run",
    }
    assert "down's training failed on every seed (diverged)" in got["C01"].default[0].detail
    down = [row for row in report["runs"] if row["variant"] == "down"]
    down[0].update(status="finished", summary={"test_accuracy": 0.5})  # one seed lived
    (folder / "runs.json").write_text(json.dumps(report))
    got = {r.cid: r.verdict for r in claims.rule(params, tmp_path)}
    assert got["C01"] == "not run"  # one paired seed: nothing decided
