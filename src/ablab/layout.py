"""Where a project's results live under its root, for the commands that write them (suites)
and those that only read them (report, claims), which need not import what trains."""

from __future__ import annotations

from pathlib import Path


def suites_dir(root: Path, recipe: str = "default") -> Path:
    """Where suites write: results/suites/ (the DVC stage's), results/full/suites/ (--full)."""
    return Path(root) / "results" / ("full" if recipe == "full" else "") / "suites"
