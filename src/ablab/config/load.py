"""Params: the whole file validated, experiments resolved against the defaults, suites and
tune points expanded; `load(path, overrides)` is the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, PrivateAttr, TypeAdapter, ValidationError

from ablab.config.claims import Claim, ClaimId
from ablab.config.common import DATASETS, ConfigError, Strict, describe, invalid
from ablab.config.data import DataParams, Skew, TargetOutliers
from ablab.config.diagnose import DiagnoseParams
from ablab.config.evaluator import EvaluatorParams
from ablab.config.explain import ExplainParams
from ablab.config.families import (
    ENTRIES,
    AdaptParams,
    ExperimentEntry,
    MlmParams,
    PseudoLabelParams,
    check_techniques,
    direction,
    higher_is_better,
)
from ablab.config.nets import (
    AutoencoderParams,
    CaptionerParams,
    CNNParams,
    Conv1dParams,
    CycleGANParams,
    DCGANParams,
    GANParams,
    MLPParams,
    RNNParams,
    Seq2SeqParams,
    TfidfParams,
    TransformerParams,
)
from ablab.config.overrides import deep_merge, nest_overrides, parse_override, set_path
from ablab.config.search import Suite, TuneParams
from ablab.config.training import TrainParams

ModelParams = Annotated[
    MLPParams
    | CNNParams
    | RNNParams
    | Conv1dParams
    | TfidfParams
    | TransformerParams
    | Seq2SeqParams
    | CaptionerParams
    | AutoencoderParams
    | GANParams
    | DCGANParams
    | CycleGANParams,
    Field(discriminator="arch"),
]
_ENTRY = TypeAdapter(ExperimentEntry)


class Experiment(Strict):
    """One fully resolved experiment: what train needs, nothing more."""

    name: str
    task: str  # its family: classify, regress, translate, reconstruct, ...
    seed: int
    dataset: str
    subset: int | None
    val_subset: int | None = None
    skew: Skew | None = None
    label_noise: float = 0.0
    target_outliers: TargetOutliers | None = None
    image_size: int | None = None  # images resized to this side (None: as the dataset has them)
    sequence_length: int | None = None  # text: the first this many tokens (None: all)
    model: ModelParams
    train: TrainParams
    pseudo_label: PseudoLabelParams | None = None  # task pseudo_label's section
    adapt: AdaptParams | None = None  # task adapt's section
    mlm: MlmParams | None = None  # masked-token pretraining (classify) or training (masked_lm)


class SuiteRun(Strict):
    suite: str
    variant: str
    seed: int
    experiment: Experiment


class Params(Strict):
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    mlflow_experiment: str = Field("ablab", min_length=1)
    experiments: dict[str, ExperimentEntry] = {}
    suites: dict[str, Suite] = {}
    tune: TuneParams | None = None
    diagnose: DiagnoseParams = DiagnoseParams()
    evaluator: EvaluatorParams = EvaluatorParams()
    explain: ExplainParams = ExplainParams()
    claims: dict[ClaimId, Claim] = {}
    _source: str = PrivateAttr("params.yaml")  # the file the params came from, for messages

    def experiment(self, name: str) -> Experiment:
        """The experiment `name` with every default filled in."""
        if name not in self.experiments:
            defined = ", ".join(self.experiments)
            raise ConfigError(f"unknown experiment {name!r}; {self._source} defines: {defined}")
        return _resolved(self, name, self.experiments[name], self.seed, f"experiments.{name}")

    def _resolve(self, name: str, entry, seed: int) -> Experiment:
        merged = deep_merge(self.train.model_dump(), entry.train)
        train = TrainParams.model_validate(merged)
        exp = Experiment(
            name=name,
            task=entry.task,
            seed=seed,
            dataset=entry.data.dataset or self.data.dataset,
            subset=_first(entry.data.subset, self.data.subset),
            val_subset=_first(entry.data.val_subset, self.data.val_subset),
            skew=_first(entry.data.skew, self.data.skew),
            label_noise=_first(entry.data.label_noise, self.data.label_noise),
            target_outliers=_first(entry.data.target_outliers, self.data.target_outliers),
            image_size=_first(entry.data.image_size, self.data.image_size),
            sequence_length=_first(entry.data.sequence_length, self.data.sequence_length),
            model=entry.model,
            train=train,
            pseudo_label=getattr(entry, "pseudo_label", None),
            adapt=getattr(entry, "adapt", None),
            mlm=getattr(entry, "mlm", None),
        )
        check_techniques(exp)
        return exp

    def suite_runs(self, suite_name: str) -> list[SuiteRun]:
        """Every (variant, seed) of a suite as a resolved experiment, variants in order."""
        if suite_name not in self.suites:
            raise ConfigError(
                f"unknown suite {suite_name!r}; {self._source} defines: {', '.join(self.suites)}"
            )
        suite = self.suites[suite_name]
        if suite.experiment not in self.experiments:
            raise ConfigError(
                f"suites.{suite_name}.experiment: unknown experiment {suite.experiment!r}; "
                f"{self._source} defines: {', '.join(self.experiments)}"
            )
        task = self.experiments[suite.experiment].task
        compared = ENTRIES[task].compared
        if suite.headline is not None and suite.headline not in compared:
            raise invalid(self._source, [
                f"suites.{suite_name}.headline: got {suite.headline!r}; a {task} suite compares "
                + ", ".join(repr(m) for m in compared)
            ])  # fmt: skip
        if suite.ensemble and task != "classify":
            raise invalid(self._source, [
                f"suites.{suite_name}.ensemble: averages classifiers' test probabilities; "
                f"experiment {suite.experiment} is task {task} (allowed: task classify)"
            ])  # fmt: skip
        base = deep_merge(
            self.experiments[suite.experiment].model_dump(exclude_unset=True),
            nest_overrides(suite.common),
        )
        runs = []
        for variant, overrides in suite.variant_overrides().items():
            where = f"suites.{suite_name}.variants.{variant}"
            changes = nest_overrides(overrides)
            tree = deep_merge(base, changes)
            arch = changes.get("model", {}).get("arch")
            if arch is not None and arch != base["model"]["arch"]:
                tree["model"] = changes["model"]  # another network: its defaults, not the base's
            entry = _entry(tree, where, self._source)
            for seed in suite.seeds:
                exp = _resolved(self, suite.experiment, entry, seed, where)
                runs.append(SuiteRun(suite=suite_name, variant=variant, seed=seed, experiment=exp))
        return runs

    def full_size(self) -> Params:
        """These params with every suite at its full recipe's size."""
        suites = {name: suite.full_size() for name, suite in self.suites.items()}
        return self.model_copy(update={"suites": suites})

    def suite_headline(self, suite_name: str) -> str:
        """The suite's headline metric: as given, else its family's."""
        suite = self.suites[suite_name]
        return suite.headline or ENTRIES[self.experiments[suite.experiment].task].headline

    def tuned_experiment(
        self, values: dict[str, Any], seed: int | None = None, common: bool = True
    ) -> Experiment:
        """The tune section's experiment with `common` (unless False: the tuned model trains
        as the experiment itself does, on its full data) and one point of the space applied."""
        tune = self.tune
        if tune.experiment not in self.experiments:
            raise ConfigError(
                f"tune.experiment: unknown experiment {tune.experiment!r}; {self._source} "
                f"defines: {', '.join(self.experiments)}"
            )
        base = self.experiments[tune.experiment].model_dump(exclude_unset=True)
        shared = nest_overrides(tune.common) if common else {}
        tree = deep_merge(deep_merge(base, shared), nest_overrides(values))
        entry = _entry(tree, "tune", self._source)
        if tune.metric not in entry.epoch_metrics:
            raise invalid(self._source, [
                f"tune.metric: got {tune.metric!r}; a {entry.task} experiment reports "
                + ", ".join(repr(m) for m in entry.epoch_metrics) + " per epoch"
            ])  # fmt: skip
        declared = "maximize" if higher_is_better(entry.task, tune.metric) else "minimize"
        if tune.direction is not None and tune.direction != declared:
            raise invalid(self._source, [
                f"tune.direction: got {tune.direction!r}; {tune.metric} gets better "
                f"{direction(entry.task, tune.metric)}, so the search must {declared} it "
                "(leave tune.direction out: it follows the metric)"
            ])  # fmt: skip
        return _resolved(self, tune.experiment, entry, self.seed if seed is None else seed, "tune")

    def tune_direction(self) -> str:
        """ "maximize" or "minimize": the way the tune metric gets better, as its family
        declares it."""
        task = self.experiment(self.tune.experiment).task
        return "maximize" if higher_is_better(task, self.tune.metric) else "minimize"

    def preprocess_knobs(self) -> dict:
        """What preprocessing reads of the params, resolved (the `datasets` stage writes it to
        data/preprocess.json; data.preprocess.preprocess_dataset takes it)."""
        read = {"val_fraction", "test_fraction", "text", "series", "dates"}
        kinds = {name: kind for name, (kind, _) in DATASETS.items()}
        return {"seed": self.seed, "kinds": kinds, **self.data.model_dump(include=read)}

    def datasets(self) -> list[str]:
        """Every dataset some experiment, suite or evaluator uses, in a stable order."""
        used = {d for exp in self._all_experiments() for d in datasets_of(exp)}
        used |= set(self.evaluator.datasets)
        return [d for d in DATASETS if d in used]

    def _all_experiments(self) -> list[Experiment]:
        found = [self.experiment(name) for name in self.experiments]
        for suite in self.suites:
            found += [run.experiment for run in self.suite_runs(suite)]
        if self.tune is not None:
            found.append(self.experiment(self.tune.experiment))
        return found

    def check_evaluators(self) -> None:
        """Every generating experiment's dataset has an evaluator (ConfigError names it)."""
        missing = sorted({exp.dataset for exp in self._all_experiments()
                          if exp.task == "generate"} - set(self.evaluator.datasets))  # fmt: skip
        if missing:
            raise ConfigError(
                f"{self._source}: evaluator.datasets: task generate is scored by each dataset's "
                f"evaluator; add {', '.join(missing)} (now {self.evaluator.datasets})"
            )

    def check_explained(self) -> None:
        """explain.experiments name classifiers of this file (ConfigError names one)."""
        for name in self.explain.experiments:
            if name not in self.experiments:
                raise ConfigError(
                    f"{self._source}: explain.experiments: unknown experiment {name!r}; "
                    f"{self._source} defines: {', '.join(self.experiments)}"
                )
            exp = self.experiment(name)
            if exp.task != "classify" or DATASETS[exp.dataset][0] not in ("image", "text"):
                raise ConfigError(
                    f"{self._source}: explain.experiments: {name!r} is a {exp.task} experiment "
                    f"on {exp.dataset}; explain takes classifiers of images or text (task "
                    "classify)"
                )


