"""The project documents itself: every file its pages link to or name is in the repo (or is made
by a command the page shows), and nothing points outside it."""

import re
import subprocess

import pytest

from tests.conftest import REPO

PAGES = ["README.md", "BENCHMARKS.md", *(p.relative_to(REPO).as_posix()
                                         for p in (REPO / "docs").glob("*.md"))]  # fmt: skip
# top-level folders whose files a page may name in backticks
TRACKED_ROOTS = ("src/", "tests/", "bench/", "docs/", "pipelines/", "templates/", ".ci/")


def tracked() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    files = set(listed.stdout.split())
    return files | {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*")}


@pytest.mark.parametrize("page", PAGES)
def test_every_link_and_named_file_is_in_the_repo(page):
    text = (REPO / page).read_text()
    known = tracked() | {str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()
                         and ".venv" not in p.parts and ".git" not in p.parts}  # fmt: skip
    folder = (REPO / page).parent
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):  # http(s):, mailto:
            continue
        target = (folder / link).resolve()
        assert REPO in target.parents or target == REPO, f"{page}: {link} points outside the repo"
        assert target.exists(), f"{page}: {link} does not exist"
    for name in re.findall(r"`([\w./-]+\.(?:py|md|npz|json|yaml))`", text):
        if name.startswith(TRACKED_ROOTS):
            assert name in known, f"{page}: {name} is not in the repo"


@pytest.mark.parametrize("page", PAGES)
def test_nothing_points_outside_the_repo(page):
    text = (REPO / page).read_text()
    for outside in ("../shared", "ANCHORS.md", "DESIGN.md", "CLAIMS.md"):
        assert outside not in text, f"{page} cites {outside}, which a reader of the project lacks"


def test_the_source_cites_no_file_outside_the_repo():
    for path in (REPO / "src" / "ablab").rglob("*.py"):
        text = path.read_text()
        for outside in ("../shared", "ANCHORS.md", "DESIGN.md", "CLAIMS.md"):
            assert outside not in text, f"{path.relative_to(REPO)} cites {outside}"
