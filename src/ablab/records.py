"""Records of long runs: reproductions/<name>.json, a suite's full recipe as `ablab suite NAME
--full --record` ran it (never written by hand): the per-seed values of every variant, its
MLflow runs, the commit and a digest of the resolved recipe, the machines and the seconds it
took over all its sittings, and the `result` its params name (`full.record`). A test
recomputes every record's result from its per-seed values and checks its digest against the
committed params; the README's table of reproductions is made from the records
(`ablab reproductions --write README.md`); the claims ledger reads them."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from pathlib import Path

import numpy as np
from scipy import stats

from ablab.config import ConfigError, Params
from ablab.config.search import RecordSpec
from ablab.files import write_atomic

FOLDER = "reproductions"
KEYS = ("name", "suite", "recipe", "commit", "params_digest", "seeds", "variants", "runs",
        "seconds", "machines", "result")  # fmt: skip
START, END = "<!-- reproductions:start -->", "<!-- reproductions:end -->"


def spec(params: Params, suite: str) -> RecordSpec:
    """The suite's `full.record` (ConfigError naming the key where it has none)."""
    full = params.suites[suite].full
    if full is None or full.record is None:
        raise ConfigError(f"suites.{suite}.full.record: the suite says nothing to record; add "
                          "its name, source and result keys")  # fmt: skip
    return full.record


def digest(params: Params, suite: str) -> str:
    """A hash of the suite's full recipe as resolved: every unit (what it trains), its variant
    and seed, and the record's own spec."""
    from ablab.units import unit_id

    runs = params.full_size().suite_runs(suite)
    what = {"units": [[r.variant, r.seed, unit_id(r)] for r in runs],
            "record": spec(params, suite).model_dump(mode="json")}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def result(record: RecordSpec, variants: dict[str, dict[str, list]]) -> dict[str, float]:
    """The record's result keys from the per-seed values: each key's mean over the seeds
    that finished (or 1 - that mean: a test error from an accuracy)."""
    out = {}
    for key, want in record.result.items():
        values = [v for v in variants[want.variant][want.metric] if v is not None]
        mean = float(np.mean(values)) if values else math.nan
        out[key] = 1.0 - mean if want.of == "error" else mean
    return out


def interval(values: list[float | None], of: str = "mean") -> tuple[float, float, float]:
    """(mean, 95% CI low, high) over seeds (t, n - 1 degrees of freedom); errors as 1 - x."""
    x = np.array([v for v in values if v is not None], dtype=float)
    if of == "error":
        x = 1.0 - x
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def clean_commit(root: Path) -> str:
    """The checkout's commit, which a record names as the code that ran; a checkout with
    uncommitted changes to tracked files is refused (the record would name code it did not
    run)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    try:
        changed = git("status", "--porcelain", "--untracked-files=no").rstrip("\n")
        commit = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        raise ConfigError(f"{root}: --record needs a git checkout (the record names the "
                          "commit that ran)") from None  # fmt: skip
    if changed:
        files = ", ".join(line[3:] for line in changed.splitlines()[:5])
        raise ConfigError(f"--record: the checkout has uncommitted changes ({files}): commit "
                          "them first, so the record names the code that ran")  # fmt: skip
    return commit


def pretraining_seconds(client, root: Path, suite: str, recipe: str = "full") -> float:
    """The seconds the recipe's pretrained networks took to train, from their MLflow
    runs: the `pretrain` stage trains them one after another before any unit, so a record
    adds them to the units' wall time."""
    from ablab.pretrain import pretrained_dir

    index = pretrained_dir(root, suite, recipe) / "runs.json"
    if not index.exists():
        return 0.0
    seconds = 0.0
    for run_id in json.loads(index.read_text())["networks"].values():
        info = client.get_run(run_id).info
        if info.end_time:
            seconds += (info.end_time - info.start_time) / 1000
    return seconds


