"""Comparison tables and plots from the suites' results: per variant the mean and spread over
seeds, and the difference to the baseline with a 95% confidence interval and Welch's t-test."""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from scipy import stats

from ablab import figures, tracking
from ablab.config import ConfigError, Params

# how the tables name metrics; any other is shown as its name less the "test_" prefix
SHORT = {
    "test_accuracy": "test acc",
    "test_macro_f1": "macro-F1",
    "test_loss": "test loss",
    "test_minority_recall": "minority recall",
    "test_recon_loss": "recon MSE",
    "test_noisy_recon_loss": "noisy-input MSE",
    "test_probe_accuracy": "probe acc",
    "test_code_active_fraction": "active code",
    "pca_recon_loss": "PCA recon MSE",
    "pca_probe_accuracy": "PCA probe acc",
}


def short(metric: str) -> str:
    return SHORT.get(metric, metric.removeprefix("test_").replace("_", " "))


def compare(baseline: list[float], other: list[float]) -> tuple[float, float, float, float]:
    """(mean difference other - baseline, 95% CI low, high, Welch p); NaN where undefined
    (fewer than two values on a side, or no spread on either)."""
    a, b = np.asarray(other, float), np.asarray(baseline, float)
    if len(a) == 0 or len(b) == 0:
        return (math.nan,) * 4
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return diff, math.nan, math.nan, math.nan
    with warnings.catch_warnings():  # nearly equal samples: scipy warns, the numbers stand
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
        ci = result.confidence_interval(0.95)
    return diff, float(ci.low), float(ci.high), float(result.pvalue)


