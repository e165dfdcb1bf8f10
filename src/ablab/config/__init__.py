"""The params schema (pydantic, no torch): `load(path, overrides)` validates params.yaml and
resolves experiments. Modules: common (errors, types, datasets), data, training, nets, families
(one schema per task family), search (suites and tune), overrides, load."""

from ablab.config.common import DATASETS, ConfigError
from ablab.config.data import DataParams, ExperimentData, Skew
from ablab.config.diagnose import DiagnoseParams
from ablab.config.evaluator import EvaluatorParams
from ablab.config.families import (
    ENTRIES,
    ExperimentEntry,
    check_techniques,
    direction,
    higher_is_better,
    report_metrics,
)
from ablab.config.load import Experiment, ModelParams, Params, SuiteRun, load, validate
from ablab.config.nets import (
    AutoencoderParams,
    CNNParams,
    MLPParams,
    RNNParams,
    Seq2SeqParams,
    TfidfParams,
)
from ablab.config.overrides import nest_overrides, parse_override
from ablab.config.search import SearchDimension, Suite, TuneParams
from ablab.config.training import Augment, TrainParams

__all__ = [
    "DATASETS", "ENTRIES", "Augment", "AutoencoderParams", "CNNParams", "ConfigError",
    "DataParams", "DiagnoseParams", "EvaluatorParams", "Experiment", "ExperimentData",
    "ExperimentEntry", "MLPParams", "ModelParams", "Params", "RNNParams", "SearchDimension",
    "Seq2SeqParams", "Skew", "Suite", "SuiteRun", "TfidfParams", "TrainParams", "TuneParams",
    "check_techniques", "direction", "higher_is_better", "load", "nest_overrides", "parse_override",
    "report_metrics", "validate",
]  # fmt: skip
