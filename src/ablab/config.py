"""The params schema: `load(path, overrides)` validates params.yaml and resolves experiments."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DATASETS = ("digits", "fashion_mnist", "mnist")
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"]
Init = Literal["default", "xavier", "kaiming"]
Optimizer = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class ConfigError(ValueError):
    """A user-caused params problem; the message names the file, the key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceParams(Strict):
    base_url: str | None = None  # a mirror; None means the canonical URL


class DataParams(Strict):
    dataset: Literal["digits", "fashion_mnist", "mnist"] = "fashion_mnist"
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2  # datasets without a test set
    subset: Annotated[int, Field(ge=10)] | None = None  # training examples kept (stratified)
    sources: dict[Literal["fashion_mnist", "mnist"], SourceParams] = {}


class EarlyStopping(Strict):
    enabled: bool = True
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(ge=1)] = 3
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0


class Schedule(Strict):
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["none", "step", "exponential", "cosine", "plateau"] = "none"
    step_size: Annotated[int, Field(ge=1)] = 5  # step: epochs between decays
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # step, exponential, plateau factor
    patience: Annotated[int, Field(ge=0)] = 2  # plateau: epochs without val_loss improvement
    warmup_epochs: Annotated[int, Field(ge=0)] = 0  # linear warm-up from lr/10 before the rest

    @model_validator(mode="after")
    def _plateau_has_no_warmup(self) -> Schedule:
        if self.name == "plateau" and self.warmup_epochs:
            raise ValueError("warmup_epochs must be 0 with the plateau schedule")
        return self


class TrainParams(Strict):
    max_epochs: Annotated[int, Field(ge=1, le=1000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 128
    optimizer: Optimizer = "adam"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # for momentum, nesterov, rmsprop
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    label_smoothing: Probability = 0.0
    schedule: Schedule = Schedule()
    early_stopping: EarlyStopping = EarlyStopping()
    threads: Annotated[int, Field(ge=1, le=256)] = 2
    log_model: bool = True  # the trained model as an MLflow artifact


class MLPParams(Strict):
    arch: Literal["mlp"]
    depth: Annotated[int, Field(ge=0, le=64)] = 2
    width: Annotated[int, Field(ge=1, le=65536)] = 256
    activation: Activation = "relu"
    init: Init = "default"
    dropout: Probability = 0.0
    batch_norm: bool = False


class CNNParams(Strict):
    arch: Literal["cnn"]
    channels: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [32, 64]
    kernel_size: Annotated[int, Field(ge=1, le=15)] = 3
    stride: Annotated[int, Field(ge=1, le=4)] = 1
    padding: Literal["same", "valid"] = "same"
    pool: Literal["max", "avg", "none"] = "max"
    batch_norm: bool = False
    dropout: Probability = 0.0  # after each conv block
    head: list[Annotated[int, Field(ge=1, le=65536)]] = [128]  # hidden widths of the classifier
    head_dropout: Probability = 0.0
    activation: Activation = "relu"
    init: Init = "default"

    @model_validator(mode="after")
    def _same_needs_stride_one(self) -> CNNParams:
        if self.padding == "same" and self.stride != 1:
            raise ValueError("padding 'same' needs stride 1 (use padding 'valid' with stride > 1)")
        return self


ModelParams = Annotated[MLPParams | CNNParams, Field(discriminator="arch")]


class ExperimentData(Strict):
    dataset: Literal["digits", "fashion_mnist", "mnist"] | None = None
    subset: Annotated[int, Field(ge=10)] | None = None


class ExperimentEntry(Strict):
    """An experiment as written in params.yaml: the defaults it overrides."""

    model: ModelParams
    data: ExperimentData = ExperimentData()
    train: dict[str, Any] = {}


class Params(Strict):
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    mlflow_experiment: str = Field("ablab", min_length=1)
    experiments: dict[str, ExperimentEntry] = {}

    def experiment(self, name: str) -> Experiment:
        """The experiment `name` with every default filled in."""
        if name not in self.experiments:
            raise ConfigError(
                f"unknown experiment {name!r}; params.yaml defines: {', '.join(self.experiments)}"
            )
        entry = self.experiments[name]
        merged = _deep_merge(self.train.model_dump(), entry.train)
        train = TrainParams.model_validate(merged)
        return Experiment(
            name=name,
            seed=self.seed,
            dataset=entry.data.dataset or self.data.dataset,
            subset=entry.data.subset if entry.data.subset is not None else self.data.subset,
            model=entry.model,
            train=train,
        )

    def datasets(self) -> list[str]:
        """Every dataset some experiment uses, in a stable order."""
        used = {self.experiment(name).dataset for name in self.experiments}
        return [d for d in DATASETS if d in used]


class Experiment(Strict):
    """One fully resolved experiment: what train needs, nothing more."""

    name: str
    seed: int
    dataset: str
    subset: int | None
    model: ModelParams
    train: TrainParams


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` -> (key.path, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _describe(error: dict) -> str:
    # pydantic puts the union's tag in the path (model.cnn.dropout): users wrote model.dropout
    parts = [str(p) for p in error["loc"]]
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] == "model" and parts[i] in ("mlp", "cnn"):
            del parts[i]
    loc = ".".join(parts)
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    elif error["type"] == "literal_error":
        msg = f"got {error['input']!r}; allowed: {error['ctx']['expected']}"
    elif error["type"] == "union_tag_invalid":
        loc += f".{error['ctx']['discriminator'].strip(chr(39))}"
        msg = f"got {error['ctx']['tag']!r}; allowed: {error['ctx']['expected_tags']}"
    return f"{loc}: {msg}"


def _invalid(source: str, lines: list[str]) -> ConfigError:
    return ConfigError(f"{source}: invalid params\n  " + "\n  ".join(lines))


def validate(tree: dict, source: str = "params.yaml") -> Params:
    """Validate a params tree; every experiment is resolved so bad overrides fail here too."""
    try:
        params = Params.model_validate(tree)
    except ValidationError as exc:
        raise _invalid(source, [_describe(e) for e in exc.errors()]) from None
    for name in params.experiments:
        try:
            params.experiment(name)
        except ValidationError as exc:
            # the merged train section failed: the key lives in this experiment's overrides
            lines = [f"experiments.{name}.train.{_describe(e)}" for e in exc.errors()]
            raise _invalid(source, lines) from None
    return params


def load(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override and validate params; ConfigError names the file, key and allowed values."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(tree, key, value)
    return validate(tree, str(path))
