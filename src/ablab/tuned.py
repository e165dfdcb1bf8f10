"""The search's result put to use: the study's best params (results/tune/best_params.yaml)
trained as the experiment itself trains (its full data, without tune.common), the model
logged, registered under `tune.registry.name` and given the alias (the champion). One process
does this, after the search: workers on other machines never register a version."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import ConfigError, Params
from ablab.files import write_atomic

BEST_PARAMS_TAG = "ablab.best_params"  # on a registered version: the params it was trained from


def train_tuned(params: Params, root: Path) -> dict:
    """Train and register the champion; when the alias already points at a version trained
    from these very params (a rerun of the search found nothing better), nothing is trained or
    registered. Writes results/tuned/metrics.json and returns it."""
    if params.tune is None:
        raise ConfigError("params.yaml: no tune section: nothing was searched")
    tune, root = params.tune, Path(root)
    path = root / "results" / "tune" / "best_params.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: missing; run the search first (`ablab tune`)")
    best = yaml.safe_load(path.read_text()) or {}
    if not best:
        raise ConfigError(f"{path}: the study has no finished trial yet; nothing to train")
    tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    key = json.dumps(best, sort_keys=True)
    name, alias = tune.registry.name, tune.registry.alias
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if not tracking.absent(exc):
            raise
        print(f"tuned: no {name}@{alias} in the store yet", flush=True)
        current = None
    if current is not None and current.tags.get(BEST_PARAMS_TAG) == key:
        metrics = dict(client.get_run(current.run_id).data.metrics)
        metrics["registered"] = f"{name}@{alias} (v{current.version}, unchanged)"
        print(f"tuned: {name}@{alias} is v{current.version}, trained from these params already: "
              "nothing trained or registered", flush=True)  # fmt: skip
    else:
        from ablab.train import train  # Lightning and torch: only when there is training to do

        exp = params.tuned_experiment(best, common=False)
        exp = exp.model_copy(update={"train": exp.train.model_copy(update={"log_model": True})})
        tags = {"ablab.study": tune.study_name, "ablab.stage": "tuned"}
        result = train(exp, root, params.mlflow_experiment, run_name=f"tuned/{tune.study_name}",
                       extra_tags=tags)  # fmt: skip
        experiment_id = client.get_run(result.run_id).info.experiment_id
        models = [m for m in client.search_logged_models([experiment_id])
                  if m.source_run_id == result.run_id]  # fmt: skip
        metrics = dict(result.summary)
        if not models:
            metrics["registered"] = "not registered: this model family is not logged as a model"
        else:
            version = mlflow.register_model(f"models:/{models[0].model_id}", name,
                                            tags={BEST_PARAMS_TAG: key})  # fmt: skip
            client.set_registered_model_alias(name, alias, version.version)
            metrics["registered"] = f"{name}@{alias} (v{version.version})"
    write_atomic(root / "results" / "tuned" / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
