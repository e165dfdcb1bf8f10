"""The family contract: every registered family runs on tiny data through the one `train`, its
test metrics reach metrics.json and MLflow, and the artifacts it returns are real files. And
`train.py` stays free of family and architecture names."""

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import ENTRIES, ConfigError, load
from ablab.config.families import LOGGABLE
from ablab.families import FAMILIES
from ablab.train import run_experiment
from tests.unit.test_experiments import prepare

# one tiny experiment per family: (dataset, model)
TINY = {
    "classify": ("digits", {"arch": "cnn", "channels": [4], "head": [8]}),
    "regress": ("sunspots", {"arch": "rnn", "cell": "gru", "hidden_size": 4}),
    "translate": ("dates", {"arch": "seq2seq", "embedding_dim": 4, "hidden_size": 8}),
    "tag": ("date_tagging", {"arch": "rnn", "embedding_dim": 4, "hidden_size": 4}),
    "reconstruct": ("digits", {"arch": "autoencoder", "hidden": [16], "code_size": 4,
                               "corruption": {"kind": "masking", "level": 0.3}}),
    "generate": ("digits", {"arch": "dcgan", "channels": [4, 4], "conditional": True}),
    "adapt": ("mnist_m", {"arch": "cnn", "channels": [4], "head": [8]}),
    "pseudo_label": ("mnist", {"arch": "mlp", "depth": 1, "width": 8}),
    "masked_lm": ("tweets", {"arch": "transformer", "embedding_dim": 8, "heads": 2,
                             "layers": 1, "feedforward": 8}),
}  # fmt: skip
# what a family needs beside its model: the source of a transfer, labels the tiny data can give
EXTRA = {
    "adapt": {"adapt": {"method": "dann", "source": "mnist", "target_labels": 20}},
    "pseudo_label": {"pseudo_label": {"labels": 20}},
}


def test_every_registered_family_has_a_tiny_case_and_a_schema():
    assert set(FAMILIES) == set(TINY) == set(ENTRIES)
    for name, fam in FAMILIES.items():
        assert fam.name == name
        schema = ENTRIES[name]
        assert set(schema.compared) <= set(schema.reported)
        assert schema.headline in schema.compared
        assert "val_loss" in fam.epoch_metrics  # every family checkpoints on it by default


# what each family's logged model is given (built from the tiny case) and must hand back
def _model_input(task: str, model: dict, root: Path):
    shape = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "mnist_m": (3, 28, 28)}
    if task == "regress":
        return np.load(root / "data" / "processed" / "sunspots" / "windows.npy")[:4]
    if task == "generate":
        z = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)  # latent_size
        return {"z": z, "class": np.arange(4)} if model.get("conditional") else z
    return np.zeros((4, *shape[TINY[task][0]]), np.uint8)


@pytest.mark.parametrize("task", list(TINY))
def test_family_runs_end_to_end_and_returns_real_artifacts(task, tmp_path):
    """Every family runs with `train.log_model: true`: one that logs a model logs one that
    loads and answers in plain MLflow; one that has none refuses the key at load."""
    dataset, model = TINY[task]
    tree = {
        "seed": 3, "mlflow_experiment": "contract",
        "train": {"max_epochs": 1, "threads": 1, "log_model": True},
        "experiments": {"tiny": {"task": task, "model": model, "data": {"dataset": dataset},
                                 **EXTRA.get(task, {})}},
        "evaluator": {"datasets": [dataset] if task == "generate" else []},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    if task not in LOGGABLE:
        with pytest.raises(ConfigError, match=f"train.log_model: task {task} logs no standalone"):
            load(tmp_path / "params.yaml")
        tree["train"]["log_model"] = False
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    params = load(tmp_path / "params.yaml")
    for needed in {dataset, *(["mnist"] if task == "adapt" else [])}:
        prepare(tmp_path, needed)
    summary = run_experiment(params, "tiny", tmp_path, fast_dev_run=2)
    fam = FAMILIES[task]
    written = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    for key in fam.test_metrics:
        assert key in written and written[key] == summary[key], key
    curves = (tmp_path / "results" / "tiny" / "curves.csv").read_text().splitlines()
    start = 1 + len(fam.train_metrics)
    assert curves[0].split(",")[start : start + len(fam.epoch_metrics)] == list(fam.epoch_metrics)
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("contract")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["ablab.family"] == task
    assert all(k in run.data.metrics for k in fam.test_metrics)
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    files = {p.name: p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    assert "params.yaml" in files and len(files) >= 2, files
    assert all(size > 0 for size in files.values()), files
    logged = [m for m in client.search_logged_models([experiment.experiment_id])
              if m.source_run_id == run.info.run_id]  # fmt: skip
    assert len(logged) == (task in LOGGABLE)
    if logged:
        mlflow.set_tracking_uri(tracking.tracking_uri(tmp_path))
        served = mlflow.pyfunc.load_model(f"models:/{logged[0].model_id}")
        answer = served.predict(_model_input(task, model, tmp_path))
        numbers = answer.select_dtypes("number") if isinstance(answer, pd.DataFrame) else answer
        assert len(answer) == 4 and np.isfinite(np.asarray(numbers, float)).all()


def test_train_names_no_family_and_no_architecture():
    source = (Path(__file__).parents[2] / "src" / "ablab" / "train.py").read_text()
    code = re.sub(r'""".*?"""|#[^\n]*', "", source, flags=re.S)  # docstrings and comments
    names = [*FAMILIES, "mlp", "cnn", "rnn", "transformer", "tfidf", "seq2seq", "autoencoder"]
    names += ["arch"]
    names += [
        "ImageDataModule",
        "TextDataModule",
        "SeriesDataModule",
        "TranslationDataModule",
        "TaggingDataModule",
        "DigitNamesDataModule",
    ]
    found = [n for n in names if re.search(rf"\b{n}\b", code)]
    assert not found, f"train.py switches on {found}"
