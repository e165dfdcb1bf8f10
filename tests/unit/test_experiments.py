"""Every experiment and every suite in the repo's params.yaml runs a batch on tiny data of its
dataset's shape, so a params change that breaks one fails here, not twenty minutes into a run."""

import pytest

from ablab.config import load
from ablab.suite import run_suite
from ablab.train import run_experiment
from tests.conftest import REPO, write_random_processed

PARAMS = load(REPO / "params.yaml")


@pytest.mark.parametrize("name", list(PARAMS.experiments))
def test_experiment_runs_a_batch(name, tmp_path):
    params = load(REPO / "params.yaml", ["train.log_model=false"])
    exp = params.experiment(name)
    write_random_processed(tmp_path / "data" / "processed", exp.dataset)
    metrics = run_experiment(params, name, tmp_path, fast_dev_run=2)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_loss"] > 0
    assert (tmp_path / "results" / name / "metrics.json").exists()


@pytest.mark.parametrize("name", list(PARAMS.suites))
def test_suite_runs_a_batch_of_every_variant(name, tmp_path):
    seed = PARAMS.suites[name].seeds[0]
    params = load(REPO / "params.yaml", [f"suites.{name}.seeds=[{seed}]"])
    for dataset in {run.experiment.dataset for run in params.suite_runs(name)}:
        write_random_processed(tmp_path / "data" / "processed", dataset, per_split=60)
    report = run_suite(params, name, tmp_path, fast_dev_run=2)
    assert len(report["runs"]) == len(PARAMS.suites[name].variant_overrides())
    for run in report["runs"]:
        # a demonstration of divergence may diverge; nothing else may fail
        assert run["status"] == "finished" or "lr10" in run["variant"], run["variant"]
    assert (tmp_path / "results" / "suites" / name / "runs.json").exists()
