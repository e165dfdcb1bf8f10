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


def test_combined_resampling_meets_at_the_mean_class_count():
    # 100, 20, 20, 20: the mean 40 (the median, 20, would be plain undersampling)
    skewed = samplers.skew(IDX, LABELS, [1, 2, 3], 0.2, seed=0)
    both = samplers.resample(skewed, LABELS, "combined", seed=0)
    assert counts(both).tolist() == [40, 40, 40, 40]
    mine = both[LABELS[both] == 0]  # the large class cut, without repeats
    assert len(set(mine)) == len(mine) == 40
    for c in (1, 2, 3):  # the small classes keep every example and draw repeats of them
        mine = both[LABELS[both] == c]
        assert set(mine) == set(skewed[LABELS[skewed] == c])


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
    import lightning.pytorch as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    data.trainer = trainer
    trainer.training = True  # a training batch: flipped and noised, labels kept
    out = data.on_after_batch_transfer(batch, 0)
    assert out[0].shape == batch[0].shape
    assert (out[0] - batch[0]).std() > 0.3
    assert torch.equal(out[1], batch[1])
    trainer.validating = True  # a validation batch inside the same fit: untouched
    assert data.on_after_batch_transfer(batch, 0)[0] is batch[0]


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


def _dataloader_batches(dataset, sampler, batch_size, epochs):
    """What ablab's batching replaced: a DataLoader over a BatchSampler (global RNG included)."""
    from torch.utils.data import BatchSampler, DataLoader

    loader = DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, False), batch_size=None)
    out = []
    for _ in range(epochs):
        out += [(*batch, torch.rand(1)) for batch in loader]  # the global stream after each
    return out


def _ablab_batches(loader, epochs):
    return [(*batch, torch.rand(1)) for _ in range(epochs) for batch in loader]


def _assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_batches_are_the_dataloaders_batches_and_leave_the_global_rng_as_it_did():
    from torch.utils.data import RandomSampler, SequentialSampler, TensorDataset

    from ablab.data.datamodules import Batches, shuffled

    dataset = TensorDataset(torch.arange(203).float().unsqueeze(1), torch.arange(203) % 4)
    torch.manual_seed(5)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(9))
    theirs = _dataloader_batches(dataset, sampler, 32, epochs=3)
    torch.manual_seed(5)
    loader = Batches(dataset, 32, shuffled(203, 32, torch.Generator().manual_seed(9)))
    assert len(loader) == 7
    _assert_same(_ablab_batches(loader, 3), theirs)
    torch.manual_seed(5)
    theirs = _dataloader_batches(dataset, SequentialSampler(dataset), 50, epochs=2)
    torch.manual_seed(5)
    _assert_same(_ablab_batches(Batches(dataset, 50), 2), theirs)


def test_balanced_order_draws_what_the_weighted_sampler_drew():
    from torch.utils.data import TensorDataset, WeightedRandomSampler

    from ablab.data.datamodules import Batches

    labels = torch.tensor([0] * 90 + [1] * 10)
    dataset = TensorDataset(torch.arange(100), labels)
    weights = 1.0 / torch.bincount(labels).double()[labels]
    sampler = WeightedRandomSampler(weights, 100, True, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    theirs = _dataloader_batches(dataset, sampler, 16, epochs=2)
    torch.manual_seed(0)
    order = samplers.balanced_order(labels, 16, torch.Generator().manual_seed(2))
    _assert_same(_ablab_batches(Batches(dataset, 16, order), 2), theirs)


def test_length_buckets_cover_every_example_once_in_batches_of_similar_length():
    from ablab.data.datamodules import bucketed

    lengths = torch.randint(1, 41, (1000,), generator=torch.Generator().manual_seed(0))
    order = bucketed(lengths, 32, 4, torch.Generator().manual_seed(1))
    first, second = order(), order()
    assert len(first) == 32  # ceil(1000 / 32): only the last pool's last batch is short
    assert sorted(torch.cat(first).tolist()) == list(range(1000))
    assert [b.tolist() for b in first] != [b.tolist() for b in second]  # reshuffled per epoch
    spread = torch.stack([lengths[b].max() - lengths[b].min() for b in first]).float().mean()
    shuffled_spread = (
        torch.stack([lengths[b].max() - lengths[b].min() for b in torch.randperm(1000).split(32)])
        .float()
        .mean()
    )
    assert spread < shuffled_spread / 3


def test_a_stratified_subset_keeps_the_class_proportions_exactly():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    idx = np.arange(1000)
    kept = samplers.stratified_subset(idx, labels, 100, seed=3)
    assert np.bincount(labels[kept]).tolist() == [60, 30, 10]
    assert len(set(kept.tolist())) == 100
    assert not np.array_equal(kept, samplers.stratified_subset(idx, labels, 100, seed=4))


def test_data_subset_is_stratified_in_the_data_module(digits_root):
    """`subset: N` keeps N training examples in the training split's class proportions."""
    folder = digits_root / "data" / "processed" / "digits"
    full = ImageDataModule(folder, 32, seed=1, normalize=False)
    full.setup()
    part = ImageDataModule(folder, 32, seed=1, subset=200, normalize=False)
    part.setup()
    counts = torch.bincount(full.train_labels, minlength=10).double()
    kept = torch.bincount(part.train_labels, minlength=10).double()
    assert int(kept.sum()) == 200
    assert torch.all((kept - 200 * counts / counts.sum()).abs() <= 1)  # each class within one
    rows = {r.numpy().tobytes() for r in full.tensors["train"].tensors[0].flatten(1)}
    assert all(r.numpy().tobytes() in rows for r in part.tensors["train"].tensors[0].flatten(1))


def test_target_outliers_move_a_fraction_of_training_targets_only(tmp_path):
    from ablab.config.data import TargetOutliers
    from ablab.data.datamodules import SeriesDataModule
    from ablab.data.preprocess import preprocess_series
    from ablab.data.sources import fetch

    fetch("sunspots", tmp_path / "raw")
    preprocess_series("sunspots", tmp_path / "raw", tmp_path / "processed", 0.1, 0.2, 0, 20)
    folder = tmp_path / "processed" / "sunspots"
    clean = SeriesDataModule(folder, 32, seed=3)
    dirty = SeriesDataModule(folder, 32, seed=3, outliers=TargetOutliers(fraction=0.1, size=5.0))
    clean.setup()
    dirty.setup()
    for split in ("val", "test"):
        for a, b in zip(clean.tensors[split].tensors, dirty.tensors[split].tensors, strict=True):
            assert torch.equal(a, b)
    windows, _, y = clean.tensors["train"].tensors
    windows2, _, y2 = dirty.tensors["train"].tensors
    assert torch.equal(windows, windows2)  # what the model reads stays clean
    moved = (y2 - y).abs()
    assert (moved > 1e-4).sum().item() == round(0.1 * len(y))
    assert torch.allclose(moved[moved > 1e-4], torch.full_like(moved[moved > 1e-4], 5.0))
    ups = ((y2 - y) > 1e-4).sum().item()
    assert 0 < ups < round(0.1 * len(y))  # up and down, at random
