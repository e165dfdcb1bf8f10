"""Generated tasks with one right answer on dates written many ways, as character sequences:
translation to ISO 8601 (`'tue 3 march 1998'` -> `'1998-03-03'`), and tagging each character
with its field (day, month, year, weekday, separator)."""

from __future__ import annotations

import datetime as dt

import numpy as np

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]  # fmt: skip
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]


# each character's field, for the tagging task (date_tagging); padding is IGNORE
FIELDS = ["separator", "day", "month", "year", "weekday"]
IGNORE = -100  # cross_entropy's ignore_index


def _fielded(d: dt.date) -> list[list[tuple[str, str]]]:
    """The date in each written form, as (text, field) pieces."""
    month, day = MONTHS[d.month - 1], DAYS[d.weekday()]
    sep = "separator"
    return [
        [(str(d.day), "day"), (" ", sep), (month, "month"), (" ", sep), (str(d.year), "year")],
        [(month, "month"), (" ", sep), (str(d.day), "day"), (", ", sep), (str(d.year), "year")],
        [(day[:3], "weekday"), (" ", sep), (str(d.day), "day"), (" ", sep),
         (month[:3], "month"), (" ", sep), (str(d.year), "year")],
        [(f"{d.day:02d}", "day"), ("/", sep), (f"{d.month:02d}", "month"), ("/", sep),
         (str(d.year), "year")],
        [(str(d.day), "day"), (".", sep), (str(d.month), "month"), (".", sep),
         (str(d.year)[2:], "year")],
        [(day, "weekday"), (", ", sep), (month, "month"), (" ", sep), (str(d.day), "day"),
         (", ", sep), (str(d.year), "year")],
        [(str(d.year), "year"), (" ", sep), (month[:3], "month"), (" ", sep),
         (f"{d.day:02d}", "day")],
    ]  # fmt: skip


def _formats(d: dt.date) -> list[str]:
    """The date in each written form."""
    return ["".join(piece for piece, _ in pieces) for pieces in _fielded(d)]


def _draw(count: int, seed: int):
    """`count` (date, written form as pieces, form index) draws, 1950-2049, distinct written
    forms."""
    rng = np.random.default_rng(seed)
    start = dt.date(1950, 1, 1).toordinal()
    span = dt.date(2049, 12, 31).toordinal() - start
    seen: set[str] = set()
    while len(seen) < count:
        d = dt.date.fromordinal(start + int(rng.integers(0, span + 1)))
        options = _fielded(d)
        form = int(rng.integers(0, len(options)))
        text = "".join(piece for piece, _ in options[form])
        if text not in seen:
            seen.add(text)
            yield d, options[form], form


def generate(count: int, seed: int) -> tuple[list[str], list[str]]:
    """`count` (written date, ISO date) pairs, 1950-2049, distinct written forms."""
    sources, targets = [], []
    for d, pieces, _ in _draw(count, seed):
        sources.append("".join(piece for piece, _ in pieces))
        targets.append(d.isoformat())
    return sources, targets


def generate_tagged(count: int, seed: int) -> tuple[list[str], list[list[int]], list[int]]:
    """`count` written dates (drawn as `generate` draws them), each character's field (an
    index into FIELDS) and the written form's index. A character's field is often decided only
    by what follows it: the "19" of "1998 mar 03" or of "19/03/1998", the "m" of "monday" or
    "march", the "f" of "fri" or "feb"."""
    texts, tags, forms = [], [], []
    for _, pieces, form in _draw(count, seed):
        texts.append("".join(piece for piece, _ in pieces))
        tags.append([FIELDS.index(field) for piece, field in pieces for _ in piece])
        forms.append(form)
    return texts, tags, forms


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


def decode_chars(ids: list[int], vocab: list[str]) -> str:
    """Ids as text, up to the first EOS (padding dropped)."""
    out = []
    for t in ids:
        if t == EOS_ID:
            break
        if t != PAD_ID:
            out.append(vocab[t])
    return "".join(out)
