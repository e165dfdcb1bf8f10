"""What each DVC stage's results depend on, resolved from the params (no torch). The `resolve`
stage writes one file per stage into data/resolved/ and each stage depends on its own file, not
on params.yaml's sections: a knob an experiment overrides, or that a stage never reads, leaves
the stage's file as it was, so DVC does not run it again (`-S train.max_epochs=6` retrains the
experiments that inherit their epochs, not those that set their own)."""

from __future__ import annotations

from typing import Any

from ablab.config.load import Params
from ablab.config.pretraining import pretraining, pretraining_key


def _dump(model) -> dict[str, Any]:
    return model.model_dump(mode="json")


def stage_inputs(params: Params) -> dict[str, dict[str, Any]]:
    """data/resolved/'s files (path under it -> content): train/<experiment>.json,
    suite/<suite>.json, explain/<experiment>.json, pretrain.json, claims.json, and tune.json
    and tuned.json where the params have a tune section."""
    store = {"mlflow_experiment": params.mlflow_experiment}
    out: dict[str, dict[str, Any]] = {}
    for name in params.experiments:
        out[f"train/{name}.json"] = {**store, "experiment": _dump(params.experiment(name))}
    networks: dict[str, dict[str, Any]] = {}
    for name, suite in params.suites.items():
        runs = params.suite_runs(name)
        out[f"suite/{name}.json"] = {**store, "suite": _dump(suite),
                                     "runs": [_dump(run) for run in runs]}  # fmt: skip
        first = {pretraining_key(run.experiment): run.experiment for run in runs
                 if pretraining(run.experiment) is not None}  # fmt: skip
        networks[name] = {key: _dump(pretraining(exp)) for key, exp in sorted(first.items())}
    out["pretrain.json"] = {**store, "networks": networks}
    explain = params.explain.model_dump(mode="json", exclude={"experiments"})
    for name in params.explain.experiments:
        out[f"explain/{name}.json"] = {**store, "explain": explain}
    out["claims.json"] = {**store, "claims": {k: _dump(c) for k, c in params.claims.items()},
                          "suites": {k: _dump(s) for k, s in params.suites.items()}}  # fmt: skip
    if params.tune is not None:
        tune = params.tune
        base = _dump(params.experiment(tune.experiment))
        out["tune.json"] = {**store, "tune": _dump(tune), "experiment": base}
        out["tuned.json"] = {**store, "experiment": base, "study_name": tune.study_name,
                             "registry": _dump(tune.registry)}  # fmt: skip
    return out
