"""`make bench`: ablab's overheads measured against plain PyTorch and this machine's limits.

Writes bench/results.json (flat keys) and BENCHMARKS.md. Numbers, never pass/fail: every
figure is a median over repetitions with its spread (min-max), the compared paths interleaved.
Run from the repo root after `dvc repro preprocess` (the Makefile does both)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import units
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
REPS = int(os.environ.get("BENCH_REPS", "5"))
RESULTS: dict[str, float | str] = {}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def record(key: str, values: list[float] | float, unit: str = "") -> None:
    if isinstance(values, list):
        s = spread(values)
        RESULTS[key] = s["median"]
        RESULTS[f"{key}.min"], RESULTS[f"{key}.max"] = s["min"], s["max"]
    else:
        RESULTS[key] = values
    if unit:
        RESULTS[f"{key}.unit"] = unit
    print(f"{key}: {RESULTS[key]:.6g} {unit}", flush=True)


def params_for(name: str, subset: int):
    from ablab.config import load

    return load(
        ROOT / "params.yaml",
        [f"experiments.{name}.data.subset={subset}", f"experiments.{name}.train.max_epochs=2",
         "train.log_model=false", f"train.threads={THREADS}",
         "train.early_stopping.enabled=false", "mlflow_experiment=bench"],
    )  # fmt: skip


def ablab_epoch(name: str, subset: int, root: Path) -> float:
    """Seconds of the second epoch (train + validation) through ablab's real train path."""
    from ablab.train import train

    params = params_for(name, subset)
    exp = params.experiment(name)
    result = train(exp, root, "bench", ROOT / "data" / "processed")
    return result.history[-1]["epoch_seconds"]


def plain_epoch(name: str, subset: int) -> tuple[float, float, int]:
    """The same model, data, batch size and threads in a minimal loop: (second epoch seconds,
    steps per second of its training part, FLOPs per training step)."""
    from ablab.data.datamodules import ImageDataModule, eval_batch_size
    from ablab.models import build

    params = params_for(name, subset)
    exp = params.experiment(name)
    torch.manual_seed(exp.seed)
    torch.set_num_threads(THREADS)
    data = ImageDataModule.from_experiment(exp, ROOT / "data" / "processed")
    data.setup()
    net = build(exp.model, data.input_shape, len(data.classes))
    opt = torch.optim.Adam(net.parameters(), lr=exp.train.lr)
    x, y = data.tensors["train"].tensors
    vx, vy = data.tensors["val"].tensors
    bs = exp.train.batch_size
    flops = 0
    seconds, train_seconds, steps = 0.0, 0.0, 0
    for epoch in range(2):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            if epoch == 0 and i == 0:
                with FlopCounterMode(display=False) as counter:
                    loss = F.cross_entropy(net(x[idx]), y[idx])
                    loss.backward()
                flops = counter.get_total_flops()
                opt.zero_grad()
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += epoch == 1
        train_seconds = time.perf_counter() - start
        net.eval()
        size = eval_batch_size(exp.model.arch)
        with torch.no_grad():
            for i in range(0, len(vx), size):
                net(vx[i : i + size]).argmax(1)
        seconds = time.perf_counter() - start
    return seconds, steps / train_seconds, flops


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    torch.set_num_threads(THREADS)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_overhead(root: Path) -> None:
    peak = matmul_peak()
    record("machine.matmul_flops", peak, "FLOP/s")
    for name, subset in (("mlp", 20000), ("cnn", 10000)):
        ours, plain, rates = [], [], []
        flops = 0
        for _ in range(REPS):  # interleaved: drift hits both paths alike
            ours.append(ablab_epoch(name, subset, root))
            seconds, rate, flops = plain_epoch(name, subset)
            plain.append(seconds)
            rates.append(rate)
        record(f"{name}.ablab_epoch_seconds", ours, "s")
        record(f"{name}.plain_epoch_seconds", plain, "s")
        record(f"{name}.overhead_ratio", [a / b for a, b in zip(ours, plain, strict=True)])
        record(f"{name}.flops_per_step", float(flops), "FLOP")
        record(f"{name}.fraction_of_matmul_peak", [flops * r / peak for r in rates])


