"""One direction per metric, declared by the family that reports it: early stopping, the
checkpoint, the best epoch, a suite's best unit, the report's verdicts and the search read it;
nothing guesses it from the metric's name."""

from types import SimpleNamespace
from typing import ClassVar, Literal

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from ablab.config import ENTRIES, ConfigError, direction, load
from ablab.config.families import ClassifyEntry, EntryBase
from ablab.families import family
from ablab.report import suite_table
from ablab.suite import best_so_far
from ablab.train import _best_row, _callbacks
from tests.conftest import TINY_PARAMS
from tests.unit.test_config import write


def test_every_metric_a_family_reports_has_a_declared_direction():
    for task, entry in ENTRIES.items():
        named = {*entry.test_metrics, *entry.epoch_metrics, *entry.reported, *entry.compared,
                 entry.headline}  # fmt: skip
        for metric in named:
            assert direction(task, metric) in ("higher", "lower"), (task, metric)
    assert direction("masked_lm", "test_perplexity") == "lower"  # guessed "higher" by name before
    assert direction("generate", "test_inception_score") == "higher"
    with pytest.raises(ValueError, match="'test_bleu': task classify declares no direction"):
        direction("classify", "test_bleu")


def test_a_family_that_forgets_a_direction_does_not_import():
    with pytest.raises(TypeError, match="no direction declared for test_zest"):

        class Forgetful(EntryBase):  # noqa: F841
            task: Literal["forgetful"]
            test_metrics = ("test_loss", "test_zest")
            epoch_metrics = ("val_loss",)
            reported = ("test_zest",)
            compared = ("test_zest",)
            headline = "test_zest"
            directions: ClassVar[dict] = {"test_loss": "lower", "val_loss": "lower"}


@pytest.fixture
def zest(monkeypatch):
    """A metric whose name says nothing of its direction ("zest": neither a loss nor an
    accuracy), declared by the classify family with the direction the test gives."""

    def declare(way: str) -> None:
        monkeypatch.setattr(ClassifyEntry, "directions", {
            **ClassifyEntry.directions, "val_zest": way, "test_zest": way})  # fmt: skip

    return declare


@pytest.mark.parametrize("way, mode", [("lower", "min"), ("higher", "max")])
def test_early_stopping_and_the_checkpoint_read_the_declared_direction(zest, tmp_path, way, mode):
    zest(way)
    stop = SimpleNamespace(monitor="val_zest", enabled=True, patience=2, min_delta=0.0)
    train = SimpleNamespace(early_stopping=stop, schedule=SimpleNamespace(momentum_epochs=0))
    exp = SimpleNamespace(task="classify", train=train)
    callbacks = _callbacks(exp, family("classify"), None, tmp_path)
    assert next(c for c in callbacks if isinstance(c, ModelCheckpoint)).mode == mode
    assert next(c for c in callbacks if isinstance(c, EarlyStopping)).mode == mode
    history = [{"epoch": 0, "val_zest": 3.0}, {"epoch": 1, "val_zest": 1.0},
               {"epoch": 2, "val_zest": 2.0}]  # fmt: skip
    assert _best_row(history, "classify", "val_zest")["epoch"] == (1 if way == "lower" else 0)
    rows = [{"variant": "a", "seed": 1, "summary": {"test_zest": 1.0}},
            {"variant": "b", "seed": 1, "summary": {"test_zest": 2.0}}]  # fmt: skip
    assert best_so_far(rows, "test_zest", "classify")[0] == ("a/seed1" if way == "lower"
                                                              else "b/seed1")  # fmt: skip


@pytest.mark.parametrize("way, word", [("lower", "better"), ("higher", "worse")])
def test_the_report_reads_the_declared_direction(zest, way, word):
    zest(way)

    def run(variant, seed, value):
        return {"variant": variant, "seed": seed, "status": "finished", "run_id": "",
                "failure": "", "history": [], "summary": {"test_zest": value}}  # fmt: skip

    report = {
        "suite": "s", "experiment": "mlp", "family": "classify", "baseline": "base",
        "headline": "test_zest", "metrics": ["test_zest"], "compared": ["test_zest"],
        "seeds": [1, 2, 3, 4], "common": "", "variants": {"base": "", "less": ""},
        "runs": [run("base", s, 1.0 + 0.01 * s) for s in (1, 2, 3, 4)]
        + [run("less", s, 0.5 + 0.011 * s) for s in (1, 2, 3, 4)],
    }  # fmt: skip
    table = suite_table(report).set_index("variant")
    assert table.loc["less", "delta_test_zest"] == pytest.approx(-0.5 + 0.001 * 2.5)
    assert table.loc["less", "verdict_test_zest"] == word


def test_a_search_direction_against_the_metric_is_refused_by_name(tmp_path):
    path = write(tmp_path, TINY_PARAMS)
    with pytest.raises(ConfigError, match="tune.direction: got 'minimize'; val_accuracy gets "
                       "better higher, so the search must maximize it"):  # fmt: skip
        load(path, ["tune.direction=minimize"])
    assert load(path, ["tune.direction=maximize"]).tune_direction() == "maximize"
    assert load(path).tune_direction() == "maximize"  # left out: it follows the metric
    assert load(path, ["tune.metric=val_loss"]).tune_direction() == "minimize"
