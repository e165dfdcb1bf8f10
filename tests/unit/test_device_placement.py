"""Device-correct code, checked on the CPU. Inside every family's training, validation and test
steps (and the batch hooks that augment or cut a batch), ablab code makes no tensor without
saying its device (`zeros`, `arange`, `randn`, ... without `device=`: on a GPU it would land
on the CPU beside CUDA tensors) and reads no tensor back to the host (`.item()`, `float()`,
`.tolist()`, `.cpu()`, `.numpy()`, `if tensor:`: on a GPU each waits for the device), but
where the code says why (ALLOWED). A torch function mode watches the calls; each family's tiny
case (tests/unit/test_families.py) trains two batches of each split through the one `train`."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.overrides import TorchFunctionMode

from ablab.config import load
from ablab.train import train
from tests.unit.test_experiments import prepare
from tests.unit.test_families import EXTRA, TINY

SRC = Path(__file__).resolve().parents[2] / "src" / "ablab"
TORCH = Path(torch.__file__).parent
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint",
             "randperm", "linspace", "tensor", "as_tensor", "eye", "bernoulli"}  # fmt: skip
SYNCS = {"item", "__float__", "__int__", "__bool__", "__index__", "tolist", "cpu", "numpy"}
# (file under src/ablab, function): why a host read is right there
ALLOWED = {
    ("families/base.py", "record_train"): "on the CPU only: the divergence check names its step "
    "(on a GPU it is kept on the device and read at the epoch's end)",
    ("families/masked_lm.py", "_loss"): "a batch not from the data module is cut to its "
    "longest sequence (a shape: the host must know it)",
    ("models/rnn.py", "forward"): "PyTorch packs sequences by host lengths",
    ("models/seq2seq.py", "encode"): "PyTorch packs sequences by host lengths",
    ("data/datamodules.py", "on_before_batch_transfer"): "token batches are cut on the host, "
    "before they move",
}


class Watch(TorchFunctionMode):
    """Records factory calls without a device and host reads made by ablab's own code."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        unplaced = name in FACTORIES and kwargs.get("device") is None
        if unplaced or name in SYNCS:
            where = _caller()
            if where is not None and where not in ALLOWED:
                what = f"{name}() without device=" if unplaced else f"host read .{name}"
                self.found.append(f"{where[0]}:{where[1]}: {what}")
        return func(*args, **kwargs)


def _caller() -> tuple[str, str] | None:
    """Where the call comes from when ablab's code made it itself (file under src/ablab,
    function): the first frame outside torch; None when that is another library's (an
    optimizer's step reading its CPU step count is torch's business, not ablab's)."""
    frame = sys._getframe(2)
    while frame is not None and TORCH in Path(frame.f_code.co_filename).parents:
        frame = frame.f_back
    if frame is None or SRC not in Path(frame.f_code.co_filename).parents:
        return None
    return str(Path(frame.f_code.co_filename).relative_to(SRC)), frame.f_code.co_name


class Watched(pl.Callback):
    """Runs the module's steps, and the data module's batch hooks, under `Watch`."""

    def __init__(self) -> None:
        self.mode = Watch()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for name in ("training_step", "validation_step", "test_step"):
            self._wrap(pl_module, name)
        if trainer.datamodule is not None:
            for name in ("on_before_batch_transfer", "on_after_batch_transfer"):
                self._wrap(trainer.datamodule, name)

    def _wrap(self, owner, name: str) -> None:
        step = getattr(owner, name)
        if getattr(step, "watched", False):
            return

        def watched(*args, **kwargs):
            with self.mode:
                return step(*args, **kwargs)

        watched.watched = True
        setattr(owner, name, watched)


def tiny_case(root: Path, task: str, **train_extra):
    """The family's tiny case (tests/unit/test_families.py) as a resolved experiment, its data
    prepared under `root`."""
    dataset, model = TINY[task]
    tree = {
        "seed": 3, "mlflow_experiment": "placement",
        "train": {"max_epochs": 1, "threads": 1, "log_model": False, **train_extra},
        "experiments": {"tiny": {"task": task, "model": model, "data": {"dataset": dataset},
                                 **EXTRA.get(task, {})}},
        "evaluator": {"datasets": [dataset] if task == "generate" else []},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    for needed in {dataset, *(["mnist"] if task == "adapt" else [])}:
        prepare(root, needed)
    return load(root / "params.yaml").experiment("tiny")


@pytest.mark.parametrize("task", list(TINY))
def test_steps_make_no_tensor_off_device_and_read_nothing_back(task, tmp_path):
    augment = {"shift": 1, "erasing": 0.5} if task == "classify" else {}
    exp = tiny_case(tmp_path, task, augment=augment)
    watched = Watched()
    train(exp, tmp_path, "placement", fast_dev_run=2, extra_callbacks=[watched])
    assert not watched.mode.found, "\n".join(sorted(set(watched.mode.found)))


def test_the_watch_sees_what_it_looks_for():
    """The check itself: ablab code reading a tensor back, or making one without a device, is
    caught; this file's own calls are not ablab's."""
    from ablab.families.base import as_logged

    mode = Watch()
    with mode:
        torch.arange(3)
        as_logged(torch.ones(()))  # as_tensor(value) without a device, then float(): both
    assert mode.found == ["families/base.py:as_logged: as_tensor() without device=",
                          "families/base.py:as_logged: host read .__float__"]  # fmt: skip