def bench_data() -> None:
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from ablab.config import load
    from ablab.data.datamodules import ImageDataModule

    params = load(ROOT / "params.yaml", [f"train.threads={THREADS}"])
    exp = params.experiment("cnn")
    firsts, datas, loaders = [], [], []
    for _ in range(REPS):
        start = time.perf_counter()
        data = ImageDataModule.from_experiment(exp, ROOT / "data" / "processed")
        data.setup()
        next(iter(data.train_dataloader()))
        firsts.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _batch in data.train_dataloader():
            pass
        datas.append(time.perf_counter() - start)
        # what ablab used before `Batches`: a DataLoader over a BatchSampler
        dataset = data.tensors["train"]
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(dataset, sampler=BatchSampler(sampler, 128, False), batch_size=None)
        start = time.perf_counter()
        for _batch in loader:
            pass
        loaders.append(time.perf_counter() - start)
    record("data.time_to_first_batch", firsts, "s")
    record("data.seconds_per_epoch_batching_only", datas, "s")
    record("data.seconds_per_epoch_dataloader_before", loaders, "s")


def _median_ms(fn, reps: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(reps)) * 1000


def _adam_step(forward, parameters, x: torch.Tensor, y: torch.Tensor):
    """One Adam training step of `forward` on (x, y), as a closure to time."""
    opt = torch.optim.Adam(parameters)

    def step() -> None:
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench_layout() -> None:
    """Channels-last against NCHW: the default CNN's training step (batch 128), its no-grad
    pass per image at the old and new evaluation batch, and the GAN evaluator's features."""
    from ablab.config import load
    from ablab.evaluator import Evaluator
    from ablab.models import build

    torch.set_num_threads(THREADS)
    model = load(ROOT / "params.yaml").experiment("cnn").model
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for layout, last in (("nchw", False), ("channels_last", True)):
        torch.manual_seed(0)
        net = build(model.model_copy(update={"channels_last": last}), (1, 28, 28), 10)
        step = _adam_step(net, net.parameters(), x, y)
        steps = [_median_ms(step) for _ in range(REPS)]
        record(f"layout.cnn_train_step_ms_{layout}", steps, "ms")
        net.eval()
        size = 256 if last else 512  # the evaluation batch before and after
        images = torch.randn(size, 1, 28, 28)
        with torch.no_grad():
            per_image = [
                _median_ms(lambda n=net, x=images: n(x)) * 1000 / size for _ in range(REPS)
            ]
        record(f"layout.cnn_eval_us_per_image_{layout}_{size}", per_image, "us")
        evaluator = Evaluator((1, 28, 28), 10).eval()
        if not last:
            evaluator.net = evaluator.net.to(memory_format=torch.contiguous_format)
        size = 128 if last else 1000
        images = torch.rand(size, 1, 28, 28)
        with torch.no_grad():
            per_image = [
                _median_ms(lambda e=evaluator, x=images: e.features(x), reps=10) * 1000 / size
                for _ in range(REPS)
            ]
        record(f"layout.evaluator_us_per_image_{layout}_{size}", per_image, "us")


ALLOCATOR_PROBE = """
import sys, tempfile
from pathlib import Path
from ablab.allocator import keep_freed_memory
from ablab.config import load
from ablab.train import train
keep_freed_memory()
params = load(Path(sys.argv[1]), ["experiments.cnn.train.max_epochs=2", "train.log_model=false",
                                  "mlflow_experiment=bench"])
result = train(params.experiment("cnn"), Path(sys.argv[2]), "bench", Path(sys.argv[3]))
print(sum(row["epoch_seconds"] for row in result.history) / len(result.history))
"""


