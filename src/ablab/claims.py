"""The claims ledger: every claim of the course (params' `claims:`) turned into one verdict, from
the suites' default runs (results/suites/<suite>/) and the records of their full recipes
(reproductions/), with the paired statistics every suite uses (`ablab.stats.compare`).

A comparison counts as run only with at least 3 paired seeds. Its outcome is `as claimed`
(significant in the claimed direction; for a comparison that promises no loss, also "no
difference larger than X"), `against` (significant the other way; for one that promises an
effect, also "no difference larger than X") or `inconclusive`. A claim is `confirmed` where
every comparison at a scale came out as claimed, `contradicted` where any came out against
it, `inconclusive` otherwise, and `not run` where no comparison ran at either scale; the
headline verdict is the full scale's where one ran (the claim is about the technique at its
proper size), else the default's. `ablab claims` prints the ledger, `ablab claims C10` one
claim in full; the `claims` stage writes results/claims/ (claims.md, claims.csv) and tags each
suite's parent run with the claims it decides (`ablab.claims`)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ablab import records, stats
from ablab.config import ENTRIES, Params
from ablab.config.claims import Claim, Comparison
from ablab.files import replaced_folder
from ablab.layout import suites_dir

MIN_SEEDS = 3
VERDICTS = ("confirmed", "contradicted", "inconclusive", "not run")


@dataclass
class Outcome:
    """One comparison as it came out: `status` (as claimed, against, inconclusive, not run)
    and the numbers behind it."""

    comparison: Comparison
    status: str
    detail: str = ""  # the suite's verdict words, or why it did not run
    n: int = 0
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    detectable: float = math.nan
    runs: list[str] = field(default_factory=list)  # the MLflow run ids behind it


def _outcome(comp: Comparison, values: dict[str, dict[int, float]], base: dict[int, float],
             smallest: float, tests: dict[str, stats.TestLevel | None],
             runs: list[str]) -> Outcome:  # fmt: skip
    """The comparison's statistics and status from per-seed values: `values` holds the
    comparison's variant and the others its p-values are Holm-adjusted with."""
    variant = values[comp.variant]
    n = len(set(variant) & set(base))
    if n < MIN_SEEDS:
        return Outcome(comp, "not run", f"{n} paired seeds (at least {MIN_SEEDS} decide)", n,
                       runs=runs)  # fmt: skip
    higher = comp.direction == "higher"
    if comp.kind == "exact":  # a deterministic quantity: compared as it is
        diff = float(np.mean([variant[s] - base[s] for s in set(variant) & set(base)]))
        status = "inconclusive" if diff == 0 else (
            "as claimed" if (diff > 0) == higher else "against")  # fmt: skip
        return Outcome(comp, status, f"exact: {diff:+.6g}", n, diff, diff, diff, runs=runs)
    compared = stats.compare(base, values, tests, higher, smallest)[comp.variant]
    word = compared.verdict
    if word == "better":
        status = "as claimed"
    elif word == "worse":
        status = "against"
    elif word.startswith("no difference"):
        status = "against" if comp.effect else "as claimed"
    else:
        status = "inconclusive"
    seeds = compared.seeds
    return Outcome(comp, status, word, n, seeds.diff, seeds.low, seeds.high,
                   compared.detectable, runs)  # fmt: skip


def _seed_values(report: dict, variant: str, metric: str) -> tuple[dict[int, float], list[str]]:
    rows = [r for r in report["runs"] if r["variant"] == variant and r["status"] == "finished"]
    values = {r["seed"]: r["summary"][metric] for r in rows
              if r["summary"].get(metric) is not None}  # fmt: skip
    return values, [r["run_id"] for r in rows]