def _entry(tree: dict, where: str, source: str):
    try:
        return _ENTRY.validate_python(tree)
    except ValidationError as exc:
        raise invalid(source, [describe(e, where) for e in exc.errors()]) from None


def _resolved(params: Params, name: str, entry, seed: int, where: str) -> Experiment:
    """params._resolve with its errors named by where the entry lives in params.yaml."""
    try:
        return params._resolve(name, entry, seed)
    except ValidationError as exc:
        # the merged train section failed: the key lives in this entry's train overrides
        lines = [describe(e, f"{where}.train") for e in exc.errors()]
        raise invalid(params._source, lines) from None
    except ValueError as exc:
        raise invalid(params._source, [f"{where}: {exc}"]) from None


def trained_tree(exp: Experiment) -> dict:
    """The experiment as JSON, as far as it decides what is trained, for the hashes that name
    units and pretrained networks: torch's thread count is left out (workers share the cores
    among themselves, the `pretrain` stage runs alone), and so are the schedule's knobs that
    leave training as it was before they existed (inverse_power's rate and power under
    another schedule, the momentum ramp's start when it is off), so that units and records
    from before them keep their ids."""
    tree = exp.model_dump(mode="json")
    tree["train"].pop("threads")
    schedule = tree["train"]["schedule"]
    if schedule["name"] != "inverse_power":
        del schedule["rate"], schedule["power"]
    if not schedule["momentum_epochs"]:
        del schedule["momentum_start"], schedule["momentum_epochs"]
    return tree


