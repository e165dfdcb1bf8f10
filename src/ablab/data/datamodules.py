"""Lightning data modules over in-memory tensors, batched by indexing whole tensors."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    Sampler,
    SequentialSampler,
    TensorDataset,
)

from ablab.config import Augment, Experiment, Skew
from ablab.data import samplers
from ablab.data.augment import augment
from ablab.data.preprocess import load_processed

# no gradients, so larger than training batches; past 512 the CNN's activations fall out of
# cache and a batch of 1024 took 1.3x as long per image here
EVAL_BATCH_SIZE = 512


def _loader(dataset: TensorDataset, batch_size: int, base: Sampler | None = None):
    # A batch sampler hands TensorDataset a list of indices, so one batch is one tensor index,
    # not batch_size __getitem__ calls and a collate.
    sampler = BatchSampler(base or SequentialSampler(dataset), batch_size, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


class ImageDataModule(pl.LightningDataModule):
    """Images of one processed dataset, normalised with the training split's mean and std.

    The training set is the train split, then (in this order) a stratified `subset`, a k-fold
    split of it together with the validation split (`fold` = (k, i)), a `skew`, and
    `imbalance` resampling; `val_subset` thins the validation split (stratified).
    Augmentation and input noise act on training batches only."""

    def __init__(
        self, folder: Path, batch_size: int, seed: int, subset: int | None = None,
        val_subset: int | None = None, skew: Skew | None = None, imbalance: str = "none",
        fold: tuple[int, int] | None = None, augment: Augment | None = None,
        input_noise: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.folder = Path(folder)
        self.batch_size = batch_size
        self.seed = seed
        self.subset = subset
        self.val_subset = val_subset
        self.skew = skew
        self.imbalance = imbalance
        self.fold = fold
        self.augment = augment if augment is not None and augment.enabled else None
        self.input_noise = input_noise
        self.meta: dict = {}
        self.tensors: dict[str, TensorDataset] = {}

    @classmethod
    def for_experiment(
        cls, exp: Experiment, processed_dir: Path, fold: tuple[int, int] | None = None
    ) -> ImageDataModule:
        hp = exp.train
        return cls(
            Path(processed_dir) / exp.dataset, hp.batch_size, exp.seed, exp.subset,
            exp.val_subset, exp.skew,
            hp.imbalance, fold, hp.augment, hp.regularize.input_noise,
        )  # fmt: skip

    def _indices(self, labels: np.ndarray, splits: dict) -> dict[str, np.ndarray]:
        train, val = splits["train"], splits["val"]
        if self.subset is not None:
            train = samplers.stratified_subset(train, labels, self.subset, self.seed)
        if self.fold is not None:
            pool = np.sort(np.concatenate([train, val]))
            train, val = samplers.fold(pool, labels, *self.fold, self.seed)
        if self.val_subset is not None:
            val = samplers.stratified_subset(val, labels, self.val_subset, self.seed)
        if self.skew is not None:
            train = samplers.skew(train, labels, self.skew.classes, self.skew.keep, self.seed)
        if self.imbalance in ("oversample", "undersample"):
            train = samplers.resample(train, labels, self.imbalance, self.seed)
        return {"train": train, "val": val, "test": splits["test"]}

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        images, labels, splits, meta = load_processed(self.folder)
        indices = self._indices(labels, splits)
        train = torch.from_numpy(images[indices["train"]]).float().div_(255.0)
        mean, std = train.mean().item(), train.std().item()
        self.meta = {
            **meta,
            "train_size": int(len(indices["train"])),
            "val_size": int(len(indices["val"])),
            "mean": mean,
            "std": std,
            "train_class_counts": np.bincount(
                labels[indices["train"]], minlength=len(meta["classes"])
            ).tolist(),
        }
        for split, idx in indices.items():
            x = train if split == "train" else torch.from_numpy(images[idx]).float().div_(255.0)
            x = x.sub_(mean).div_(std)
            self.tensors[split] = TensorDataset(x, torch.from_numpy(labels[idx]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["image_shape"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def train_labels(self) -> torch.Tensor:
        return self.tensors["train"].tensors[1]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        dataset = self.tensors["train"]
        if self.imbalance == "weighted_sampling":
            base = samplers.balanced_sampler(self.train_labels, generator)
        else:
            base = RandomSampler(dataset, generator=generator)
        return _loader(dataset, self.batch_size, base)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.tensors["val"], max(self.batch_size, EVAL_BATCH_SIZE))

    def test_dataloader(self) -> DataLoader:
        return _loader(self.tensors["test"], max(self.batch_size, EVAL_BATCH_SIZE))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        if self.augment is not None:
            background = -self.meta["mean"] / self.meta["std"]  # a 0 pixel, normalised
            a = self.augment
            x = augment(x, a.shift, a.hflip, a.rotation, a.erasing, fill=background)
        if self.input_noise:
            x = x + torch.randn_like(x) * self.input_noise
        return x, y