def _failed_training(report: dict, comp: Comparison, against: str) -> Outcome | None:
    """Where one side's training failed on every seed (diverged or collapsed: no model to
    score) and the other's finished on at least MIN_SEEDS, the failed side is the worse in any
    measure of the model (the family's compared metrics); None otherwise."""
    if comp.metric not in ENTRIES[report["family"]].compared:
        return None

    def rows(variant: str) -> list[dict]:
        return [r for r in report["runs"] if r["variant"] == variant]

    def all_failed(variant: str) -> bool:
        mine = rows(variant)
        return len(mine) >= MIN_SEEDS and all(r["status"] != "finished" for r in mine)

    def finished(variant: str) -> int:
        return sum(r["status"] == "finished" for r in rows(variant))

    side = [v for v in (comp.variant, against) if all_failed(v)]
    if len(side) != 1:
        return None
    (loser,) = side
    winner = against if loser == comp.variant else comp.variant
    if finished(winner) < MIN_SEEDS:
        return None
    good = ENTRIES[report["family"]].directions[comp.metric]
    variant_better = loser == against
    status = "as claimed" if variant_better == (comp.direction == good) else "against"
    kinds = sorted({r["status"] for r in rows(loser)})
    detail = (f"{loser}'s training failed on every seed ({'/'.join(kinds)}); {winner} "
              f"finished on {finished(winner)}")  # fmt: skip
    ids = [r["run_id"] for r in rows(comp.variant) + rows(against) if r.get("run_id")]
    return Outcome(comp, status, detail, len(rows(loser)), runs=ids)


def default_outcome(params: Params, comp: Comparison, suites: Path) -> Outcome:
    """A comparison at default scale, from results/suites/<suite>/ (runs.json, predictions):
    against the suite's baseline, the suite's own verdict (Holm over all its variants, as the
    report gives it); against another variant, that pair alone."""
    folder = Path(suites) / comp.suite
    if not (folder / "runs.json").exists():
        return Outcome(comp, "not run", f"suite {comp.suite} has no results: `dvc repro`")
    report = json.loads((folder / "runs.json").read_text())
    if comp.kind == "ensemble":
        return ensemble_outcome(comp, report)
    against = comp.against or report["baseline"]
    missing = [v for v in (comp.variant, against) if v not in report["variants"]]
    if missing:  # results older than the params that name the variant
        return Outcome(comp, "not run", f"results/suites/{comp.suite}/runs.json has no variant "
                       f"{missing[0]} (older than params.yaml: `dvc repro`)")  # fmt: skip
    base, base_runs = _seed_values(report, against, comp.metric)
    failed = _failed_training(report, comp, against)
    if failed is not None:
        return failed
    others = [v for v in report["variants"] if v != against]
    names = others if against == report["baseline"] else [comp.variant]
    values = {v: _seed_values(report, v, comp.metric)[0] for v in names}
    runs = _seed_values(report, comp.variant, comp.metric)[1]
    tests: dict[str, stats.TestLevel | None] = dict.fromkeys(names)
    how = ENTRIES[report["family"]].per_example.get(comp.metric)
    predictions = folder / "predictions.npz"
    if how and predictions.exists() and comp.kind == "paired":
        from ablab.report import TestSet

        with np.load(predictions, allow_pickle=False) as arrays:
            held = TestSet({k: arrays[k] for k in arrays.files}, report)
        for name in names:
            seeds = sorted(set(values[name]) & set(base))
            pairs = [(f"{name}/seed{s}", f"{against}/seed{s}") for s in seeds]
            pairs = [(v, b) for v, b in pairs if held.has(v) and held.has(b)]
            if pairs:
                tests[name] = held.compare(how, [v for v, _ in pairs], [b for _, b in pairs])
    smallest = params.suites[comp.suite].smallest_effect
    return _outcome(comp, values, base, smallest, tests, runs + base_runs)


