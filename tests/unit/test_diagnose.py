"""The checklist on synthetic histories: each check fires on its symptom and stays quiet on a
healthy run; every suggested command loads as params."""

import shlex

import pytest

from ablab import diagnose
from ablab.config import DiagnoseParams, load
from tests.conftest import REPO

TH = DiagnoseParams()


def rows(train, val, **extra):
    out = []
    for i, (t, v) in enumerate(zip(train, val, strict=True)):
        row = {"epoch": i, "train_loss": t, "val_loss": v}
        row.update({k: vals[i] for k, vals in extra.items()})
        out.append(row)
    return out


def run(history, results=None, failure="", **params):
    base = {"model.arch": "cnn", "train.lr": "0.002", "train.max_epochs": str(len(history)),
            "train.test_checkpoint": "last", "train.early_stopping.enabled": "False",
            "train.imbalance": "none"}  # fmt: skip
    base.update(params)
    return diagnose.RunRecord(history, results or {}, base, failure, "cnn", "", "cnn")


HEALTHY = rows([1.0, 0.6, 0.44, 0.43, 0.425, 0.423], [1.0, 0.65, 0.5, 0.49, 0.488, 0.487])


def test_a_healthy_run_has_no_finding():
    assert diagnose.diagnose(run(HEALTHY), TH) == []


def test_overfitting():
    history = rows([1.0, 0.5, 0.3, 0.1, 0.05, 0.02], [1.0, 0.7, 0.6, 0.8, 1.1, 1.4])
    found = diagnose.overfitting(run(history), TH)
    assert found.check == "overfitting" and found.overrides == {"model.head_dropout": 0.5}
    assert "from epoch 3" in found.evidence and "1.400" in found.evidence
    assert "train.test_checkpoint=best" in found.advice
    mlp = diagnose.overfitting(run(history, **{"model.arch": "mlp", "model.dropout": "0.5"}), TH)
    assert mlp.overrides == {"train.regularize.l2": 0.001}  # dropout is on already
    # val loss a little above its best and close to train loss: not overfitting
    mild = rows([1.0, 0.8, 0.7, 0.65], [1.0, 0.8, 0.72, 0.75])
    assert diagnose.overfitting(run(mild), TH) is None


def test_underfitting():
    history = rows([2.0, 1.6, 1.3, 1.05, 0.85], [2.0, 1.7, 1.4, 1.15, 0.95])
    found = diagnose.underfitting(run(history), TH)
    assert found.overrides == {"train.max_epochs": 10}
    assert diagnose.underfitting(run(HEALTHY), TH) is None
    # train loss still falling but validation flat: not underfitting
    flat = rows([2.0, 1.6, 1.3, 1.05, 0.85], [1.0, 0.9, 0.9, 0.9, 0.9])
    assert diagnose.underfitting(run(flat), TH) is None


def test_learning_rate_too_high_divergence_and_spikes():
    found = diagnose.learning_rate_too_high(
        run([], failure="diverged: training loss is nan at step 5", **{"train.lr": "10.0"}), TH
    )
    assert "lower the learning rate" in found.advice and found.overrides == {"train.lr": 1.0}
    assert "training loss is nan at step 5" in found.evidence
    spiky = rows([1.0, 0.5, 1.3, 0.6], [1.0, 0.6, 1.2, 0.7])
    found = diagnose.learning_rate_too_high(run(spiky), TH)
    assert "epoch 3" in found.evidence and found.overrides == {"train.lr": 0.00067}
    assert diagnose.learning_rate_too_high(run(HEALTHY), TH) is None


def test_learning_rate_too_low():
    slow = rows([2.30, 2.28, 2.25, 2.22, 2.20], [2.30, 2.29, 2.26, 2.23, 2.21])
    found = diagnose.learning_rate_too_low(run(slow, **{"train.lr": "1e-5"}), TH)
    assert found.overrides == {"train.lr": 3e-5} and "4%" in found.evidence
    assert diagnose.learning_rate_too_low(run(HEALTHY), TH) is None


def test_gradients_vanishing_and_exploding():
    vanishing = rows([2.3] * 3, [2.3] * 3, **{"grad_norm/rnn.weight_hh_l0": [1e-6] * 3,
                                                "grad_norm/head.weight": [0.5] * 3})  # fmt: skip
    found = diagnose.gradients(run(vanishing, **{"model.arch": "rnn", "model.cell": "rnn"}), TH)
    assert found.check == "vanishing_gradients" and found.overrides == {"model.cell": "lstm"}
    sigmoid = diagnose.gradients(run(vanishing, **{"model.arch": "mlp",
                                                   "model.activation": "sigmoid"}), TH)  # fmt: skip
    assert sigmoid.overrides == {"model.activation": "relu"}
    exploding = rows([2.3] * 2, [2.3] * 2, **{"grad_norm/0.weight": [1.0, 5e3],
                                              "grad_norm/2.weight": [1.0, 3.0]})  # fmt: skip
    found = diagnose.gradients(run(exploding), TH)
    assert found.check == "exploding_gradients" and "5e+03" in found.evidence
    healthy = rows([1.0] * 2, [1.0] * 2, **{"grad_norm/0.weight": [0.2, 0.1],
                                            "grad_norm/2.weight": [0.5, 0.4]})  # fmt: skip
    assert diagnose.gradients(run(healthy), TH) is None


