"""Comparison tables and plots from the suites' results: per variant the mean and spread over
seeds and its difference to the baseline, with both kinds of uncertainty (`ablab.stats`):
across seeds (paired t, Holm, d_z, the detectable difference) and across test examples
(a paired permutation test and a paired bootstrap, the test example as the unit), and a
verdict per variant."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from ablab import figures, stats, tracking
from ablab.config import ConfigError, Params, higher_is_better
from ablab.files import replaced_folder
from ablab.layout import suites_dir

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


def _seed_values(runs: list[dict], variant: str, key: str) -> dict[int, float]:
    return {
        r["seed"]: r["summary"][key]
        for r in runs
        if r["variant"] == variant and r["status"] == "finished"
        and r["summary"].get(key) is not None
    }  # fmt: skip


class TestSet:
    """A suite's test predictions (predictions.npz) and one shared set of bootstrap
    resamples, with every run's resampled metric computed once."""

    def __init__(self, arrays: dict[str, np.ndarray], report: dict) -> None:
        self.arrays = arrays
        self.target = arrays["target"]
        self.k = int(self.target.max()) + 1
        self.minority = report.get("minority_classes") or None
        self.resamples = stats.Resamples(len(self.target), count=BOOTSTRAP, seed=0)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def has(self, run: str) -> bool:
        return run in self.arrays

    def resampled(self, metric: str, run: str) -> np.ndarray:
        if (metric, run) not in self._cache:
            self._cache[metric, run] = self.resamples.metric(
                metric, self.target, self.arrays[run], self.k, self.minority
            )
        return self._cache[metric, run]

    def compare(self, metric: str, variant: list[str], baseline: list[str]) -> stats.TestLevel:
        """Variant minus baseline across test examples, runs paired in list order."""
        cached = metric != "accuracy"  # accuracy's bootstrap is a mean of per-example values
        return stats.test_level(
            metric, self.target, [self.arrays[r] for r in variant],
            [self.arrays[r] for r in baseline], self.k, self.resamples, self.minority,
            PERMUTATIONS,
            [self.resampled(metric, r) for r in variant] if cached else None,
            [self.resampled(metric, r) for r in baseline] if cached else None,
        )  # fmt: skip


BOOTSTRAP = 1000  # resamples of the test set per suite
PERMUTATIONS = 1000  # example-level swaps per permutation test


def _test_level(test: TestSet, metric: str, variant: str, baseline: str,
                seeds: list[int]) -> stats.TestLevel | None:  # fmt: skip
    """The comparison across test examples on the seeds both runs have predictions for."""
    pairs = [(f"{variant}/seed{s}", f"{baseline}/seed{s}") for s in seeds]
    pairs = [(v, b) for v, b in pairs if test.has(v) and test.has(b)]
    if not pairs:
        return None
    return test.compare(metric, [v for v, _ in pairs], [b for _, b in pairs])


def _compare(table: pd.DataFrame, report: dict, key: str, test: TestSet | None) -> None:
    """Fill the comparison columns of metric `key` for every variant but the baseline."""
    runs, baseline = report["runs"], report["baseline"]
    others = [v for v in table.index if v != baseline]
    base = _seed_values(runs, baseline, key)
    values = {v: _seed_values(runs, v, key) for v in others}
    how = report.get("per_example", {}).get(key)
    levels = {}
    for variant in others:
        seeds = sorted(set(base) & set(values[variant]))
        ready = test is not None and how is not None and seeds
        levels[variant] = _test_level(test, how, variant, baseline, seeds) if ready else None
    higher = higher_is_better(report["family"], key)
    compared = stats.compare(base, values, levels, higher, report.get("smallest_effect", 0.01))
    nan = math.nan
    for variant, c in compared.items():
        level = c.test
        cells = {
            f"delta_{key}": c.seeds.diff, f"delta_{key}_low": c.seeds.low,
            f"delta_{key}_high": c.seeds.high, f"p_{key}": c.seeds.p,
            f"p_holm_{key}": c.p_holm, f"d_z_{key}": c.seeds.d_z,
            f"pairs_{key}": c.seeds.n, f"sd_{key}": c.seeds.sd, f"detectable_{key}": c.detectable,
            f"test_delta_{key}": level.diff if level else nan,
            f"test_delta_{key}_low": level.low if level else nan,
            f"test_delta_{key}_high": level.high if level else nan,
            f"test_p_{key}": level.p if level else nan,
            f"test_p_holm_{key}": c.test_p_holm,
            f"verdict_{key}": c.verdict,
        }  # fmt: skip
        for column, value in cells.items():
            table.loc[variant, column] = value


