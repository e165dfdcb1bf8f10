"""What it costs per unit to coordinate suite workers through the team set-up (PostgreSQL for
the Optuna study, an `mlflow server` on PostgreSQL serving artifacts), at 1, 2, 4 and 8
worker processes on this machine, and whether PostgreSQL's connections stay flat.

    python bench/coordination.py             # prints the table; --json for the numbers

Each worker runs ablab's own unit loop (`units.work`: Optuna ask and tell, the duplicate
check, the heartbeat thread) over a study of tiny units whose "training" is what every unit
sends through the server: its run created with ablab's tags, its ~60 params, two epochs of
metrics, three small artifacts (a 30 kB figure, params.yaml, diagnosis.md), the run ended.
No network is trained, so the seconds per unit are coordination alone: a unit's worker-
seconds (a worker's wall time over the units it took, its start-up left out), and the team's
wall seconds per unit (first unit's start to last unit's end, over all units). PostgreSQL's
client connections are sampled every half second while 8 workers take 200 units."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
UNITS_PER_WORKER = int(os.environ.get("BENCH_UNITS_PER_WORKER", 25))  # 200 units at 8
FIGURE = os.urandom(30_000)  # a learning-curves PNG's size


def _worker(storage_url: str, server: str, study_name: str, runs_json: str, out) -> None:
    """One worker process: ablab's unit loop over the study until nothing waits."""
    os.environ["MLFLOW_TRACKING_URI"] = server
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    from ablab import studies, tracking
    from ablab import units as unit_loop
    from ablab.config import SuiteRun

    storage = studies.open_storage(storage_url, heartbeat_seconds=10, max_retry=2)
    study = optuna.load_study(study_name=study_name, storage=storage)
    experiment_id = tracking.use_store(ROOT, "bench-coordination")
    client = MlflowClient()
    runs = [SuiteRun.model_validate(r) for r in json.loads(runs_json)]
    folder = Path(tempfile.mkdtemp(prefix="ablab-coord-"))
    (folder / "learning_curves.png").write_bytes(FIGURE)
    (folder / "params.yaml").write_text("x: 1\n" * 60)
    (folder / "diagnosis.md").write_text("no finding\n")
    params = tracking.flatten(runs[0].experiment.model_dump(mode="json"))
    done = [0]

    def train_unit(run: SuiteRun):
        unit_loop.finished_units(study, runs)  # the progress line's count, as a suite does
        tags = tracking.run_tags(run.experiment.name, run.seed, "hash", "train", ROOT,
                                 suite=run.suite, variant=run.variant)  # fmt: skip
        active = client.create_run(experiment_id, run_name=f"{run.variant}/{run.seed}", tags=tags)
        run_id = active.info.run_id
        tracking.log_params(run_id, params)
        for epoch in range(2):
            epoch_values = {"train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5}
            tracking.log_metrics(run_id, epoch_values, epoch)
        tracking.log_metrics(run_id, {"test_accuracy": 0.5, "test_loss": 1.0})
        for name in ("learning_curves.png", "params.yaml", "diagnosis.md"):
            client.log_artifact(run_id, str(folder / name))
        client.set_terminated(run_id)
        done[0] += 1
        row = {"variant": run.variant, "seed": run.seed, "status": "finished", "run_id": run_id,
               "summary": {"test_accuracy": 0.5}, "history": []}  # fmt: skip
        return row, None

    started, began = time.perf_counter(), time.time()
    if os.environ.get("BENCH_PROFILE"):  # where a unit's seconds go: cumulative top 25
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(unit_loop.work, study, runs, train_unit, "test_accuracy", 10, False)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    else:
        unit_loop.work(study, runs, train_unit, "test_accuracy", heartbeat=10, wait=False)
    out.put((done[0], time.perf_counter() - started, began, time.time()))
    mlflow.end_run()


def measure(workers: int, storage_url: str, server: str, postgres=None) -> dict:
    import optuna

    from ablab import studies, units
    from ablab.config.load import validate
    from tests.conftest import TINY_PARAMS

    tree = json.loads(json.dumps(TINY_PARAMS))
    count = workers * UNITS_PER_WORKER
    tree["suites"] = {"coord": {"experiment": "mlp", "seeds": list(range(count)),
                                "variants": {"a": {}}}}  # fmt: skip
    params = validate(tree, "bench")
    runs = params.suite_runs("coord")
    storage = studies.open_storage(storage_url, 10, 2)
    name = f"coordination-{workers}-{time.time_ns()}"
    study = optuna.create_study(storage=storage, study_name=name)
    units.enqueue_missing(study, runs)
    runs_json = json.dumps([r.model_dump(mode="json") for r in runs])
    context = mp.get_context("spawn")
    out = context.Queue()
    procs = [context.Process(target=_worker, args=(storage_url, server, name, runs_json, out))
             for _ in range(workers)]  # fmt: skip
    connections = []
    for p in procs:
        p.start()
    results = []
    while len(results) < workers:
        if postgres is not None:
            connections.append(postgres.connections())
        try:
            results.append(out.get(timeout=0.5))
        except Exception:
            pass
    for p in procs:
        p.join()
    trained = sum(r[0] for r in results)
    per_unit = sum(r[1] for r in results) / trained  # worker-seconds per unit
    # all workers together: from the first worker's first unit to the last one's end
    wall_per_unit = (max(r[3] for r in results) - min(r[2] for r in results)) / trained
    finished = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    return {"workers": workers, "units": trained, "complete": finished,
            "seconds_per_unit": round(per_unit, 4),
            "wall_seconds_per_unit": round(wall_per_unit, 4),
            "connections_min": min(connections, default=None),
            "connections_max": max(connections, default=None),
            "connections_first_10": connections[:10],
            "connections_last_10": connections[-10:]}  # fmt: skip


def main() -> None:
    from tests.conftest import free_port, wait_until_answers
    from tests.integration.postgres import Postgres

    database = Postgres().start()
    folder = Path(tempfile.mkdtemp(prefix="ablab-coord-server-"))
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2", "--backend-store-uri", database.database("mlflow"),
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    try:
        wait_until_answers(f"{server}/health", process, log=folder / "server.log")
        counts = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2,4,8").split(",")]
        rows = [measure(n, database.url, server, database) for n in counts]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        database.stop()
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
        return
    print("| workers | units | coordination per unit, a worker's seconds | wall seconds per "
          "unit, all workers | PostgreSQL connections (min-max) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['units']} | {r['seconds_per_unit']:.3f} | "
              f"{r['wall_seconds_per_unit']:.3f} | "
              f"{r['connections_min']}-{r['connections_max']} |")  # fmt: skip
    last = rows[-1]
    print(
        f"8 workers, connections over the run: first {last['connections_first_10']}, "
        f"last {last['connections_last_10']}"
    )


if __name__ == "__main__":
    main()
