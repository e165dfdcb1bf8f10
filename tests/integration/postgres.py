"""A real PostgreSQL on loopback for the tests: installed with apt when missing (as root; `make
test` installs it beforehand), a throwaway cluster in a temporary folder, a free port, stopped
and deleted afterwards. Where it is neither installed nor installable, the tests that need it
skip, saying why."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PASSWORD = "s3cret-pw-for-tests"


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def ensure_installed() -> Path:
    """The folder holding initdb and pg_ctl; apt-get installs PostgreSQL when absent; the
    calling test skips (with the reason) where neither works."""
    folder = _binaries()
    if folder is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600,
                           capture_output=True)  # fmt: skip
            subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True,
                           env=env, timeout=900, capture_output=True)  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"PostgreSQL is not installed and apt-get could not install it ({exc})")
        folder = _binaries()
    if folder is None:
        pytest.skip("PostgreSQL is not installed and apt-get cannot install it here (not root, "
                    "or no apt-get): install postgresql to run this test")  # fmt: skip
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """Start with `start()`, use `url`, end with `stop()`."""

    def __init__(self) -> None:
        self.bin = ensure_installed()
        self.port = _free_port()
        # not under pytest's 0700 tmp dirs: the server runs as the postgres user when we are root
        self.base = Path(tempfile.mkdtemp(prefix="ablab-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql+psycopg2://ablab:{PASSWORD}@127.0.0.1:{self.port}/optuna"

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        return subprocess.run(command, check=True, capture_output=True, text=True, env=env,
                              timeout=120, **kwargs)  # fmt: skip

    def start(self) -> Postgres:
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            shutil.chown(self.base, self.user)
            shutil.chown(pwfile, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "ablab", f"--pwfile={pwfile}",
                  "-A", "scram-sha-256")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.base}", "start")  # fmt: skip
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "ablab", "optuna")
        return self

    def database(self, name: str) -> str:
        """A second database on the same server (e.g. MLflow's beside Optuna's): its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "ablab", name)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def connections(self) -> int:
        """Client connections open on the server now (this query's own left out)."""
        out = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "ablab", "-At",
                        "-d", "optuna", "-c", "select count(*) - 1 from pg_stat_activity "
                        "where backend_type = 'client backend'")  # fmt: skip
        return int(out.stdout.strip())

    def halt(self) -> None:
        """The server stops at once (clients lose their connections); `resume` starts it."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.base}", "start")  # fmt: skip

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)
