"""Explanations: maps that find what a model reads, faithfulness numbers that rank a map
above a random order, a sanity check that catches a map independent of the model, and `ablab
explain` on models from the store (by experiment, registry URI), with clear refusals."""

import json

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch import nn

from ablab import tracking
from ablab.config import load
from ablab.config.explain import ExplainParams
from ablab.explain import faithfulness, maps
from ablab.explain.job import explain_model
from ablab.train import run_experiment
from tests.conftest import TINY_PARAMS

SIZE, REGION = 16, (slice(2, 8), slice(2, 8))  # the model reads only this 6 x 6 block
GRADIENT_METHODS = ("saliency", "integrated_gradients", "smoothgrad")


class RegionOnly(nn.Module):
    """Zeroes every pixel outside REGION: nothing there can matter to what follows."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., REGION[0], REGION[1]] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def bars(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a vertical bar inside REGION, class 1: a horizontal one; bright noise
    everywhere outside it as a distractor."""
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.rand(n, 1, SIZE, SIZE, generator=generator)
    x[..., REGION[0], REGION[1]] = 0
    where = torch.randint(3, 7, (n,), generator=generator)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, 2:8, where[i]] = 1
        else:
            x[i, 0, where[i], 2:8] = 1
    return x, y


@pytest.fixture(scope="module")
def region_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        RegionOnly(), nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        x, y = bars(64, generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y = bars(120, generator)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95  # it learned the task
    return model, x


def test_every_method_finds_the_region_and_beats_a_random_order(region_model):
    model, x = region_model
    cfg = ExplainParams(images=120, sanity_images=30, steps=16)
    target = model(x).argmax(1)
    for method in maps.METHODS:
        found = maps.attribute(method, model, x, target, cfg)
        inside = found[:, REGION[0], REGION[1]].sum() / found.sum()
        # input gradients are exactly 0 outside; class maps bleed by the two 3x3 convs
        least = 0.99 if method in GRADIENT_METHODS else 0.6
        assert inside > least, (method, float(inside))
    result = explain_model(model, x, cfg, list(maps.METHODS))
    random = result.table["random"]
    for method in maps.METHODS:
        row = result.table[method]
        assert row["deletion_auc"] < random["deletion_auc"] - 0.05, (method, row, random)
        assert row["insertion_auc"] > random["insertion_auc"] + 0.05, (method, row, random)


def test_a_map_that_ignores_the_model_fails_the_sanity_check(region_model, monkeypatch):
    """The image itself as the 'map' (an edge detector would do the same): a randomized network
    gives the same map, rank correlation 1, flagged. (A real map passes on a trained CNN: see
    test_explain_logs_a_child_run_of_the_trained_model.)"""
    model, x = region_model
    monkeypatch.setitem(maps.METHODS, "occlusion", lambda model, x, target, cfg: x.mean(1))
    cfg = ExplainParams(images=60, sanity_images=30, steps=8)
    result = explain_model(model, x, cfg, ["occlusion"])
    assert result.table["occlusion"]["randomization_rank_correlation"] == pytest.approx(1.0)
    assert result.failing == ["occlusion"]


def test_an_all_zero_map_orders_pixels_as_a_random_order_does():
    generator = torch.Generator().manual_seed(0)
    order = faithfulness.pixel_order(torch.zeros(3, 4, 4), generator)
    assert all(sorted(row.tolist()) == list(range(16)) for row in order)
    assert len({tuple(row.tolist()) for row in order}) == 3  # shuffled, not index order
    ranked = faithfulness.pixel_order(torch.arange(16.0).view(1, 4, 4), generator)
    assert ranked[0].tolist() == list(range(15, -1, -1))  # the largest value first


def test_auc_and_curves_follow_the_protocol():
    """AUC: trapezoid over [0, 1]; curves: k/steps of the pixels removed (deletion, to 0) or
    put back into the start image (insertion), the probability of the class followed."""
    assert faithfulness.auc(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])).tolist() == [1.0, 0.25]

    class Brightness(nn.Module):  # class 1's logit: the mean pixel, scaled
        def forward(self, x):
            mean = x.flatten(1).mean(1, keepdim=True) * 20
            return torch.cat([torch.zeros_like(mean), mean], 1)

    x = torch.ones(1, 1, 2, 2)
    order = torch.tensor([[0, 1, 2, 3]])
    deletion, insertion = faithfulness.curves(Brightness(), x, torch.tensor([1]), order, 4,
                                              torch.zeros_like(x))  # fmt: skip
    expected = torch.sigmoid(torch.tensor([20.0, 15.0, 10.0, 5.0, 0.0])).numpy()
    assert deletion[0] == pytest.approx(expected, abs=1e-6)
    assert insertion[0] == pytest.approx(expected[::-1], abs=1e-6)


@pytest.fixture(scope="module")
def store(digits_root, tmp_path_factory):
    """A store with a CAM-ready CNN, an MLP and a CNN that logged no model, trained on digits."""
    root = tmp_path_factory.mktemp("explain")
    (root / "data").symlink_to(digits_root / "data")
    tree = yaml.safe_load(yaml.safe_dump(TINY_PARAMS))
    tree["train"].update(log_model=True, max_epochs=4)
    tree["experiments"]["cnn"]["model"].update(readout="gap", head=[], channels=[8, 16])
    tree["experiments"]["nolog"] = {**tree["experiments"]["cnn"], "train": {"log_model": False}}
    tree["explain"] = {"experiments": ["cnn"], "images": 100, "sanity_images": 40, "steps": 12,
                       "activation_max": {"steps": 16, "channels": 4}}  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    params = load(root / "params.yaml")
    for name in ("cnn", "mlp", "nolog"):
        run_experiment(params, name, root)
    return root


