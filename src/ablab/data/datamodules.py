"""Lightning data modules over in-memory tensors, batched by indexing whole tensors."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from ablab.data.preprocess import load_processed

EVAL_BATCH_SIZE = 1024  # no gradients: larger batches are cheaper per image


def _loader(dataset: TensorDataset, batch_size: int, generator: torch.Generator | None):
    # A batch sampler hands TensorDataset a list of indices, so one batch is one tensor index,
    # not batch_size __getitem__ calls and a collate.
    base = RandomSampler(dataset, generator=generator) if generator else SequentialSampler(dataset)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


class ImageDataModule(pl.LightningDataModule):
    """Images of one processed dataset, normalised with the training split's mean and std."""

    def __init__(self, folder: Path, batch_size: int, seed: int, subset: int | None = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.batch_size = batch_size
        self.seed = seed
        self.subset = subset
        self.meta: dict = {}
        self.tensors: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        images, labels, splits, meta = load_processed(self.folder)
        train_idx = splits["train"]
        if self.subset is not None and self.subset < len(train_idx):
            train_idx, _ = train_test_split(
                train_idx,
                train_size=self.subset,
                stratify=labels[train_idx],
                random_state=self.seed,
            )
            train_idx = np.sort(train_idx)
        train = torch.from_numpy(images[train_idx]).float().div_(255.0)
        mean, std = train.mean().item(), train.std().item()
        self.meta = {**meta, "train_size": int(len(train_idx)), "mean": mean, "std": std}
        for split, idx in (("train", train_idx), ("val", splits["val"]), ("test", splits["test"])):
            x = train if split == "train" else torch.from_numpy(images[idx]).float().div_(255.0)
            x = x.sub_(mean).div_(std)
            self.tensors[split] = TensorDataset(x, torch.from_numpy(labels[idx]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["image_shape"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return _loader(self.tensors["train"], self.batch_size, generator)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.tensors["val"], max(self.batch_size, EVAL_BATCH_SIZE), None)

    def test_dataloader(self) -> DataLoader:
        return _loader(self.tensors["test"], max(self.batch_size, EVAL_BATCH_SIZE), None)
