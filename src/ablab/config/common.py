"""What every part of the schema shares: the error type, strict models, value types, the
datasets and their kinds, and how a validation error becomes one line naming the key."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# name -> (kind of input, number of classes); families and techniques check what they take
DATASETS: dict[str, tuple[str, int]] = {
    "digits": ("image", 10),
    "fashion_mnist": ("image", 10),
    "mnist": ("image", 10),
    "mnist_m": ("image", 10),  # MNIST's digits blended into colour photo patches (Ganin et al.)
    "tweets": ("text", 3),
    "imdb": ("text", 2),
    "sunspots": ("series", 0),  # regression: no classes
    "dates": ("translation", 0),  # generated (written date, ISO date) pairs
    "long_range": ("text", 4),  # generated: the class is the first token, distractors follow
    "date_tagging": ("tagging", 7),  # generated: each character's field; 7 written forms
}
# which label set a dataset's classes are: transfer that reads source labels as target labels
# needs the same one
LABEL_SETS = {"digits": "digits", "mnist": "digits", "mnist_m": "digits",
              "fashion_mnist": "clothes", "tweets": "sentiment", "imdb": "sentiment"}  # fmt: skip
# datasets whose training classes are equal in number (train.imbalance combined has nothing to
# even out there unless data.skew makes them unequal)
BALANCED = {"fashion_mnist", "imdb", "long_range"}
Dataset = Literal[
    "digits",
    "fashion_mnist",
    "mnist",
    "mnist_m",
    "tweets",
    "imdb",
    "sunspots",
    "dates",
    "long_range",
    "date_tagging",
]
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "identity"]
Init = Literal["default", "xavier", "kaiming"]
# every linear and conv weight multiplied by this after `init` (0.1: a start too small, 10: too
# large; biases untouched)
InitScale = Annotated[float, Field(gt=0.0, le=100.0)]
Optimizer = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
Widths = list[Annotated[int, Field(ge=1, le=65536)]]


class ConfigError(ValueError):
    """A user-caused params problem; the message names the file, the key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# union tags pydantic puts in an error's path; users never wrote them
_TAGS = {
    "model": {
        "mlp",
        "cnn",
        "rnn",
        "transformer",
        "tfidf",
        "seq2seq",
        "captioner",
        "autoencoder",
        "gan",
        "dcgan",
        "cyclegan",
    },
    "entry": {
        "classify",
        "regress",
        "translate",
        "tag",
        "reconstruct",
        "generate",
        "pseudo_label",
        "adapt",
        "masked_lm",
    },
}


def describe(error: dict, prefix: str = "") -> str:
    """One pydantic error as `dotted.key: what is wrong; allowed: ...`."""
    parts = [*([prefix] if prefix else []), *(str(p) for p in error["loc"])]
    for i in range(len(parts) - 1, 0, -1):
        before = parts[i - 1]
        is_entry = i >= 2 and parts[i - 2] == "experiments"  # experiments.<name>.<task tag>
        if (before == "model" and parts[i] in _TAGS["model"]) or (
            is_entry and parts[i] in _TAGS["entry"]
        ):
            del parts[i]
    if prefix and len(parts) > 1 and parts[1] in _TAGS["entry"]:  # suites: where.<task tag>
        del parts[1]
    loc = ".".join(parts)
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    elif error["type"] == "literal_error":
        msg = f"got {error['input']!r}; allowed: {error['ctx']['expected']}"
    elif error["type"] == "union_tag_invalid":
        loc += f".{error['ctx']['discriminator'].strip(chr(39))}"
        msg = f"got {error['ctx']['tag']!r}; allowed: {error['ctx']['expected_tags']}"
    elif error["type"] == "union_tag_not_found":
        key = error["ctx"]["discriminator"].strip(chr(39))
        loc += f".{key}"
        allowed = _TAGS["entry"] if key == "task" else _TAGS["model"]
        msg = "missing; allowed: " + ", ".join(repr(t) for t in sorted(allowed))
    return f"{loc}: {msg}"


def invalid(source: str, lines: list[str]) -> ConfigError:
    return ConfigError(f"{source}: invalid params\n  " + "\n  ".join(lines))
