"""Two hosts that share only PostgreSQL and an MLflow server (the README's "Several machines"):
two project folders on this machine, each with its own data, cache and checkpoints, nothing
shared but the database and the tracking server, both on loopback and started here."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_PARAMS, free_port, wait_until_answers
from tests.integration.postgres import Postgres

pytestmark = pytest.mark.integration

# timing fields: what differs between two hosts' runs.json for the same units
TIMING = {"seconds", "seconds_per_epoch", "epoch_seconds", "start_time", "end_time"}
# `ablab` and `mlflow` as this interpreter's environment has them, for the README's commands
BIN_FIRST = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"


@pytest.fixture(scope="module")
def postgres():
    server = Postgres().start()
    yield server
    server.stop()


def readme_commands() -> list[str]:
    """The README's "Several machines" block, one command per line, comments left out."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("<!-- hosts:start -->", 1)[1].split("<!-- hosts:end -->", 1)[0]
    return [line for line in block.splitlines()
            if line.strip() and not line.startswith(("#", "```"))]  # fmt: skip


def readme_command(start: str) -> str:
    found = [line for line in readme_commands() if line.startswith(start)]
    assert found, f"the README's Several machines block has no line starting {start!r}"
    return found[0]


class TrackingServer:
    """The README's `mlflow server` line, on loopback at a free port, serving artifacts from
    `folder`/server-artifacts into the backend store `backend`."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = folder / "server-artifacts"
        line = readme_command("mlflow server")
        assert "--port 5000" in line and "0.0.0.0" in line, line
        self.command = line.replace("0.0.0.0", "127.0.0.1").replace("5000", str(self.port))
        # the README's "$ABLAB_DB/mlflow": the test's backend store, whatever its URL
        self.env = {**os.environ, "ABLAB_DB": backend.rsplit("/", 1)[0],
                    "ARTIFACTS": str(self.artifacts), "MLFLOW_DISABLE_TELEMETRY": "true",
                    "PATH": BIN_FIRST}  # fmt: skip
        if not backend.endswith("/mlflow"):  # SQLite: the URL as it is
            self.command = self.command.replace('"$ABLAB_DB/mlflow"', f'"{backend}"')
        self.process: subprocess.Popen | None = None

    def start(self) -> TrackingServer:
        log = self.folder / "server.log"
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {self.command}"], stdout=log.open("a"),
            stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
        )  # fmt: skip
        wait_until_answers(f"{self.url}/health", self.process, log=log)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def tracking_server(postgres, tmp_path):
    """The README's two databases on the test's PostgreSQL, and its tracking server."""
    names = re.findall(r"createdb (\w+)", readme_command("createdb"))
    assert names == ["optuna", "mlflow"], names  # optuna: made with the test's server
    server = TrackingServer(postgres.database("mlflow"), tmp_path)
    yield server.start()
    server.stop()


def host(folder: Path, tree: dict, digits_root: Path) -> Path:
    """A host's project: params.yaml, its own copy of the data (as if fetched there)."""
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(tree))
    shutil.copytree(digits_root / "data", folder / "data")
    return folder


