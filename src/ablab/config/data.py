"""The data section: datasets, splits, subsets, skew, and how text, series and generated pairs
are made."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ablab.config.common import Dataset, Strict

ImageSide = Annotated[int, Field(ge=4, le=256)]
SequenceLength = Annotated[int, Field(ge=1, le=4096)]


class SourceParams(Strict):
    base_url: str | None = None  # a mirror; None means the canonical URL


class Skew(Strict):
    """Make a balanced training set imbalanced: keep only a fraction of some classes."""

    classes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    keep: Annotated[float, Field(gt=0.0, le=1.0)]  # fraction of each listed class kept


class TargetOutliers(Strict):
    """Corrupt a few training targets of a series (to study a loss's sensitivity): `fraction`
    of them, picked at random by seed, moved up or down (at random) by `size` times the
    training series' std. Validation and test targets stay clean."""

    fraction: Annotated[float, Field(gt=0.0, le=0.5)]
    size: Annotated[float, Field(gt=0.0, le=100.0)]


class TextParams(Strict):
    """How text datasets become token ids (the vocabulary comes from the training split)."""

    vocab_size: Annotated[int, Field(ge=3, le=1_000_000)] = 20000  # including PAD and OOV
    min_freq: Annotated[int, Field(ge=1)] = 2  # rarer tokens become OOV
    max_len: Annotated[int, Field(ge=1, le=4096)] = 50  # longer texts are truncated


class SeriesParams(Strict):
    """How a time series becomes (window -> next value) examples, split in time order."""

    window: Annotated[int, Field(ge=2, le=1000)] = 20  # past values the model sees


class DatesParams(Strict):
    """The generated date-format task: how many (written date, ISO date) pairs."""

    examples: Annotated[int, Field(ge=30, le=1_000_000)] = 10000


class DataParams(Strict):
    dataset: Dataset = "fashion_mnist"
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2  # datasets without a test set
    subset: Annotated[int, Field(ge=10)] | None = None  # training examples kept (stratified)
    val_subset: Annotated[int, Field(ge=10)] | None = None  # validation examples kept
    skew: Skew | None = None  # training set only; validation and test stay as published
    # this fraction of the training labels replaced by another class, drawn at random (by
    # seed); validation and test labels stay clean
    label_noise: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    target_outliers: TargetOutliers | None = None  # series: a few training targets corrupted
    # image classifiers: every split's images resized to this side (area averaging when
    # smaller); None keeps the dataset's own
    image_size: ImageSide | None = None
    # text classifiers: keep the first this many tokens of each sequence; None keeps them all
    sequence_length: SequenceLength | None = None
    text: TextParams = TextParams()
    series: SeriesParams = SeriesParams()
    dates: DatesParams = DatesParams()
    sources: dict[Literal["fashion_mnist", "mnist", "imdb"], SourceParams] = {}


class ExperimentData(Strict):
    """What one experiment changes of the data section."""

    dataset: Dataset | None = None
    subset: Annotated[int, Field(ge=10)] | None = None
    val_subset: Annotated[int, Field(ge=10)] | None = None
    skew: Skew | None = None
    label_noise: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    target_outliers: TargetOutliers | None = None
    image_size: ImageSide | None = None
    sequence_length: SequenceLength | None = None