def test_dead_relus():
    found = diagnose.dead_relus(run(HEALTHY, {"dead_relu_fraction": 0.6}, **{"model.arch": "mlp"}),
                                TH)  # fmt: skip
    assert "60%" in found.evidence and found.overrides == {"model.activation": "leaky_relu"}
    assert diagnose.dead_relus(run(HEALTHY, {"dead_relu_fraction": 0.05}), TH) is None


def test_class_imbalance_only_on_a_skewed_training_set():
    recall = {"test_recall_shirt": 0.2, "test_recall_bag": 0.97, "test_recall_coat": 0.6}
    skewed = {**recall, "test_minority_recall": 0.4}
    found = diagnose.class_imbalance(run(HEALTHY, skewed), TH)
    assert "0.20 (shirt)" in found.evidence and "minority recall 0.40" in found.evidence
    assert found.overrides == {"train.imbalance": "weighted_loss"}
    assert diagnose.class_imbalance(run(HEALTHY, recall), TH) is None  # hard classes, balanced
    handled = run(HEALTHY, skewed, **{"train.imbalance": "oversample"})
    assert diagnose.class_imbalance(handled, TH) is None


def test_early_stopping_never_triggered_or_at_epoch_one():
    on = {"train.early_stopping.enabled": "True"}
    found = diagnose.early_stopping(run(HEALTHY, {"epochs_trained": 6, "best_epoch": 5}, **on), TH)
    assert found.check == "early_stopping_never_triggered"
    assert found.overrides == {"train.max_epochs": 12}
    early = run(HEALTHY[:4], {"epochs_trained": 4, "best_epoch": 0},
                **on, **{"train.max_epochs": "20"})  # fmt: skip
    assert diagnose.early_stopping(early, TH).check == "early_stopping_at_epoch_1"
    fine = run(HEALTHY[:4], {"epochs_trained": 4, "best_epoch": 2},
               **on, **{"train.max_epochs": "20"})  # fmt: skip
    assert diagnose.early_stopping(fine, TH) is None


def test_lr_finder_finding():
    assert diagnose.lr_finder(run(HEALTHY), 0.5, TH).overrides == {"train.lr": 0.5}
    assert diagnose.lr_finder(run(HEALTHY), 0.004, TH) is None


def test_the_finders_suggestion_is_always_said():
    assert diagnose.lr_finder_note(run(HEALTHY), 0.004, TH) == (
        "learning-rate finder: suggests 0.004, 2.0x from the lr used (0.002): within 10x: "
        "keep the lr"
    )
    assert diagnose.lr_finder_note(run(HEALTHY), 0.5, TH).endswith(
        "250.0x from the lr used (0.002): a finding above"
    )
    assert "no suggestion" in diagnose.lr_finder_note(run(HEALTHY), float("nan"), TH)


def test_commands_load_as_params_and_quote_the_suite():
    finding = diagnose.Finding("overfitting", "e", "a", {"model.head_dropout": 0.5})
    plain = run(HEALTHY)
    text = diagnose.command(plain, finding)
    assert text == "ablab train cnn --set experiments.cnn.model.head_dropout=0.5"
    sets = [a for a in shlex.split(text) if "=" in a]
    assert load(REPO / "params.yaml", sets).experiment("cnn").model.head_dropout == 0.5
    in_suite = diagnose.RunRecord(HEALTHY, {}, plain.params, "", "cnn", "regularization",
                                  "baseline")  # fmt: skip
    text = diagnose.command(in_suite, finding)
    sets = [a for a in shlex.split(text) if "=" in a]
    params = load(REPO / "params.yaml", sets)
    added = [r for r in params.suite_runs("regularization") if r.variant == "baseline_overfitting"]
    assert added and added[0].experiment.model.head_dropout == 0.5
    rows_ = [{"suite": "regularization", "variant": "dropout", "headline": "test_accuracy",
              "changes": "model.dropout=0.1, model.head_dropout=0.5",
              "delta_test_accuracy": 0.16, "delta_test_accuracy_low": 0.1,
              "delta_test_accuracy_high": 0.22, "verdict_test_accuracy": "better"}]  # fmt: skip
    quote = diagnose.measured(finding, rows_)
    assert quote == ("the regularization suite measured test_accuracy +0.160 [+0.100, +0.220] "
                     "across seeds for `dropout`, better")  # fmt: skip
    other = diagnose.Finding("x", "e", "a", {"model.head_dropout": 0.3})
    assert diagnose.measured(other, rows_) == ""


def test_markdown_and_tags():
    finding = diagnose.Finding("overfitting", "from epoch 3", "regularize", {}, "cmd", "q")
    text = diagnose.markdown(run(HEALTHY), [finding])
    assert "## overfitting" in text and "`cmd`" in text and "measured: q" in text
    assert diagnose.tags([finding]) == {"ablab.diagnosis.overfitting": "true"}
    assert "No check fired" in diagnose.markdown(run(HEALTHY), [])


@pytest.mark.parametrize("check", diagnose.CHECKS)
def test_every_check_tolerates_an_empty_run(check):
    assert check(run([]), TH) is None
