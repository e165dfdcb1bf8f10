"""The one-to-many task's targets: an MNIST digit's English name, character by character."""

from __future__ import annotations

import numpy as np

from ablab.data.dates import char_vocab, encode_chars

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOCAB = char_vocab(NAMES)
LENGTH = max(len(n) for n in NAMES) + 1  # the longest name and its EOS


def name_ids(labels: np.ndarray) -> np.ndarray:
    """N x LENGTH character ids of each digit's name, EOS-closed and padded."""
    table = encode_chars(NAMES, VOCAB, LENGTH, eos=True)
    return table[np.asarray(labels, dtype=np.int64)]
