"""One ablation suite in one process: every (variant, seed) trained as its own MLflow run, a
diverging run recorded and skipped, then results/suites/<suite>/ for the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ablab.config import ENTRIES, Params, nest_overrides, report_metrics
from ablab.families import DivergedError
from ablab.files import write_atomic
from ablab.train import train


def run_suite(
    params: Params,
    suite_name: str,
    root: Path,
    processed_dir: Path | None = None,
    results_dir: Path | None = None,
    fast_dev_run: bool | int = False,
) -> dict:
    """Train every run of suite `suite_name`; write runs.json and metrics.json; return runs.json's
    content. Only divergence is caught: any other error stops the suite and writes nothing."""
    root = Path(root)
    runs = params.suite_runs(suite_name)  # raises ConfigError naming an unknown suite
    suite = params.suites[suite_name]
    task = params.experiments[suite.experiment].task
    rows = []
    for i, run in enumerate(runs, 1):
        name = f"{suite_name}/{run.variant}/seed{run.seed}"
        print(f"[{i}/{len(runs)}] {name}", flush=True)
        row = {"variant": run.variant, "seed": run.seed}
        try:
            result = train(
                run.experiment, root, params.mlflow_experiment, processed_dir, fast_dev_run,
                suite=suite_name, variant=run.variant, run_name=name,
            )  # fmt: skip
        except DivergedError as exc:
            print(f"  diverged: {exc}; the suite goes on", flush=True)
            row.update(status="diverged", failure=str(exc), run_id=getattr(exc, "run_id", ""))
            row.update(summary={}, history=[])
        else:
            row.update(status="finished", failure="", run_id=result.run_id)
            row.update(
                summary=_finite(result.summary), history=[_finite(h) for h in result.history]
            )
        rows.append(row)
    report = {
        "suite": suite_name,
        "experiment": suite.experiment,
        "family": task,
        "baseline": suite.baseline_name(),
        "headline": params.suite_headline(suite_name),
        "metrics": list(report_metrics(task)),  # what the report tabulates, in order
        "compared": list(ENTRIES[task].compared),  # and compares with the baseline
        "seeds": list(suite.seeds),
        "common": _describe(nest_overrides(suite.common)),
        "variants": {n: _describe(o) or "(none)" for n, o in suite.variant_overrides().items()},
        "runs": rows,
    }
    folder = Path(results_dir or root / "results" / "suites") / suite_name
    write_atomic(folder / "runs.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    write_atomic(folder / "metrics.json", json.dumps(variant_means(report), indent=2) + "\n")
    return report


def _finite(values: dict) -> dict:
    """NaN and inf become None, so runs.json stays strict JSON."""
    return {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in values.items()
    }


def _describe(overrides: dict) -> str:
    """A variant's overrides as one line: 'model.dropout=0.3, train.lr=0.01'."""
    flat: list[str] = []

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                shown = value if isinstance(value, str) else json.dumps(value)
                flat.append(f"{prefix}{key}={shown}")

    walk(overrides, "")
    return ", ".join(flat)


def variant_means(report: dict) -> dict[str, dict[str, float]]:
    """Per variant, the mean over finished seeds of the summary metrics (DVC's metrics file)."""
    out: dict[str, dict[str, float]] = {}
    for variant in report["variants"]:
        rows = [r for r in report["runs"] if r["variant"] == variant]
        done = [r for r in rows if r["status"] == "finished"]
        entry: dict[str, float] = {"diverged": len(rows) - len(done)}
        for key in report["metrics"]:
            values = [r["summary"].get(key) for r in done]
            if values and all(v is not None for v in values):
                entry[key] = round(float(np.mean(values)), 6)
        out[variant] = entry
    return out
