"""What the README shows runs as written: every `ablab ...` command that names something the
default run makes (an experiment, a suite's run, a registered model) runs against a small run
of the repo's own params.yaml (tiny data of every dataset's shape, the objects the commands name
trained briefly), exits 0 and names what it acted on; and the README's plain-MLflow block
(load the champion, predict, `mlflow models serve`, a request) runs through bash."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablab.cli import main
from ablab.config import load
from ablab.pretrain import run_pretrain
from ablab.suite import run_suite
from ablab.train import run_experiment
from ablab.tune import run_tune
from ablab.tuned import train_tuned
from tests.conftest import REPO, THREADS, free_port, write_random_processed, write_random_text
from tests.unit.test_readme_cli import readme_commands

pytestmark = pytest.mark.integration
PARAMS = load(REPO / "params.yaml")
# the commands that name what the default run made: experiments, suite runs, models
KINDS = ("train", "diagnose", "explain")


def acting_on(command: str) -> list[str]:
    """The objects a README command names (experiments, run names, model URIs)."""
    args = shlex.split(command)[2:]
    return [a for a in args if not a.startswith("-") and "=" not in a]


def named_commands() -> list[str]:
    found = []
    for command in readme_commands():
        kind = command.split()[1]
        if kind in KINDS and acting_on(command):
            found.append(command)
    return list(dict.fromkeys(found))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """The repo's params.yaml on tiny data (60 Fashion-MNIST images a split: what `ablab
    explain` reads is small too), with what the README's commands name trained briefly: the
    cnn and cnn_gap experiments, a regularization unit, the sequence_models transformer (its
    model logged), and the tuned champion."""
    root = tmp_path_factory.mktemp("default-run")
    text = (REPO / "params.yaml").read_text()
    assert "\n  threads: 2\n" in text  # the README's commands train with the workers' share
    (root / "params.yaml").write_text(text.replace("\n  threads: 2\n", f"\n  threads: {THREADS}\n"))
    processed = root / "data" / "processed"
    write_random_processed(processed, "fashion_mnist", per_split=60)
    for dataset in ("mnist", "mnist_m"):  # transfer keeps 100 target labels
        write_random_processed(processed, dataset, per_split=150)
    write_random_text(processed, "tweets", per_split=60)
    short = ["train.max_epochs=1"]
    params = load(root / "params.yaml", short)
    for name in ("cnn", "cnn_gap"):
        run_experiment(params, name, root)
    brief = load(root / "params.yaml", [
        "suites.regularization.seeds=[1]", "suites.regularization.common.train.max_epochs=1",
        "tune.n_trials=2", "tune.common.train.max_epochs=1",
    ])  # fmt: skip
    run_suite(brief, "regularization", root)
    transformer = yaml.safe_dump(dict(brief.suites["sequence_models"].variants["transformer"]),
                                 default_flow_style=True).strip()  # fmt: skip
    seq = load(root / "params.yaml", [
        "suites.sequence_models.seeds=[1]", "suites.sequence_models.baseline=transformer",
        "claims={}",  # the repo's claims name variants this brief suite leaves out
        "suites.sequence_models.full=null",  # and so does its full recipe
        f"suites.sequence_models.variants={{transformer: {transformer}}}",
    ])  # fmt: skip
    run_pretrain(seq, "sequence_models", root)
    run_suite(seq, "sequence_models", root)
    run_tune(brief, root)
    train_tuned(load(root / "params.yaml", short), root)
    return root


def test_the_readme_names_default_run_objects_in_commands():
    commands = named_commands()
    assert any(c.startswith("ablab diagnose ") for c in commands)
    assert any(c.startswith("ablab explain models:/") for c in commands)
    assert "ablab explain sequence_models/transformer/seed1" in commands


@pytest.mark.parametrize("command", named_commands())
def test_each_readme_command_runs_on_the_default_run(command, default_run, monkeypatch, capsys):
    monkeypatch.chdir(default_run)
    monkeypatch.setenv("ABLAB_ROOT", str(default_run))
    try:
        main(shlex.split(command)[1:])
    except SystemExit as exc:
        assert exc.code in (0, None), f"{command}: exit {exc.code}\n{capsys.readouterr().err}"
    out = capsys.readouterr().out
    for name in acting_on(command):
        assert name in out, f"{command}: {name} not named in\n{out[-2000:]}"


def plain_mlflow_block() -> str:
    """The README's shell block that starts `mlflow models serve`."""
    text = (REPO / "README.md").read_text()
    blocks = [b.removeprefix("sh\n") for i, b in enumerate(text.split("```")) if i % 2]
    (block,) = [b for b in blocks if "mlflow models serve" in b]
    return block


def test_the_readme_plain_mlflow_block_runs_as_written(default_run, tmp_path):
    port = free_port()
    script = plain_mlflow_block().replace("5001", str(port))
    venv = str(Path(sys.executable).parent)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
           "PATH": f"{venv}:{os.environ['PATH']}"}  # fmt: skip
    # to files, not pipes: the server the block leaves running holds its output open
    with open(tmp_path / "out", "w") as out_file, open(tmp_path / "err", "w") as err_file:
        shell = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=default_run,
                                 env=env, stdout=out_file, stderr=err_file,
                                 start_new_session=True)  # fmt: skip
        try:
            code = shell.wait(timeout=240)
        finally:
            try:
                os.killpg(shell.pid, signal.SIGTERM)  # the server the block left running
            except ProcessLookupError:
                pass
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert code == 0, err[-3000:]
    classes = yaml.safe_load((default_run / "data" / "processed" / "fashion_mnist" /
                              "meta.json").read_text())["classes"]  # fmt: skip
    labels = re.findall(r"\['[^\]]+'\]", out)
    assert labels and all(name.strip("' ") in classes for name in labels[0][1:-1].split(","))
    assert '"predictions"' in out and '"class_index"' in out
    assert not (default_run / "mlflow.db").exists()  # MLflow's own default store: unused
