"""The `pretrain` stage: the networks that suite runs start from rather than from scratch
(`ablab.config.pretraining`: network-based transfer's source networks, a transformer's
masked-token pretraining). Per suite, one network per distinct `pretraining_key` among its
runs, each trained as its own MLflow run (tag ablab.stage=pretrain) and saved to
results/pretrained/<suite>/<key>.pt, with runs.json mapping each key to its run. A network
already there, trained by the same code, is not trained again; a suite without pretrained runs
gets an empty index (every suite's stage depends on its folder)."""

from __future__ import annotations

import json
from pathlib import Path

from ablab.config import Params
from ablab.config.pretraining import pretraining, pretraining_key
from ablab.files import write_atomic
from ablab.imports import code_hash


def pretrained_dir(root: Path, suite_name: str, recipe: str = "default") -> Path:
    """results/pretrained/<suite> (results/full/pretrained/<suite> for the full recipe)."""
    return Path(root) / "results" / ("full" if recipe == "full" else "") / "pretrained" / suite_name


def run_pretrain(
    params: Params, suite_name: str, root: Path, processed_dir: Path | None = None,
    fast_dev_run: bool | int = False, recipe: str = "default",
) -> dict[str, str]:  # fmt: skip
    """Train what suite `suite_name`'s network-based runs start from; {key: MLflow run id}."""
    runs = params.suite_runs(suite_name)
    folder = pretrained_dir(root, suite_name, recipe)
    wanted = {}
    for run in runs:
        job = pretraining(run.experiment)
        if job is not None:
            wanted.setdefault(pretraining_key(run.experiment), job)
    index = folder / "runs.json"
    # trained by other code (ablab.imports: this module and all it imports): trained again
    code = code_hash("ablab.pretrain") if wanted else ""
    kept = json.loads(index.read_text()) if index.exists() else {}
    done = kept.get("networks", {}) if kept.get("code") == code else {}
    trained: dict[str, str] = {}
    for key, exp in wanted.items():
        if key in done and (folder / f"{key}.pt").exists():
            trained[key] = done[key]
            continue
        from ablab.train import train

        what = f"{exp.adapt.source} as source" if exp.adapt else f"{exp.task} on {exp.dataset}"
        print(f"[pretrain] {suite_name}: {what}, seed {exp.seed}", flush=True)
        result = train(
            exp, root, params.mlflow_experiment, processed_dir, fast_dev_run, suite=suite_name,
            variant="pretrain", run_name=f"{suite_name}/pretrain/seed{exp.seed}",
            extra_tags={"ablab.stage": "pretrain", "ablab.recipe": recipe},
            thresholds=params.diagnose, weights_path=folder / f"{key}.pt",
        )  # fmt: skip
        trained[key] = result.run_id
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.pt"):
        if stale.stem not in trained:
            stale.unlink()
    content = {"code": code, "networks": trained} if wanted else {"networks": {}}
    write_atomic(index, json.dumps(content, indent=1, sort_keys=True) + "\n")
    return trained
