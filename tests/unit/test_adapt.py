"""Family `adapt`: the gradient reversal, a frozen body, shapes and label sets of two domains,
instance weights, MNIST-M's construction, and a transfer suite whose fine-tuning starts from
the `pretrain` stage's network (its MLflow run named by a tag)."""

import copy
import json
import math
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from ablab import records, tracking
from ablab.config import ConfigError, load
from ablab.config.pretraining import pretraining_key
from ablab.data import mnist_m
from ablab.data.datamodules import as_shape, common_shape
from ablab.families import family
from ablab.families.adapt import density_ratios
from ablab.models.domain import reversal_schedule, reverse_gradient
from ablab.pretrain import run_pretrain
from ablab.suite import _with_threads, run_suite
from tests.conftest import TINY_PARAMS, write_random_processed

TRANSFER = {
    "task": "adapt",
    "model": {"arch": "cnn", "channels": [4, 8], "head": [16]},
    "data": {"dataset": "mnist_m"},
    "adapt": {"method": "source_only", "source": "mnist", "target_labels": 20,
              "pretrain_epochs": 1},
    "train": {"max_epochs": 1, "test_checkpoint": "last", "early_stopping": {"enabled": False}},
}  # fmt: skip


def params_tree(**adapt) -> dict:
    tree = copy.deepcopy(TINY_PARAMS)
    entry = copy.deepcopy(TRANSFER)
    entry["adapt"].update(adapt)
    tree["experiments"] = {"transfer": entry}
    tree["suites"] = {
        "transfer": {
            "experiment": "transfer", "seeds": [1], "baseline": "source_only",
            "variants": {"source_only": {}, "target_only": {"adapt.method": "target_only"},
                         "freeze": {"adapt.method": "freeze"},
                         "finetune": {"adapt.method": "finetune"},
                         "dann": {"adapt.method": "dann", "train.max_epochs": 2}},
        }
    }  # fmt: skip
    tree.pop("tune")
    return tree


@pytest.fixture
def root(tmp_path):
    processed = tmp_path / "data" / "processed"
    write_random_processed(processed, "mnist", per_split=60, seed=1)
    write_random_processed(processed, "mnist_m", per_split=60, seed=2)
    return tmp_path


def load_tree(tmp_path, tree):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load(path)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    y = reverse_gradient(x, 0.7)
    assert torch.equal(y, x)  # identity forward
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -0.7 * weights)