def datasets_of(exp: Experiment) -> list[str]:
    """The experiment's dataset, and a mapping's or a transfer's source domain (MNIST-M is
    made from MNIST)."""
    source = getattr(exp.model, "source", None) or (exp.adapt.source if exp.adapt else None)
    used = [exp.dataset, *([source] if source else [])]
    return used + (["mnist"] if "mnist_m" in used else [])


def _first(override: Any, default: Any) -> Any:
    return override if override is not None else default


def validate(tree: dict, source: str = "params.yaml") -> Params:
    """Validate a params tree; every experiment is resolved so bad overrides fail here too."""
    try:
        params = Params.model_validate(tree)
    except ValidationError as exc:
        raise invalid(source, [describe(e) for e in exc.errors()]) from None
    params._source = source
    for name in params.experiments:
        params.experiment(name)
    full = params.full_size()
    for name, suite in params.suites.items():
        params.suite_runs(name)
        runs = full.suite_runs(name)  # the full recipe's variants are checked too
        if suite.full is not None and suite.full.record is not None:
            _check_record(params, name, suite.full.record, {r.variant for r in runs}, source)
    if params.tune is not None:  # an unknown hyperparameter name fails here, named
        params.tuned_experiment({k: d.lowest() for k, d in params.tune.space.items()})
    params.check_evaluators()
    params.check_explained()
    _check_claims(params, full, source)
    return params


