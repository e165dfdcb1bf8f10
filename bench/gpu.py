"""The GPU section of `make bench`, where CUDA finds a device (numbers, never pass/fail):

- the default CNN's training epoch (validation excluded) through ablab's train path on the GPU
  against a plain PyTorch loop with the data resident on the device (the reference of the GPU
  issue: 0.90 s an epoch at batch 128 on an H200), at batch 128 and 512, fp32 and bf16-mixed;
- units per minute of a small suite on one GPU with 1, 2, 4 and 8 workers (each worker a
  process; torch threads per worker = cores / workers).

`python bench/gpu.py` writes bench/gpu_results.json and prints it; without CUDA it says so and
writes nothing (BENCHMARKS.md then states that no GPU was measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
SUBSET = 54000  # the whole training split: Fashion-MNIST's shape, as the reference loop


class TrainingSeconds(pl.Callback):
    """Seconds of each epoch's training part: from its start to its validation's start."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def ablab_epoch(root: Path, batch: int, precision: str) -> float:
    """The second epoch's training seconds of the default CNN through ablab's train()."""
    from ablab.config import load
    from ablab.train import train

    params = load(ROOT / "params.yaml", [
        "experiments.cnn.train.max_epochs=2", f"experiments.cnn.train.batch_size={batch}",
        "train.accelerator=gpu", f"train.precision={precision}", "train.log_model=false",
        "train.early_stopping.enabled=false",
    ])  # fmt: skip
    timer = TrainingSeconds()
    train(params.experiment("cnn"), root, "bench-gpu", ROOT / "data" / "processed",
          extra_callbacks=[timer])  # fmt: skip
    return timer.seconds[-1]


def plain_epoch(batch: int, precision: str) -> float:
    """The same network and data in a minimal loop, everything on the GPU: second epoch's
    seconds."""
    from ablab.config import load
    from ablab.data.datamodules import ImageDataModule
    from ablab.models import build

    exp = load(ROOT / "params.yaml").experiment("cnn")
    data = ImageDataModule.from_experiment(exp, ROOT / "data" / "processed")
    data.setup()
    net = build(exp.model, data.input_shape, len(data.classes)).cuda()
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=exp.train.lr)
    x, y = (t.cuda() for t in data.tensors["train"].tensors)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    seconds = 0.0
    for _ in range(2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(x), device="cuda")
        for i in range(0, len(x), batch):
            index = order[i : i + batch]
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(net(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds


def units_per_minute(root: Path, workers: int) -> float:
    """`ablab suite` of 16 short units (the optimizers suite, 2 epochs on 10,000 images) on
    the GPU with `workers` processes: units per minute, process start included."""
    seeds = "[" + ",".join(str(s) for s in range(1, 5)) + "]"
    sets = ["--set", "train.accelerator=gpu", "--set", f"suites.optimizers.seeds={seeds}",
            "--set", "suites.optimizers.common.train.max_epochs=2",
            "--set", "mlflow_experiment=bench-gpu"]  # fmt: skip
    env = {**os.environ, "ABLAB_ROOT": str(root)}
    if not (root / "data").exists():
        (root / "data").symlink_to(ROOT / "data")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ablab.cli", "suite", "optimizers", "--workers",
                    str(workers), *sets], check=True, env=env, cwd=root)  # fmt: skip
    units = 5 * 4  # variants x seeds
    return units / ((time.perf_counter() - start) / 60)


def main() -> None:
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here: nothing measured")
        return
    results: dict[str, object] = {"device": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory(prefix="ablab-bench-gpu-") as tmp:
        root = Path(tmp)
        for batch in (128, 512):
            for precision in ("32-true", "bf16-mixed"):
                mine = ablab_epoch(root, batch, precision)
                plain = plain_epoch(batch, precision)
                key = f"cnn_epoch_{batch}_{precision}"
                results[key] = {"ablab_s": mine, "plain_s": plain, "ratio": mine / plain}
                print(key, results[key], flush=True)
        for workers in (1, 2, 4, 8):
            with tempfile.TemporaryDirectory(dir=tmp) as suite_root:
                rate = units_per_minute(Path(suite_root), workers)
            results[f"units_per_minute_{workers}_workers"] = rate
            print(f"{workers} workers: {rate:.1f} units/min", flush=True)
    (ROOT / "bench" / "gpu_results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(results)
    print(json.dumps(results, indent=2))


def write_section(results: dict) -> None:
    """BENCHMARKS.md's "## GPU" section, replaced by these figures."""
    page = (ROOT / "BENCHMARKS.md").read_text()
    lines = [
        "## GPU",
        "",
        f"Measured on {results['device']} (`python bench/gpu.py`).",
        "",
        "| CNN epoch (training part) | ablab s | plain loop s | ratio |",
        "|---|---|---|---|",
    ]
    for key, value in results.items():
        if key.startswith("cnn_epoch_"):
            lines.append(f"| {key.removeprefix('cnn_epoch_').replace('_', ', ')} | "
                         f"{value['ablab_s']:.3f} | {value['plain_s']:.3f} | "
                         f"{value['ratio']:.2f} |")  # fmt: skip
    lines += ["", "| workers | units per minute |", "|---|---|"]
    lines += [f"| {w} | {results[f'units_per_minute_{w}_workers']:.1f} |" for w in (1, 2, 4, 8)]
    start = page.index("## GPU") if "## GPU" in page else len(page)
    rest = page[start + 1 :]
    end = start + 1 + rest.index("\n## ") + 1 if "\n## " in rest else len(page)
    (ROOT / "BENCHMARKS.md").write_text(page[:start] + "\n".join(lines) + "\n" + page[end:])


if __name__ == "__main__":
    main()
