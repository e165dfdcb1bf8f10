import math

import pytest
from scipy import stats

from ablab.report import compare, markdown, suite_table


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


def test_compare_is_welchs_test_with_its_confidence_interval():
    a, b = [0.80, 0.82, 0.81], [0.85, 0.86, 0.88]
    diff, low, high, p = compare(a, b)
    result = stats.ttest_ind(b, a, equal_var=False)
    assert diff == pytest.approx(0.0533333, rel=1e-4)
    assert p == pytest.approx(result.pvalue)
    assert (low, high) == pytest.approx(tuple(result.confidence_interval(0.95)))
    assert low < diff < high
    assert all(math.isnan(v) for v in compare(a, [0.9])[1:])  # one seed: no interval
    assert compare([0.5, 0.5], [0.5, 0.5])[0] == 0.0


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
