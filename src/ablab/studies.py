"""The Optuna storage that tune's trials and suites' units share: SQLite in mlruns/optuna.db by
default, any SQLAlchemy URL (PostgreSQL for many machines) by `tune.storage`; heartbeats, so
that a dead worker's trial fails after two intervals and is queued again."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ablab.config import ConfigError, Params

# ablab prints its own line per trial and unit; heartbeats and the retry callback are
# "experimental" in Optuna 5 but are the documented way to survive dead workers
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
HEARTBEAT_SECONDS, MAX_RETRY = 10, 2  # without a tune section: TuneParams' defaults


class StorageError(ConfigError):
    """The study storage cannot be opened; the message shows its URL, password masked."""


def storage_url(tune, root: Path) -> str:
    """`tune.storage`, else SQLite in <root>/mlruns/optuna.db (`tune` may be None)."""
    if tune is not None and tune.storage:
        return tune.storage
    (Path(root) / "mlruns").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(root).resolve()}/mlruns/optuna.db"


def masked(url: str) -> str:
    """The URL with its password replaced by ***; text that is no URL at all, as given."""
    from sqlalchemy.engine import make_url

    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show only its scheme
        return url.split("://", 1)[0] + "://***"


def open_storage(url: str, heartbeat_seconds: int, max_retry: int) -> RDBStorage:
    """The RDB storage with heartbeats; a dead worker's trial is FAIL after two intervals and
    queued again (at most `max_retry` times). An unreachable URL raises StorageError before
    anything is created."""
    try:
        return RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat_seconds,
            grace_period=2 * heartbeat_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry),
        )
    except Exception as exc:  # SQLAlchemy, driver or URL errors: all mean "cannot open"
        reason = str(exc).splitlines()[0]
        from sqlalchemy.engine import make_url

        try:
            password = make_url(url).password
        except Exception:
            password = None
        if password:
            reason = reason.replace(str(password), "***")
        raise StorageError(
            f"params.yaml: tune.storage: cannot open {masked(url)}: {reason}"
        ) from None


def params_storage(params: Params, root: Path) -> tuple[RDBStorage, int]:
    """(the params' storage, its heartbeat interval in seconds)."""
    tune = params.tune
    heartbeat = tune.heartbeat_seconds if tune else HEARTBEAT_SECONDS
    url = storage_url(tune, root)
    return open_storage(url, heartbeat, tune.max_retry if tune else MAX_RETRY), heartbeat


def drain(study: optuna.Study, objective: Callable, heartbeat: int, wait: bool = True,
          callbacks: list[Callable] | None = None) -> None:  # fmt: skip
    """Run the study's waiting trials here, one at a time (the oldest first), until none waits;
    with `wait`, until none runs either: a trial another worker holds is waited for (polled each
    second), and one whose worker died fails by heartbeat after two intervals, its retry queued
    and run here. Tune after its budget and every suite worker end this way."""
    while True:
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.optimize(objective, n_trials=1, callbacks=callbacks)
            continue
        if not wait or not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        time.sleep(min(1.0, heartbeat))
        optuna.storages.fail_stale_trials(study)  # FAIL, and the retry queued
