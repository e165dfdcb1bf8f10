"""Every experiment in the repo's params.yaml runs a batch on tiny data of its dataset's shape,
so a params change that breaks an experiment fails here, not twenty minutes into a run."""

import pytest

from ablab.config import load
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
