"""Suites (a baseline and variants over seeds) and the tune section (an Optuna study)."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ablab.config.common import Strict
from ablab.config.overrides import deep_merge, nest_overrides

Seeds = Annotated[list[Annotated[int, Field(ge=0, lt=2**32)]], Field(min_length=1)]


class ResultKey(Strict):
    """One number of a record's `result`: a variant's metric over the record's seeds."""

    variant: str
    metric: str
    of: Literal["mean", "error"] = "mean"  # error: 1 - the mean (an accuracy as a test error)
    paper: float | None = None  # the published figure it stands beside, same units


class RecordSpec(Strict):
    """What `ablab suite NAME --full --record` writes to reproductions/<name>.json: the result
    keys, computed from the per-seed values, and the reference they are read against."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    source: str = Field(min_length=1)  # the paper or reference implementation, one line
    goal: str = ""  # what the reproduction aims at, in words (the README's table)
    result: dict[str, ResultKey] = Field(min_length=1)


class FullRecipe(Strict):
    """The suite at full size (`ablab suite NAME --full`): its own seeds, `common` merged
    over the suite's, and variants added to the suite's (those the default run leaves out);
    `only`, where set, the variants it runs of those (the baseline among them); `record`, what
    `--record` writes of it."""

    seeds: Seeds | None = None
    common: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {}
    only: Annotated[list[str], Field(min_length=1)] | None = None
    record: RecordSpec | None = None


class Suite(Strict):
    """An ablation: one experiment, a baseline and variants (or a grid), repeated over seeds."""

    experiment: str
    seeds: Seeds = [0]
    common: dict[str, Any] = {}  # overrides every variant shares (model/data/train keys)
    variants: dict[str, dict[str, Any]] = {}  # name -> overrides, dotted keys allowed
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # dotted key -> values
    baseline: str | None = None  # the variant the others are compared with
    # the metric the report leads with and compares first; None: the family's own headline
    headline: str | None = None
    # the smallest difference in the headline worth knowing about: a variant whose every 95%
    # interval lies within it reads "no difference larger than X", otherwise "underpowered"
    smallest_effect: Annotated[float, Field(gt=0)] = 0.01
    full: FullRecipe | None = None  # the full-size recipe
    # classifier suites: each variant's seed models averaged (their saved test probabilities)
    # as one more model, against its mean member (ablab.ensembles); no retraining
    ensemble: bool = False

    @model_validator(mode="after")
    def _variants_or_grid(self) -> Suite:
        if bool(self.variants) == bool(self.grid):
            raise ValueError("give either variants or grid (exactly one)")
        if self.baseline is not None and self.baseline not in self.variant_overrides():
            names = ", ".join(self.variant_overrides())
            raise ValueError(f"baseline {self.baseline!r} is not a variant; variants: {names}")
        if self.full is not None and (self.full.variants or self.full.only) and self.grid:
            raise ValueError(
                "full.variants, full.only: a grid suite's full recipe changes seeds and common"
            )
        if self.full is not None and self.full.only is not None:
            known = {**self.variants, **self.full.variants}
            unknown = [name for name in self.full.only if name not in known]
            if unknown:
                raise ValueError(f"full.only: {', '.join(unknown)} not a variant; variants: "
                                 f"{', '.join(known)}")  # fmt: skip
            if self.baseline_name() not in self.full.only:
                raise ValueError(f"full.only: the baseline {self.baseline_name()!r} must run too")
        return self

    def full_size(self) -> Suite:
        """This suite as its full recipe says (itself if it has none)."""
        if self.full is None:
            return self
        common = deep_merge(nest_overrides(self.common), nest_overrides(self.full.common))
        variants = {**self.variants, **self.full.variants} if self.variants else {}
        if self.full.only is not None:
            variants = {name: variants[name] for name in self.full.only}
        seeds = self.full.seeds or self.seeds
        return self.model_copy(
            update={"seeds": seeds, "common": common, "variants": variants, "full": None}
        )

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
    # None: as the metric's family declares it (a direction against it is refused by name)
    direction: Literal["minimize", "maximize"] | None = None
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