def _check_claims(params: Params, full: Params, source: str) -> None:
    """Every comparison names a suite, variants of the recipe it reads, a metric its family
    declares and, at full scale, the record that suite's full recipe writes."""
    for cid, claim in params.claims.items():
        for i, comp in enumerate(claim.comparisons):
            where = f"claims.{cid}.comparisons[{i}]"
            if comp.suite not in params.suites:
                raise invalid(source, [f"{where}.suite: unknown suite {comp.suite!r}; "
                                       f"suites: {', '.join(params.suites)}"])  # fmt: skip
            recipe = full if comp.scale == "full" else params
            variants = recipe.suites[comp.suite].variant_overrides()
            for key in ("variant", "against"):
                name = getattr(comp, key)
                if name is not None and name not in variants:
                    raise invalid(source, [
                        f"{where}.{key}: got {name!r}; the {comp.scale} recipe of "
                        f"{comp.suite} has {', '.join(variants)}"])  # fmt: skip
            task = params.experiments[params.suites[comp.suite].experiment].task
            declared = ENTRIES[task].directions
            if comp.metric not in declared:
                raise invalid(source, [f"{where}.metric: got {comp.metric!r}; a {task} suite "
                                       f"reports {', '.join(sorted(declared))}"])  # fmt: skip
            if comp.kind == "ensemble" and not params.suites[comp.suite].ensemble:
                raise invalid(source, [f"{where}.kind: ensemble reads suite {comp.suite}'s "
                                       "ensembles; set its `ensemble: true`"])  # fmt: skip
            if comp.scale == "full":
                record = params.suites[comp.suite].full
                record = record.record if record is not None else None
                if record is None or record.name != comp.record:
                    raise invalid(source, [
                        f"{where}.record: got {comp.record!r}; suite {comp.suite}'s full "
                        f"recipe records {record.name if record else 'nothing'!r}"])  # fmt: skip


def _check_record(params: Params, name: str, record, variants: set[str], source: str) -> None:
    """A record's result keys name variants of the full recipe and metrics its family reports."""
    task = params.experiments[params.suites[name].experiment].task
    reported = ENTRIES[task].reported
    for key, spec in record.result.items():
        where = f"suites.{name}.full.record.result.{key}"
        if spec.variant not in variants:
            raise invalid(source, [f"{where}.variant: got {spec.variant!r}; the full recipe's "
                                   f"variants: {', '.join(sorted(variants))}"])  # fmt: skip
        if spec.metric not in reported:
            raise invalid(source, [f"{where}.metric: got {spec.metric!r}; a {task} suite "
                                   f"reports {', '.join(reported)}"])  # fmt: skip


# libyaml's parser where PyYAML has it: the same tree, 7x faster than the pure-Python one on
# params.yaml (every stage loads it)
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override and validate params; ConfigError names the file, key and allowed values."""
    path = Path(path)
    try:
        text = path.read_text()
        tree = yaml.load(text, Loader=FAST_LOADER) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError:
        try:  # the pure-Python parser's message quotes the line
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        raise
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if not tree:
        raise ConfigError(
            f"{path}: empty: nothing to fetch, train or tune; it needs at least an `experiments` "
            "section (see the README)"
        )
    for item in overrides or []:
        key, value = parse_override(item)
        set_path(tree, key, value)
    return validate(tree, str(path))
