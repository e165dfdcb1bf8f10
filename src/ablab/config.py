"""The params schema: `load(path, overrides)` validates params.yaml and resolves experiments."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# name -> (kind of input, number of classes); techniques check what they apply to against it
DATASETS: dict[str, tuple[str, int]] = {
    "digits": ("image", 10),
    "fashion_mnist": ("image", 10),
    "mnist": ("image", 10),
    "tweets": ("text", 3),
    "imdb": ("text", 2),
    "sunspots": ("series", 0),  # regression: no classes
    "dates": ("pairs", 0),  # generated sequence-to-sequence pairs
}
# which model families take which kind of input
ARCH_INPUTS = {
    "mlp": ("image",), "cnn": ("image",), "rnn": ("text", "series"), "tfidf": ("text",),
    "seq2seq": ("pairs",),
}  # fmt: skip
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"]
Init = Literal["default", "xavier", "kaiming"]
Optimizer = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
Dataset = Literal["digits", "fashion_mnist", "mnist", "tweets", "imdb", "sunspots", "dates"]


class ConfigError(ValueError):
    """A user-caused params problem; the message names the file, the key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceParams(Strict):
    base_url: str | None = None  # a mirror; None means the canonical URL


class Skew(Strict):
    """Make a balanced training set imbalanced: keep only a fraction of some classes."""

    classes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    keep: Annotated[float, Field(gt=0.0, le=1.0)]  # fraction of each listed class kept


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
    text: TextParams = TextParams()
    series: SeriesParams = SeriesParams()
    dates: DatesParams = DatesParams()
    sources: dict[Literal["fashion_mnist", "mnist", "imdb"], SourceParams] = {}


class EarlyStopping(Strict):
    enabled: bool = True
    monitor: Literal["val_loss", "val_accuracy", "val_macro_f1"] = "val_loss"
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


class Regularize(Strict):
    """Techniques that change the loss, the network or the update; all off by default."""

    l1: NonNegative = 0.0  # l1 * sum|w| added to the loss (weights of linear and conv layers)
    l2: NonNegative = 0.0  # l2 * sum w^2 added to the loss (same weights)
    label_smoothing: Probability = 0.0
    disturb_label: Probability = 0.0  # DisturbLabel's alpha: a label is redrawn with this prob
    dropconnect: Probability = 0.0  # drop probability of hidden linear layers' weights
    input_noise: NonNegative = 0.0  # std of Gaussian noise added to the (normalised) input
    hidden_noise: NonNegative = 0.0  # std of Gaussian noise added after hidden activations
    max_norm: Positive | None = None  # cap on the L2 norm of each unit's incoming weights
    grad_clip: Positive | None = None  # clip the global gradient norm to this


class Augment(Strict):
    """Random image transformations of training batches (each example its own draw)."""

    shift: Annotated[int, Field(ge=0, le=8)] = 0  # up to this many pixels in x and y
    hflip: bool = False  # mirror left-right with probability 0.5
    rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 0.0  # up to +/- this many degrees
    erasing: Probability = 0.0  # probability of blanking a random rectangle

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.hflip or self.rotation or self.erasing)


