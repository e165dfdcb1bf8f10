"""What every family shares: the `Family` contract that `train` talks to, the `Fit` it is
handed, and the `Task` LightningModule base (evaluation hooks around `_reset_eval` /
`_eval_step` / `_eval_end`, training losses summed per epoch rather than `self.log` per step,
~0.5 ms a call here, and the optimizer and schedule from the hyperparameters)."""

from __future__ import annotations

import json
import math
import random
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from ablab import regularize
from ablab.config import ENTRIES, ConfigError, Experiment
from ablab.models import count_parameters
from ablab.optim import PER_STEP, make_optimizer, make_scheduler


class DivergedError(RuntimeError):
    """Training failed in a way that ends its run FAILED but not its suite: the loss became
    NaN or infinite. `kind` names the failure in the ablab.failure tag and a suite's runs."""

    kind = "diverged"


class CollapsedError(DivergedError):
    """A generator's samples collapsed onto few classes."""

    kind = "collapsed"


def as_logged(value: float | torch.Tensor) -> float:
    """A value as Lightning's `self.log` keeps it (a float32 tensor), read back as a float."""
    return float(torch.as_tensor(value, dtype=torch.float32))


GRAD_NORM_EVERY = 8  # steps between gradient-norm samples


class Sums:
    """Running sums of a split's values, each kept on the device of what is added, in float64
    (as Python floats summed them before, so CPU numbers do not move), and read with one host
    sync (`read`): no step waits for the device. Plain numbers (counts) stay on the host."""

    def __init__(self) -> None:
        self._values: dict[str, torch.Tensor | float] = {}

    def add(self, **values: torch.Tensor | float) -> None:
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().double()
            self._values[name] = self._values[name] + value if name in self._values else value

    def read(self) -> dict[str, float]:
        """Every sum as a Python float (one transfer for all the device ones)."""
        held = [k for k, v in self._values.items() if isinstance(v, torch.Tensor)]
        out = {k: float(v) for k, v in self._values.items() if k not in held}
        if held:
            values = torch.stack([self._values[k].reshape(()) for k in held]).tolist()
            out.update(zip(held, values, strict=True))
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._values


class Task(pl.LightningModule):
    """Subclasses save hyperparameters optimizer, lr, weight_decay, momentum, schedule and
    max_epochs, and implement `_reset_eval`, `_eval_step(batch)` and `_eval_end(prefix)`;
    `publish` logs a split's values and keeps the test split's in `test_results`."""

    def __init__(self) -> None:
        super().__init__()
        self._train_sums = Sums()  # loss * n, objective * n, n
        self._first_bad_step: torch.Tensor | None = None  # on a GPU: a non-finite objective
        self._grad_sums: torch.Tensor | None = None  # per weight tensor, summed over steps
        self._grad_steps = 0
        self.test_results: dict[str, float] = {}

    def publish(self, prefix: str, values: dict[str, float | torch.Tensor]) -> None:
        """Log `<prefix>_<name>` for every value (callbacks read them: early stopping,
        checkpointing, pruning); the test split's are kept as `test_results` too."""
        for name, value in values.items():
            self.log(f"{prefix}_{name}", value)
            if prefix == "test":
                self.test_results[f"test_{name}"] = as_logged(value)

    def record_train(self, loss: torch.Tensor, objective: torch.Tensor, n: int) -> None:
        """One step's losses (0-d tensors), summed on their device. A non-finite objective
        raises DivergedError: on the CPU at once, naming the step; on a GPU, where checking
        each step would wait for the device, the first such step is noted on the device and
        raised at the epoch's end (`epoch_extras`): the epoch in flight is then wasted, no
        more."""
        objective = objective.detach()
        if objective.device.type == "cpu":
            value = float(objective)
            if not math.isfinite(value):
                raise DivergedError(f"training loss is {value} at step {self.global_step}")
        else:
            bad = ~torch.isfinite(objective)
            step = torch.full((), self.global_step, device=objective.device)
            if self._first_bad_step is None:
                self._first_bad_step = torch.full((), -1, device=objective.device)
            first = self._first_bad_step
            self._first_bad_step = torch.where(bad & (first < 0), step, first)
        # to float64 first: Python floats multiplied and summed these before (same rounding)
        self._train_sums.add(loss=loss.detach().double() * n, objective=objective.double() * n,
                             n=n)  # fmt: skip

    def on_before_optimizer_step(self, optimizer) -> None:
        """Every GRAD_NORM_EVERY-th step, per weight tensor (dim > 1) of `self.net`, the
        gradient's norm, summed as a tensor (no sync) and averaged per epoch:
        `grad_norm/<parameter>`, for every arch. Sampled: on every step it cost the MLP's
        train path 7% (make bench)."""
        if self.global_step % GRAD_NORM_EVERY:
            return
        grads = [p.grad for _, p in self._weights()]
        if not grads or any(g is None for g in grads):
            return  # a weight without a gradient this step: the epoch's means stay aligned
        with torch.no_grad():
            norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        self._grad_sums = norms if self._grad_sums is None else self._grad_sums + norms
        self._grad_steps += 1

    def _weights(self) -> list[tuple[str, torch.Tensor]]:
        net = getattr(self, "net", None)
        if net is None:
            return []
        return [(n, p) for n, p in net.named_parameters() if p.requires_grad and p.dim() > 1]

    def epoch_extras(self) -> dict[str, float]:
        """The epoch's mean train_loss, train_objective and grad_norm/<parameter> (read by the
        epoch logger); resets them."""
        sums = self._train_sums.read()
        self._train_sums = Sums()
        if self._first_bad_step is not None:  # a GPU's deferred divergence check
            bad, self._first_bad_step = int(self._first_bad_step), None
            if bad >= 0:
                raise DivergedError(f"training loss is not finite at step {bad}")
        n = sums.get("n", 0)
        out = {}
        if n:
            out = {"train_loss": sums["loss"] / n, "train_objective": sums["objective"] / n}
        if self._grad_sums is not None:
            means = (self._grad_sums / max(self._grad_steps, 1)).tolist()
            names = [name for name, _ in self._weights()]
            out.update({f"grad_norm/{k}": v for k, v in zip(names, means, strict=True)})
        self._grad_sums, self._grad_steps = None, 0
        return out

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._reset_eval()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def optimizer_parameters(self):
        """What the optimizer updates: parameters, or param groups (e.g. a lower lr for some)."""
        return self.parameters()

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = make_optimizer(
            self.optimizer_parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum
        )
        schedule = hp.schedule or {"name": "none"}
        per_step = schedule["name"] in PER_STEP
        scheduler = make_scheduler(
            optimizer, max_epochs=hp.max_epochs, **schedule,
            total_steps=int(self.trainer.estimated_stepping_batches) if per_step else None,
        )  # fmt: skip
        if scheduler is None:
            return optimizer
        interval = "step" if per_step else "epoch"
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": "val_loss"},
        }


