"""Training that survives a kill. Each run keeps, under <project>/checkpoints/<key>/, the
trainer's whole state at the start of its latest epoch (model, optimizers, schedulers, loops,
early stopping, the epochs so far, the random streams and the batches' order) and the id of its
MLflow run; <key> hashes what the run trains (resolved params, data, code, run name). A rerun
with the same key continues that MLflow run from that epoch and ends with the numbers an
uninterrupted run gives. An flock (the kernel drops it when its process dies) keeps two live
processes off one folder; the folder is removed once the run has finished."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from ablab.files import write_atomic
from ablab.imports import code_hash

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
PRIVATE = ".private-"  # a folder beside a live process's: never resumed, swept when its pid is gone


def run_key(identity: dict) -> str:
    """The checkpoint folder's name for a run: a hash of what it trains and how it is named."""
    # the training code too: a run killed under other code starts again
    code = code_hash("ablab.train")
    text = json.dumps({**identity, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class ResumePoint:
    """A run's checkpoint folder, locked by this process: the MLflow run to continue and its
    last checkpoint, where a killed process left them."""

    folder: Path
    run_id: str | None
    lock: int

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def best_dir(self) -> Path:
        """Where Lightning's ModelCheckpoint keeps the best epoch's weights."""
        return self.folder / "best"

    @property
    def resumable(self) -> bool:
        return self.run_id is not None and self.last.exists()

    def start_over(self) -> None:
        """Forget what is here (no MLflow run to continue): the run starts from epoch 0."""
        self.run_id = None
        for entry in self.folder.iterdir():
            if entry.name == "lock":
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def child(self, name: str) -> ResumePoint:
        """A sub-run's folder (a k-fold run's fold), under this one's lock."""
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        return ResumePoint(folder, _saved_run(folder), lock=-1)

    def remember(self, run_id: str) -> None:
        self.run_id = run_id
        write_atomic(self.folder / "run.json", json.dumps({"run_id": run_id}) + "\n")

    def finish(self) -> None:
        """The run has finished (or failed for good): nothing is left behind."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Keep the folder for a later resume (interrupted), unlock it."""
        if self.lock >= 0:
            with contextlib.suppress(OSError):
                os.close(self.lock)


def open_point(root: Path, key: str) -> ResumePoint:
    """<root>/checkpoints/<key>, locked by this process. Where another live process holds it
    (the same run started twice), a private folder beside it: this run starts from scratch."""
    base = Path(root) / CHECKPOINTS
    base.mkdir(parents=True, exist_ok=True)
    _sweep(base)
    folder = base / key
    folder.mkdir(exist_ok=True)
    lock = _lock(folder)
    if lock is None:
        folder = base / f"{PRIVATE}{os.getpid()}-{key}"
        folder.mkdir(exist_ok=True)
        lock = _lock(folder)
        assert lock is not None  # named after this process: no other holds it
        return ResumePoint(folder, None, lock)
    return ResumePoint(folder, _saved_run(folder), lock)


def _saved_run(folder: Path) -> str | None:
    """The MLflow run id `remember` wrote into `folder`, if any."""
    saved = folder / "run.json"
    return json.loads(saved.read_text())["run_id"] if saved.exists() else None


def discard(root: Path, run_ids: set[str]) -> None:
    """The checkpoints of runs that will not be resumed (a dead worker's tune trial, retried
    as a new trial and run): removed, unless a live process holds them."""
    for folder in (Path(root) / CHECKPOINTS).glob("*/"):
        if _saved_run(folder) not in run_ids:
            continue
        lock = _lock(folder)
        if lock is not None:
            ResumePoint(folder, None, lock).finish()


def _lock(folder: Path) -> int | None:
    fd = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _sweep(base: Path) -> None:
    """Private folders whose process is gone (killed): removed."""
    for folder in base.glob(f"{PRIVATE}*"):
        pid = int(folder.name.removeprefix(PRIVATE).split("-", 1)[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


class LastEpoch(pl.Callback):
    """Writes the trainer's state at the start of every epoch after the first (last.ckpt,
    replaced atomically), so a kill loses at most the epoch in flight. Lightning saves no
    random streams: this callback carries them (torch, CUDA's, numpy, random) and sets them
    back at the start of the first epoch a restored trainer runs. At an epoch's start the
    previous epoch is wholly done (its schedulers stepped, early stopping decided) and nothing
    of the new one is drawn: Lightning restarts a checkpoint taken there at that epoch's first
    batch. Put it last among the callbacks: the others' epoch-start hooks have run when it
    saves."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._restored: dict | None = None
        self._saving = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:  # the epoch the killed process was in: run it again
            _set_streams(self._restored)
            self._restored = None
            return
        if trainer.current_epoch == 0 or trainer.fast_dev_run:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._saving = True
        try:
            trainer.save_checkpoint(tmp)
        finally:
            self._saving = False
        tmp.replace(self.path)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:  # fmt: skip
        """Lightning has counted the new epoch as ready: uncount it, so the checkpoint reads as
        taken between two epochs and a restored trainer starts this epoch afresh (its batches,
        its validation) rather than take it for one that ran to its end."""
        if not self._saving:
            return
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
        for counts in (progress["total"], progress["current"]):
            counts["ready"] = counts["started"]

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_initialized():  # every GPU's stream: dropout and noise draw there
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict


def _set_streams(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
