"""Every `dvc exp run -S ...` in the README sets what it says: each command's overrides go
through DVC's own override function (the one `dvc exp run` applies to params.yaml) on a copy of
the repo's params.yaml, which then loads, with each value in place."""

import shlex
import shutil

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from ablab.config import load
from tests.conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in text.splitlines()
            if line.startswith("dvc exp run") and " -S " in line]  # fmt: skip


def overrides(command: str) -> list[str]:
    args = shlex.split(command)
    return [args[i + 1] for i, arg in enumerate(args) if arg in ("-S", "--set-param")]


def test_the_readme_shows_dvc_experiments():
    assert len(readme_commands()) >= 3


@pytest.mark.parametrize("command", readme_commands())
def test_each_readme_dvc_exp_run_sets_its_params(command, tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    wanted = overrides(command)
    apply_overrides(path, wanted)  # raises as `dvc exp run` does for a key it cannot set
    load(path)  # and ablab accepts the result
    tree = yaml.safe_load(path.read_text())
    for override in wanted:
        key, value = override.lstrip("+").split("=", 1)
        node = tree
        for part in key.split("."):
            node = node[part]
        assert node == yaml.safe_load(value), override


def test_params_yaml_survives_a_dvc_set_with_one_line_changed(tmp_path):
    """DVC rewrites params.yaml on `-S` (ruamel, 80 columns): in the file's own style the
    rewrite changes the one value, and setting it back restores the file byte for byte."""
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    original = path.read_text()
    apply_overrides(path, ["experiments.mlp.train.max_epochs=30"])
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines(),
                                      strict=True) if a != b]  # fmt: skip
    assert changed == [("    train: {max_epochs: 20}", "    train: {max_epochs: 30}")]
    apply_overrides(path, ["experiments.mlp.train.max_epochs=20"])
    assert path.read_text() == original