def suite_table(report: dict, predictions: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per variant, in the suite's order, baseline first: mean and std over seeds of
    every metric, and for each compared one the comparison with the baseline (`_compare`)."""
    runs = report["runs"]
    baseline = report["baseline"]
    order = [baseline] + [v for v in report["variants"] if v != baseline]
    present = [m for m in report["metrics"] if any(r["summary"].get(m) is not None for r in runs)]
    rows = []
    for variant in order:
        mine = [r for r in runs if r["variant"] == variant]
        finished = [r for r in mine if r["status"] == "finished"]
        row: dict = {
            "suite": report["suite"],
            "variant": variant,
            "changes": report["variants"][variant],
            "runs": len(mine),
            "diverged": len(mine) - len(finished),  # every failure: diverged or collapsed
            "failures": ", ".join(
                f"{n} {kind}"
                for kind, n in Counter(
                    r["status"] for r in mine if r["status"] != "finished"
                ).items()
            ),  # fmt: skip
        }
        for key in (*present, "train_val_gap", "best_epoch", "seconds_per_epoch"):
            v = list(_seed_values(runs, variant, key).values())
            row[f"{key}_mean"] = float(np.mean(v)) if v else math.nan
            row[f"{key}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        params = list(_seed_values(runs, variant, "parameters").values())
        row["parameters"] = int(params[0]) if params else None
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant", drop=False)
    if report.get("family") == "adapt":
        _between_floor_and_ceiling(table, report["headline"])
    test = TestSet(predictions, report) if predictions and "target" in predictions else None
    for key in (k for k in report["compared"] if k in present):
        _compare(table, report, key, test)
    return table.reset_index(drop=True)


def _between_floor_and_ceiling(table: pd.DataFrame, key: str) -> None:
    """A transfer suite's `gap_closed`: where each variant's mean headline sits between the
    floor (target_only: the few target labels alone, 0) and the ceiling (oracle: every target
    label, 1); negative: below the floor (the source hurt)."""
    means = table[f"{key}_mean"]
    if not {"target_only", "oracle"} <= set(means.index):
        return
    floor, ceiling = means["target_only"], means["oracle"]
    table["gap_closed"] = (means - floor) / (ceiling - floor) if ceiling != floor else math.nan


def power_line(table: pd.DataFrame, report: dict) -> str:
    """What the suite can resolve, from its observed spreads: across seeds, the difference
    in the headline a paired t-test at its seed count detects with 80% probability (at
    Holm's strictest and loosest level); across test examples, the bootstrap CIs' half-width."""
    key = report["headline"]
    others = table[table["variant"] != report["baseline"]]
    if f"delta_{key}" not in table or others.empty:
        return "Power: no comparison."
    pairs = int(others[f"pairs_{key}"].max())
    if pairs < 2:
        text = (
            f"Power: {pairs} paired seed, so no seed-to-seed spread: nothing here says how "
            "much training randomness moves these numbers; run more seeds."
        )
    else:
        paired_sd = float(np.nanmedian(others[f"sd_{key}"].astype(float)))
        k = max(int(others[f"p_{key}"].notna().sum()), 1)  # the hypotheses Holm adjusts over
        strict = stats.detectable(paired_sd, pairs, stats.ALPHA / k)
        loose = stats.detectable(paired_sd, pairs, stats.ALPHA)
        text = (
            f"Power: across {pairs} seeds the paired differences in {short(key)} spread by "
            f"{paired_sd:.2g} (median sd over variants); a true difference of ±{strict:.2g} is "
            f"detected with 80% probability at Holm's first step (α = 0.05/{k}), ±{loose:.2g} "
            "at its last (α = 0.05)."
        )
    if f"test_delta_{key}_low" in table:
        half = ((others[f"test_delta_{key}_high"] - others[f"test_delta_{key}_low"]) / 2).dropna()
        if len(half):
            text += (
                f" Across test examples the 95% intervals of the differences are "
                f"±{float(half.median()):.2g} wide (median)."
            )
    return text


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _interval(row: pd.Series, prefix: str, key: str) -> str:
    diff = row.get(f"{prefix}{key}", math.nan)
    low, high = row.get(f"{prefix}{key}_low", math.nan), row.get(f"{prefix}{key}_high", math.nan)
    if diff is None or math.isnan(diff):
        return "—"
    if math.isnan(low):
        return f"{diff:+.4f}"
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def markdown(table: pd.DataFrame, report: dict) -> str:
    """The suite's table as GitHub markdown, diverged variants named, never rows of NaN."""
    headline = report["headline"]
    metrics = [m for m in report["metrics"] if f"{m}_mean" in table]
    head = [
        "variant", "changes", "runs", *(short(m) for m in metrics),
        *(["floor→ceiling"] if "gap_closed" in table else []), "train-val gap",
        "best epoch", "s/epoch", "params", f"Δ {short(headline)} across seeds [95% CI]",
        "p paired t (Holm)", "d_z", "Δ across test examples [95% CI]",
        "p permutation over examples (Holm)",
        "verdict",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        finished = row["runs"] - row["diverged"]
        runs = f"{finished}/{row['runs']}" + (f" ({row['failures']})" if row["diverged"] else "")
        is_base = row["variant"] == report["baseline"]
        name = f"**{row['variant']}**" if is_base else row["variant"]
        if finished == 0:
            failed = row["failures"].split(" ", 1)[-1] if "," not in row["failures"] else "failed"
            cells = [name, row["changes"], runs, *([failed] * (len(head) - 3))]
        else:
            compared = [
                _interval(row, "delta_", headline),
                f"{_p(row.get(f'p_{headline}', math.nan))} "
                f"({_p(row.get(f'p_holm_{headline}', math.nan))})",
                _number(row.get(f"d_z_{headline}", math.nan), "+.1f"),
                _interval(row, "test_delta_", headline),
                f"{_p(row.get(f'test_p_{headline}', math.nan))} "
                f"({_p(row.get(f'test_p_holm_{headline}', math.nan))})",
                f"**{row[f'verdict_{headline}']}**"
                if str(row.get(f"verdict_{headline}", "")) in ("better", "worse")
                else str(row.get(f"verdict_{headline}", "—")),
            ]
            cells = [
                name,
                row["changes"],
                runs,
                *(_pm(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics),
                *([_number(row["gap_closed"], "+.2f")] if "gap_closed" in table else []),
                _pm(row["train_val_gap_mean"], row["train_val_gap_std"], 3),
                f"{row['best_epoch_mean']:.1f}",
                f"{row['seconds_per_epoch_mean']:.2f}",
                f"{int(row['parameters']):,}",
                *([""] * len(compared) if is_base else compared),
            ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def ensemble_markdown(report: dict) -> str:
    """A suite's ensembles (`ensemble: true`): each variant's seed models averaged, against
    its mean member, per metric, across test examples; "" where there are none."""
    held = report.get("ensembles") or {}
    if not held:
        return ""
    head = ["variant", "members", "metric", "ensemble", "mean member (range)",
            "Δ across test examples [95% CI]", "bootstrap p", "verdict"]  # fmt: skip
    lines = ["Each variant's seed models averaged (their test probabilities) as one model:",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for variant, entry in held.items():
        for metric, m in entry["metrics"].items():
            word = f"**{m['verdict']}**" if m["verdict"] in ("better", "worse") else m["verdict"]
            cells = [variant, entry["members"], short(metric), f"{m['ensemble']:.4f}",
                     f"{m['mean_member']:.4f} ({min(m['members']):.4f}–{max(m['members']):.4f})",
                     f"{m['diff']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]", _p(m["p"]),
                     word]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def ensemble_metrics(report: dict) -> dict[str, float]:
    """<suite>/<variant>/ensemble_<metric> for the MLflow report run."""
    return {f"{report['suite']}/{slug(variant)}/ensemble_{metric}": m["ensemble"]
            for variant, entry in (report.get("ensembles") or {}).items()
            for metric, m in entry["metrics"].items()}  # fmt: skip


def _number(value: float, spec: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, spec)


def suite_figures(table: pd.DataFrame, report: dict, folder: Path) -> list[str]:
    """val-loss curves overlaid, the headline metric with error bars, the train-val gap."""
    name, baseline, headline = report["suite"], report["baseline"], report["headline"]
    curves = {v: stats.mean_curve(report, v, "val_loss") for v in table["variant"]}
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
        f"**{report['baseline']}**. Cells are mean ± std over seeds. Δ is variant minus "
        "baseline in the headline, with two kinds of uncertainty. *Across seeds* (training "
        "randomness): the runs share seeds, so the per-seed differences give a paired t-test, "
        "its 95% CI, p (Holm-adjusted over the suite's variants in brackets) and the effect "
        "size d_z = mean / sd of the differences. *Across test examples* (the finite test "
        "set): the test example is the unit, each counted once however many seeds scored "
        "it; a paired bootstrap (1,000 resamples of the test set, the same for every run) "
        "gives the CI of the seed-averaged difference, and a paired permutation test (1,000 "
        "random swaps of the two sides' predictions, example by example, every seed at once) "
        "its p, Holm-adjusted; its smallest possible p is 1/1,001. Verdict: "
        "*better*/*worse* when the paired t-test and the permutation test are both "
        "significant after Holm, with the same sign; *no difference larger than X* when the "
        "seeds are not and "
        f"every interval lies within ±X ≤ {report.get('smallest_effect', 0.01)}; otherwise "
        "*underpowered*, with the difference the seeds could detect (80% power, Holm's "
        "first step). train-val gap: val_loss − train_loss in the tested epoch. best "
        "epoch: by the early-stopping monitor."
        + {"generate": _GENERATE, "adapt": _ADAPT}.get(report.get("family"), "")
    )


_ADAPT = (
    " Every variant is tested on the target's test split. floor→ceiling: where the variant's "
    "mean headline sits between target_only (the few target labels alone: 0) and oracle "
    "(every target label: 1); below 0, the source hurt. dann reads no target label; the "
    "network-based variants start from the `pretrain` stage's source network of their seed "
    "(its MLflow run: tag ablab.pretrained_run)."
)


_GENERATE = (
    " Fréchet and kernel distances follow the FID/KID recipe (10,000 generated against the "
    "real test images) in the feature space of ablab's own classifier for the dataset "
    "(data/evaluators), not Inception's: they compare within ablab, not with published FIDs; "
    "real frechet distance (real training against real test images) is the floor a perfect "
    "generator reaches. A set of samples has no per-example predictions: only the comparison "
    "across seeds applies."
)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def build(suite_dirs: list[Path], out: Path) -> dict[str, pd.DataFrame]:
    """results/report/: per suite <suite>.md, <suite>.csv and three plots/; README.md with every
    table; summary.csv (DVC plots). Written to a temp folder and moved into place whole."""
    tables: dict[str, pd.DataFrame] = {}
    with replaced_folder(out) as staging:
        index = ["# ablab report", ""]
        for folder in suite_dirs:
            report = json.loads((Path(folder) / "runs.json").read_text())
            name = report["suite"]
            table = suite_table(report, load_predictions(Path(folder)))
            tables[name] = table
            table.to_csv(staging / f"{name}.csv", index=False, float_format="%.6g")
            text = markdown(table, report)
            ensembles = ensemble_markdown(report)
            text += f"\n{ensembles}" if ensembles else ""
            (staging / f"{name}.md").write_text(f"## {name}\n\n{text}")
            images = suite_figures(table, report, staging)
            index += [
                f"## {name}",
                "",
                _intro(report),
                "",
                text,
                power_line(table, report),
                "",
                *(f"![{img}]({img})" for img in images),
                "",
            ]
        (staging / "README.md").write_text("\n".join(index))
        summary = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
        summary.to_csv(staging / "summary.csv", index=False, float_format="%.6g")
    return tables


def load_predictions(folder: Path) -> dict[str, np.ndarray] | None:
    """A suite's predictions.npz (absent for families without per-example predictions)."""
    path = Path(folder) / "predictions.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def verdict_tags(client: MlflowClient, table: pd.DataFrame, report: dict) -> None:
    """The headline's verdicts as MLflow tags: `ablab.verdict.<variant>` on the suite's parent
    run, and on every run of a variant `ablab.verdict` (better, worse, no difference,
    underpowered: filter with tags.`ablab.verdict` = 'better') and `ablab.verdict_detail`."""
    column = f"verdict_{report['headline']}"
    if column not in table:
        return
    parent = report.get("parent_run_id")
    for _, row in table.iterrows():
        if row["variant"] == report["baseline"] or not isinstance(row[column], str):
            continue
        text = row[column]
        word = next((w for w in stats.VERDICTS if text.startswith(w)), text)
        if parent:
            client.set_tag(parent, f"ablab.verdict.{slug(row['variant'])}", text)
        for run in report["runs"]:
            if run["variant"] == row["variant"] and run["run_id"]:
                client.set_tag(run["run_id"], "ablab.verdict", word)
                client.set_tag(run["run_id"], "ablab.verdict_detail", text)


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


def run_report(params: Params, root: Path, recipe: str = "default") -> dict[str, pd.DataFrame]:
    """The report stage: build results/report/ (results/full/report/ for the full recipes)
    from every suite in params, tag the suites' runs with their verdicts, then log it to
    MLflow as one run named `report` (tables and plots as artifacts, means as metrics)."""
    root = Path(root)
    suite_dirs = []
    full = " --full" if recipe == "full" else ""
    how = f"`ablab suite NAME{full}`" + ("" if full else " (or `dvc repro`)")
    for name in params.suites:
        folder = suites_dir(root, recipe) / name
        if (folder / "runs.json").exists():
            suite_dirs.append(folder)
        elif not full:  # the DVC stage reports every suite; --full those that have run
            raise ConfigError(f"suite {name!r} has no results in {folder}: run {how} first")
    if not suite_dirs:
        raise ConfigError(f"no suite has results in {suites_dir(root, recipe)}: run {how} first")
    out = suites_dir(root, recipe).parent / "report"
    tables = build(suite_dirs, out)
    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    tags = {"ablab.stage": "report", "ablab.suites": ",".join(params.suites),
            "ablab.recipe": recipe}  # fmt: skip
    tags.update(tracking.origin_tags(root))
    client = MlflowClient()
    metrics = report_metrics(tables)
    for folder in suite_dirs:
        report = json.loads((folder / "runs.json").read_text())
        verdict_tags(client, tables[report["suite"]], report)
        metrics.update(ensemble_metrics(report))
    run_name = "report" + ("/full" if full else "")
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        tracking.log_metrics(run.info.run_id, metrics)
        mlflow.log_artifacts(str(out))
    return tables
