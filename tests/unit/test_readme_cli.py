"""Every `ablab ...` command in the README parses with ablab's own parser, names experiments,
suites and datasets that exist, and its --set overrides load with the repo's params.yaml (what
the command would do first)."""

import re
import shlex

import pytest

from ablab.cli import parser
from ablab.config import DATASETS, load
from tests.conftest import REPO

PARAMS = load(REPO / "params.yaml")
NAMES = {"experiments": PARAMS.experiments, "suites": PARAMS.suites, "datasets": DATASETS}


def readme_commands() -> list[str]:
    """`ablab ...` commands: lines of code blocks (continuations joined, each `&&` part) and
    inline code (but a bare command name such as `ablab diagnose`); templates (`<experiment>`,
    `[suite]`, `...`) left out."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    lines = []
    for i, block in enumerate(text.split("```")):
        if i % 2:  # inside a code block
            lines += [line.split("#")[0] for line in block.splitlines()]
        else:
            lines += [
                " ".join(m.split())  # inline code wrapped over two lines is one command
                for m in re.findall(r"`(ablab [^`]+)`", block)
                if len(m.split()) > 2
                or m.split()[1] in ("ui", "report", "tune", "suite", "train", "pretrain")
            ]
    parts = [part.strip() for line in lines for part in line.split("&&")]
    return [
        p for p in parts if p.startswith("ablab ") and not set("<[") & set(p) and "..." not in p
    ]


def test_the_readme_shows_ablab_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("command", readme_commands())
def test_each_readme_ablab_command_parses_and_loads(command):
    args = parser().parse_args(shlex.split(command)[1:])
    for kind, known in NAMES.items():
        for name in getattr(args, kind, None) or []:
            assert name in known, f"{command}: {name} is not one of the {kind}"
    for name in getattr(args, "models", None) or []:  # explain: experiments, registry URIs
        suite, _, variant = name.partition("/")  # or a suite unit's run name
        unit = suite in PARAMS.suites and variant.split("/")[0] in {
            r.variant for r in PARAMS.suite_runs(suite)}  # fmt: skip
        assert name.startswith("models:/") or name in PARAMS.experiments or unit, command
    if getattr(args, "params", "params.yaml") == "params.yaml":
        load(
            REPO / "params.yaml", getattr(args, "set", [])
        )  # raises ConfigError naming a bad override