class NetTask(Task):
    """A Task over one network (`self.net`) taking only the optimizer and schedule
    hyperparameters, whose evaluation sums its values in `self._sums` (a translator, a
    tagger)."""

    def __init__(
        self, net: nn.Module, optimizer: str = "adam", lr: float = 1e-3,
        weight_decay: float = 0.0, momentum: float = 0.9, schedule: dict | None = None,
        max_epochs: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self._reset_eval()

    def _reset_eval(self) -> None:
        self._sums = Sums()


def optimizer_hparams(exp: Experiment) -> dict[str, Any]:
    """The optimizer and schedule arguments every Task takes, from the experiment."""
    hp = exp.train
    return {
        "optimizer": hp.optimizer, "lr": hp.lr, "weight_decay": hp.weight_decay,
        "momentum": hp.momentum, "schedule": hp.schedule.model_dump(),
        "max_epochs": hp.max_epochs,
    }  # fmt: skip


@dataclass
class Fit:
    """What a family's `run` is handed: the experiment's trainer (epoch logging, checkpoints,
    early stopping, pruning) and a way to make plain trainers for extra phases."""

    trainer: pl.Trainer
    test_checkpoint: str = "best"  # best | last
    fast_dev_run: bool | int = False
    # where networks pretrained by the `pretrain` stage are (<key>.pt, runs.json); None: none
    pretrained_dir: Path | None = None
    # the run's last checkpoint where a killed process left one: the run's fit continues there
    resume_from: str | None = None
    # where the run trains (resolved: cpu or gpu), on which device, at which precision: extra
    # phases train there too
    accelerator: str = "cpu"
    devices: int | list[int] = 1
    precision: str = "32-true"

    def fit(self, module: pl.LightningModule, data: pl.LightningDataModule) -> None:
        """The run's own epochs (resumed where a checkpoint says)."""
        self.trainer.fit(module, datamodule=data, ckpt_path=self.resume_from)

    def test(self, module: pl.LightningModule, data: pl.LightningDataModule) -> None:
        best = self.test_checkpoint == "best" and not self.fast_dev_run
        self.trainer.test(module, datamodule=data, ckpt_path="best" if best else None,
                          verbose=False)  # fmt: skip

    def pretrained(self, key: str) -> tuple[dict[str, torch.Tensor], str] | None:
        """The `pretrain` stage's network `key`: (state dict, the MLflow run that trained it);
        None where the stage has not trained it (outside a suite)."""
        if self.pretrained_dir is None or not (Path(self.pretrained_dir) / f"{key}.pt").exists():
            return None
        folder = Path(self.pretrained_dir)
        runs = json.loads((folder / "runs.json").read_text())["networks"]
        return torch.load(folder / f"{key}.pt", weights_only=True), runs.get(key, "")

    def plain_fit(self, module: pl.LightningModule, batches, max_epochs: int) -> None:
        """Fits `module` on the training `batches` with a deterministic trainer that has no
        callbacks, logging, checkpoints or validation: for phases such as greedy layer-wise
        pretraining that are not the run's own epochs."""
        trainer = pl.Trainer(
            max_epochs=max_epochs, accelerator=self.accelerator, devices=self.devices,
            precision=self.precision, deterministic=True,
            logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, num_sanity_val_steps=0, fast_dev_run=self.fast_dev_run,
        )  # fmt: skip
        with warnings.catch_warnings():  # a module with a validation_step, validated elsewhere
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            trainer.fit(module, train_dataloaders=batches)


@contextmanager
def own_random_stream(seed: int):
    """Runs the block seeded with `seed` (torch and CUDA's, numpy, random) and restores the
    random streams afterwards: an extra phase (pretraining) that leaves the run's draws as
    they were."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    pl.seed_everything(seed, workers=True, verbose=False)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class Family(ABC):
    """A task family: its data, networks, LightningModule, metrics and pictures. `train`
    talks to this contract only. Metric names come from the family's schema in config."""

    name: ClassVar[str]  # `task:` in params.yaml, tag ablab.family

    @property
    def schema(self):
        return ENTRIES[self.name]

    @property
    def test_metrics(self) -> tuple[str, ...]:
        return self.schema.test_metrics

    @property
    def epoch_metrics(self) -> tuple[str, ...]:
        return self.schema.epoch_metrics

    @property
    def train_metrics(self) -> tuple[str, ...]:
        return self.schema.train_metrics

    @abstractmethod
    def data(
        self, exp: Experiment, processed_dir: Path, fold: tuple[int, int] | None = None
    ) -> pl.LightningDataModule:
        """The experiment's data module (not set up)."""

    @abstractmethod
    def module(self, exp: Experiment, data: pl.LightningDataModule) -> Any:
        """The networks, built through `ablab.models`, wrapped for training."""

    def run(self, fit: Fit, module: Any, data: pl.LightningDataModule) -> None:
        """Fit, then test; families with other phases (pretraining, no fit) override it."""
        fit.fit(module, data)
        fit.test(module, data)

    def test_results(self, exp: Experiment, module: Any, data) -> dict[str, float]:
        """The test metrics, in `test_metrics` order."""
        return {k: module.test_results[k] for k in self.test_metrics}

    def params(self, exp: Experiment, module: Any, data) -> dict[str, Any]:
        """What the MLflow run records as params, before training."""
        logged = exp.model_dump(exclude={"name"})
        logged["data"] = {k: data.meta[k] for k in ("val_fraction", "train_size", "val_size")}
        logged["data"]["data_hash"] = data.meta["data_hash"]
        logged["parameters"] = count_parameters(module)
        return logged

    def fitted_params(self, exp: Experiment, module: Any, data) -> dict[str, Any]:
        """Params only known after training (e.g. a vectorizer's vocabulary size)."""
        return {}

    def summary(self, exp: Experiment, module: Any, data) -> dict[str, float]:
        """Values beside the test metrics, in metrics.json and MLflow."""
        return {}

    def details(self, exp: Experiment, module: Any, data) -> dict[str, float]:
        """MLflow-only metrics (e.g. per-class scores): too many for metrics.json."""
        return {}

    def tags(self, exp: Experiment) -> dict[str, str]:
        """MLflow tags the run starts with, beside ablab's own (e.g. a transfer's domains)."""
        return {}

    def fitted_tags(self, exp: Experiment, module: Any) -> dict[str, str]:
        """MLflow tags only known after training (e.g. the run a network was pretrained in)."""
        return {}

    def artifacts(self, exp: Experiment, module: Any, data, title: str) -> dict[str, object]:
        """Files for the run: name -> matplotlib Figure, dict/list (JSON) or str (text).
        Returned, never logged here: families do not import MLflow."""
        return {}

    def predictions(self, exp: Experiment, module: Any, data) -> dict[str, np.ndarray] | None:
        """Per test example, in test order: {"target", "prediction"} as class indices, for the
        report's paired test-set comparisons (`per_example` metrics); None where there are none."""
        return None

    def probe_inputs(self, data) -> tuple | None:
        """A validation batch as the network's inputs (for the dead-ReLU probe); None: none."""
        batch = next(iter(data.val_dataloader()))
        return tuple(batch[:-1])

    def loggable_model(self, exp: Experiment, module: Any, data) -> Loggable | None:
        """What `train.log_model` logs as a standalone MLflow model (`ablab.serving`). A family
        that has none refuses the key at load (`config.families.LOGGABLE`)."""
        return None


@dataclass
class Loggable:
    """A trained network as `ablab.serving` logs it: `kind` (a key of serving.KINDS), the
    network in eval mode, what the model needs beside it (normalisation, classes, shapes)
    and an input example (also the tracing input)."""

    kind: str
    net: nn.Module
    meta: dict[str, Any]
    example: Any


def network_regularizers(net: nn.Module, exp: Experiment) -> nn.Module:
    """The network-side techniques of train.regularize put in place: DropConnect on hidden
    linear layers, Gaussian noise after activations."""
    reg = exp.train.regularize
    if reg.dropconnect:
        regularize.add_dropconnect(net, reg.dropconnect)
    if reg.hidden_noise:
        regularize.add_hidden_noise(net, reg.hidden_noise)
    return net


def build_error(exp: Experiment, exc: ValueError) -> ConfigError:
    """A network that cannot be built from these sizes: the params' fault, named."""
    return ConfigError(f"params.yaml: experiments.{exp.name}.model: {exc}")
