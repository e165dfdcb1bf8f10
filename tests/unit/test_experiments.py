"""Every experiment in the repo's params.yaml runs a batch on tiny data of its dataset's shape,
so a params change that breaks one fails here, not twenty minutes into a run (suites:
test_suite_batches.py, a file of their own so that two test workers share the load)."""

import json

import pytest

from ablab.config import DATASETS, ENTRIES, load
from ablab.train import run_experiment
from tests.conftest import REPO, THREADS, write_random_processed, write_random_text

PARAMS = load(REPO / "params.yaml")
# tiny data has 60 training examples: fewer labels than the default run's
SMALL = [
    f"experiments.{name}.{key}=20"
    for name, entry in PARAMS.experiments.items()
    for task, key in (("adapt", "adapt.target_labels"), ("pseudo_label", "pseudo_label.labels"))
    if entry.task == task
]


def prepare(root, dataset: str) -> None:
    """Tiny data of the dataset's shape: random images (with an evaluator trained on them) or
    tokens; the real (small) series; a few generated date pairs or tagged dates; the long-range
    sequences."""
    from ablab.data.preprocess import (
        preprocess_date_tagging,
        preprocess_dates,
        preprocess_long_range,
        preprocess_series,
    )
    from ablab.data.sources import fetch
    from ablab.evaluator import train_evaluator

    processed = root / "data" / "processed"
    kind = DATASETS[dataset][0]
    if kind == "image":
        write_random_processed(processed, dataset, per_split=60)
        train_evaluator(processed, dataset, epochs=1, seed=0)
    elif dataset == "long_range":  # generated, as preprocess makes it
        preprocess_long_range(dataset, processed, 0.1, 0.2, 0)
    elif kind == "text":
        write_random_text(processed, dataset, per_split=60)
    elif kind == "tagging":
        preprocess_date_tagging(dataset, processed, 0.1, 0.2, 0, 200)
    elif kind == "series":
        fetch(dataset, root / "data" / "raw")
        preprocess_series(dataset, root / "data" / "raw", processed, 0.1, 0.2, 0, 20)
    else:
        preprocess_dates(dataset, processed, 0.1, 0.2, 0, 200)


def datasets(exp) -> set[str]:
    """The experiment's dataset and a mapping's or a transfer's source."""
    source = getattr(exp.model, "source", None) or (exp.adapt.source if exp.adapt else None)
    return {exp.dataset, *([source] if source else [])}


@pytest.mark.parametrize("name", list(PARAMS.experiments))
def test_experiment_runs_a_batch(name, tmp_path):
    params = load(
        REPO / "params.yaml", ["train.log_model=false", f"train.threads={THREADS}", *SMALL]
    )
    exp = params.experiment(name)
    for dataset in datasets(exp):
        prepare(tmp_path, dataset)
    metrics = run_experiment(params, name, tmp_path, fast_dev_run=2)
    first = ENTRIES[exp.task].test_metrics[0]  # test_loss, test_recon_loss: a loss, > 0
    assert metrics[first] > 0
    written = json.loads((tmp_path / "results" / name / "metrics.json").read_text())
    assert set(ENTRIES[exp.task].test_metrics) <= set(written)
