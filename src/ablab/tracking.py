"""MLflow: where runs go, their names and tags, per-epoch metrics and artifacts. Families
return figures and dicts; this module is what logs them."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import sqlalchemy
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablab.config import ConfigError


def store_root(root: Path) -> Path:
    """The folder whose mlruns/ is the project's store: the DVC repository's root when DVC runs
    the command ($DVC_ROOT; for a queued `dvc exp run`, the project, not the temporary copy
    it trains in, which DVC deletes afterwards), else `root`."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def tracking_uri(root: Path) -> str:
    """$MLFLOW_TRACKING_URI (a server), else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root(root)}/mlruns/mlflow.db"


# MLflow 3's UI opens experiments in its GenAI workflow (traces) unless a link asks for this one
ML_WORKFLOW = "workflowType=machine_learning"


def run_url(experiment_id: str, run_id: str) -> str:
    """Where a run is in the UI: the tracking server's, else `ablab ui`'s default address."""
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_WORKFLOW}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table (not the GenAI overview the UI opens on by default)."""
    return f"{base}/#/experiments/{experiment_id}?{ML_WORKFLOW}"


def artifact_root(root: Path) -> str:
    return (store_root(root) / "mlruns" / "artifacts").as_uri()


def use_store(root: Path, experiment: str) -> str:
    """Point MLflow at the store and return the id of `experiment`, creating it if needed."""
    uri = tracking_uri(root)
    local = uri == f"sqlite:///{store_root(root)}/mlruns/mlflow.db"
    user_set = "MLFLOW_TRACKING_URI" in os.environ
    mlflow.set_tracking_uri(uri)
    if not user_set:
        # set_tracking_uri exports the variable; unset it means "the project's store" to us
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if not local:
        check_server(uri)
        say_when_retrying(uri)
        return _experiment_id(experiment, None)
    (store_root(root) / "mlruns").mkdir(parents=True, exist_ok=True)
    location = f"{artifact_root(root)}/{experiment}"
    # Processes starting together on a new store would race to create its tables.
    with open(store_root(root) / "mlruns" / ".store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _start_from_empty_store(store_root(root) / "mlruns" / "mlflow.db")
        experiment_id = _experiment_id(experiment, location)
    found = MlflowClient().get_experiment(experiment_id).artifact_location
    if found != location and found.endswith(f"/mlruns/artifacts/{experiment}"):  # another root
        raise ConfigError(
            f"{store_root(root) / 'mlruns' / 'mlflow.db'}: this store keeps experiment "
            f"{experiment!r}'s artifacts in {found}, not in this checkout ({location}): the "
            "project was moved or copied, and its runs' files would go to the old folder. "
            "Move it back, or start a new store here (move mlruns/ aside)"
        )
    return experiment_id


def _start_from_empty_store(db: Path) -> None:
    """A new SQLite store begins as a copy of an empty one that MLflow's own schema code built
    once per MLflow version (kept in the temporary folder, as MLflow keeps its store lock):
    its ~60 migrations take 1.5 s for every new store, the copy 0.03 s. Where that code is not
    what this MLflow has, MLflow builds the store itself as before."""
    if db.exists():
        return
    empty = Path(tempfile.gettempdir()) / f"ablab-mlflow-{mlflow.__version__}-empty.db"
    try:
        if not empty.exists():
            from mlflow.store.db.utils import _initialize_tables

            part = empty.with_name(f"{empty.name}.{os.getpid()}")
            part.unlink(missing_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{part}")
            _initialize_tables(engine)
            engine.dispose()
            os.replace(part, empty)  # whole, or not there
        part = db.with_name(f"{db.name}.{os.getpid()}")
        shutil.copyfile(empty, part)
        try:
            os.link(part, db)  # never over a store another process made meanwhile
        except FileExistsError:
            pass
        finally:
            part.unlink()
    except (ImportError, OSError, sqlalchemy.exc.SQLAlchemyError):
        return


class StoreUnreachable(ConfigError):
    """The tracking server in MLFLOW_TRACKING_URI does not answer."""


class _RetryLine(logging.Handler):
    """Turns urllib3's retry warnings (MLflow's client retrying a request the server did not
    answer) into one line of ours per retry."""

    def __init__(self, uri: str) -> None:
        super().__init__(logging.WARNING)
        self.uri = uri

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Retrying"):
            return
        reason = message.split("after ", 1)[-1].split(":", 1)[0][:120]
        tries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
        print(f"MLflow tracking server {self.uri} did not answer ({reason}): retrying with "
              f"backoff ({tries} tries over about 2 minutes); the unit carries on once it answers",
              file=sys.stderr, flush=True)  # fmt: skip


def say_when_retrying(uri: str) -> None:
    """While the tracking server is away (restarted, say), MLflow's client retries each request
    with backoff; this makes each retry one clear line instead of nothing."""
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(h, _RetryLine) for h in logger.handlers):
        logger.addHandler(_RetryLine(uri))
        logger.propagate = False


def check_server(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer MLflow's /health within `timeout` seconds; else
    StoreUnreachable names it (MLflow's own client would retry for minutes first)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:
            if answer.status == 200:
                return
            reason = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} from /health"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise StoreUnreachable(
        f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers there ({reason}); start it "
        "(`mlflow server`, `ablab ui`) or unset MLFLOW_TRACKING_URI to use the project's "
        "store in mlruns/"
    )


# The experiment's tags: MLflow 3's UI opens an experiment of kind custom_model_development on
# its runs table (unmarked, on the GenAI traces page), and shows mlflow.note.content as its
# description.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "ablab: one run per trained model (train, suites, tune trials), tagged ablab.experiment, "
        "ablab.suite, ablab.variant, ablab.seed. Compare runs in the table; per-epoch curves "
        "under Model metrics; figures and diagnosis.md under Artifacts."
    ),
}


