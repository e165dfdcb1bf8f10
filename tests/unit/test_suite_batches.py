"""Every suite in the repo's params.yaml runs a batch of every variant on tiny data of its
dataset's shape, so a params change that breaks one fails here, not twenty minutes into a
run."""

import pytest

from ablab.config import load
from ablab.suite import run_suite
from tests.conftest import REPO, THREADS
from tests.unit.test_experiments import PARAMS, SMALL, datasets, prepare

# variants that exist to show training failing (a rate or a start too large): they may diverge
DIVERGE_BY_DESIGN = {("optimizers", "sgd_lr10"),
                     ("initialisation", "init_scale=10.0,batch_norm=False")}  # fmt: skip


@pytest.mark.parametrize("name", list(PARAMS.suites))
def test_suite_runs_a_batch_of_every_variant(name, tmp_path):
    seed = PARAMS.suites[name].seeds[0]
    params = load(
        REPO / "params.yaml", [f"suites.{name}.seeds=[{seed}]", f"train.threads={THREADS}", *SMALL]
    )
    runs = params.suite_runs(name)
    for dataset in {d for run in runs for d in datasets(run.experiment)}:
        prepare(tmp_path, dataset)
    report = run_suite(params, name, tmp_path, fast_dev_run=2)
    assert len(report["runs"]) == len(PARAMS.suites[name].variant_overrides())
    for run in report["runs"]:
        # a demonstration of divergence may diverge; nothing else may fail
        diverges = (name, run["variant"]) in DIVERGE_BY_DESIGN
        assert run["status"] == "finished" or diverges, run["variant"]
    assert (tmp_path / "results" / "suites" / name / "runs.json").exists()
