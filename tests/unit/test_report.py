import numpy as np
import pytest

from ablab.report import markdown, power_line, suite_table


def fake_report():
    def run(variant, seed, acc, status="finished"):
        summary = {} if status != "finished" else {
            "test_accuracy": acc, "test_macro_f1": acc - 0.01, "test_loss": 1 - acc,
            "train_val_gap": 0.1, "best_epoch": 3, "seconds_per_epoch": 0.5, "parameters": 1000,
        }  # fmt: skip
        return {"variant": variant, "seed": seed, "status": status, "summary": summary,
                "history": [], "failure": "", "run_id": ""}  # fmt: skip

    return {
        "suite": "s", "experiment": "mlp", "baseline": "base", "headline": "test_accuracy",
        "seeds": [1, 2, 3], "common": "", "family": "classify",
        "metrics": ["test_accuracy", "test_macro_f1", "test_loss", "test_minority_recall"],
        "compared": ["test_accuracy", "test_macro_f1", "test_minority_recall"],
        "variants": {"wide": "model.width=512", "base": "(none)", "boom": "train.lr=10"},
        "runs": [
            run("base", 1, 0.80), run("base", 2, 0.82), run("base", 3, 0.81),
            run("wide", 1, 0.85), run("wide", 2, 0.86), run("wide", 3, 0.88),
            run("boom", 1, 0, "diverged"), run("boom", 2, 0.5), run("boom", 3, 0, "diverged"),
        ],
    }  # fmt: skip


def test_table_puts_the_baseline_first_and_counts_diverged_runs():
    table = suite_table(fake_report()).set_index("variant")
    assert list(table.index) == ["base", "wide", "boom"]
    assert table.loc["wide", "test_accuracy_mean"] == pytest.approx(0.8633333)
    assert table.loc["wide", "test_accuracy_std"] == pytest.approx(0.0152753, rel=1e-4)
    assert table.loc["wide", "delta_test_accuracy"] == pytest.approx(0.0533333, rel=1e-4)
    assert table.loc["boom", "diverged"] == 2
    assert table.loc["boom", "test_accuracy_mean"] == 0.5  # the seed that finished
    text = markdown(suite_table(fake_report()), fake_report())
    boom = next(x for x in text.splitlines() if x.startswith("| boom"))
    assert "1/3 (2 diverged)" in boom
    wide = next(x for x in text.splitlines() if x.startswith("| wide"))
    assert "0.8633 ± 0.0153" in wide and "+0.0533 [" in wide


def fake_predictions(n=1000):
    """Per seed, the baseline gets 80% right; `wide` fixes 50 more of its mistakes (+0.05)."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, n).astype(np.int16)
    arrays = {"target": target}
    for seed in (1, 2, 3):
        base = np.where(rng.random(n) < 0.8, target, (target + 1) % 3).astype(np.int16)
        wide = base.copy()
        fix = np.flatnonzero(base != target)[:50]
        wide[fix] = target[fix]
        arrays[f"base/seed{seed}"], arrays[f"wide/seed{seed}"] = base, wide
    arrays["boom/seed2"] = np.zeros(n, np.int16)
    return arrays


def test_paired_comparisons_test_level_and_verdicts():
    report = fake_report()
    report["per_example"] = {"test_accuracy": "accuracy", "test_macro_f1": "macro_f1"}
    full = suite_table(report, fake_predictions())
    table = full.set_index("variant", drop=False)
    wide = table.loc["wide"]
    # across seeds, paired by hand: differences 0.05, 0.04, 0.07; sd 0.015275; t(0.975, 2)
    half = 4.302653 * 0.0152753 / 3**0.5
    assert wide["delta_test_accuracy"] == pytest.approx(0.0533333, rel=1e-4)
    assert wide["delta_test_accuracy_low"] == pytest.approx(0.0533333 - half, rel=1e-4)
    assert wide["d_z_test_accuracy"] == pytest.approx(0.0533333 / 0.0152753, rel=1e-4)
    # boom finished one seed only: no paired test, so Holm adjusts over one hypothesis
    assert wide["p_holm_test_accuracy"] == pytest.approx(wide["p_test_accuracy"])
    # across test examples: exactly +0.05 per seed; no swap of the examples' predictions
    # comes near: the permutation test's smallest p, 1/1001
    assert wide["test_delta_test_accuracy"] == pytest.approx(0.05)
    assert wide["test_delta_test_accuracy_low"] > 0.03
    assert wide["test_p_test_accuracy"] == pytest.approx(1 / 1001)
    assert wide["verdict_test_accuracy"] == "better"
    # macro-F1 too is compared across test examples
    assert wide["test_delta_test_macro_f1_low"] > 0
    assert wide["test_p_test_macro_f1"] == pytest.approx(1 / 1001)
    assert table.loc["boom", "verdict_test_accuracy"] == "underpowered"
    text = markdown(full, report)
    row = next(x for x in text.splitlines() if x.startswith("| wide"))
    assert "**better**" in row and "+0.0500 [" in row
    line = power_line(full, report)
    assert "across 3 seeds" in line and "test examples" in line


def test_without_predictions_the_seeds_decide():
    table = suite_table(fake_report()).set_index("variant")
    assert np.isnan(table.loc["wide", "test_delta_test_accuracy"])
    # paired t = 6.05 on 2 degrees of freedom: p = 0.026, the only hypothesis
    assert table.loc["wide", "p_test_accuracy"] == pytest.approx(0.0262, abs=2e-4)
    assert table.loc["wide", "verdict_test_accuracy"] == "better"


def test_power_line_with_one_seed_says_so():
    report = fake_report()
    report["runs"] = [r for r in report["runs"] if r["seed"] == 1]
    line = power_line(suite_table(report), report)
    assert "1 paired seed, so no seed-to-seed spread" in line and "nan" not in line


def test_a_transfer_suite_places_each_variant_between_floor_and_ceiling():
    report = fake_report()
    report["family"] = "adapt"
    for run in report["runs"]:  # base: the floor (0.81), wide: the ceiling (0.8633)
        run["variant"] = {"base": "target_only", "wide": "oracle", "boom": "dann"}[run["variant"]]
    report["baseline"] = "target_only"
    report["variants"] = {"target_only": "", "oracle": "", "dann": ""}
    table = suite_table(report).set_index("variant")
    assert table.loc["target_only", "gap_closed"] == 0.0
    assert table.loc["oracle", "gap_closed"] == pytest.approx(1.0)
    assert table.loc["dann", "gap_closed"] == pytest.approx((0.5 - 0.81) / (0.8633333 - 0.81))
    text = markdown(table.reset_index(), report)
    header = next(x for x in text.splitlines() if x.startswith("| variant"))
    assert "| floor→ceiling |" in header
    dann = next(x for x in text.splitlines() if x.startswith("| dann"))
    assert "-5.81" in dann  # below the floor: the source hurt