def test_reversal_strength_rises_as_in_ganin_et_al():
    assert reversal_schedule(0.0) == 0.0
    assert reversal_schedule(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert reversal_schedule(1.0) == pytest.approx(1.0, abs=1e-4)
    values = [reversal_schedule(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_a_frozen_body_keeps_its_weights_and_statistics_while_the_head_learns(root, tmp_path):
    tree = params_tree(method="freeze")
    tree["experiments"]["transfer"]["model"]["batch_norm"] = True
    exp = load_tree(tmp_path, tree).experiment("transfer")
    fam = family("adapt")
    data = fam.data(exp, root / "data" / "processed")
    data.setup()
    module = fam.module(exp, data)
    module.freeze_body()
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=data)
    head = f"{len(module.net) - 1}."
    for key, value in module.net.state_dict().items():
        changed = not torch.equal(value, before[key])
        assert changed == key.startswith(head), key  # running means included


def test_two_domains_are_brought_to_one_shape():
    assert common_shape((1, 8, 8), (3, 28, 28), "here") == (3, 28, 28)
    grey = np.full((2, 1, 8, 8), 255, dtype=np.uint8)
    x = as_shape(grey, (3, 28, 28))
    assert x.shape == (2, 3, 28, 28) and torch.allclose(x, torch.ones_like(x))
    with pytest.raises(ConfigError, match="only grey images can be repeated"):
        common_shape((3, 28, 28), (4, 28, 28), "experiments.t.adapt")
    with pytest.raises(ConfigError, match="aspect ratios differ"):
        common_shape((1, 28, 28), (1, 28, 56), "experiments.t.adapt")


def test_bad_transfers_are_refused_naming_the_key(tmp_path, root):
    tree = params_tree(method="dann", source="fashion_mnist")
    refused = r"experiments.transfer: adapt.method: dann reads fashion_mnist's labels as mnist_m's"
    with pytest.raises(ConfigError, match=refused + ", but their classes differ"):
        load_tree(tmp_path, tree)
    finetune = params_tree(method="finetune", source="fashion_mnist")
    finetune.pop("suites")  # its dann variant would read clothes as digits
    load_tree(tmp_path, finetune)  # a new head: other classes are fine
    with pytest.raises(ConfigError, match="adapt.source: mnist_m is the target"):
        load_tree(tmp_path, params_tree(source="mnist_m"))
    exp = load_tree(tmp_path, params_tree(target_labels=61)).experiment("transfer")
    data = family("adapt").data(exp, root / "data" / "processed")
    with pytest.raises(ConfigError, match=r"adapt.target_labels: 61 is more than the 60 target"):
        data.setup()


def test_instance_weights_favour_source_examples_that_look_like_the_target():
    gen = torch.Generator().manual_seed(0)
    dark = torch.rand(200, 1, 8, 8, generator=gen) * 0.2
    bright = 0.8 + torch.rand(200, 1, 8, 8, generator=gen) * 0.2
    source = torch.cat([dark, bright[:20]])
    weights = density_ratios(source, bright[20:], max_weight=10.0, seed=0)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert weights[200:].min() > weights[:200].max()  # the target-like examples count most
    assert len(set(weights[200:].tolist())) > 1  # unclipped at 10
    clipped = density_ratios(source, bright[20:], max_weight=2.0, seed=0)
    assert torch.all(clipped[200:] == clipped.max())  # every target-like example hits the clip
    assert clipped.mean().item() == pytest.approx(1.0, abs=1e-5)


def test_mnist_m_blends_each_digit_into_a_photo_patch():
    digits = np.random.default_rng(0).integers(0, 256, (50, 1, 28, 28), dtype=np.uint8)
    photos = [np.full((40, 60, 3), (10, 200, 90), np.uint8), np.full((30, 30, 3), 255, np.uint8)]
    out = mnist_m.blend(digits, photos)
    assert out.shape == (50, 3, 28, 28)
    d = digits[:, 0].astype(int)
    for i in range(50):
        colours = ((10, 200, 90), (255, 255, 255))
        candidates = [np.abs(np.array(c)[:, None, None] - d[i]) for c in colours]
        assert any(np.array_equal(out[i], c) for c in candidates)  # |patch - digit|
    assert np.array_equal(out, mnist_m.blend(digits, photos))  # fixed by its seed


def test_fine_tuning_starts_from_the_pretrain_stages_network_in_every_worker(
    root, tmp_path, monkeypatch, capsys
):
    from ablab.cli import main

    tree = params_tree()
    tree["experiments"]["transfer"]["train"]["threads"] = 2  # the repo's; a worker's share: 1
    params = load_tree(tmp_path, tree)
    monkeypatch.setenv("ABLAB_ROOT", str(root))
    main(["pretrain", "transfer", "--params", str(tmp_path / "params.yaml")])
    assert (
        "transfer: 1 pretrained networks in results/pretrained/transfer" in capsys.readouterr().out
    )
    folder = root / "results" / "pretrained" / "transfer"
    networks = json.loads((folder / "runs.json").read_text())["networks"]
    assert len(networks) == 1  # source_only, freeze, finetune, dann of seed 1 share one
    (key, pretrain_run), = networks.items()  # fmt: skip
    assert (folder / f"{key}.pt").exists()
    stamp = (folder / f"{key}.pt").stat().st_mtime_ns
    assert run_pretrain(params, "transfer", root) == networks  # nothing trained again
    assert (folder / f"{key}.pt").stat().st_mtime_ns == stamp
    # two workers, as `ablab suite transfer --workers 2` runs it: each unit trains with its
    # worker's share of the threads, and still starts from the stage's network
    command = [sys.executable, "-m", "ablab.cli", "suite", "transfer", "--worker", "--params",
               str(tmp_path / "params.yaml")]  # fmt: skip
    report = run_suite(params, "transfer", root, workers=2, worker_command=command)
    tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    pretrained = client.get_run(pretrain_run)
    assert pretrained.data.tags["ablab.stage"] == "pretrain"
    took = (pretrained.info.end_time - pretrained.info.start_time) / 1000
    seconds = records.pretraining_seconds(client, root, "transfer", "default")  # a record's
    assert took > 0 and seconds == pytest.approx(took)
    runs = {r["variant"]: r for r in report["runs"]}
    assert all(r["status"] == "finished" for r in runs.values())
    for variant in ("source_only", "freeze", "finetune", "dann"):
        tags = client.get_run(runs[variant]["run_id"]).data.tags
        assert tags["ablab.pretrained_run"] == pretrain_run
        assert (tags["ablab.source"], tags["ablab.target"]) == ("mnist", "mnist_m")
    assert "ablab.pretrained_run" not in client.get_run(runs["target_only"]["run_id"]).data.tags
    # source_only is the pretrained network itself, tested on the target
    tested = pretrained.data.metrics["test_accuracy"]
    assert runs["source_only"]["summary"]["test_accuracy"] == pytest.approx(tested)
    assert runs["source_only"]["history"] == []
    dann = runs["dann"]["history"]
    assert all(0 <= row["domain_accuracy"] <= 1 for row in dann)
    assert dann[0]["reversal"] < dann[1]["reversal"]  # rising with training progress
    assert key == pretraining_key(params.suite_runs("transfer")[1].experiment)  # freeze's


def test_a_workers_thread_count_leaves_the_pretrained_network_it_starts_from_as_it_is(tmp_path):
    params = load_tree(tmp_path, params_tree())
    for run in params.suite_runs("transfer"):
        if run.variant != "target_only":
            keys = {pretraining_key(_with_threads(run, n).experiment) for n in (1, 2, 3, 16)}
            assert keys == {pretraining_key(run.experiment)}


def test_the_pretrain_stage_writes_its_output_with_no_suite_at_all(tmp_path, monkeypatch):
    from ablab.cli import main

    tree = copy.deepcopy(TINY_PARAMS)
    tree.pop("suites")
    load_tree(tmp_path, tree)
    monkeypatch.setenv("ABLAB_ROOT", str(tmp_path))
    main(["pretrain", "--params", str(tmp_path / "params.yaml")])
    assert (tmp_path / "results" / "pretrained").is_dir()  # DVC requires its output