def bench_allocator(root: Path) -> None:
    """The default CNN (all 54,000 images, 2 epochs) in a fresh process, with glibc's
    thresholds raised (ablab's default) and left alone (ABLAB_KEEP_FREED_MEMORY=0)."""
    seconds: dict[str, list[float]] = {"kept": [], "glibc_default": []}
    for _ in range(max(REPS // 2, 1)):
        for label, flag in (("kept", "1"), ("glibc_default", "0")):
            out = subprocess.run(
                [sys.executable, "-c", ALLOCATOR_PROBE, str(ROOT / "params.yaml"), str(root),
                 str(ROOT / "data" / "processed")],
                env={**os.environ, "ABLAB_KEEP_FREED_MEMORY": flag},
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            seconds[label].append(float(out.stdout.strip().splitlines()[-1]))
    for label, values in seconds.items():
        record(f"allocator.cnn_epoch_seconds_{label}", values, "s")


def bench_text() -> None:
    """The tweets' LSTM: training tokens per second with uniformly shuffled batches and with
    length buckets (both packed, so padding never enters the recurrence)."""
    from ablab.config import load
    from ablab.data.datamodules import bucketed, shuffled
    from ablab.families import family

    torch.set_num_threads(THREADS)
    exp = load(ROOT / "params.yaml").experiment("lstm")
    data = family(exp.task).data(exp, ROOT / "data" / "processed")
    data.setup()
    tokens, lengths, labels = data.tensors["train"].tensors
    bs, steps = exp.train.batch_size, 60
    orders = {"shuffled": shuffled(len(tokens), bs, torch.Generator().manual_seed(0)),
              "bucketed": bucketed(lengths, bs, exp.train.length_buckets,
                                   torch.Generator().manual_seed(0))}  # fmt: skip
    rates: dict[str, list[float]] = {k: [] for k in orders}
    for _ in range(REPS):
        for label, order in orders.items():
            net = family(exp.task).module(exp, data).net
            opt = torch.optim.Adam(net.parameters(), lr=exp.train.lr)
            count, start = 0, time.perf_counter()
            for index in order()[:steps]:
                length = lengths[index]
                loss = F.cross_entropy(net(tokens[index][:, : int(length.max())], length),
                                       labels[index])  # fmt: skip
                opt.zero_grad()
                loss.backward()
                opt.step()
                count += int(length.sum())
            rates[label].append(count / (time.perf_counter() - start))
    for label, values in rates.items():
        record(f"text.lstm_tokens_per_second_{label}", values, "tokens/s")


def bench_lightning_floor() -> None:
    """Lightning's own cost per step: a linear model (almost no compute) on 20k random images,
    batch 128, in a plain loop and in a bare Lightning Trainer (no callbacks, no logger)."""
    import logging

    import lightning.pytorch as pl

    from ablab.data.datamodules import Batches, shuffled

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(THREADS)
    n = 20000
    dataset = torch.utils.data.TensorDataset(torch.randn(n, 784), torch.randint(0, 10, (n,)))
    steps = (n + 127) // 128

    class Linear(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(784, 10)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters())

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, *_) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *_) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    plain, light = [], []
    for _ in range(REPS):
        net = torch.nn.Linear(784, 10)
        opt = torch.optim.Adam(net.parameters())
        x, y = dataset.tensors
        start = time.perf_counter()
        for index in torch.randperm(n).split(128):
            loss = F.cross_entropy(net(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
        plain.append((time.perf_counter() - start) / steps * 1000)
        clock = Clock()
        trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False,
                             callbacks=[clock])  # fmt: skip
        loader = Batches(dataset, 128, shuffled(n, 128, torch.Generator().manual_seed(0)))
        trainer.fit(Linear(), train_dataloaders=loader)
        light.append(clock.seconds[-1] / steps * 1000)
    record("lightning.plain_ms_per_step", plain, "ms")
    record("lightning.trainer_ms_per_step", light, "ms")
    record("lightning.floor_ms_per_step", [a - b for a, b in zip(light, plain, strict=True)],
           "ms")  # fmt: skip


def bench_tracking(root: Path) -> None:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ablab import tracking

    def per_metric_and_epoch(client: MlflowClient, run_id: str) -> tuple[float, float, float]:
        n = 30
        start = time.perf_counter()
        for i in range(n):
            client.log_metric(run_id, "m", float(i), step=i)
        single = (time.perf_counter() - start) / n
        now = int(time.time() * 1000)
        batch = [Metric(k, 1.0, now, 0) for k in ("a", "b", "c", "d", "e", "f")]
        sync = min(_timed(lambda: client.log_batch(run_id, metrics=batch, synchronous=True))
                   for _ in range(10))  # fmt: skip
        start = time.perf_counter()
        ops = [client.log_batch(run_id, metrics=batch, synchronous=False) for _ in range(10)]
        for op in ops:
            op.wait()
        async_ = (time.perf_counter() - start) / 10
        return single, sync, async_

    experiment_id = tracking.use_store(root, "bench")
    client = MlflowClient()
    run = client.create_run(experiment_id)
    single, sync, async_ = per_metric_and_epoch(client, run.info.run_id)
    record("tracking.sqlite_seconds_per_log_metric", single, "s")
    record("tracking.sqlite_seconds_per_epoch_batch", sync, "s")
    record("tracking.sqlite_seconds_per_epoch_batch_async", async_, "s")
    port = 5731
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/server.db", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import urllib.request

        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("bench-server"))
        single, sync, async_ = per_metric_and_epoch(client, run.info.run_id)
        record("tracking.server_seconds_per_log_metric", single, "s")
        record("tracking.server_seconds_per_epoch_batch", sync, "s")
        record("tracking.server_seconds_per_epoch_batch_async", async_, "s")
    finally:
        server.terminate()
        server.wait(timeout=30)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def bench_growth(root: Path) -> None:
    for size in (1000, 10000, 54000):
        times = [ablab_epoch("mlp", size, root) for _ in range(3)]
        record(f"growth.mlp_epoch_seconds_{size}", times, "s")
    status = subprocess.run(["dvc", "status", "-q"], cwd=ROOT, capture_output=True)
    if status.returncode:  # a repro here would train: measure only where all is up to date
        print("dvc: the pipeline is not up to date (make run first): no-op repro not measured")
        return
    noop = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=ROOT, capture_output=True)
        noop.append(time.perf_counter() - start)
    record("dvc.noop_repro_seconds", noop, "s")