class TrainParams(Strict):
    max_epochs: Annotated[int, Field(ge=1, le=1000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 128
    optimizer: Optimizer = "adam"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # for momentum, nesterov, rmsprop
    weight_decay: NonNegative = 0.0  # in the optimizer: decoupled for adamw, coupled otherwise
    schedule: Schedule = Schedule()
    early_stopping: EarlyStopping = EarlyStopping()
    regularize: Regularize = Regularize()
    augment: Augment = Augment()
    # how training treats unequal classes: reweight the loss, the sampler, or resample the set
    imbalance: Literal[
        "none", "weighted_loss", "weighted_sampling", "oversample", "undersample"
    ] = "none"
    regression_loss: Literal["mse", "mae"] = "mse"  # series forecasting
    folds: Annotated[int, Field(ge=0, le=20)] = 0  # k >= 2: k-fold cross-validation
    # the weights tested: the best validation epoch's (checkpointing is then itself a form of
    # early stopping) or the last epoch's
    test_checkpoint: Literal["best", "last"] = "best"

    @field_validator("folds")
    @classmethod
    def _folds_are_off_or_several(cls, folds: int) -> int:
        if folds == 1:
            raise ValueError("must be 0 (a plain validation split) or at least 2")
        return folds

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


class RNNParams(Strict):
    """Embedding -> recurrent layers -> pooling over time -> dense head."""

    arch: Literal["rnn"]
    cell: Literal["rnn", "lstm", "gru"] = "lstm"  # rnn: Elman, tanh
    embedding_dim: Annotated[int, Field(ge=1, le=4096)] = 64
    hidden_size: Annotated[int, Field(ge=1, le=4096)] = 64
    layers: Annotated[int, Field(ge=1, le=8)] = 1
    bidirectional: bool = False
    dropout: Probability = 0.0  # between recurrent layers (needs layers >= 2)
    pooling: Literal["last", "mean", "max", "attention"] = "last"
    head: list[Annotated[int, Field(ge=1, le=65536)]] = []  # hidden widths after pooling
    head_dropout: Probability = 0.0
    activation: Activation = "relu"  # of the head

    @model_validator(mode="after")
    def _dropout_needs_layers(self) -> RNNParams:
        if self.dropout and self.layers < 2:
            raise ValueError("dropout acts between recurrent layers: it needs layers >= 2")
        return self


class TfidfParams(Strict):
    """The linear baseline: TF-IDF of word n-grams -> logistic regression (scikit-learn)."""

    arch: Literal["tfidf"]
    ngram_max: Annotated[int, Field(ge=1, le=3)] = 2
    min_df: Annotated[int, Field(ge=1)] = 2
    C: Annotated[float, Field(gt=0.0)] = 1.0  # inverse regularization strength


class Seq2SeqParams(Strict):
    """Encoder LSTM -> decoder LSTM, with or without additive attention."""

    arch: Literal["seq2seq"]
    embedding_dim: Annotated[int, Field(ge=1, le=4096)] = 32
    hidden_size: Annotated[int, Field(ge=1, le=4096)] = 64
    attention: bool = True


ModelParams = Annotated[
    MLPParams | CNNParams | RNNParams | TfidfParams | Seq2SeqParams, Field(discriminator="arch")
]


class ExperimentData(Strict):
    dataset: Dataset | None = None
    subset: Annotated[int, Field(ge=10)] | None = None
    val_subset: Annotated[int, Field(ge=10)] | None = None
    skew: Skew | None = None


class ExperimentEntry(Strict):
    """An experiment as written in params.yaml: the defaults it overrides."""

    model: ModelParams
    data: ExperimentData = ExperimentData()
    train: dict[str, Any] = {}


class Suite(Strict):
    """An ablation: one experiment, a baseline and variants (or a grid), repeated over seeds."""

    experiment: str
    seeds: Annotated[list[Annotated[int, Field(ge=0, lt=2**32)]], Field(min_length=1)] = [0]
    common: dict[str, Any] = {}  # overrides every variant shares (model/data/train keys)
    variants: dict[str, dict[str, Any]] = {}  # name -> overrides, dotted keys allowed
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # dotted key -> values
    baseline: str | None = None  # the variant the others are compared with
    headline: Literal["test_accuracy", "test_macro_f1", "test_minority_recall"] = "test_accuracy"

    @model_validator(mode="after")
    def _variants_or_grid(self) -> Suite:
        if bool(self.variants) == bool(self.grid):
            raise ValueError("give either variants or grid (exactly one)")
        if self.baseline is not None and self.baseline not in self.variant_overrides():
            names = ", ".join(self.variant_overrides())
            raise ValueError(f"baseline {self.baseline!r} is not a variant; variants: {names}")
        return self

    def variant_overrides(self) -> dict[str, dict[str, Any]]:
        """Variant name -> its overrides; a grid expands to every combination, in order."""
        if self.variants:
            return dict(self.variants)
        keys = list(self.grid)
        short = [k.rsplit(".", 1)[-1] for k in keys]
        labels = short if len(set(short)) == len(short) else keys
        out: dict[str, dict[str, Any]] = {}
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            name = ",".join(f"{label}={value}" for label, value in zip(labels, combo, strict=True))
            out[name] = dict(zip(keys, combo, strict=True))
        return out

    def baseline_name(self) -> str:
        names = list(self.variant_overrides())
        if self.baseline is not None:
            return self.baseline
        return "baseline" if "baseline" in names else names[0]


class SearchDimension(Strict):
    """One hyperparameter's range: float (log optional), int (log optional) or categorical."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty choices list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high")
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0; got {self.low}")
        return self

    def lowest(self) -> Any:
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else self.low


class Registry(Strict):
    name: str = Field("ablab-tuned", min_length=1)  # the registered model's name
    alias: str = Field("champion", min_length=1)


class TuneParams(Strict):
    """An Optuna study over one experiment; every trial trains through `train`."""

    experiment: str
    space: dict[str, SearchDimension] = Field(min_length=1)  # dotted key -> range
    common: dict[str, Any] = {}  # overrides every trial shares (e.g. a subset, fewer epochs)
    metric: Literal["val_loss", "val_accuracy", "val_macro_f1", "val_mae"] = "val_accuracy"
    direction: Literal["minimize", "maximize"] = "maximize"
    n_trials: Annotated[int, Field(ge=1)] | None = 20
    timeout: Annotated[float, Field(gt=0)] | None = None  # seconds, for the whole study
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    storage: str | None = None  # SQLAlchemy URL; None: sqlite in mlruns/optuna.db
    study_name: str = Field("ablab", min_length=1)
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    heartbeat_seconds: Annotated[int, Field(ge=1)] = 10  # a dead worker's trial fails after 2x
    max_retry: Annotated[int, Field(ge=0)] = 2  # re-runs of a trial whose worker died
    registry: Registry = Registry()

    @model_validator(mode="after")
    def _stops_somewhere(self) -> TuneParams:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("set n_trials or timeout (or both)")
        if self.sampler == "grid" and any(d.type != "categorical" for d in self.space.values()):
            raise ValueError("the grid sampler needs categorical dimensions only")
        return self


class Params(Strict):
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    mlflow_experiment: str = Field("ablab", min_length=1)
    experiments: dict[str, ExperimentEntry] = {}
    suites: dict[str, Suite] = {}
    tune: TuneParams | None = None

    def experiment(self, name: str) -> Experiment:
        """The experiment `name` with every default filled in."""
        if name not in self.experiments:
            raise ConfigError(
                f"unknown experiment {name!r}; params.yaml defines: {', '.join(self.experiments)}"
            )
        return _resolved(self, name, self.experiments[name], self.seed, f"experiments.{name}")

    def _resolve(self, name: str, entry: ExperimentEntry, seed: int) -> Experiment:
        merged = _deep_merge(self.train.model_dump(), entry.train)
        train = TrainParams.model_validate(merged)
        exp = Experiment(
            name=name,
            seed=seed,
            dataset=entry.data.dataset or self.data.dataset,
            subset=_first(entry.data.subset, self.data.subset),
            val_subset=_first(entry.data.val_subset, self.data.val_subset),
            skew=_first(entry.data.skew, self.data.skew),
            model=entry.model,
            train=train,
        )
        check_techniques(exp)
        return exp

    def suite_runs(self, suite_name: str) -> list[SuiteRun]:
        """Every (variant, seed) of a suite as a resolved experiment, variants in order."""
        if suite_name not in self.suites:
            raise ConfigError(
                f"unknown suite {suite_name!r}; params.yaml defines: {', '.join(self.suites)}"
            )
        suite = self.suites[suite_name]
        if suite.experiment not in self.experiments:
            raise ConfigError(
                f"suites.{suite_name}.experiment: unknown experiment {suite.experiment!r}; "
                f"params.yaml defines: {', '.join(self.experiments)}"
            )
        base = _deep_merge(
            self.experiments[suite.experiment].model_dump(exclude_unset=True),
            nest_overrides(suite.common),
        )
        runs = []
        for variant, overrides in suite.variant_overrides().items():
            where = f"suites.{suite_name}.variants.{variant}"
            changes = nest_overrides(overrides)
            tree = _deep_merge(base, changes)
            arch = changes.get("model", {}).get("arch")
            if arch is not None and arch != base["model"]["arch"]:
                tree["model"] = changes["model"]  # another family: its defaults, not the base's
            try:
                entry = ExperimentEntry.model_validate(tree)
            except ValidationError as exc:
                lines = [_describe(e, where) for e in exc.errors()]
                raise _invalid("params.yaml", lines) from None
            for seed in suite.seeds:
                exp = _resolved(self, suite.experiment, entry, seed, where)
                runs.append(SuiteRun(suite=suite_name, variant=variant, seed=seed, experiment=exp))
        return runs

    def tuned_experiment(self, values: dict[str, Any], seed: int | None = None) -> Experiment:
        """The tune section's experiment with `common` and one point of the space applied."""
        tune = self.tune
        if tune.experiment not in self.experiments:
            raise ConfigError(
                f"tune.experiment: unknown experiment {tune.experiment!r}; params.yaml "
                f"defines: {', '.join(self.experiments)}"
            )
        base = self.experiments[tune.experiment].model_dump(exclude_unset=True)
        tree = _deep_merge(_deep_merge(base, nest_overrides(tune.common)), nest_overrides(values))
        try:
            entry = ExperimentEntry.model_validate(tree)
        except ValidationError as exc:
            lines = [_describe(e, "tune") for e in exc.errors()]
            raise _invalid("params.yaml", lines) from None
        return _resolved(self, tune.experiment, entry, self.seed if seed is None else seed, "tune")

    def datasets(self) -> list[str]:
        """Every dataset some experiment or suite uses, in a stable order."""
        used = {self.experiment(name).dataset for name in self.experiments}
        for suite in self.suites:
            used |= {run.experiment.dataset for run in self.suite_runs(suite)}
        if self.tune is not None:
            used.add(self.experiment(self.tune.experiment).dataset)
        return [d for d in DATASETS if d in used]


class Experiment(Strict):
    """One fully resolved experiment: what train needs, nothing more."""

    name: str
    seed: int
    dataset: str
    subset: int | None
    val_subset: int | None = None
    skew: Skew | None = None
    model: ModelParams
    train: TrainParams


class SuiteRun(Strict):
    suite: str
    variant: str
    seed: int
    experiment: Experiment


def check_techniques(exp: Experiment) -> None:
    """Refuse a technique the experiment's model or data cannot take (ValueError says which)."""
    kind, num_classes = DATASETS[exp.dataset]
    reg, aug = exp.train.regularize, exp.train.augment
    if kind not in ARCH_INPUTS[exp.model.arch]:
        raise ValueError(
            f"model.arch: {exp.model.arch} takes {' or '.join(ARCH_INPUTS[exp.model.arch])} "
            f"data; {exp.dataset} is {kind}"
        )
    if kind != "image" and (aug.enabled or reg.input_noise):
        raise ValueError(f"train.augment and input_noise need images; {exp.dataset} is {kind}")
    if reg.dropconnect and not _hidden_linear_layers(exp.model):
        raise ValueError(
            "train.regularize.dropconnect needs a hidden linear layer; this model has none "
            "(mlp depth 0, or a cnn with an empty head)"
        )
    if kind in ("series", "pairs"):
        classy = {
            "data.skew": exp.skew is not None,
            "train.imbalance": exp.train.imbalance != "none",
            "train.regularize.label_smoothing": bool(reg.label_smoothing),
            "train.regularize.disturb_label": bool(reg.disturb_label),
            "train.folds": bool(exp.train.folds),
        }
        used = [k for k, on in classy.items() if on]
        if used:
            raise ValueError(f"{', '.join(used)}: not for {kind} data ({exp.dataset})")
    if exp.skew is not None and max(exp.skew.classes) >= num_classes:
        raise ValueError(
            f"data.skew.classes: {exp.dataset} has classes 0..{num_classes - 1}; "
            f"got {exp.skew.classes}"
        )


def _resolved(params: Params, name: str, entry: ExperimentEntry, seed: int, where: str):
    """params._resolve with its errors named by where the entry lives in params.yaml."""
    try:
        return params._resolve(name, entry, seed)
    except ValidationError as exc:
        # the merged train section failed: the key lives in this entry's train overrides
        lines = [_describe(e, f"{where}.train") for e in exc.errors()]
        raise _invalid("params.yaml", lines) from None
    except ValueError as exc:
        raise _invalid("params.yaml", [f"{where}: {exc}"]) from None


def _hidden_linear_layers(model: ModelParams) -> int:
    if model.arch == "mlp":
        return model.depth
    return len(getattr(model, "head", []))


def nest_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"model.dropout": 0.5} -> {"model": {"dropout": 0.5}}; nested keys pass through."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        branch = nest_overrides(value) if isinstance(value, dict) else value
        for part in reversed(str(key).split(".")):
            branch = {part: branch}
        tree = _deep_merge(tree, branch)
    return tree


def _first(override: Any, default: Any) -> Any:
    return override if override is not None else default


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


def _describe(error: dict, prefix: str = "") -> str:
    # pydantic puts the union's tag in the path (model.cnn.dropout): users wrote model.dropout
    parts = [*([prefix] if prefix else []), *(str(p) for p in error["loc"])]
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] == "model" and parts[i] in ARCH_INPUTS:
            del parts[i]
    loc = ".".join(parts)
    msg = error["msg"].removeprefix("Value error, ")
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
    try:
        for name in params.experiments:
            params.experiment(name)
        for name in params.suites:
            params.suite_runs(name)
        if params.tune is not None:  # an unknown hyperparameter name fails here, named
            params.tuned_experiment({k: d.lowest() for k, d in params.tune.space.items()})
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("params.yaml", source, 1)) from None
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