def ensemble_outcome(comp: Comparison, report: dict) -> Outcome:
    """A variant's ensemble against its mean member (`ablab.ensembles`: a paired bootstrap
    over the test examples); run where at least MIN_SEEDS members were averaged."""
    held = report.get("ensembles", {}).get(comp.variant)
    runs = [r["run_id"] for r in report["runs"]
            if r["variant"] == comp.variant and r["status"] == "finished"]  # fmt: skip
    if held is None or held["members"] < MIN_SEEDS:
        members = held["members"] if held else 0
        return Outcome(comp, "not run", f"an ensemble of {members} members (at least "
                       f"{MIN_SEEDS} decide)", members, runs=runs)  # fmt: skip
    m = held["metrics"][comp.metric]
    if m["low"] > 0 or m["high"] < 0:
        status = "as claimed" if (m["diff"] > 0) == (comp.direction == "higher") else "against"
    else:
        status = "inconclusive"
    detail = (f"ensemble of {held['members']} {m['ensemble']:.4g} vs mean member "
              f"{m['mean_member']:.4g} over {held['examples']} test examples, bootstrap p "
              f"{m['p']:.3g}")  # fmt: skip
    return Outcome(comp, status, detail, held["members"], m["diff"], m["low"], m["high"],
                   runs=runs)  # fmt: skip


def full_outcome(params: Params, comp: Comparison, held: dict[str, dict]) -> Outcome:
    """A comparison at full scale, from the record its suite's full recipe wrote: per-seed
    values only, so the paired-seed test alone decides."""
    record = held.get(comp.record)
    if record is None:
        return Outcome(comp, "not run", f"no record {comp.record}: `ablab suite {comp.suite} "
                       "--full --record`")  # fmt: skip
    against = comp.against or params.suites[comp.suite].baseline_name()
    seeds = record["seeds"]

    def values(variant: str) -> tuple[dict[int, float], list[str]]:
        per_seed = record["variants"].get(variant, {}).get(comp.metric, [])
        ids = record["runs"].get(variant, [])
        kept = {s: v for s, v in zip(seeds, per_seed, strict=False) if v is not None}
        return kept, [i for i in ids if i]

    variant, runs = values(comp.variant)
    base, base_runs = values(against)
    smallest = params.suites[comp.suite].smallest_effect
    return _outcome(comp, {comp.variant: variant}, base, smallest, {comp.variant: None},
                    runs + base_runs)  # fmt: skip


def _scale_verdict(outcomes: list[Outcome]) -> str:
    ran = [o for o in outcomes if o.status != "not run"]
    if not ran:
        return "not run"
    if any(o.status == "against" for o in ran):
        return "contradicted"
    if len(ran) == len(outcomes) and all(o.status == "as claimed" for o in ran):
        return "confirmed"
    return "inconclusive"


@dataclass
class Ruling:
    """A claim's outcomes at both scales and its verdicts."""

    cid: str
    claim: Claim
    default: list[Outcome]
    full: list[Outcome]

    @property
    def default_verdict(self) -> str:
        return _scale_verdict(self.default)

    @property
    def full_verdict(self) -> str:
        return _scale_verdict(self.full)

    @property
    def verdict(self) -> str:
        return self.full_verdict if self.full_verdict != "not run" else self.default_verdict

    def why_not_run(self) -> str:
        if self.claim.reason:
            return self.claim.reason
        return "; ".join(sorted({o.detail for o in self.default + self.full}))


def rule(params: Params, root: Path, suites: Path | None = None) -> list[Ruling]:
    """Every claim of the params, decided."""
    suites = Path(suites or suites_dir(root))
    held = records.load_all(root)
    out = []
    for cid, claim in params.claims.items():
        default = [default_outcome(params, c, suites)
                   for c in claim.comparisons if c.scale == "default"]  # fmt: skip
        full = [full_outcome(params, c, held)
                for c in claim.comparisons if c.scale == "full"]  # fmt: skip
        out.append(Ruling(cid, claim, default, full))
    return out


def _numbers(outcomes: list[Outcome]) -> str:
    parts = []
    for o in outcomes:
        c = o.comparison
        name = f"{c.suite}: {c.variant} vs {c.against or 'baseline'}, {c.metric}"
        if o.status == "not run":
            parts.append(f"{name}: not run ({o.detail})")
            continue
        if math.isnan(o.diff):  # no difference to give: one side's training failed
            parts.append(f"{name}: n {o.n}, {o.detail} → {o.status}")
            continue
        ci = "" if math.isnan(o.low) or c.kind == "exact" else f" [{o.low:+.3g}, {o.high:+.3g}]"
        mde = "" if math.isnan(o.detectable) else f", detects ≥ {o.detectable:.2g}"
        parts.append(f"{name}: n {o.n}, Δ {o.diff:+.3g}{ci}{mde} → {o.status}")
    return "; ".join(parts) or "—"


