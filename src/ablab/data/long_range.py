"""A generated sequence task whose label sits at the very start (Hochreiter & Schmidhuber
1997's long-time-lag tasks in their simplest form): the first token is one of `KEYS` keys, the
class; every later token is a distractor drawn uniformly from `DISTRACTORS` others, independent
of the class. A network reading to the end must carry the first token the whole way; one that
sees only the later tokens can do no better than chance. Experiments keep the first
`data.sequence_length` tokens, so one dataset serves every distance."""

from __future__ import annotations

import numpy as np

from ablab.data.text import OOV_ID, PAD_ID

KEYS, DISTRACTORS, LENGTH, EXAMPLES = 4, 16, 200, 6000
VOCAB = ["<pad>", "<oov>", *(f"k{i}" for i in range(KEYS)), *(f"d{i}" for i in range(DISTRACTORS))]
FIRST_KEY = 2  # the id of k0: keys are 2..5, distractors 6..21
assert VOCAB.index("k0") == FIRST_KEY and PAD_ID == 0 and OOV_ID == 1


def generate(count: int, seed: int, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """`count` sequences of `length` token ids and their classes: token 0 is key `class`,
    tokens 1.. are distractors."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, KEYS, count)
    tokens = rng.integers(0, DISTRACTORS, (count, length)) + FIRST_KEY + KEYS
    tokens[:, 0] = labels + FIRST_KEY
    return tokens.astype(np.int64), labels.astype(np.int64)