def _experiment_id(experiment: str, location: str | None) -> str:
    # A server chooses its own artifact store; the local store keeps artifacts in mlruns/.
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            return client.create_experiment(
                experiment, artifact_location=location, tags=EXPERIMENT_TAGS
            )
        except MlflowException:
            # another process created it between our lookup and create
            found = client.get_experiment_by_name(experiment)
    for key, value in EXPERIMENT_TAGS.items():  # stores made before the tags existed
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def origin_tags(root: Path) -> dict[str, str]:
    """Where a run comes from: MLflow's `mlflow.source.git.commit` for the checkout at root
    (none outside git), the DVC stage that ran it (`ablab.dvc_stage`, none outside `dvc
    repro`) and the machine and library versions (`ablab.machine`, `ablab.versions`)."""
    from ablab import machine  # torch: imported only by the commands that start a run

    tags = machine.tags()
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_STAGE"):  # DVC sets it for every stage command it runs
        tags["ablab.dvc_stage"] = os.environ["DVC_STAGE"]
    return tags


def dvc_experiment() -> tuple[str, dict[str, str]]:
    """Under `dvc exp run`: ("/<DVC experiment name>", its tags ablab.dvc_experiment and
    ablab.dvc_baseline, the baseline commit), for a run's name and tags; else ("", {})."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        return "", {}
    baseline = os.environ.get("DVC_EXP_BASELINE_REV", "")
    return f"/{name}", {"ablab.dvc_experiment": name, "ablab.dvc_baseline": baseline}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> {"train.lr": "0.001", ...}, the form MLflow params take."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def run_tags(
    experiment: str, seed: int, data_hash: str, stage: str, root: Path,
    suite: str = "", variant: str = "",
) -> dict[str, str]:  # fmt: skip
    tags = {
        "ablab.experiment": experiment,
        "ablab.suite": suite,
        "ablab.variant": variant or experiment,
        "ablab.seed": str(seed),
        "ablab.data_hash": data_hash,
        "ablab.stage": stage,
    }
    return {**tags, **origin_tags(root)}


# MLflow's answers for "no such run / model / alias" (a malformed id is INVALID_PARAMETER_VALUE)
ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def absent(exc: MlflowException) -> bool:
    """Whether MLflow refused because what was asked for is not in the store (not because the
    store could not be asked: those errors propagate)."""
    return exc.error_code in ABSENT


def can_resume(run_id: str, experiment_id: str) -> bool:
    """Whether run `run_id` is in the store, in `experiment_id`, and not deleted: a killed
    training's run that its resumed training goes on logging into."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as exc:
        if not absent(exc):
            raise
        return False
    return run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active"


def log_params(run_id: str, params: dict[str, str]) -> None:
    """All params in batches of 100 (MLflow's limit per call)."""
    client = MlflowClient()
    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100], synchronous=True)


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Many metrics in one call: a single log_metric costs milliseconds on SQLite."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    client = MlflowClient()
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000], synchronous=True)


SUMMARY_PREFIX = "summary."


def log_summary(run_id: str, values: dict[str, float]) -> None:
    """Single values that describe a run but are no result to chart (best epoch, size, time):
    tags `summary.<name>`, shown in the run's overview and as runs-table columns."""
    tags = [RunTag(SUMMARY_PREFIX + k, repr(int(v) if float(v).is_integer() else float(v)))
            for k, v in values.items()]  # fmt: skip
    if tags:
        MlflowClient().log_batch(run_id, tags=tags, synchronous=True)


def read_summary(tags: dict[str, str]) -> dict[str, float]:
    """The values log_summary wrote, back as numbers."""
    return {k.removeprefix(SUMMARY_PREFIX): float(v) for k, v in tags.items()
            if k.startswith(SUMMARY_PREFIX)}  # fmt: skip


def log_artifacts(items: dict[str, Any]) -> None:
    """Into the active run: a matplotlib Figure as an image (then closed), a dict or list as
    JSON (or YAML by its name), bytes as a file (an encoded PNG or GIF), a str as text."""
    import tempfile

    from matplotlib.figure import Figure

    from ablab.figures import close

    for name, item in items.items():
        if isinstance(item, bytes):
            with tempfile.TemporaryDirectory(prefix="ablab-artifact-") as folder:
                path = Path(folder) / Path(name).name
                path.write_bytes(item)
                mlflow.log_artifact(str(path), str(Path(name).parent) if "/" in name else None)
        elif isinstance(item, Figure):
            mlflow.log_figure(item, name)
            close(item)
        elif isinstance(item, dict | list):
            mlflow.log_dict(item, name)
        else:
            mlflow.log_text(str(item), name)
