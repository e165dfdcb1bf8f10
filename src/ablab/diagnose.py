"""The model-tuning checklist as code. Each check is a small function over one run's record (its
epochs, results and params) with its threshold in params (`diagnose:`); a finding carries its
evidence (the numbers, the epoch), the advice, and the next experiment as a ready command,
with what a suite measured for that change where ablab has one. Used at the end of every
training run (diagnosis.md, tags ablab.diagnosis.<check>, a line in the terminal) and by
`ablab diagnose <experiment | run id>` on any run in the store. No torch, no MLflow here."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablab.config import DiagnoseParams


@dataclass
class RunRecord:
    """What the checks read: per-epoch rows (epoch, train_loss, val_loss, lr, grad_norm/<w>,
    ...), results (test metrics, best_epoch, epochs_trained, dead_relu_fraction,
    test_recall_<class>, ...), the params as logged (flat: "model.arch", "train.lr", ...),
    the failure of a FAILED run, and where the run came from (for the next command)."""

    history: list[dict[str, float]]
    results: dict[str, float]
    params: dict[str, str]
    failure: str = ""
    experiment: str = ""
    suite: str = ""
    variant: str = ""

    def param(self, key: str, default: str = "") -> str:
        return str(self.params.get(key, default))

    def number(self, key: str, default: float = math.nan) -> float:
        try:
            return float(self.params.get(key, default))
        except ValueError:
            return default

    def series(self, key: str) -> list[tuple[int, float]]:
        return [
            (int(r["epoch"]), float(r[key]))
            for r in self.history
            if r.get(key) is not None and math.isfinite(float(r[key]))
        ]


@dataclass
class Finding:
    check: str  # also the tag ablab.diagnosis.<check>
    evidence: str
    advice: str
    overrides: dict[str, Any] = field(default_factory=dict)  # the next experiment's changes
    command: str = ""
    measured: str = ""  # what a suite measured for this change, where one did

    def line(self) -> str:
        text = f"{self.check}: {self.evidence} -> {self.advice}"
        if self.command:
            text += f": {self.command}"
        if self.measured:
            text += f" ({self.measured})"
        return text


Check = Callable[[RunRecord, DiagnoseParams], "Finding | None"]


def _regularizer(run: RunRecord) -> dict[str, Any]:
    """The first regularizer to try on this network: dropout where it is not on already (never
    on the output layer: cnn and rnn take it before their head's output), else L2."""
    arch = run.param("model.arch")
    if arch == "mlp" and run.number("model.dropout", 0.0) < 0.5:
        return {"model.dropout": 0.5}
    if arch in ("cnn", "rnn", "transformer") and run.number("model.head_dropout", 0.0) < 0.5:
        return {"model.head_dropout": 0.5}
    return {"train.regularize.l2": 1e-3}


def overfitting(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    val, train = dict(run.series("val_loss")), dict(run.series("train_loss"))
    epochs = sorted(set(val) & set(train))
    if len(epochs) < 3:
        return None
    best = min(epochs, key=lambda e: val[e])
    last = epochs[-1]
    rise = val[last] / val[best] - 1 if val[best] > 0 else 0.0
    gap = val[last] - train[last]
    if best == last or rise < th.overfit_rise or gap < th.overfit_gap:
        return None
    also = "L2, augmentation" if run.param("model.arch") in ("cnn", "mlp") else "L2"
    if run.param("train.test_checkpoint") == "last":
        also += ", testing the best epoch (train.test_checkpoint=best)"
    return Finding(
        "overfitting",
        f"from epoch {best + 1}: val_loss lowest at {val[best]:.3f}, {val[last]:.3f} at the last "
        f"epoch (+{rise:.0%}) while train_loss fell to {train[last]:.3f} (gap {gap:.2f})",
        f"regularize (also: {also})",
        _regularizer(run),
    )


def underfitting(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    train, val = run.series("train_loss"), dict(run.series("val_loss"))
    if len(train) < 4 or run.failure:
        return None
    (e0, t0), (e1, t1) = train[-4], train[-1]
    slope = (1 - t1 / t0) / (e1 - e0) if t0 > 0 else 0.0
    if e0 not in val or e1 not in val or val[e0] <= 0:
        return None
    val_slope = (1 - val[e1] / val[e0]) / (e1 - e0)
    if slope < th.underfit_slope or val_slope < th.underfit_slope / 2:
        return None
    epochs = int(run.number("train.max_epochs", len(run.history)))
    return Finding(
        "underfitting",
        f"train_loss still falling {slope:.1%} per epoch over the last 3 epochs "
        f"({t0:.3f} -> {t1:.3f}), val_loss too ({val[e0]:.3f} -> {val[e1]:.3f})",
        "train longer",
        {"train.max_epochs": epochs * 2},
    )


def learning_rate_too_high(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    if run.failure.startswith("diverged"):
        return Finding(
            "learning_rate_too_high",
            f"the run diverged ({run.failure.removeprefix('diverged: ')}) at lr "
            f"{run.number('train.lr'):g}",
            "lower the learning rate (or clip gradients: train.regularize.grad_clip)",
            _lr_times(run, 0.1),
        )
    train = run.series("train_loss")
    for (_, before), (epoch, after) in zip(train, train[1:], strict=False):
        if before > 0 and after > th.spike_ratio * before:
            return Finding(
                "learning_rate_too_high",
                f"train_loss jumped from {before:.3f} to {after:.3f} at epoch {epoch + 1}",
                "lower the learning rate",
                _lr_times(run, 1 / 3),
            )
    return None


def learning_rate_too_low(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    train = [v for _, v in run.series("train_loss")]
    if len(train) < 3 or train[0] <= 0 or run.failure:
        return None
    steady = all(b <= a for a, b in zip(train, train[1:], strict=False))
    drop = 1 - train[-1] / train[0]
    lr = run.number("train.lr")
    if not steady or drop >= th.slow_drop or not math.isfinite(lr):
        return None
    return Finding(
        "learning_rate_too_low",
        f"train_loss fell only {drop:.0%} in {len(train)} epochs ({train[0]:.3f} -> "
        f"{train[-1]:.3f}), never rising",
        "raise the learning rate",
        _lr_times(run, 3),
    )


def gradients(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    if not run.history:
        return None
    last = run.history[-1]
    norms = {k.removeprefix("grad_norm/"): float(v) for k, v in last.items()
             if k.startswith("grad_norm/") and v is not None}  # fmt: skip
    if len(norms) < 2:
        return None
    top = max(norms, key=norms.get)
    low = min(norms, key=norms.get)
    if norms[top] > th.exploding_norm:
        return Finding(
            "exploding_gradients",
            f"the mean gradient norm of {top} reached {norms[top]:.3g} in the last epoch",
            "clip gradients",
            {"train.regularize.grad_clip": 1.0},
        )
    if norms[top] > 0 and norms[low] / norms[top] < th.vanishing_ratio:
        arch, activation = run.param("model.arch"), run.param("model.activation")
        if arch == "rnn" and run.param("model.cell") == "rnn":
            fix = {"model.cell": "lstm"}
        elif activation in ("sigmoid", "tanh"):
            fix = {"model.activation": "relu"}
        else:
            fix = {"model.batch_norm": True}
        return Finding(
            "vanishing_gradients",
            f"the mean gradient norm of {low} is {norms[low]:.2e}, "
            f"{norms[low] / norms[top]:.1e} of {top}'s, in the last epoch",
            "use gates, non-saturating activations or normalisation",
            fix,
        )
    return None


def dead_relus(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    share = run.results.get("dead_relu_fraction")
    if share is None or not math.isfinite(share) or share < th.dead_relu:
        return None
    mlp = run.param("model.arch") == "mlp"
    fix = {"model.activation": "leaky_relu"} if mlp else _lr_times(run, 1 / 3)
    return Finding(
        "dead_relus",
        f"{share:.0%} of the ReLU units never fired on a validation batch",
        "use a leaky activation or a lower learning rate",
        fix,
    )


def class_imbalance(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    recall = {k.removeprefix("test_recall_"): v for k, v in run.results.items()
              if k.startswith("test_recall_") and v is not None and math.isfinite(v)}  # fmt: skip
    skewed = "skew.classes" in run.params or "test_minority_recall" in run.results
    if len(recall) < 2 or not skewed or run.param("train.imbalance", "none") != "none":
        return None  # unequal recall on balanced data is hard classes, not imbalance
    worst, best = min(recall, key=recall.get), max(recall, key=recall.get)
    spread = recall[best] - recall[worst]
    if spread < th.recall_spread:
        return None
    minority = run.results.get("test_minority_recall")
    extra = f"; minority recall {minority:.2f}" if minority is not None else ""
    return Finding(
        "class_imbalance",
        f"test recall ranges from {recall[worst]:.2f} ({worst}) to {recall[best]:.2f} "
        f"({best}){extra}",
        "reweight or resample the classes",
        {"train.imbalance": "weighted_loss"},
    )


def early_stopping(run: RunRecord, th: DiagnoseParams) -> Finding | None:
    if run.param("train.early_stopping.enabled") != "True" or run.failure:
        return None
    trained = int(run.results.get("epochs_trained", len(run.history)))
    best = int(run.results.get("best_epoch", -1))
    max_epochs = int(run.number("train.max_epochs", trained))
    if trained >= max_epochs and best == trained - 1:
        return Finding(
            "early_stopping_never_triggered",
            f"the monitor still improved at the last of {max_epochs} epochs",
            "train longer",
            {"train.max_epochs": max_epochs * 2},
        )
    if best == 0 and trained < max_epochs:
        return Finding(
            "early_stopping_at_epoch_1",
            f"the best epoch was the first; training stopped after {trained}",
            "lower the learning rate",
            _lr_times(run, 1 / 3),
        )
    return None


CHECKS: tuple[Check, ...] = (
    overfitting, underfitting, learning_rate_too_high, learning_rate_too_low, gradients,
    dead_relus, class_imbalance, early_stopping,
)  # fmt: skip


def lr_finder(run: RunRecord, suggested: float, th: DiagnoseParams) -> Finding | None:
    """From Lightning's learning-rate finder (run on demand): far from the lr used?"""
    lr = run.number("train.lr")
    if not (math.isfinite(lr) and math.isfinite(suggested)) or suggested <= 0:
        return None
    factor = max(suggested / lr, lr / suggested)
    if factor < th.lr_find_factor:
        return None
    return Finding(
        "lr_finder",
        f"the learning-rate finder suggests {suggested:.2g}, {factor:.0f}x from the lr used "
        f"({lr:g})",
        "try the suggested rate",
        {"train.lr": _round(suggested)},
    )


def lr_finder_note(run: RunRecord, suggested: float, th: DiagnoseParams) -> str:
    """What the finder said, whether or not it fired a finding."""
    lr = run.number("train.lr")
    if not math.isfinite(suggested) or suggested <= 0:
        return "learning-rate finder: no suggestion (the loss curve gave none)"
    if not math.isfinite(lr):
        return f"learning-rate finder: suggests {suggested:.2g} (the run logged no train.lr)"
    factor = max(suggested / lr, lr / suggested)
    verdict = ("a finding above" if factor >= th.lr_find_factor
               else f"within {th.lr_find_factor:g}x: keep the lr")  # fmt: skip
    return (f"learning-rate finder: suggests {suggested:.2g}, {factor:.1f}x from the lr used "
            f"({lr:g}): {verdict}")  # fmt: skip


def _round(value: float) -> float:
    return float(f"{value:.2g}")


def _lr_times(run: RunRecord, factor: float) -> dict[str, Any]:
    """The override that scales the run's learning rate (none where it is unknown)."""
    lr = run.number("train.lr")
    return {"train.lr": _round(lr * factor)} if math.isfinite(lr) else {}


def diagnose(run: RunRecord, th: DiagnoseParams) -> list[Finding]:
    """Every check's finding on this run, in the checklist's order."""
    return [f for f in (check(run, th) for check in CHECKS) if f is not None]


def _yaml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def command(run: RunRecord, finding: Finding) -> str:
    """The next experiment as a command that runs from the project root: for a suite's run, a
    new variant beside it (`<variant>_<check>`), else the experiment with `--set`s."""
    if not finding.overrides:
        return ""
    if run.suite and run.variant:
        name = f"{run.variant}_{finding.check}"
        body = ", ".join(f"{k}: {_yaml(v)}" for k, v in finding.overrides.items())
        return f"ablab suite {run.suite} --set 'suites.{run.suite}.variants.{name}={{{body}}}'"
    sets = " ".join(
        f"--set experiments.{run.experiment}.{k}={_yaml(v)}" for k, v in finding.overrides.items()
    )
    return f"ablab train {run.experiment} {sets}"


def measured(finding: Finding, reports: list[dict]) -> str:
    """What a suite measured for this change: the first variant (of the given suites' report
    rows) whose changes include the same settings, with its difference and verdict."""
    wanted = {f"{k}={_yaml(v)}" for k, v in finding.overrides.items()}
    for row in reports:
        changed = set(str(row.get("changes", "")).split(", "))
        if wanted and wanted <= changed:
            headline = row["headline"]
            delta = row.get(f"delta_{headline}")
            if delta is None or not math.isfinite(delta):
                continue
            low, high = row.get(f"delta_{headline}_low"), row.get(f"delta_{headline}_high")
            interval = (
                f" [{low:+.3f}, {high:+.3f}]" if low is not None and math.isfinite(low) else ""
            )
            verdict = row.get(f"verdict_{headline}", "")
            return (
                f"the {row['suite']} suite measured {headline} {delta:+.3f}{interval} across "
                f"seeds for `{row['variant']}`" + (f", {verdict}" if verdict else "")
            )
    return ""


def suite_rows(root: Path, suites: list[str]) -> list[dict]:
    """The report's rows of these suites (results/report/<suite>.csv), with their headline."""
    import pandas as pd

    rows = []
    for suite in suites:
        path = Path(root) / "results" / "report" / f"{suite}.csv"
        runs = Path(root) / "results" / "suites" / suite / "runs.json"
        if not path.exists() or not runs.exists():
            continue
        headline = json.loads(runs.read_text())["headline"]
        for row in pd.read_csv(path).to_dict("records"):
            rows.append({**row, "headline": headline})
    return rows


def complete(run: RunRecord, findings: list[Finding], reports: list[dict]) -> list[Finding]:
    """Fill each finding's command and what a suite measured for it."""
    for finding in findings:
        finding.command = command(run, finding)
        finding.measured = measured(finding, reports)
    return findings


def markdown(run: RunRecord, findings: list[Finding]) -> str:
    """diagnosis.md: one section per finding, or a line saying the checklist found nothing."""
    where = f"{run.suite}/{run.variant}" if run.suite else run.experiment
    lines = [f"# Diagnosis of {where}", ""]
    if not findings:
        lines.append("No check fired: the curves look healthy by every threshold in `diagnose:`.")
    for f in findings:
        lines += [f"## {f.check}", "", f"- evidence: {f.evidence}", f"- advice: {f.advice}"]
        if f.command:
            lines.append(f"- next: `{f.command}`")
        if f.measured:
            lines.append(f"- measured: {f.measured}")
        lines.append("")
    return "\n".join(lines) + "\n"


def tags(findings: list[Finding]) -> dict[str, str]:
    return {f"ablab.diagnosis.{f.check}": "true" for f in findings}