def build(params: Params, suite: str, report: dict, commit: str, seconds: float,
          machines: list[dict], name: str | None = None) -> dict:  # fmt: skip
    """The record of a finished full recipe (`report`: its runs.json content)."""
    record = spec(params, suite)
    seeds = list(report["seeds"])
    variants: dict[str, dict[str, list]] = {}
    runs: dict[str, list[str]] = {}
    for variant in report["variants"]:
        rows = {r["seed"]: r for r in report["runs"] if r["variant"] == variant}
        variants[variant] = {
            metric: [rows[s]["summary"].get(metric) if s in rows else None for s in seeds]
            for metric in report["metrics"]
        }  # fmt: skip
        runs[variant] = [rows[s]["run_id"] if s in rows else "" for s in seeds]
    return {
        "name": name or record.name, "suite": suite, "recipe": "full", "commit": commit,
        "params_digest": digest(params, suite), "seeds": seeds, "variants": variants,
        "runs": runs, "seconds": round(seconds, 1), "machines": machines,
        "result": result(record, variants),
    }  # fmt: skip


def write(root: Path, record: dict) -> Path:
    path = Path(root) / FOLDER / f"{record['name']}.json"
    write_atomic(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return path


def load_all(root: Path) -> dict[str, dict]:
    """Every committed record by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((Path(root) / FOLDER).glob("*.json"))}


def problems(path: Path, params: Params) -> list[str]:
    """What is wrong with a record (a missing key, a result its values do not give, a digest
    the committed params do not give): each line names the file."""
    record = json.loads(Path(path).read_text())
    missing = [k for k in KEYS if k not in record]
    if missing:
        return [f"{path}: missing {', '.join(missing)}"]
    found = []
    suite = record["suite"]
    if suite not in params.suites:
        return [f"{path}: suite {suite!r} is not in the params"]
    if path.stem != record["name"]:
        found.append(f"{path}: named {record['name']!r}, not {path.stem!r}")
    again = result(spec(params, suite), record["variants"])
    for key, value in again.items():
        stored = record["result"].get(key)
        if stored is None or not math.isclose(stored, value, rel_tol=0, abs_tol=1e-12):
            found.append(f"{path}: result.{key} is {stored}; its per-seed values give {value}")
    now = digest(params, suite)
    if record["params_digest"] != now:
        found.append(f"{path}: params_digest {record['params_digest']} is not the committed "
                     f"recipe's ({now}): the recipe changed since it ran")  # fmt: skip
    return found


def table(params: Params, records: dict[str, dict]) -> str:
    """The README's table: per record and result key, ours (mean [95% CI] over seeds) beside
    the paper, with the machine, the wall time and the command."""
    if not records:
        return "No record yet: `ablab suite <suite> --full --record` writes one.\n"
    lines = ["| record | result | ours (mean [95% CI], seeds) | paper | goal | machine | "
             "hours | command |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, record in records.items():
        record_spec = spec(params, record["suite"])
        machine = "; ".join(f"{m['cpu']} ({m['accelerator']})" for m in record["machines"])
        command = f"`ablab suite {record['suite']} --full --record`"
        for i, (key, want) in enumerate(record_spec.result.items()):
            values = record["variants"][want.variant][want.metric]
            mean, low, high = interval(values, want.of)
            ours = f"{mean:.4f}" + ("" if math.isnan(low) else f" [{low:.4f}, {high:.4f}]")
            ours += f", {sum(v is not None for v in values)}"
            paper = "—" if want.paper is None else f"{want.paper:.4f}"
            first = i == 0
            lines.append(
                f"| {name if first else ''} | {key} | {ours} | {paper} | "
                f"{record_spec.goal if first else ''} | {machine if first else ''} | "
                f"{record['seconds'] / 3600:.1f} | {command if first else ''} |"
            )
    return "\n".join(lines) + "\n"


def write_readme(path: Path, text: str) -> bool:
    """Put `text` between the README's reproductions markers; whether anything changed."""
    page = Path(path).read_text()
    if START not in page or END not in page:
        raise ConfigError(f"{path}: no {START} ... {END} markers for the reproductions table")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{text}{END}{tail}"
    if new == page:
        return False
    write_atomic(Path(path), new)
    return True
