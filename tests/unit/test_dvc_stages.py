"""dvc.yaml as DVC itself reads it: every stage's dependency is in git or is another stage's
output, with the default params and with params that define no suite (a project without
suites must run `dvc repro` through)."""

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from ablab.imports import ablab_imports, closure
from tests.conftest import REPO


def stage_paths(root, tree: dict) -> tuple[list[tuple[str, str]], set[str]]:
    """([(stage, dependency path)], output paths) of dvc.yaml under the params `tree`."""
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    Repo.init(root, no_scm=True)
    stages = Repo(root).index.stages
    deps = [(s.name, str(d.def_path)) for s in stages for d in s.deps]
    outs = {str(o.def_path) for s in stages for o in s.outs}
    return deps, outs


@pytest.mark.parametrize("suites", [True, False], ids=["default", "no_suites"])
def test_every_dependency_is_in_git_or_made_by_a_stage(tmp_path, suites):
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    if not suites:
        tree["suites"] = {}
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    tracked = set(listed.stdout.split())
    deps, outs = stage_paths(tmp_path, tree)
    assert any(stage == "report" for stage, _ in deps)
    for stage, path in deps:
        in_git = path in tracked or any(t.startswith(path + "/") for t in tracked)
        made = any(o == path or o.startswith(path + "/") or path.startswith(o + "/")
                   for o in outs)  # fmt: skip
        assert in_git or made, f"{stage}: {path} is neither in git nor any stage's output"


def test_fetch_and_preprocess_read_only_the_data_params_and_the_datasets_list(tmp_path):
    """Changing an epoch count, a suite or the tune space must not fetch or preprocess again:
    those stages read no params, only the `resolve` stage's files; no stage after `resolve`
    reads params.yaml's sections but `evaluators` (its own section) and the report."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    Repo.init(tmp_path, no_scm=True)
    stages = {s.name: s for s in Repo(tmp_path).index.stages}
    for name in ("fetch", "preprocess"):
        assert not [d for d in stages[name].deps if hasattr(d, "params")], name  # no params
        assert "data/datasets.json" in {str(d.def_path) for d in stages[name].deps}
    assert "data/preprocess.json" in {str(d.def_path) for d in stages["preprocess"].deps}
    made = {str(o.def_path) for o in stages["resolve"].outs}
    assert made == {"data/datasets.json", "data/preprocess.json", "data/resolved"}
    for name, stage in stages.items():
        reads = [d for d in stage.deps if hasattr(d, "params")]
        kind = name.split("@")[0]
        if kind not in ("resolve", "evaluators", "report"):
            assert not reads, name
        if kind in ("train", "explain", "pretrain", "suite", "tune", "tuned", "claims"):
            assert any(str(d.def_path).startswith("data/resolved/") for d in stage.deps), name


def test_the_resolve_stage_writes_what_each_stage_reads(tmp_path, monkeypatch):
    from ablab.cli import main
    from ablab.config import load

    monkeypatch.chdir(tmp_path)
    main(["resolve", "--params", str(REPO / "params.yaml"), "--out", "out"])
    params = load(REPO / "params.yaml")
    written = json.loads((tmp_path / "out" / "datasets.json").read_text())
    assert written == {"datasets": params.datasets(), "sources": {}}
    assert {"fashion_mnist", "mnist", "tweets"} <= set(written["datasets"])
    knobs = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert knobs["seed"] == params.seed and knobs["text"]["max_len"] == params.data.text.max_len
    resolved = tmp_path / "out" / "resolved"
    assert {p.stem for p in (resolved / "train").glob("*.json")} == set(params.experiments)
    assert {p.stem for p in (resolved / "suite").glob("*.json")} == set(params.suites)
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.json")}

    # an epoch count: only the files of what inherits it change; cnn sets none, cnn_gap and
    # sunspots set their own
    main(["resolve", "--params", str(REPO / "params.yaml"), "--out", "out",
          "--set", "train.max_epochs=6"])  # fmt: skip
    changed = {str(p.relative_to(resolved)) for p, b in before.items() if p.read_bytes() != b}
    assert "train/cnn.json" in changed and "train/sunspots.json" not in changed
    assert "train/cnn_gap.json" not in changed
    assert "train/mlp.json" not in changed  # mlp sets max_epochs: 20 itself
    assert not {"datasets.json", "preprocess.json"} & {
        p.name for p in before if p.read_bytes() != before[p]
    }

    # a bad key writes nothing: every file as it was
    with pytest.raises(SystemExit):
        main(["resolve", "--params", str(REPO / "params.yaml"), "--out", "out",
              "--set", "train.max_epohcs=6"])  # fmt: skip
    assert all(p.exists() for p in before)
    # an experiment removed: its file goes
    main(["resolve", "--params", str(REPO / "params.yaml"), "--out", "out",
          "--set", "explain.experiments=[cnn]"])  # fmt: skip
    assert {p.stem for p in (resolved / "explain").glob("*.json")} == {"cnn"}


# --- each stage depends on the ablab modules its command imports, computed -----------------
SRC = REPO / "src"


def stage_sources(cmd: str) -> set[Path]:
    """The ablab files a stage's command runs: its pipelines/ script's imports; through
    `ablab.cli.main(["<command>", ...])`, cli's module-level imports and that command's."""
    script = REPO / cmd.split()[1]
    tree = ast.parse(script.read_text())
    names = ablab_imports(tree)
    found = closure(names - {"ablab.cli"})
    if "ablab.cli" in names:
        command = re.search(r'main\(\["([a-z_]+)"', script.read_text()).group(1)
        cli = ast.parse((SRC / "ablab" / "cli.py").read_text())
        top = [n for n in cli.body if isinstance(n, ast.Import | ast.ImportFrom)]
        (func,) = [n for n in cli.body if isinstance(n, ast.FunctionDef)
                   and n.name == f"cmd_{command}"]  # fmt: skip
        found |= closure(ablab_imports(func) | set().union(*map(ablab_imports, top)))
        found.add(SRC / "ablab" / "cli.py")
    return found


def stage_deps() -> dict[str, tuple[str, list[str]]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: ((s.get("do") or s)["cmd"], (s.get("do") or s)["deps"])
            for name, s in stages.items()}  # fmt: skip


@pytest.mark.parametrize("stage", list(stage_deps()))
def test_each_stage_depends_on_every_ablab_module_its_command_runs(stage):
    cmd, deps = stage_deps()[stage]
    for path in sorted(stage_sources(cmd)):
        file = str(path.relative_to(REPO))
        assert any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps), (
            f"{stage}: runs {file}, which is not among its deps in dvc.yaml"
        )


def test_editing_the_report_or_tune_retrains_nothing_and_the_cli_refetches_nothing():
    deps = stage_deps()
    for stage in ("train", "pretrain", "suite", "explain", "evaluators", "tuned"):
        for module in ("src/ablab/report.py", "src/ablab/tune.py"):
            assert not any(module == d or module.startswith(d.rstrip("/") + "/")
                           for d in deps[stage][1]), (stage, module)  # fmt: skip
    for stage in ("fetch", "preprocess"):  # no params, no cli: only the data modules
        allowed = ("pipelines/", "data/", "src/ablab/data/", "src/ablab/__init__.py")
        assert all(d.startswith(allowed) for d in deps[stage][1]), deps[stage]
