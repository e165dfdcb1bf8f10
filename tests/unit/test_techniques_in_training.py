"""Techniques checked inside a real training run (ablab.train on digits), not only as
standalone functions: each test fails when the technique is taken out of the train path."""

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import nn

from ablab.config import load
from ablab.train import train
from tests.conftest import TINY_PARAMS


class Watch(pl.Callback):
    """After every optimizer step: the gradients the step used (Lightning zeroes them only
    before the next backward); at the end, the trained module."""

    def __init__(self) -> None:
        self.grad_norms: list[float] = []
        self.module: pl.LightningModule | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))  # fmt: skip

    def on_train_end(self, trainer, pl_module) -> None:
        self.module = pl_module


def _train(tmp_path, digits_root, *overrides: str) -> Watch:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(path, ["train.early_stopping.enabled=false", *overrides])
    watch = Watch()
    train(params.experiment("mlp"), tmp_path, "ablab-test", digits_root / "data" / "processed",
          extra_callbacks=[watch])  # fmt: skip
    return watch


@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_clip_bounds_the_global_gradient_norm_of_every_step(tmp_path, digits_root, clip):
    extra = [f"train.regularize.grad_clip={clip}"] if clip else []
    watch = _train(tmp_path, digits_root, "train.optimizer=sgd", "train.lr=0.5", *extra)
    assert len(watch.grad_norms) > 20
    if clip is None:  # the bound below is a real one: unclipped steps go past it
        assert max(watch.grad_norms) > 0.5
    else:
        assert max(watch.grad_norms) <= clip * (1 + 1e-4)


def test_max_norm_holds_for_every_hidden_unit_after_training(tmp_path, digits_root):
    watch = _train(tmp_path, digits_root, "train.regularize.max_norm=0.3")
    layers = [m for m in watch.module.net.modules() if isinstance(m, nn.Linear)]
    norms = torch.cat([layer.weight.detach().norm(dim=1) for layer in layers])
    assert norms.max() <= 0.3 + 1e-5
    plain = _train(tmp_path / "plain", digits_root)
    plain_layers = [m for m in plain.module.net.modules() if isinstance(m, nn.Linear)]
    assert max(float(m.weight.detach().norm(dim=1).max()) for m in plain_layers) > 0.3


class Snapshots(pl.Callback):
    """The network's weights after each epoch's validation, by epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        self.weights[trainer.current_epoch] = state


def test_the_best_checkpoint_is_the_one_tested(tmp_path, digits_root):
    """test_checkpoint: best tests the weights of the epoch with the lowest val_loss (the
    summary's best_epoch), not the last epoch's."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    overrides = ["train.early_stopping.enabled=false", "train.max_epochs=8", "train.lr=0.3",
                 "train.optimizer=sgd", "train.test_checkpoint=best"]  # fmt: skip
    params = load(path, overrides)
    watch, snapshots = Watch(), Snapshots()
    processed = digits_root / "data" / "processed"
    result = train(params.experiment("mlp"), tmp_path, "ablab-test", processed,
                   extra_callbacks=[watch, snapshots])  # fmt: skip
    losses = [row["val_loss"] for row in result.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.summary["best_epoch"] == best
    assert best != len(losses) - 1  # else this test could not tell best from last
    tested = watch.module.net.state_dict()
    assert all(torch.equal(tested[k], v) for k, v in snapshots.weights[best].items())
    last = snapshots.weights[len(losses) - 1]
    assert not all(torch.equal(tested[k], v) for k, v in last.items())


def test_disturb_label_trains_on_disturbed_labels_and_reports_the_true_loss(tmp_path, digits_root):
    """DisturbLabel replaces training labels inside the step: the objective (on disturbed
    labels) sits well above train_loss (the same predictions on the true labels)."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(path, ["train.max_epochs=3", "train.regularize.disturb_label=0.8"])
    result = train(params.experiment("mlp"), tmp_path, "ablab-test",
                   digits_root / "data" / "processed")  # fmt: skip
    last = result.history[-1]
    assert last["train_objective"] > last["train_loss"] + 0.3


class Batches(pl.Callback):
    """The image batches the training and validation steps were handed (after Lightning's
    transfer hooks, where augmentation and input noise act)."""

    def __init__(self) -> None:
        self.train: list[torch.Tensor] = []
        self.val: list[torch.Tensor] = []
        self.data = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch[0].detach().clone())
        self.data = trainer.datamodule

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self.val.append(batch[0].detach().clone())


def _unchanged(batches: list[torch.Tensor], split: torch.Tensor) -> float:
    """The fraction of the batches' images that are, byte for byte, images of the split."""
    rows = {r.numpy().tobytes() for r in split.flatten(1)}
    seen = torch.cat(batches).flatten(1)
    return sum(r.numpy().tobytes() in rows for r in seen) / len(seen)


@pytest.mark.parametrize(
    ("overrides", "most_unchanged"),
    [([], 1.0), (["train.regularize.input_noise=0.3"], 0.0),
     (["train.augment.shift=2", "train.augment.erasing=0.5"], 0.5),
     (["train.augment.brightness=0.4", "train.augment.contrast=0.4"], 0.05)],
    ids=["plain", "input_noise", "augment", "brightness_contrast"],
)  # fmt: skip
def test_augmentation_and_input_noise_change_training_batches_only(
    tmp_path, digits_root, overrides, most_unchanged
):
    """Inside real training steps: with a perturbation on, the images the step trains on are
    (mostly) not the dataset's; the validation steps always see the dataset's own."""
    watch = Batches()
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(tmp_path / "params.yaml", ["train.max_epochs=1", *overrides])
    train(params.experiment("mlp"), tmp_path, "ablab-test", digits_root / "data" / "processed",
          extra_callbacks=[watch])  # fmt: skip
    train_split = watch.data.tensors["train"].tensors[0]
    val_split = watch.data.tensors["val"].tensors[0]
    unchanged = _unchanged(watch.train, train_split)
    if most_unchanged == 1.0:
        assert unchanged == 1.0  # the control: without a technique the rows match
    else:
        assert unchanged <= most_unchanged
    assert _unchanged(watch.val, val_split) == 1.0
