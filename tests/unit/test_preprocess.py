import json

import numpy as np

from ablab.data.preprocess import load_processed, make_splits, preprocess


def test_digits_splits_are_disjoint_complete_and_stratified(digits_root):
    images, labels, splits, meta = load_processed(digits_root / "data" / "processed" / "digits")
    assert images.dtype == np.uint8 and images.shape == (1797, 1, 8, 8)
    assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
    assert images.max() == 255  # 0..16 grey levels rescaled
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(train) + len(val) + len(test) == len(labels)
    assert meta["split_sizes"] == {"train": len(train), "val": len(val), "test": len(test)}
    overall = np.bincount(labels, minlength=10) / len(labels)
    for part in (train, val, test):
        share = np.bincount(labels[part], minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.02


def test_same_seed_same_hash_other_seed_other_split(digits_root, tmp_path):
    raw = digits_root / "data" / "raw"
    a = preprocess("digits", raw, tmp_path / "a", 0.15, 0.2, 7)
    b = preprocess("digits", raw, tmp_path / "b", 0.15, 0.2, 7)
    c = preprocess("digits", raw, tmp_path / "c", 0.15, 0.2, 8)
    assert a["data_hash"] == b["data_hash"] != c["data_hash"]
    assert json.loads((tmp_path / "a" / "digits" / "meta.json").read_text()) == a
    # nothing but the finished folder is left behind
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["digits"]


def test_official_test_split_is_kept_and_val_comes_from_train():
    labels = np.tile(np.arange(10), 20)  # 200: first 150 train pool, last 50 test
    splits = make_splits(labels, 150, 0.2, 0.5, seed=0)
    assert list(splits["test"]) == list(range(150, 200))
    assert len(splits["val"]) == 30 and splits["val"].max() < 150


def test_missing_raw_files_name_the_folder_and_the_fix(tmp_path):
    import pytest

    from ablab.data.sources import DataError

    with pytest.raises(DataError, match=r"fashion_mnist: missing train-images.*dvc repro fetch"):
        preprocess("fashion_mnist", tmp_path / "raw", tmp_path / "out", 0.1, 0.2, 0)
    assert not (tmp_path / "out").exists()


def test_sunspot_windows_hold_the_past_and_the_target_is_the_next_year(tmp_path):
    """Window i is years i .. i+w-1 of the raw series, in raw units; its target is year i+w;
    the splits run in time order."""
    import pandas as pd

    from ablab.data.preprocess import load_arrays, preprocess_series
    from ablab.data.sources import SOURCES, fetch

    raw, processed, w = tmp_path / "raw", tmp_path / "processed", 20
    fetch("sunspots", raw)
    preprocess_series("sunspots", raw, processed, 0.1, 0.2, 0, w)
    table = pd.read_csv(raw / "sunspots" / SOURCES["sunspots"].files[0].name)
    values = table["SUNACTIVITY"].to_numpy(np.float32)
    arrays, targets, splits, meta = load_arrays(processed / "sunspots", ("windows",))
    windows = arrays["windows"]
    assert len(windows) == len(targets) == len(values) - w
    for i in (0, 1, 137, len(targets) - 1):
        assert np.array_equal(windows[i], values[i : i + w])
        assert targets[i] == values[i + w]
    assert splits["train"].max() < splits["val"].min() <= splits["val"].max() < splits["test"].min()
    assert meta["split_years"]["train"][0] == int(table["YEAR"].iloc[w])
