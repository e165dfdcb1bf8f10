"""A generated sequence-to-sequence task with one right answer: dates written many ways ->
ISO 8601 (`'tue 3 march 1998'` -> `'1998-03-03'`), as character sequences."""

from __future__ import annotations

import datetime as dt

import numpy as np

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]  # fmt: skip
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def _formats(d: dt.date) -> list[str]:
    month, day = MONTHS[d.month - 1], DAYS[d.weekday()]
    return [
        f"{d.day} {month} {d.year}",
        f"{month} {d.day}, {d.year}",
        f"{day[:3]} {d.day} {month[:3]} {d.year}",
        f"{d.day:02d}/{d.month:02d}/{d.year}",
        f"{d.day}.{d.month}.{str(d.year)[2:]}",
        f"{day}, {month} {d.day}, {d.year}",
        f"{d.year} {month[:3]} {d.day:02d}",
    ]


def generate(count: int, seed: int) -> tuple[list[str], list[str]]:
    """`count` (written date, ISO date) pairs, 1950-2049, distinct written forms."""
    rng = np.random.default_rng(seed)
    start = dt.date(1950, 1, 1).toordinal()
    span = dt.date(2049, 12, 31).toordinal() - start
    sources, targets, seen = [], [], set()
    while len(sources) < count:
        d = dt.date.fromordinal(start + int(rng.integers(0, span + 1)))
        options = _formats(d)
        text = options[int(rng.integers(0, len(options)))]
        if text not in seen:
            seen.add(text)
            sources.append(text)
            targets.append(d.isoformat())
    return sources, targets


def char_vocab(texts: list[str]) -> list[str]:
    return [*SPECIALS, *sorted({c for t in texts for c in t})]


def encode_chars(texts: list[str], vocab: list[str], max_len: int, eos: bool) -> np.ndarray:
    """N x max_len ids (PAD after the end); with eos, an EOS closes each sequence."""
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)
    for row, text in enumerate(texts):
        seq = [index[c] for c in text] + ([EOS_ID] if eos else [])
        ids[row, : len(seq)] = seq
    return ids