def bench_search(root: Path) -> None:
    """Tune the tiny digits mlp twice on the same trials: pruned and not; trials per minute."""
    import yaml

    params = {
        "seed": 0, "mlflow_experiment": "bench-tune",
        "data": {"dataset": "digits"},
        "train": {"max_epochs": 15, "threads": 1, "log_model": False,
                  "early_stopping": {"enabled": False}},
        "experiments": {"mlp": {"task": "classify",
                                "model": {"arch": "mlp", "depth": 1, "width": 64}}},
        "tune": {"experiment": "mlp", "n_trials": 12, "sampler": "random", "seed": 3,
                 "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
                           "model.width": {"type": "categorical", "choices": [16, 64, 256]}}},
    }  # fmt: skip
    folder = root / "search"
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "ABLAB_ROOT": str(folder)}

    def ablab(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "ablab.cli", *args,
                              "--params", str(folder / "params.yaml")],
                             env=env, capture_output=True, text=True, check=True)  # fmt: skip
        return out.stdout

    ablab("fetch")
    ablab("preprocess")
    results = {}
    for label, extra in (("pruned", []), ("unpruned", ["--set", "tune.pruner=none"])):
        start = time.perf_counter()
        ablab("tune", "--set", f"tune.study_name={label}", *extra)
        seconds = time.perf_counter() - start
        metrics = json.loads((folder / "results" / "tune" / "metrics.json").read_text())
        results[label] = (metrics, seconds)
    record("search.epochs_pruned", float(results["pruned"][0]["epochs_trained"]))
    record("search.epochs_unpruned", float(results["unpruned"][0]["epochs_trained"]))
    record("search.best_pruned", results["pruned"][0]["best_value"])
    record("search.best_unpruned", results["unpruned"][0]["best_value"])
    for workers in (1, 2):
        start = time.perf_counter()
        ablab("tune", "--workers", str(workers), "--set", f"tune.study_name=w{workers}",
              "--set", "tune.pruner=none")  # fmt: skip
        minutes = (time.perf_counter() - start) / 60
        record(f"search.trials_per_minute_{workers}_workers", 12 / minutes)


