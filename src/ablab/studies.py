"""The Optuna storage that tune's trials and suites' units share: SQLite in mlruns/optuna.db by
default, any SQLAlchemy URL (PostgreSQL for many machines) by `tune.storage`; heartbeats, so
that a dead worker's trial fails after two intervals and is queued again."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy.exc
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


def _heartbeat_hook(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught error: the heartbeat's when the storage is lost is left to the main
    thread's one message (`storage_down`); any other goes to Python's own hook."""
    if storage_lost(args.exc_value) is None:
        threading.__excepthook__(args)


def open_storage(url: str, heartbeat_seconds: int, max_retry: int) -> RDBStorage:
    """The RDB storage with heartbeats; a dead worker's trial is FAIL after two intervals and
    queued again (at most `max_retry` times). An unreachable URL raises StorageError before
    anything is created."""
    threading.excepthook = _heartbeat_hook
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
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise StorageError(
            f"params.yaml: tune.storage: cannot open {masked(url)}: {reason}"
        ) from None


# what a storage that stopped answering mid-run raises: Optuna wraps a failed commit, and
# SQLAlchemy raises the driver's connection errors as they are
STORAGE_DOWN = (
    optuna.exceptions.StorageInternalError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


def storage_lost(exc: BaseException) -> BaseException | None:
    """The STORAGE_DOWN error in `exc`'s chain (Optuna may raise another error while handling
    it: a failed commit in `tell` ends as an UnboundLocalError), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, STORAGE_DOWN):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def storage_down(params: Params, root: Path, exc: BaseException) -> StorageError:
    """The one message for a storage lost mid-run (`exc`, from `storage_lost`): its URL
    (password masked), the driver's reason, and that nothing unfinished was marked done."""
    url = storage_url(params.tune, root)
    cause = exc.__cause__ or exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    return StorageError(
        f"params.yaml: tune.storage: {masked(url)} stopped answering mid-run ({reason}); what "
        "finished is kept, the unit or trial in flight is not marked done: run the same "
        "command again once the database answers"
    )


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return None
    return str(password) if password else None


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