def launch(folder: Path, server: str | None, *args: str, database: str = "") -> subprocess.Popen:
    """`ablab ARGS` on the host at `folder`: its own root and cache, the shared server (None:
    the project's own store); ARGS a single string is a shell line (a README command) run
    with ABLAB_DB set to `database`."""
    env = {**os.environ, "ABLAB_ROOT": str(folder), "ABLAB_CACHE": str(folder / "cache"),
           "ABLAB_DB": database, "PATH": BIN_FIRST}  # fmt: skip
    if server:
        env["MLFLOW_TRACKING_URI"] = server
    command = ["bash", "-c", args[0]] if len(args) == 1 else [
        sys.executable, "-m", "ablab.cli", *args, "--params", str(folder / "params.yaml"),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def readme_suite(line_start: str, suite: str) -> str:
    """The README's `ablab suite` line for `suite` on one worker a host."""
    line = readme_command(line_start)
    return line.replace("regularization", suite).replace("--workers 2", "--workers 1")


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def test_two_hosts_share_a_suite_one_killed_mid_unit(postgres, tracking_server, digits_root,
                                                     tmp_path):  # fmt: skip
    """Host A starts the suite alone; host B joins late; A is SIGKILLed (its whole process
    group) mid-unit. B trains what is left, A's unit included; every unit ends with exactly
    one FINISHED run on the server, none RUNNING, every artifact on the server. With A's
    folder deleted, B writes the report and downloads units' artifacts and a model A logged
    and B registered through the server; A, cloned again, writes the same runs.json as B."""
    tree = {
        **TINY_PARAMS,
        "train": {**TINY_PARAMS["train"], "max_epochs": 80, "early_stopping": {"enabled": False}},
        "tune": {**TINY_PARAMS["tune"], "heartbeat_seconds": 1},  # storage: the README's
        "suites": {"hosts": {
            "experiment": "mlp", "seeds": [1, 2],
            "variants": {"a": {"train.log_model": True}, "b": {"model.dropout": 0.3}},
        }},
    }  # fmt: skip
    a = host(tmp_path / "host-a", tree, digits_root)
    b = host(tmp_path / "host-b", tree, digits_root)
    client = MlflowClient(tracking_server.url)

    def unit_runs() -> list:
        experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow_experiment"])
        if experiment is None:
            return []
        found = client.search_runs([experiment.experiment_id], "tags.`ablab.suite` = 'hosts'")
        return [r for r in found if r.info.run_name.count("/") == 2]

    def wait_for(condition, what: str, seconds: float = 120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            runs = unit_runs()
            if condition(runs):
                return runs
            time.sleep(0.2)
        raise AssertionError(
            f"never saw {what}: {[(r.info.run_name, r.info.status) for r in runs]}"
        )

    database = postgres.url.rsplit("/", 1)[0]
    join = readme_suite("ablab suite regularization --workers", "hosts")
    host_a = launch(a, tracking_server.url, join, database=database)
    first = wait_for(lambda rs: any(r.info.status == "FINISHED" for r in rs), "A finish a unit")
    from_a = [r for r in first if r.info.status == "FINISHED"][0]
    host_b = launch(b, tracking_server.url, join, database=database)  # joins late
    wait_for(lambda rs: sum(r.info.status == "RUNNING" for r in rs) == 2, "both hosts mid-unit")
    os.killpg(host_a.pid, signal.SIGKILL)
    host_a.wait(timeout=30)
    out_b = finish(host_b)

    runs = unit_runs()
    for variant in ("a", "b"):
        for seed in (1, 2):
            states = [
                r.info.status for r in runs if r.info.run_name == f"hosts/{variant}/seed{seed}"
            ]
            assert states.count("FINISHED") == 1, (variant, seed, states)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status != "FINISHED"]
    assert [r.info.status for r in killed] == ["KILLED"], out_b[-3000:]
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    for folder in (a, b):  # nothing of MLflow's or Optuna's in a host's own folder
        assert not (folder / "mlruns").exists(), sorted(p.name for p in folder.iterdir())
    assert len(list(tracking_server.artifacts.rglob("learning_curves.png"))) >= 4

    shutil.rmtree(a)
    afterwards = readme_suite("ablab suite regularization --set", "hosts")
    finish(launch(b, tracking_server.url, afterwards, database=database))
    assert "hosts" in (b / "results" / "report" / "README.md").read_text()
    for run in runs:
        if run.info.status == "FINISHED":
            local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
            assert (local / "learning_curves.png").exists() and (local / "params.yaml").exists()
            shutil.rmtree(local)
    model = client.search_logged_models(
        [from_a.info.experiment_id], filter_string=f"source_run_id = '{from_a.info.run_id}'"
    )
    assert len(model) == 1
    loaded = subprocess.run(
        [sys.executable, "-c", "import mlflow, numpy as np\n"
         f"v = mlflow.register_model('models:/{model[0].model_id}', 'hosts-mlp')\n"
         "m = mlflow.pyfunc.load_model(f'models:/hosts-mlp/{v.version}')\n"
         "print(m.predict(np.zeros((3, 1, 8, 8), dtype=np.float32)).shape)"],
        cwd=b, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_server.url},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1].startswith("(3,")

    a = host(tmp_path / "host-a", tree, digits_root)  # cloned again
    out_a = finish(launch(a, tracking_server.url, afterwards, database=database))
    assert "4 of 4 units already finished" in out_a
    written = [json.loads((h / "results" / "suites" / "hosts" / "runs.json").read_text())
               for h in (a, b)]  # fmt: skip
    assert without_timing(written[0]) == without_timing(written[1])
