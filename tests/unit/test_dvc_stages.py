"""dvc.yaml as DVC itself reads it: every stage's dependency is in git or is another stage's
output, with the default params and with params that define no suite (a project without
suites must run `dvc repro` through)."""

import shutil
import subprocess

import pytest
import yaml
from dvc.repo import Repo

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
