"""Where the default run's time goes: every unit of the last `dvc repro` in this checkout's
MLflow store (mlruns/), by stage and variant, from the runs' own start and end times. Runs are
picked by the tag `ablab.dvc_stage` (the DVC stage that ran them): runs of `ablab train`,
`ablab suite` and the like outside DVC, and of `dvc exp run`, are left out.

`python bench/units.py` prints the table; `make bench` adds it to BENCHMARKS.md. A unit is a
leaf run (a fold, a suite's seed, a tune trial); a stage's span runs from its first run's
start to its last run's end, so it includes the stage's work between runs (data loading,
figures, the suite's files), not the process start or imports before its first run."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _runs(root: Path, experiment: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=50_000)
    if runs.empty:
        return runs
    wanted = ("tags.ablab.stage", "tags.ablab.suite", "tags.ablab.variant",
              "tags.mlflow.parentRunId", "metrics.seconds_per_epoch",
              "metrics.epochs_trained", "tags.ablab.dvc_stage",
              "tags.ablab.dvc_experiment")  # fmt: skip
    for column in wanted:
        if column not in runs:
            runs[column] = None
    for name in ("seconds_per_epoch", "epochs_trained"):  # summary.* tags since the charts
        tag = f"tags.summary.{name}"  # page holds curves only; metrics in older stores
        if tag in runs:
            runs[f"metrics.{name}"] = runs[tag].astype(float).fillna(runs[f"metrics.{name}"])
    from_repro = runs["tags.ablab.dvc_stage"].notna() & runs["tags.ablab.dvc_experiment"].isna()
    runs = runs[runs.end_time.notna() & from_repro].copy()
    runs["seconds"] = (runs.end_time - runs.start_time).dt.total_seconds()
    runs["stage"] = runs["tags.ablab.dvc_stage"]
    return runs


def _latest(runs: pd.DataFrame) -> pd.DataFrame:
    """Each stage's runs from its latest execution: those after its latest top-level run
    started (a suite's or a study's parent run, or the experiment's run)."""
    top = runs[runs["tags.mlflow.parentRunId"].isna()]
    starts = top.groupby("stage").start_time.max()
    return runs[runs.start_time >= runs.stage.map(starts)]


def table(root: Path = ROOT, experiment: str = "ablab") -> list[str]:
    """Markdown lines: per stage its span and per variant its units' seconds."""
    store = root / "mlruns" / "mlflow.db"
    if not store.exists():
        return [f"No MLflow store at {store}: run `make run` first."]
    runs = _runs(root, experiment)
    if runs.empty:
        return [
            f"No runs of `dvc repro` in experiment {experiment!r} of {store}: run `make run` first."
        ]
    runs = _latest(runs)
    parents = set(runs["tags.mlflow.parentRunId"].dropna())
    leaves = runs[~runs.run_id.isin(parents)]
    spans = runs.groupby("stage").agg(first=("start_time", "min"), last=("end_time", "max"))
    spans["span"] = (spans["last"] - spans["first"]).dt.total_seconds()
    lines = ["| stage | variant | units | seconds | s/unit | s/epoch | epochs |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage, row in spans.sort_values("span", ascending=False).iterrows():
        units = leaves[leaves.stage == stage]
        lines.append(f"| **{stage}** | (span) | {len(units)} | **{row.span:.1f}** | | | |")
        variants = units["tags.ablab.variant"].fillna("-")
        for variant, group in units.groupby(variants):
            if variants.nunique() == 1 and variant == "-":
                break
            epochs = group["metrics.epochs_trained"].astype(float).mean()
            per_epoch = group["metrics.seconds_per_epoch"].astype(float).mean()
            lines.append(
                f"| | {variant} | {len(group)} | {group.seconds.sum():.1f} | "
                f"{group.seconds.mean():.2f} | {per_epoch:.3g} | {epochs:.3g} |"
            )
    total = (runs.end_time.max() - runs.start_time.min()).total_seconds()
    inside = leaves.seconds.sum() / 60
    lines.append(f"\nFirst run's start to last run's end: {total / 60:.1f} minutes; "
                 f"{len(leaves)} units, {inside:.1f} minutes inside them.")  # fmt: skip
    return lines


if __name__ == "__main__":
    print("\n".join(table(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)))
