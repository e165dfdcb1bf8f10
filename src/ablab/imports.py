"""Which ablab source files running a module involves, read from the source (no import):
its ablab imports anywhere (function-level ones too: commands import heavy modules lazily),
their parent packages' __init__, recursively, and the files a module reads as code by name
(ablab.serving logs image_model.py). `code_hash` hashes them for the suite's study key, the
pretrained networks and the resume checkpoints, and a test checks that each DVC stage depends
on them."""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]  # the folder holding the ablab package


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def ablab_imports(node: ast.AST) -> set[str]:
    """The ablab modules imported anywhere under `node`."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names if a.name.split(".")[0] == "ablab"}
        elif (
            isinstance(n, ast.ImportFrom)
            and n.level == 0
            and (n.module or "").split(".")[0] == "ablab"
        ):
            names.add(n.module)
            names |= {f"{n.module}.{a.name}" for a in n.names
                      if module_file(f"{n.module}.{a.name}")}  # fmt: skip
    return names


def closure(names: set[str]) -> set[Path]:
    """Every ablab source file that importing the modules `names` may run or read."""
    seen: set[Path] = set()
    todo = set(names)
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            tree = ast.parse(path.read_text())
            todo |= ablab_imports(tree)
            for n in ast.walk(tree):
                named = isinstance(n, ast.Constant) and isinstance(n.value, str)
                if named and n.value.endswith(".py") and path.with_name(n.value).exists():
                    seen.add(path.with_name(n.value))
    return seen


@functools.cache  # the source does not change under a running process
def code_hash(*names: str) -> str:
    """The ablab source that running the modules `names` involves (`closure`), hashed with
    each file's path: what was made by other code is made again, an edit elsewhere keeps it."""
    digest = hashlib.sha256()
    for path in sorted(closure(set(names))):
        digest.update(str(path.relative_to(SRC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