def bench_compile() -> None:
    """torch.compile (inductor) on the default MLP and CNN training steps: the first step's
    seconds (the compile) and the median step after it, against eager."""
    import torch._dynamo
    import torch._inductor.config

    from ablab.config import load
    from ablab.models import build

    torch.set_num_threads(THREADS)
    params = load(ROOT / "params.yaml")
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    # a cold compile, as a fresh machine pays it: no inductor cache from an earlier run
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ablab-inductor-")
    torch._inductor.config.fx_graph_cache = False
    for name in ("mlp", "cnn"):
        torch._dynamo.reset()
        for label, compiled in (("eager", False), ("compiled", True)):
            torch.manual_seed(0)
            net = build(params.experiment(name).model, (1, 28, 28), 10)
            forward = torch.compile(net) if compiled else net
            step = _adam_step(forward, net.parameters(), x, y)
            record(f"compile.{name}_first_step_seconds_{label}", _timed(step), "s")
            record(f"compile.{name}_step_ms_{label}", _median_ms(step), "ms")


PROFILED = (("mlp", 20000), ("cnn", 10000), ("lstm", 10000), ("gan", 2000))
PROFILES: dict[str, list[str]] = {}


def bench_profile(root: Path) -> None:
    """One epoch of a default unit of each kind through ablab's train path, under
    torch.profiler (the top operators by own CPU time) and Lightning's SimpleProfiler (the top
    Lightning actions by total time): markdown for BENCHMARKS.md."""
    from lightning.pytorch.profilers import SimpleProfiler
    from torch.profiler import ProfilerActivity, profile

    from ablab.config import load
    from ablab.train import train

    for name, subset in PROFILED:
        overrides = [f"experiments.{name}.data.subset={subset}",
                     f"experiments.{name}.train.max_epochs=1", "train.log_model=false",
                     f"train.threads={THREADS}", "mlflow_experiment=bench"]  # fmt: skip
        params = load(ROOT / "params.yaml", overrides)
        lightning = SimpleProfiler()
        with profile(activities=[ProfilerActivity.CPU]) as torch_profile:
            start = time.perf_counter()
            train(params.experiment(name), root, "bench", ROOT / "data" / "processed",
                  profiler=lightning)  # fmt: skip
            seconds = time.perf_counter() - start
        ops = sorted(torch_profile.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]
        total = sum(e.self_cpu_time_total for e in torch_profile.key_averages())
        actions = sorted(lightning.recorded_durations.items(), key=lambda kv: -sum(kv[1]))[:6]
        PROFILES[name] = [
            f"**{name}** ({subset} examples, one epoch and the test, {seconds:.1f} s under the "
            "profilers). Operators by own CPU time: "
            + ", ".join(f"`{e.key}` {e.self_cpu_time_total / 1e6:.2f} s "
                        f"({100 * e.self_cpu_time_total / total:.0f}%)" for e in ops)
            + ". Lightning actions by total time: "
            + ", ".join(f"`{a}` {sum(d):.2f} s ({len(d)} calls)" for a, d in actions) + ".",
        ]  # fmt: skip
        print("\n".join(PROFILES[name]), flush=True)


def write_markdown() -> None:
    import lightning
    import mlflow
    import optuna

    lines = [
        "# Benchmarks",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, lightning {lightning.__version__}, mlflow "
        f"{mlflow.__version__}, optuna {optuna.__version__}, {THREADS} threads. `make bench` "
        f"regenerates this page and `bench/results.json`. Each figure is the median over "
        f"{REPS} repetitions (3 for growth and dvc), with min-max; the ablab and plain paths "
        "are interleaved.",
        "",
        "| figure | median | min | max | unit |",
        "|---|---|---|---|---|",
    ]
    for key, value in RESULTS.items():
        if key.endswith((".min", ".max", ".unit")):
            continue
        lo = RESULTS.get(f"{key}.min", "")
        hi = RESULTS.get(f"{key}.max", "")
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        lines.append(f"| `{key}` | {fmt(value)} | {fmt(lo)} | {fmt(hi)} | "
                     f"{RESULTS.get(f'{key}.unit', '')} |")  # fmt: skip
    lines += ["", "## Top costs of one unit of each kind", ""]
    for profile_lines in PROFILES.values():
        lines += [*profile_lines, ""]
    lines += ["## Where the default run's time goes", "",
              "Every unit of the last `dvc repro` in this checkout's MLflow store "
              "(`python bench/units.py` prints it alone):", "", *units.table()]  # fmt: skip
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n" + NOTES)