def explain(root, monkeypatch, *args):
    from ablab.cli import main

    monkeypatch.setenv("ABLAB_ROOT", str(root))
    main(["explain", *args, "--params", str(root / "params.yaml")])


def test_explain_logs_a_child_run_of_the_trained_model(store, monkeypatch, capsys):
    explain(store, monkeypatch, "cnn")
    client = MlflowClient(tracking.tracking_uri(store))
    experiment = client.get_experiment_by_name("ablab-test")
    (trained,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'cnn'")
    (child,) = client.search_runs([experiment.experiment_id],
                                  f"tags.`ablab.explains` = '{trained.info.run_id}'")  # fmt: skip
    assert child.data.tags["mlflow.parentRunId"] == trained.info.run_id
    assert child.info.run_name == "cnn/explain" and child.info.status == "FINISHED"
    metrics = child.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(trained.data.metrics["test_accuracy"])
    for method in ExplainParams().methods:
        for key in ("deletion_auc", "insertion_auc", "randomization_rank_correlation"):
            assert 0 <= abs(metrics[f"{method}_{key}"]) <= 1, (method, key)
    # Adebayo et al.'s check on a trained CNN: Grad-CAM depends on the weights
    assert metrics["grad_cam_randomization_rank_correlation"] < 0.5
    assert "ablab.explain.fails_sanity.grad_cam" not in child.data.tags
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"explanations.png", "activation_max.png", "filters.png", "faithfulness.png",
            "faithfulness.json"} <= artifacts  # fmt: skip
    written = json.loads((store / "results" / "explain" / "cnn" / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    assert "deletion/insertion AUC: cam" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 4  # nothing retrained


def test_explain_takes_a_registry_uri(store, monkeypatch):
    client = MlflowClient(tracking.tracking_uri(store))
    experiment = client.get_experiment_by_name("ablab-test")
    (trained,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'mlp'")
    (model,) = [m for m in client.search_logged_models([experiment.experiment_id])
                if m.source_run_id == trained.info.run_id]  # fmt: skip
    mlflow.set_tracking_uri(tracking.tracking_uri(store))
    version = mlflow.register_model(f"models:/{model.model_id}", "digits-mlp")
    client.set_registered_model_alias("digits-mlp", "champion", version.version)
    explain(store, monkeypatch, "models:/digits-mlp@champion")
    (child,) = client.search_runs([experiment.experiment_id],
                                  f"tags.`ablab.explains` = '{trained.info.run_id}'")  # fmt: skip
    tags = child.data.tags
    assert "no conv layer" in tags["ablab.explain.skipped.grad_cam"]
    assert "global average pooling" in tags["ablab.explain.skipped.cam"]
    assert "saliency_deletion_auc" in child.data.metrics


@pytest.mark.parametrize(("what", "says"), [
    ("nolog", "logged no model; train it with train.log_model=true"),
    ("nothing", "is not an experiment in params.yaml, a models:/ URI, a run name or a run id"),
    ("models:/nothing@champion", "no such model in the store"),
])  # fmt: skip
def test_explain_says_what_it_cannot_explain(store, monkeypatch, capsys, what, says):
    with pytest.raises(SystemExit) as stop:
        explain(store, monkeypatch, what)
    assert stop.value.code == 2
    assert says in capsys.readouterr().err


def test_a_text_classifiers_attention_is_explained_and_scored_on_tokens(
    tmp_path, tiny_params_file, monkeypatch
):
    """A GRU with attention pooling: its attention maps over test texts, token deletion and
    insertion against a random order, the randomization check; a network without attention
    is refused with what would have one."""
    from tests.conftest import write_random_text

    write_random_text(tmp_path / "data" / "processed", "tweets", per_split=40)
    gru = "{arch: rnn, cell: gru, embedding_dim: 8, hidden_size: 8, pooling: POOL}"
    params = load(tiny_params_file, [
        f"experiments.att={{task: classify, model: {gru.replace('POOL', 'attention')}, "
        "data: {dataset: tweets}}",
        f"experiments.last={{task: classify, model: {gru.replace('POOL', 'last')}, "
        "data: {dataset: tweets}}",
        "train.log_model=true",
    ])  # fmt: skip
    for name in ("att", "last"):
        run_experiment(params, name, tmp_path)
    (tmp_path / "params.yaml").write_text(tiny_params_file.read_text())
    overrides = [item for s in (
        f"experiments.att={{task: classify, model: {gru.replace('POOL', 'attention')}, "
        "data: {dataset: tweets}}",
        f"experiments.last={{task: classify, model: {gru.replace('POOL', 'last')}, "
        "data: {dataset: tweets}}",
        "explain.steps=6", "explain.images=40") for item in ("--set", s)]  # fmt: skip
    explain(tmp_path, monkeypatch, "att", *overrides)
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("ablab-test")
    (child,) = client.search_runs([experiment.experiment_id], "tags.`ablab.stage` = 'explain'")
    metrics = child.data.metrics
    for key in ("attention_deletion_auc", "attention_insertion_auc", "random_deletion_auc",
                "attention_randomization_rank_correlation"):  # fmt: skip
        assert -1 <= metrics[key] <= 1, key
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"explanations.png", "faithfulness.png"} <= artifacts
    with pytest.raises(SystemExit):
        explain(tmp_path, monkeypatch, "last", *overrides)
