"""Text to token ids: a word-level tokenizer, a vocabulary with PAD and OOV, padded sequences."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

PAD, OOV = "<pad>", "<oov>"
PAD_ID, OOV_ID = 0, 1
# The tokenizer as data: a logged text model carries it (ablab.serving) and applies it with `re`
# alone, so the model tokenizes raw text exactly as preprocessing did.
TOKENIZER = {
    "lowercase": True,
    "substitutions": [[r"(https?://|www\.)\S+", " <url> "], [r"@\w+", " <user> "]],
    "token": r"<url>|<user>|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]",
}
_SUBSTITUTIONS = [(re.compile(p), r) for p, r in TOKENIZER["substitutions"]]
_TOKEN = re.compile(TOKENIZER["token"])


def tokenize(text: str) -> list[str]:
    """Lowercase words; URLs -> <url>, @mentions -> <user>; punctuation marks are tokens."""
    text = text.lower()
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    return _TOKEN.findall(text)


def build_vocab(texts: Iterable[list[str]], size: int, min_freq: int) -> list[str]:
    """The `size` most frequent tokens seen at least `min_freq` times (ties: alphabetical),
    after PAD (id 0) and OOV (id 1)."""
    counts = Counter(token for tokens in texts for token in tokens)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return [PAD, OOV, *ranked[: max(size - 2, 0)]]


def encode(
    texts: list[list[str]], vocab: list[str], max_len: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(ids N x max_len padded with PAD, lengths, counts): a text longer than max_len keeps its
    first max_len tokens; an empty one becomes a single OOV, so every length is >= 1."""
    index = {token: i for i, token in enumerate(vocab)}
    ids = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    counts = {"truncated": 0, "empty": 0, "oov_tokens": 0, "tokens": 0}
    for row, tokens in enumerate(texts):
        if not tokens:
            counts["empty"] += 1
            tokens = [OOV]
        if len(tokens) > max_len:
            counts["truncated"] += 1
            tokens = tokens[:max_len]
        encoded = [index.get(t, OOV_ID) for t in tokens]
        counts["oov_tokens"] += encoded.count(OOV_ID)
        counts["tokens"] += len(encoded)
        ids[row, : len(encoded)] = encoded
        lengths[row] = len(encoded)
    return ids, lengths, counts


def decode_bytes(raw: bytes) -> tuple[str, bool]:
    """UTF-8 text, undecodable bytes replaced; True if any were."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True