NOTES = """
## Reading it

- `*.overhead_ratio`: seconds per epoch (training and validation) through ablab's train path
  (Lightning, the MLflow epoch logger, checkpointing) over a minimal PyTorch loop with the same
  model, data tensors, batch size and threads. MLP on 20k images, CNN on 10k.
- `*.fraction_of_matmul_peak`: FLOPs of one training step (counted by
  `torch.utils.flop_counter`, forward and backward) times the plain loop's steps per second,
  over `torch.mm` of 2048x2048 matrices with the same threads. That reading is one
  matmul's best of five and moves between runs here (1.6e11 to 2.4e11 FLOP/s on the same
  day), and the fractions with it: compare plain epoch seconds across runs instead.
- `tracking.*`: one `log_metric`, and one epoch's batch of 6 metrics synchronous or
  asynchronous, to the SQLite store and to a local `mlflow server`.
- `search.*`: the same 12 random-search trials on digits with median pruning and without;
  trials per minute with 1 and 2 worker processes (threads per worker = cores / workers).
- `growth.*`: MLP seconds per epoch at 1k, 10k and 54k training images;
  `dvc.noop_repro_seconds` is a `dvc repro` with nothing to do (measured only where
  `dvc status` says all is up to date).

## What changed in ablab because of it

Each before/after pair below is in the table above, from the same `make bench` run.

- Batches without a DataLoader (`ablab.data.datamodules.Batches`): a DataLoader over a
  BatchSampler hands the TensorDataset a list of 128 Python ints per batch;
  indexing each tensor with a slice of the epoch's permutation does the same work in one
  call (`data.seconds_per_epoch_dataloader_before` against
  `data.seconds_per_epoch_batching_only`, 422 batches). Bitwise neutral: the permutation
  is drawn as RandomSampler draws it and one global random number per pass, as the
  DataLoader's iterator did (a test compares both batch for batch, global stream included).
- Channels-last CNNs (`model.channels_last`, on by default for `cnn` and for the GAN
  evaluator): the default CNN's training step `layout.cnn_train_step_ms_nchw` ->
  `layout.cnn_train_step_ms_channels_last` (oneDNN's blocked convolutions). Not bitwise
  neutral: convolutions round differently; `channels_last: false` gives the old numbers.
  DCGAN, CycleGAN and conv-autoencoder layers measured no faster or slower in it (ConvTranspose2d
  and InstanceNorm: 0.7-1.2x), so they stay NCHW.
- Evaluation batches of a channels-last CNN: 256 images (512 before; past 256 its activations
  fall out of cache): `layout.cnn_eval_us_per_image_nchw_512` ->
  `layout.cnn_eval_us_per_image_channels_last_256`. The GAN evaluator's features: 128 images
  a pass (1000 before), `layout.evaluator_us_per_image_nchw_1000` ->
  `layout.evaluator_us_per_image_channels_last_128`; a GAN unit's test (2 x 10,000 images
  through it) went from ~6 s to ~1.5 s.
- Text: sequences were already packed (padding never entered the LSTM), but a random batch
  of tweets runs as many recurrent steps as its longest tweet. `train.length_buckets: 50`
  sorts pools of 50 shuffled batches by length before cutting them:
  `text.lstm_tokens_per_second_shuffled` -> `text.lstm_tokens_per_second_bucketed`. Not
  bitwise neutral (other batches); `length_buckets: 0` gives the old ones.
- glibc gave the freed blocks of a batch's large tensors back to the OS, and the next batch
  faulted their pages in again: in this VM a 12.8 MB `fill_` took 17 ms (the CNN unit's top
  operator under the profiler). `ablab.allocator` raises glibc's mmap and trim thresholds
  once per process (`allocator.cnn_epoch_seconds_glibc_default` ->
  `allocator.cnn_epoch_seconds_kept`, the default CNN on all 54,000 images). Bitwise neutral.
- A no-op `dvc repro` took 2.5 s: DVC reads params.yaml once per stage that depends on it
  (27 of them, plus dvc.yaml and dvc.lock), and ruamel.yaml parsed it in pure Python (37 ms
  a read). With `ruamel.yaml.clib` installed (now in requirements.lock) DVC's safe loader uses
  libyaml (9 ms a read): 1.2 s.
- `torch.compile` (inductor) was measured and not adopted: `compile.*` shows its first step
  (the compile) against the step time it buys; the default run's units train for seconds.
  Folding batch norm into the convolutions for evaluation was not tried: evaluation is
  under a tenth of a CNN unit now.
- The classification task logged `train_loss` and `train_objective` with `self.log` every step
  (epoch means, but Lightning's logging machinery runs per call, ~0.5 ms each here). They are
  now summed in the task and handed to the epoch logger once per epoch: MLP overhead ratio
  1.51 -> 1.19-1.24, CNN 1.077 -> 1.06-1.07 (two runs each, same clone and data).
- Evaluation batches went from 1024 to 512: at 1024 the CNN's activations fall out of cache
  and evaluation took 1.3x as long per image.
- Per-layer gradient norms (for `ablab diagnose`, every network) on every step cost the MLP's
  train path 7% (overhead ratio 1.218 -> 1.301, CNN 1.075 -> 1.118, one run each); sampled
  every 8th step (`GRAD_NORM_EVERY`) they are within the noise: MLP 1.198 / 1.195 before,
  1.201 / 1.237 after, CNN 1.01 / 1.10 before, 1.11 / 1.05 after (interleaved pairs).

## Where the rest goes

- Lightning's own loop (hooks, optimizer closure, batch transfer, progress tracking) costs
  `lightning.floor_ms_per_step` over a plain loop even for a bare module with no callbacks
  and no logger. Against the MLP's plain ~1.9 ms step that alone is a ratio of ~1.13, so
  1.10 is out of reach while training runs in Lightning's Trainer; the rest of the MLP's
  overhead is ablab's callbacks (epoch logger, checkpoint, early stopping), the loss
  bookkeeping and the gradient-norm sample every 8th step. It is a fixed cost per step, so it
  matters for tiny models (0.16 GFLOP per MLP step against 0.83 for the CNN).
- Every DVC stage is a process that imports torch, Lightning and MLflow before its first run:
  ~4.5 s here (`python -X importtime`: Lightning 2.2 s of it, torch._dynamo 1.0 s pulled in by
  lightning.fabric, MLflow 0.9 s). The default run has ~24 such processes: ~2 minutes.
  Fewer processes (suites as workers that train many units) is the cure, not lazier imports.
- The CNN's step is memory-bound elementwise work (the profile above): batch norm, ReLU and
  max-pool over 128x16x28x28 maps, forward and backward, each ~1-2 ms at ~5 GB/s.
- Logging per epoch costs ~2 ms on SQLite and ~20 ms on a local server, against 0.4-1.5 s per
  epoch: under 2% even with a server. Asynchronous logging is slower here for single small
  batches (a thread hand-off per call) and is not used.
- Two workers tune fewer trials per minute than one on these 1-second trials: each worker
  process pays ~5 s to import Lightning. Use workers for trials that take minutes.
"""


def main() -> None:
    from ablab.allocator import keep_freed_memory

    keep_freed_memory()  # as the ablab command does
    with tempfile.TemporaryDirectory(prefix="ablab-bench-") as tmp:
        root = Path(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        sections = {"overhead": bench_overhead, "data": lambda _: bench_data(),
                    "layout": lambda _: bench_layout(), "text": lambda _: bench_text(),
                    "lightning": lambda _: bench_lightning_floor(),
                    "compile": lambda _: bench_compile(), "allocator": bench_allocator,
                    "profile": bench_profile, "tracking": bench_tracking,
                    "growth": bench_growth, "search": bench_search}  # fmt: skip
        chosen = os.environ.get("BENCH_ONLY", ",".join(sections)).split(",")
        for name in chosen:  # BENCH_ONLY=overhead,data runs a part (results.json unchanged)
            sections[name](root)
    if len(chosen) < len(sections):
        print(json.dumps(RESULTS, indent=2))
        return
    (ROOT / "bench" / "results.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
    write_markdown()
    print("\n".join(units.table()))
    print("wrote bench/results.json and BENCHMARKS.md")


if __name__ == "__main__":
    main()
