"""Units per minute of one suite with 1 and with 2 worker processes (`ablab suite NAME
--workers N`), each in a fresh store, on the checkout's processed Fashion-MNIST.

    python bench/suite_workers.py            # prints both figures and the ratio

The suite: 8 units of about 5 s each (an MLP on 10,000 images, 6 epochs, 4 variants x 2
seeds), so the per-unit fixed cost (MLflow run, figures, the logged model) weighs about as it
does in the default suites, and the workers' start is counted."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = {
    "experiment": "mlp",
    "seeds": [1, 2],
    "common": {"data": {"subset": 10000, "val_subset": 2000}, "train": {"max_epochs": 6}},
    "grid": {"model.dropout": [0.0, 0.2, 0.4, 0.6]},
}


def units_per_minute(workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="ablab-bench-") as folder:
        root = Path(folder)
        tree = yaml.safe_load((ROOT / "params.yaml").read_text())
        tree["suites"] = {"bench": SUITE}
        (root / "params.yaml").write_text(yaml.safe_dump(tree))
        (root / "data").symlink_to(ROOT / "data")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ablab.cli", "suite", "bench", "--workers", str(workers)],
            cwd=root, env={**os.environ, "ABLAB_ROOT": str(root), "ABLAB_PROGRESS": "0"},
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    return 8 / seconds * 60


if __name__ == "__main__":
    one = units_per_minute(1)
    two = units_per_minute(2)
    print(f"1 worker: {one:.1f} units/min; 2 workers: {two:.1f} units/min ({two / one:.2f}x)")
