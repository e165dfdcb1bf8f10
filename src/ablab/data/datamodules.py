"""Lightning data modules over in-memory tensors, batched by indexing whole tensors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ablab.config import Augment, ConfigError, Experiment, Skew
from ablab.config.data import TargetOutliers
from ablab.data import digit_names, samplers
from ablab.data.augment import augment
from ablab.data.preprocess import load_arrays

# No gradients, so larger than training batches: the size that ran fastest per image here.
# Past 512 an MLP gains nothing and a CNN's activations fall out of cache; a channels-last
# CNN's already past 256 (~20 us an image at 256, ~65 at 512: make bench, layout.*).
EVAL_BATCH_SIZE = 512
EVAL_BATCH_SIZES = {"cnn": 256}
GPU_EVAL_BATCH_SIZE = 4096  # a GPU scores far larger no-grad batches than a CPU's cache holds


def eval_batch_size(arch: str) -> int:
    """Images per no-grad batch for a network of this arch."""
    return EVAL_BATCH_SIZES.get(arch, EVAL_BATCH_SIZE)


class Batches:
    """An epoch's batches of a TensorDataset: each tensor indexed once per batch by an index
    tensor from `order()` (None: in order, as views). Lightning iterates it as it would a
    DataLoader; a DataLoader over a BatchSampler hands the dataset a list of Python ints per
    batch (~0.05 ms a step here, make bench). Each pass draws one number from the global RNG, as
    a DataLoader's iterator does for its base seed, so training sees the random stream it saw
    with one and gives the same numbers."""

    def __init__(
        self, dataset: TensorDataset, batch_size: int,
        order: Callable[[], Sequence[torch.Tensor]] | None = None,
    ) -> None:  # fmt: skip
        self.tensors = dataset.tensors
        self.batch_size = batch_size
        self.order = order

    def __len__(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.batch_size)

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
        if self.order is None:
            for i in range(0, len(self.tensors[0]), self.batch_size):
                yield tuple(t[i : i + self.batch_size] for t in self.tensors)
            return
        for index in self.order():  # drawn on the host; the tensors may sit on a GPU
            index = index.to(self.tensors[0].device, non_blocking=True)
            yield tuple(t[index] for t in self.tensors)


def shuffled(n: int, batch_size: int, generator: torch.Generator):
    """Each epoch a permutation of range(n) cut into batches, drawn as RandomSampler draws it
    (it draws a second, unused one at the end of each pass: drawn too, so a seed gives the
    batches it gave)."""

    def order() -> Sequence[torch.Tensor]:
        permutation = torch.randperm(n, generator=generator)
        torch.randperm(n, generator=generator)
        return permutation.split(batch_size)

    return order


def bucketed(lengths: torch.Tensor, batch_size: int, pool: int, generator: torch.Generator):
    """Batches of similar length, so a packed recurrence runs fewer steps per batch: each epoch
    a permutation is cut into pools of `pool` batches, each pool sorted by length and cut into
    batches, and the batches shuffled (the tweets' LSTM: 1.6x the tokens per second)."""
    n = len(lengths)

    def order() -> Sequence[torch.Tensor]:
        permutation = torch.randperm(n, generator=generator)
        batches: list[torch.Tensor] = []
        for part in permutation.split(batch_size * pool):
            part = part[torch.argsort(lengths[part], stable=True)]
            batches += part.split(batch_size)
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    return order


def _class_counts(labels: np.ndarray, meta: dict) -> list[int]:
    return np.bincount(labels, minlength=len(meta["classes"])).tolist()


class ArrayDataModule(pl.LightningDataModule):
    """One processed dataset held in memory as tensors, batched by indexing whole tensors.

    The training set is the train split, then (in this order) a stratified `subset`, a k-fold
    split of it together with the validation split (`fold` = (k, i)), a `skew`, and
    `imbalance` resampling; `val_subset` thins the validation split (stratified).
    Subclasses load their arrays in `setup` and say their `input_shape`."""

    def __init__(
        self, folder: Path, batch_size: int, seed: int, subset: int | None = None,
        val_subset: int | None = None, skew: Skew | None = None, imbalance: str = "none",
        fold: tuple[int, int] | None = None, augment: Augment | None = None,
        input_noise: float = 0.0, label_noise: float = 0.0,
        eval_batch_size: int = EVAL_BATCH_SIZE,
    ) -> None:  # fmt: skip
        super().__init__()
        self.eval_batch_size = max(batch_size, eval_batch_size)
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
        self.label_noise = label_noise
        self.meta: dict = {}
        self.tensors: dict[str, TensorDataset] = {}
        self._order_stream: torch.Generator | None = None
        self._restored_stream: torch.Tensor | None = None
        self._placed: dict[tuple[int, str], TensorDataset] = {}

    # Experiment fields a subclass takes as keyword arguments of the same name
    EXPERIMENT_KEYS: tuple[str, ...] = ()

    # whether batches are sliced from tensors moved once to the training device (images:
    # they fit); else each batch is moved as Lightning moves it (token sequences, cut to their
    # longest on the host first)
    on_device: bool = True

    def device(self) -> torch.device:
        """The device training runs on (the trainer's), the CPU outside a trainer."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def placed(self, dataset: TensorDataset) -> TensorDataset:
        """`dataset` on the training device, moved once and kept (as it is on the CPU)."""
        device = self.device()
        if device.type == "cpu" or not self.on_device:
            return dataset
        key = (id(dataset), str(device))
        if key not in self._placed:
            self._placed[key] = TensorDataset(*(t.to(device) for t in dataset.tensors))
        return self._placed[key]

    def eval_batches(self) -> int:
        """Examples per validation or test batch, for the training device."""
        if self.device().type == "cpu":
            return self.eval_batch_size
        return max(self.eval_batch_size, GPU_EVAL_BATCH_SIZE)

    def order_stream(self) -> torch.Generator:
        """The training batches' order generator, seeded; where a checkpoint was restored
        (a resumed run), set to the state it had, so epochs go on in the order they would have."""
        generator = torch.Generator().manual_seed(self.seed)
        if self._restored_stream is not None:
            generator.set_state(self._restored_stream)
            self._restored_stream = None
        self._order_stream = generator
        return generator

    def state_dict(self) -> dict:
        """Lightning's checkpoint of this module: where the batches' order has got to."""
        if self._order_stream is None:
            return {}
        return {"order_stream": self._order_stream.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored_stream = state_dict.get("order_stream")

    @classmethod
    def from_experiment(
        cls, exp: Experiment, processed_dir: Path, fold: tuple[int, int] | None = None, **extra
    ):
        """The data module of the experiment's dataset, with its subset, skew, fold, ... and
        the experiment's fields the class names in EXPERIMENT_KEYS."""
        hp = exp.train
        extra = {**{key: getattr(exp, key) for key in cls.EXPERIMENT_KEYS}, **extra}
        return cls(
            Path(processed_dir) / exp.dataset, hp.batch_size, exp.seed, exp.subset,
            exp.val_subset, exp.skew, hp.imbalance, fold, hp.augment, hp.regularize.input_noise,
            exp.label_noise, eval_batch_size(exp.model.arch), **extra,
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
        if self.imbalance in samplers.RESAMPLING:
            train = samplers.resample(train, labels, self.imbalance, self.seed)
        return {"train": train, "val": val, "test": splits["test"]}

    def _labels(self, labels: np.ndarray, split: str, idx: np.ndarray) -> torch.Tensor:
        """A split's labels; the training split's with `label_noise` applied."""
        y = labels[idx]
        if split == "train" and self.label_noise:
            y = samplers.noisy_labels(y, self.label_noise, len(self.meta["classes"]), self.seed)
        return torch.from_numpy(y)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def train_labels(self) -> torch.Tensor:
        return self.tensors["train"].tensors[1]

    def train_dataloader(self) -> Batches:
        generator = self.order_stream()
        dataset = self.placed(self.tensors["train"])
        if self.imbalance == "weighted_sampling":
            order = samplers.balanced_order(self.train_labels, self.batch_size, generator)
        else:
            order = self._order(generator)
        return Batches(dataset, self.batch_size, order)

    def _order(self, generator: torch.Generator) -> Callable[[], Sequence[torch.Tensor]]:
        """The training batches' order unless `weighted_sampling`: uniformly shuffled."""
        return shuffled(len(self.tensors["train"]), self.batch_size, generator)

    def val_dataloader(self) -> Batches:
        return Batches(self.placed(self.tensors["val"]), self.eval_batches())

    def test_dataloader(self) -> Batches:
        return Batches(self.placed(self.tensors["test"]), self.eval_batches())


class ImageDataModule(ArrayDataModule):
    """Images as floats: normalised with the training split's mean and std, or (`normalize`
    False, for autoencoders) kept in [0, 1]. Augmentation and input noise act on training
    batches only."""

    EXPERIMENT_KEYS = ("image_size",)

    def __init__(
        self, *args, normalize: bool = True, image_size: int | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.normalize = normalize
        self.image_size = image_size

    def _pixels(self, images: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        """The images at `idx` as floats in [0, 1], resized to `image_size` where it is set."""
        x = torch.from_numpy(images[idx]).float().div_(255.0)
        if self.image_size is None or x.shape[-1] == self.image_size == x.shape[-2]:
            return x
        side = (self.image_size, self.image_size)
        mode = "area" if self.image_size < x.shape[-1] else "bilinear"
        return F.interpolate(x, size=side, mode=mode).clamp_(0.0, 1.0)

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        arrays, labels, splits, meta = load_arrays(self.folder, ("images",))
        images = arrays["images"]
        indices = self._indices(labels, splits)
        train = self._pixels(images, indices["train"])
        mean, std = (train.mean().item(), train.std().item()) if self.normalize else (0.0, 1.0)
        self.meta = {
            **meta,
            "train_size": int(len(indices["train"])),
            "val_size": int(len(indices["val"])),
            "mean": mean,
            "std": std,
            "train_class_counts": _class_counts(labels[indices["train"]], meta),
            "image_shape": list(train.shape[1:]),
        }
        for split, idx in indices.items():
            x = train if split == "train" else self._pixels(images, idx)
            if self.normalize:
                x = x.sub_(mean).div_(std)
            self.tensors[split] = TensorDataset(x, self._labels(labels, split, idx))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["image_shape"])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment is None and not self.input_noise:
            return batch
        if self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        return self._perturb(x), y

    def training_pixels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images as pixels in [0, 1] (the normalisation undone), and their labels:
        what a generative model trained on them for data augmentation reads."""
        x, y = self.tensors["train"].tensors
        return (x * self.meta["std"] + self.meta["mean"]).clamp(0, 1), y

    def add_training(self, pixels: torch.Tensor, labels: torch.Tensor, key: str) -> None:
        """Made images (pixels in [0, 1]) appended to the training set, normalised like it;
        `meta[key]` says how many."""
        x, y = self.tensors["train"].tensors
        made = (pixels - self.meta["mean"]) / self.meta["std"]
        self.tensors["train"] = TensorDataset(torch.cat([x, made]), torch.cat([y, labels]))
        self.meta[key] = len(pixels)

    def _perturb(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch's images augmented and noised, as the params say."""
        if self.augment is not None:
            mean, std = self.meta["mean"], self.meta["std"]
            a = self.augment
            x = augment(
                x, a.shift, a.hflip, a.rotation, a.erasing, fill=-mean / std,
                brightness=a.brightness, contrast=a.contrast, mean=mean, std=std,
            )  # fmt: skip
        if self.input_noise:
            x = x + torch.randn_like(x) * self.input_noise
        return x


class PairedBatches:
    """An epoch of steps for semi-supervised training, each (labelled x, y, unlabelled x, its
    hidden y): one shuffled pass over the unlabelled examples, the labelled ones reshuffled
    whenever they run out (100 labels are a few batches; the unlabelled set sets the pace)."""

    def __init__(
        self, labelled: TensorDataset, unlabelled: TensorDataset, batch_size: int,
        unlabelled_batch_size: int, generator: torch.Generator,
    ) -> None:  # fmt: skip
        self.labelled, self.unlabelled = labelled.tensors, unlabelled.tensors
        self.batch_size = batch_size
        self.unlabelled_batch_size = unlabelled_batch_size
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.unlabelled[0]) / self.unlabelled_batch_size)

    def __iter__(self):
        g = self.generator
        n_labelled = len(self.labelled[0])
        unlabelled = torch.randperm(len(self.unlabelled[0]), generator=g)
        pending: list[torch.Tensor] = []
        for u in unlabelled.split(self.unlabelled_batch_size):
            if not pending:
                pending = list(torch.randperm(n_labelled, generator=g).split(self.batch_size))
                pending.reverse()
            index = pending.pop().to(self.labelled[0].device, non_blocking=True)
            u = u.to(self.unlabelled[0].device, non_blocking=True)
            yield (*(t[index] for t in self.labelled), *(t[u] for t in self.unlabelled))


class SemiSupervisedDataModule(ImageDataModule):
    """Images of which `labels` training examples (stratified, by seed) keep their label; the
    rest of the training split is unlabelled (`self.unlabelled`, its true labels kept only to
    measure pseudo-labels). Training batches are `PairedBatches`; normalisation uses the whole
    training split, labelled or not. `where` names the labels key in errors."""

    def __init__(
        self, *args, labels: int, unlabelled_batch_size: int, where: str = "labels", **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.labels = labels
        self.unlabelled_batch_size = unlabelled_batch_size
        self.where = where

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        super().setup(stage)
        x, y = self.tensors["train"].tensors
        if self.labels >= len(y):
            raise ConfigError(
                f"{self.where}: {self.labels} labels leave no unlabelled example; the training "
                f"split has {len(y)} (data.subset: {self.subset}); use fewer labels"
            )
        picked = samplers.stratified_subset(np.arange(len(y)), y.numpy(), self.labels, self.seed)
        labelled = torch.zeros(len(y), dtype=torch.bool)
        labelled[torch.from_numpy(picked)] = True
        self.tensors["train"] = TensorDataset(x[labelled], y[labelled])
        self.unlabelled = TensorDataset(x[~labelled], y[~labelled])
        self.meta.update(
            train_size=self.labels, unlabelled_size=int((~labelled).sum()),
            train_class_counts=torch.bincount(y[labelled], minlength=len(self.classes)).tolist(),
        )  # fmt: skip

    def train_dataloader(self) -> PairedBatches:
        generator = self.order_stream()
        return PairedBatches(self.placed(self.tensors["train"]), self.placed(self.unlabelled),
                             self.batch_size, self.unlabelled_batch_size, generator)  # fmt: skip

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if len(batch) != 4:
            return super().on_after_batch_transfer(batch, dataloader_idx)
        x, y, xu, yu = batch
        x, y = super().on_after_batch_transfer((x, y), dataloader_idx)
        xu, yu = super().on_after_batch_transfer((xu, yu), dataloader_idx)
        return x, y, xu, yu


class Streams:
    """An epoch of `steps` steps, each a dict of one batch per named stream (a TensorDataset);
    each stream is reshuffled whenever it runs out, so streams of any size train together."""

    def __init__(self, streams: dict[str, TensorDataset], batch_size: int, steps: int,
                 generator: torch.Generator) -> None:  # fmt: skip
        self.streams = {name: d.tensors for name, d in streams.items()}
        self.batch_size = batch_size
        self.steps = steps
        self.generator = generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        pending: dict[str, list[torch.Tensor]] = {name: [] for name in self.streams}
        for _ in range(self.steps):
            batch = {}
            for name, tensors in self.streams.items():
                if not pending[name]:
                    order = torch.randperm(len(tensors[0]), generator=self.generator)
                    pending[name] = list(order.split(self.batch_size))[::-1]
                index = pending[name].pop().to(tensors[0].device, non_blocking=True)
                batch[name] = tuple(t[index] for t in tensors)
            yield batch


def common_shape(source: Sequence[int], target: Sequence[int], where: str) -> tuple[int, ...]:
    """The (channels, height, width) both domains are brought to: grey repeated to colour,
    the smaller image resized up; ConfigError (naming `where`) when that cannot be done."""
    (cs, hs, ws), (ct, ht, wt) = source, target
    if cs != ct and 1 not in (cs, ct):
        raise ConfigError(f"{where}: {cs}-channel source and {ct}-channel target images: "
                          "only grey images can be repeated to the other's channels")  # fmt: skip
    if hs * wt != ht * ws:
        raise ConfigError(
            f"{where}: source images are {hs}x{ws}, target images {ht}x{wt}: resizing would "
            "distort one of them (the aspect ratios differ)"
        )
    return (max(cs, ct), max(hs, ht), max(ws, wt))


def as_shape(images: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """uint8 images (N, C, H, W) as floats in [0, 1] of `shape` (bilinear resize, grey repeated)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if tuple(x.shape[2:]) != tuple(shape[1:]):
        x = torch.nn.functional.interpolate(x, size=tuple(shape[1:]), mode="bilinear",
                                            align_corners=False)  # fmt: skip
    if x.shape[1] != shape[0]:
        x = x.expand(-1, shape[0], -1, -1).contiguous()
    return x


class DomainDataModule(ImageDataModule):
    """A source and a target image dataset in one shape (`common_shape`), each normalised with
    its own training images' mean and std (the target's unlabelled pool: every method may see
    the target's images, only `target_labels` of their labels). The target (the experiment's
    dataset) gives the validation and test splits and its training split (`subset`: its size)
    is the pool:
    `target_labels` of it keep their label (all for `oracle`) and all of it is the unlabelled
    target. `source` holds the source's train (`source_subset`) and every
    `SOURCE_TEST_STRIDE`-th test image (what forgetting the source costs, at a fifth of the
    evaluation time).
    Training batches are `Streams` of the method's streams (source, target, unlabelled), as
    many steps as one pass over the source (over the pool for `oracle`). `source_weights`
    (set before fitting, for `instance`) weight the source examples."""

    SOURCE_TEST_STRIDE = 5
    STREAMS = {
        "target_only": ("target",), "oracle": ("target",), "freeze": ("target",),
        "finetune": ("target",), "finetune_discriminative": ("target",),
        "source_only": ("source",), "instance": ("source", "target"),
        "dann": ("source", "unlabelled"),
    }  # fmt: skip

    def __init__(self, *args, source_folder: Path, method: str, target_labels: int,
                 source_subset: int | None, where: str, **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.source_folder = Path(source_folder)
        self.method = method
        self.target_labels = target_labels
        self.source_subset = source_subset
        self.where = where  # e.g. "params.yaml: experiments.transfer.adapt"
        self.source: dict[str, TensorDataset] = {}
        self.unlabelled: TensorDataset | None = None
        self.source_weights: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        source = load_arrays(self.source_folder, ("images",), mmap=True)
        src_arrays, src_labels, src_splits, src_meta = source
        arrays, labels, splits, meta = load_arrays(self.folder, ("images",), mmap=True)
        shape = common_shape(src_meta["image_shape"], meta["image_shape"], self.where)
        indices = self._indices(labels, splits)
        pool = indices["train"]
        if self.target_labels > len(pool):
            raise ConfigError(
                f"{self.where}.target_labels: {self.target_labels} is more than the "
                f"{len(pool)} target training examples (data.subset: {self.subset})"
            )
        labelled = pool if self.method == "oracle" else samplers.stratified_subset(
            pool, labels, self.target_labels, self.seed)  # fmt: skip
        src_train = src_splits["train"]
        if self.source_subset is not None:
            src_train = samplers.stratified_subset(src_train, src_labels, self.source_subset,
                                                   self.seed)  # fmt: skip
        x_src = as_shape(src_arrays["images"][src_train], shape)
        x_pool = as_shape(arrays["images"][pool], shape)
        src_stats = (x_src.mean().item(), x_src.std().item())
        mean, std = x_pool.mean().item(), x_pool.std().item()

        def images(array, idx, stats=(mean, std)):
            return as_shape(array[idx], shape).sub_(stats[0]).div_(stats[1])

        x_src.sub_(src_stats[0]).div_(src_stats[1])
        x_pool.sub_(mean).div_(std)
        src_test = src_splits["test"][:: self.SOURCE_TEST_STRIDE]
        self.source = {
            "train": TensorDataset(x_src, torch.from_numpy(src_labels[src_train])),
            "test": TensorDataset(images(src_arrays["images"], src_test, src_stats),
                                  torch.from_numpy(src_labels[src_test])),
        }  # fmt: skip
        self.unlabelled = TensorDataset(x_pool)
        where = torch.from_numpy(np.searchsorted(pool, labelled))
        self.tensors["train"] = TensorDataset(x_pool[where], torch.from_numpy(labels[labelled]))
        for split in ("val", "test"):
            idx = indices[split]
            self.tensors[split] = TensorDataset(images(arrays["images"], idx),
                                                torch.from_numpy(labels[idx]))  # fmt: skip
        self.meta = {
            **meta, "image_shape": list(shape), "mean": mean, "std": std,
            "train_size": int(len(labelled)), "val_size": int(len(indices["val"])),
            "unlabelled_size": int(len(pool)), "source_train_size": int(len(src_train)),
            "source_classes": src_meta["classes"], "source_data_hash": src_meta["data_hash"],
            "train_class_counts": _class_counts(labels[labelled], meta),
        }  # fmt: skip

    def streams(self, method: str) -> dict[str, TensorDataset]:
        """The training streams of `method`."""
        out = {}
        for name in self.STREAMS[method]:
            if name == "source":
                x, y = self.source["train"].tensors
                w = self.source_weights
                out[name] = TensorDataset(x, y) if w is None else TensorDataset(x, y, w)
            else:
                out[name] = self.tensors["train"] if name == "target" else self.unlabelled
        return out

    def stream_batches(self, method: str) -> Streams:
        """An epoch of `method`'s training batches."""
        generator = self.order_stream()
        n = len(self.unlabelled) if method == "oracle" else len(self.source["train"])
        steps = math.ceil(n / self.batch_size)
        streams = {name: self.placed(d) for name, d in self.streams(method).items()}
        return Streams(streams, self.batch_size, steps, generator)

    def train_dataloader(self) -> Streams:
        return self.stream_batches(self.method)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not isinstance(batch, dict) or self.trainer is None or not self.trainer.training:
            return super().on_after_batch_transfer(batch, dataloader_idx)
        if self.augment is None and not self.input_noise:
            return batch
        return {name: (self._perturb(t[0]), *t[1:]) for name, t in batch.items()}


class TextDataModule(ArrayDataModule):
    """Token-id sequences with their lengths; batches are (tokens, lengths, labels), the
    tokens cut to the longest sequence in the batch; with `length_buckets` training batches
    hold sequences of similar length (`bucketed`)."""

    EXPERIMENT_KEYS = ("sequence_length",)

    def __init__(
        self, *args, length_buckets: int = 0, sequence_length: int | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.length_buckets = length_buckets
        self.sequence_length = sequence_length

    def _order(self, generator: torch.Generator) -> Callable[[], Sequence[torch.Tensor]]:
        if not self.length_buckets:
            return super()._order(generator)
        lengths = self.tensors["train"].tensors[1]
        return bucketed(lengths, self.batch_size, self.length_buckets, generator)

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        arrays, labels, splits, meta = load_arrays(self.folder, ("tokens", "lengths"))
        indices = self._indices(labels, splits)
        self.vocab = json.loads((self.folder / "vocab.json").read_text())
        self.texts_path = self.folder / "texts.json"
        self.indices = indices
        self.meta = {
            **meta,
            "train_size": int(len(indices["train"])),
            "val_size": int(len(indices["val"])),
            "train_class_counts": _class_counts(labels[indices["train"]], meta),
        }
        keep = self.sequence_length
        if keep is not None and keep < self.meta["max_len"]:
            self.meta["max_len"] = keep
        for split, idx in indices.items():
            tokens, lengths = arrays["tokens"][idx], arrays["lengths"][idx]
            if keep is not None:  # the first `keep` tokens
                tokens, lengths = tokens[:, :keep], np.minimum(lengths, keep)
            self.tensors[split] = TensorDataset(
                torch.from_numpy(np.ascontiguousarray(tokens)), torch.from_numpy(lengths),
                self._labels(labels, split, idx),
            )  # fmt: skip

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (int(self.meta["max_len"]),)

    @property
    def train_labels(self) -> torch.Tensor:
        return self.tensors["train"].tensors[2]

    def texts(self, split: str) -> list[str]:
        """The raw texts of a split, in the data module's order (for baselines and figures)."""
        texts = json.loads(self.texts_path.read_text())
        return [texts[i] for i in self.indices[split]]

    on_device = False

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Cut to the batch's longest sequence on the host, before the batch moves: the
        length needs no wait for a device."""
        tokens, lengths, y = batch
        return tokens[:, : int(lengths.max())], lengths, y


class TaggingDataModule(TextDataModule):
    """Character sequences with one tag per character (the generated date_tagging task): batches
    are (tokens, lengths, tags), tags IGNORE past each sequence's end, both cut to the batch's
    longest sequence. Subsets are stratified by written form (the dataset's labels)."""

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        arrays, labels, splits, meta = load_arrays(self.folder, ("tokens", "lengths", "tags"))
        indices = self._indices(labels, splits)
        self.vocab = json.loads((self.folder / "vocab.json").read_text())
        self.texts_path = self.folder / "texts.json"
        self.indices = indices
        self.meta = {**meta, "train_size": int(len(indices["train"])),
                     "val_size": int(len(indices["val"]))}  # fmt: skip
        for split, idx in indices.items():
            self.tensors[split] = TensorDataset(
                *(torch.from_numpy(arrays[n][idx]) for n in ("tokens", "lengths", "tags"))
            )

    @property
    def classes(self) -> list[str]:
        return list(self.meta["fields"])

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        tokens, lengths, tags = batch
        longest = int(lengths.max())
        return tokens[:, :longest], lengths, tags[:, :longest]


class SeriesDataModule(ArrayDataModule):
    """Windows of a series -> the next value, both standardised with the training windows'
    mean and std; batches are (windows N x T x 1, lengths, targets). `outliers` corrupts a
    fraction of the training targets (`samplers.outlying_targets`); windows, validation and
    test stay clean."""

    def __init__(self, *args, outliers: TargetOutliers | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.outliers = outliers

    @classmethod
    def from_experiment(cls, exp: Experiment, processed_dir: Path, fold=None, **extra):
        return super().from_experiment(exp, processed_dir, fold,
                                       outliers=exp.target_outliers, **extra)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        arrays, targets, splits, meta = load_arrays(self.folder, ("windows",))
        train = arrays["windows"][splits["train"]]
        mean, std = float(train.mean()), float(train.std())
        self.meta = {
            **meta,
            "train_size": int(len(splits["train"])),
            "val_size": int(len(splits["val"])),
            "mean": mean,
            "std": std,
        }
        for split in ("train", "val", "test"):
            idx = splits[split]
            x = torch.from_numpy((arrays["windows"][idx] - mean) / std).float().unsqueeze(-1)
            y = (targets[idx] - mean) / std
            if split == "train" and self.outliers is not None:
                o = self.outliers
                y = samplers.outlying_targets(y, o.fraction, o.size, self.seed)
            y = torch.from_numpy(y).float()
            lengths = torch.full((len(idx),), x.shape[1], dtype=torch.long)
            self.tensors[split] = TensorDataset(x, lengths, y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (int(self.meta["window"]), 1)

    @property
    def classes(self) -> list[str]:
        return []

    @property
    def train_labels(self) -> torch.Tensor:
        return self.tensors["train"].tensors[2]


class DigitNamesDataModule(ImageDataModule):
    """Digit images -> their English names as character ids (EOS-closed): the one-to-many
    task; batches are (images, name ids). Subsets and splits are by digit, as the classifier's."""

    target_vocab = digit_names.VOCAB

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        super().setup(stage)
        for split, data in self.tensors.items():
            x, y = data.tensors
            self.tensors[split] = TensorDataset(x, torch.from_numpy(digit_names.name_ids(y)))
        self.meta["target_vocab_size"] = len(self.target_vocab)

    def source_text(self, split: str, i: int) -> str:
        return f"{split} image {i}"


class TranslationDataModule(ArrayDataModule):
    """(source ids, source lengths, target ids) of a translation task (generated dates)."""

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        names = ("source", "source_lengths", "target")
        arrays, _, splits, meta = load_arrays(self.folder, names)
        self.meta = {**meta, "train_size": int(len(splits["train"])),
                     "val_size": int(len(splits["val"]))}  # fmt: skip
        self.source_vocab = json.loads((self.folder / "source_vocab.json").read_text())
        self.target_vocab = json.loads((self.folder / "target_vocab.json").read_text())
        for split in ("train", "val", "test"):
            idx = splits[split]
            self.tensors[split] = TensorDataset(*(torch.from_numpy(arrays[n][idx]) for n in names))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (int(self.tensors["train"].tensors[0].shape[1]),)

    @property
    def classes(self) -> list[str]:
        return []

    def source_text(self, split: str, i: int) -> str:
        source, lengths, _ = self.tensors[split].tensors
        return "".join(self.source_vocab[t] for t in source[i, : lengths[i]].tolist())