def counts(rulings: list[Ruling]) -> dict[str, int]:
    return {v: sum(r.verdict == v for r in rulings) for v in VERDICTS}


def markdown(rulings: list[Ruling]) -> str:
    """The ledger: one row per claim, the verdict in its last column."""
    tally = counts(rulings)
    lines = [
        "# The course's claims, tested",
        "",
        ", ".join(f"{n} {v}" for v, n in tally.items()) + f" (of {len(rulings)}). Default: "
        "the default run's suites; full: the records of their full recipes. The verdict is "
        "the full scale's where it ran, else the default's.",
        "",
        "| id | claim | condition | default run | full recipe | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rulings:
        default = _numbers(r.default) if r.default else "—"
        full = _numbers(r.full) if r.full else "—"
        verdict = r.verdict if r.verdict != "not run" else f"not run: {r.why_not_run()}"
        lines.append(f"| {r.cid} | {r.claim.claim} | {r.claim.condition or '—'} | {default} | "
                     f"{full} | {verdict} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def csv_text(rulings: list[Ruling]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "claim", "condition", "default", "default_verdict", "full",
                     "full_verdict", "verdict"])  # fmt: skip
    for r in rulings:
        writer.writerow([r.cid, r.claim.claim, r.claim.condition, _numbers(r.default),
                         r.default_verdict, _numbers(r.full), r.full_verdict,
                         r.verdict])  # fmt: skip
    return buffer.getvalue()


def detail(ruling: Ruling, run_names: dict[str, str] | None = None) -> str:
    """One claim in full: condition, each comparison with its interval, its runs, its figure
    and the command that runs it again."""
    c = ruling.claim
    lines = [f"{ruling.cid}: {c.claim}", f"  from: {c.source or '—'}",
             f"  condition: {c.condition or '—'}", f"  verdict: {ruling.verdict} (default: "
             f"{ruling.default_verdict}, full: {ruling.full_verdict})"]  # fmt: skip
    if c.reason:
        lines.append(f"  not tested yet: {c.reason}")
    for o in ruling.default + ruling.full:
        comp = o.comparison
        said = o.status == "not run" or math.isnan(o.diff)  # _numbers gives the detail then
        lines.append(f"  - {comp.scale}: {_numbers([o])}" + ("" if said else f" ({o.detail})"))
        names = [(run_names or {}).get(i, i) for i in o.runs]
        if names:
            lines.append(f"    runs: {', '.join(names)}")
        if comp.scale == "default":
            lines.append(f"    figure: results/report/plots/{comp.suite}_{comp.metric}.png")
            lines.append(f"    again: ablab suite {comp.suite}")
        else:
            lines.append(f"    again: ablab suite {comp.suite} --full --record")
    return "\n".join(lines) + "\n"


def write(rulings: list[Ruling], out: Path) -> None:
    """results/claims/: claims.md and claims.csv, moved into place whole."""
    with replaced_folder(out) as staging:
        (staging / "claims.md").write_text(markdown(rulings))
        (staging / "claims.csv").write_text(csv_text(rulings))


def tag_suites(rulings: list[Ruling], suites: Path) -> None:
    """`ablab.claims` on each suite's parent run: the claims it decides."""
    from mlflow.tracking import MlflowClient

    decided: dict[str, set[str]] = {}
    for r in rulings:
        for o in r.default:
            decided.setdefault(o.comparison.suite, set()).add(r.cid)
    client = MlflowClient()
    for suite, ids in decided.items():
        path = Path(suites) / suite / "runs.json"
        if path.exists():
            parent = json.loads(path.read_text()).get("parent_run_id")
            if parent:
                client.set_tag(parent, "ablab.claims", ",".join(sorted(ids)))
