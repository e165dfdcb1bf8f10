import numpy as np
import torch

from ablab.config import Augment, Skew
from ablab.data import samplers
from ablab.data.datamodules import ImageDataModule

LABELS = np.repeat(np.arange(4), 100)
IDX = np.arange(400)


def counts(idx):
    return np.bincount(LABELS[idx], minlength=4)


def test_skew_keeps_the_fraction_of_listed_classes():
    kept = samplers.skew(IDX, LABELS, [1, 3], 0.1, seed=0)
    assert counts(kept).tolist() == [100, 10, 100, 10]
    assert len(set(kept)) == len(kept)


def test_resampling_equalises_class_counts():
    skewed = samplers.skew(IDX, LABELS, [1], 0.2, seed=0)
    over = samplers.resample(skewed, LABELS, "oversample", seed=0)
    assert counts(over).tolist() == [100, 100, 100, 100]
    assert set(over) == set(skewed)  # duplicates of what was there, nothing new
    under = samplers.resample(skewed, LABELS, "undersample", seed=0)
    assert counts(under).tolist() == [20, 20, 20, 20]
    assert len(set(under)) == len(under)


def test_folds_partition_the_pool_stratified():
    vals = [samplers.fold(IDX, LABELS, 5, i, seed=3)[1] for i in range(5)]
    assert sorted(np.concatenate(vals).tolist()) == IDX.tolist()
    for i in range(5):
        train, val = samplers.fold(IDX, LABELS, 5, i, seed=3)
        assert not set(train) & set(val)
        assert counts(val).tolist() == [20, 20, 20, 20]


def test_weighted_sampler_draws_classes_about_evenly(digits_root):
    skew = Skew(classes=[0, 1, 2], keep=0.1)
    folder = digits_root / "data" / "processed" / "digits"
    plain = ImageDataModule(folder, 64, seed=1, skew=skew)
    plain.setup()
    train_counts = torch.bincount(plain.train_labels, minlength=10)
    assert train_counts[:3].max() * 5 < train_counts[3:].min()  # really imbalanced
    data = ImageDataModule(folder, 64, seed=1, skew=skew, imbalance="weighted_sampling")
    data.setup()
    drawn = torch.cat([y for _ in range(5) for _, y in data.train_dataloader()])
    share = torch.bincount(drawn, minlength=10).float() / len(drawn)
    assert share.sub(0.1).abs().max().item() < 0.025


def test_val_subset_and_augment_only_touch_training_batches(digits_root):
    folder = digits_root / "data" / "processed" / "digits"
    data = ImageDataModule(folder, 32, seed=1, val_subset=50, augment=Augment(hflip=True),
                           input_noise=0.5)  # fmt: skip
    data.setup()
    assert len(data.tensors["val"]) == 50
    batch = data.tensors["val"].tensors[0][:4], data.tensors["val"].tensors[1][:4]
    out = data.on_after_batch_transfer(batch, 0)  # no trainer, or not training: untouched
    assert out[0] is batch[0]


def test_label_noise_flips_the_fraction_to_other_classes_in_training_only(digits_root):
    labels = np.repeat(np.arange(10), 100)
    noisy = samplers.noisy_labels(labels, 0.4, 10, seed=3)
    assert (noisy != labels).sum() == 400  # exactly the fraction, never the same class
    assert np.array_equal(noisy, samplers.noisy_labels(labels, 0.4, 10, seed=3))
    assert np.bincount(noisy, minlength=10).min() > 50  # spread over the other classes
    folder = digits_root / "data" / "processed" / "digits"
    clean = ImageDataModule(folder, 32, seed=1)
    dirty = ImageDataModule(folder, 32, seed=1, label_noise=0.3)
    clean.setup()
    dirty.setup()
    for split in ("val", "test"):
        assert torch.equal(clean.tensors[split].tensors[1], dirty.tensors[split].tensors[1])
    changed = (clean.train_labels != dirty.train_labels).float().mean().item()
    assert abs(changed - 0.3) < 0.01
