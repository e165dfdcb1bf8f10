"""MNIST-M as Ganin et al. (2016) built it: each MNIST digit blended into a random patch of a
colour photo, output = |patch - digit| per channel, so the digit keeps its shape while colour,
texture and contrast change. The photos are the two scikit-learn ships (china.jpg and
flower.jpg); patches are drawn by a fixed seed and the result is checked against a pinned
checksum, like any downloaded dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SEED = 20160526  # which photo and patch each digit gets: fixed, so the dataset is one dataset


def read_photo(path: Path) -> np.ndarray:
    """A JPEG as an H x W x 3 uint8 array."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def blend(digits: np.ndarray, photos: list[np.ndarray], seed: int = SEED) -> np.ndarray:
    """(N, 1, h, w) uint8 digits -> (N, 3, h, w) uint8: |random photo patch - digit|."""
    n, _, h, w = digits.shape
    rng = np.random.default_rng(seed)
    which = rng.integers(len(photos), size=n)
    out = np.empty((n, 3, h, w), dtype=np.uint8)
    for k, photo in enumerate(photos):
        picked = np.flatnonzero(which == k)
        top = rng.integers(photo.shape[0] - h + 1, size=len(picked))
        left = rng.integers(photo.shape[1] - w + 1, size=len(picked))
        rows = (top[:, None] + np.arange(h))[:, :, None]
        cols = (left[:, None] + np.arange(w))[:, None, :]
        patches = photo[rows, cols].transpose(0, 3, 1, 2).astype(np.int16)  # N, 3, h, w
        out[picked] = np.abs(patches - digits[picked].astype(np.int16)).astype(np.uint8)
    return out


def images_md5(images: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(images).tobytes()).hexdigest()