def suite_table(report: dict) -> pd.DataFrame:
    """One row per variant, in the suite's order, baseline first."""
    runs = report["runs"]
    baseline = report["baseline"]
    order = [baseline] + [v for v in report["variants"] if v != baseline]
    present = [m for m in report["metrics"] if any(r["summary"].get(m) is not None for r in runs)]

    def values(variant: str, key: str) -> list[float]:
        return [
            r["summary"][key]
            for r in runs
            if r["variant"] == variant and r["status"] == "finished"
            and r["summary"].get(key) is not None
        ]  # fmt: skip

    rows = []
    for variant in order:
        mine = [r for r in runs if r["variant"] == variant]
        finished = [r for r in mine if r["status"] == "finished"]
        row: dict = {
            "suite": report["suite"],
            "variant": variant,
            "changes": report["variants"][variant],
            "runs": len(mine),
            "diverged": len(mine) - len(finished),
        }
        for key in (*present, "train_val_gap", "best_epoch", "seconds_per_epoch"):
            v = values(variant, key)
            row[f"{key}_mean"] = float(np.mean(v)) if v else math.nan
            row[f"{key}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        params = values(variant, "parameters")
        row["parameters"] = int(params[0]) if params else None
        for key in (k for k in report["compared"] if k in present):
            diff, low, high, p = compare(values(baseline, key), values(variant, key))
            row[f"delta_{key}"], row[f"delta_{key}_low"] = diff, low
            row[f"delta_{key}_high"], row[f"p_{key}"] = high, p
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _delta(row: pd.Series, key: str) -> str:
    diff, low, high = row[f"delta_{key}"], row[f"delta_{key}_low"], row[f"delta_{key}_high"]
    if math.isnan(diff):
        return "—"
    if math.isnan(low):
        return f"{diff:+.4f}"
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"


def markdown(table: pd.DataFrame, report: dict) -> str:
    """The suite's table as GitHub markdown, diverged variants named, never rows of NaN."""
    headline = report["headline"]
    metrics = [m for m in report["metrics"] if f"{m}_mean" in table]
    head = [
        "variant", "changes", "runs", *(short(m) for m in metrics), "train-val gap",
        "best epoch", "s/epoch", "params", f"Δ {short(headline)} [95% CI]", "p (Welch)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        finished = row["runs"] - row["diverged"]
        runs = f"{finished}/{row['runs']}" + (
            f" ({row['diverged']} diverged)" if row["diverged"] else ""
        )
        name = f"**{row['variant']}**" if row["variant"] == report["baseline"] else row["variant"]
        if finished == 0:
            cells = [name, row["changes"], runs, *(["diverged"] * (len(head) - 3))]
        else:
            p = row.get(f"p_{headline}", math.nan)
            cells = [
                name,
                row["changes"],
                runs,
                *(_pm(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics),
                _pm(row["train_val_gap_mean"], row["train_val_gap_std"], 3),
                f"{row['best_epoch_mean']:.1f}",
                f"{row['seconds_per_epoch_mean']:.2f}",
                f"{int(row['parameters']):,}",
                "" if row["variant"] == report["baseline"] else _delta(row, headline),
                "" if row["variant"] == report["baseline"] or math.isnan(p) else f"{p:.3f}",
            ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_curve(report: dict, variant: str, key: str) -> tuple[list[int], list[float]]:
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


def suite_figures(table: pd.DataFrame, report: dict, folder: Path) -> list[str]:
    """val-loss curves overlaid, the headline metric with error bars, the train-val gap."""
    name, baseline, headline = report["suite"], report["baseline"], report["headline"]
    curves = {v: _mean_curve(report, v, "val_loss") for v in table["variant"]}
    files = [f"plots/{name}_{key}.png" for key in ("val_loss", headline, "train_val_gap")]
    (folder / "plots").mkdir(exist_ok=True)
    fig = figures.overlay_figure(curves, baseline, f"{name}: validation loss (mean over seeds)")
    fig.savefig(folder / files[0], dpi=110)
    figures.close(fig)
    for file, key in ((files[1], headline), (files[2], "train_val_gap")):
        fig = figures.bars_figure(
            list(table["variant"]), list(table[f"{key}_mean"]), list(table[f"{key}_std"]),
            baseline, key, f"{name}: {key} (mean ± std over seeds)",
        )  # fmt: skip
        fig.savefig(folder / file, dpi=110)
        figures.close(fig)
    return files


def _intro(report: dict) -> str:
    common = f" with {report['common']}" if report["common"] else ""
    return (
        f"Experiment `{report['experiment']}`{common}; seeds {report['seeds']}; baseline "
        f"**{report['baseline']}**. Cells are mean ± std over seeds. Δ is the variant's mean "
        "minus the baseline's, with Welch's 95% confidence interval and p-value. train-val "
        "gap: val_loss − train_loss in the tested epoch. best epoch: by the early-stopping monitor."
    )


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def build(suite_dirs: list[Path], out: Path) -> dict[str, pd.DataFrame]:
    """results/report/: per suite <suite>.md, <suite>.csv and three plots/; README.md with every
    table; summary.csv (DVC plots). Written to a temp folder and moved into place whole."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tables: dict[str, pd.DataFrame] = {}
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        index = ["# ablab report", ""]
        for folder in suite_dirs:
            report = json.loads((Path(folder) / "runs.json").read_text())
            name = report["suite"]
            table = suite_table(report)
            tables[name] = table
            table.to_csv(staging / f"{name}.csv", index=False, float_format="%.6g")
            text = markdown(table, report)
            (staging / f"{name}.md").write_text(f"## {name}\n\n{text}")
            images = suite_figures(table, report, staging)
            index += [
                f"## {name}",
                "",
                _intro(report),
                "",
                text,
                *(f"![{img}]({img})" for img in images),
                "",
            ]
        (staging / "README.md").write_text("\n".join(index))
        summary = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
        summary.to_csv(staging / "summary.csv", index=False, float_format="%.6g")
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return tables


def report_metrics(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """suite/variant/metric_mean for the MLflow report run (finite values only)."""
    metrics = {}
    for suite, table in tables.items():
        keys = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
        keys = [k for k in keys if k not in ("best_epoch", "seconds_per_epoch")]
        for _, row in table.iterrows():
            for key in keys:
                value = row.get(f"{key}_mean", math.nan)
                if value is not None and not math.isnan(value):
                    metrics[f"{suite}/{slug(row['variant'])}/{key}"] = float(value)
    return metrics


def run_report(params: Params, root: Path) -> dict[str, pd.DataFrame]:
    """The report stage: build results/report/ from every suite in params, then log it to
    MLflow as one run named `report` (tables and plots as artifacts, means as metrics)."""
    root = Path(root)
    suite_dirs = []
    for name in params.suites:
        folder = root / "results" / "suites" / name
        if not (folder / "runs.json").exists():
            raise ConfigError(
                f"suite {name!r} has no results in {folder}: run `ablab suite {name}` "
                "(or `dvc repro`) first"
            )
        suite_dirs.append(folder)
    out = root / "results" / "report"
    tables = build(suite_dirs, out)
    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    tags = {"ablab.stage": "report", "ablab.suites": ",".join(params.suites)}
    commit = tracking.git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    with mlflow.start_run(experiment_id=experiment_id, run_name="report", tags=tags) as run:
        tracking.log_metrics(run.info.run_id, report_metrics(tables))
        mlflow.log_artifacts(str(out))
    return tables
