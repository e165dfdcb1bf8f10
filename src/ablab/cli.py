"""The `ablab` command: the same functions the DVC stages call."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from ablab.allocator import keep_freed_memory
from ablab.config import DATASETS, ConfigError, load
from ablab.data.sources import DataError
from ablab.files import write_atomic


def _root() -> Path:
    return Path(os.environ.get("ABLAB_ROOT", Path.cwd()))


def cmd_datasets(args: argparse.Namespace) -> None:
    print("\n".join(load(args.params, args.set).datasets()))


def cmd_resolve(args: argparse.Namespace) -> None:
    """What every DVC stage reads of the params, resolved, under `--out` (data/): the datasets
    and their mirrors (datasets.json) and the preprocessing knobs (preprocess.json), which fetch
    and preprocess read, and one file per stage in resolved/ (ablab.config.stages). Params are
    validated first: a bad one writes nothing, and files already there stay as they were."""
    from ablab.config.stages import stage_inputs

    params = load(args.params, args.set)
    out = Path(args.out)
    names = params.datasets()
    sources = {n: params.data.sources[n].base_url for n in names if n in params.data.sources}
    files = {"datasets.json": {"datasets": names, "sources": sources},
             "preprocess.json": params.preprocess_knobs()}  # fmt: skip
    files.update({f"resolved/{path}": content for path, content in stage_inputs(params).items()})
    for path, content in files.items():
        text = json.dumps(content, indent=1, sort_keys=True) + "\n"
        target = out / path
        if not target.exists() or target.read_text() != text:  # DVC compares contents
            write_atomic(target, text)
    wanted = {out / path for path in files}
    for stale in (out / "resolved").rglob("*.json"):  # an experiment or suite removed
        if stale not in wanted:
            stale.unlink()
    print(f"resolved: {len(names)} datasets, {len(files) - 2} stages -> {out}/resolved")


def _datasets(args: argparse.Namespace, params) -> list[str]:
    """The datasets a fetch or preprocess works on: named, listed in --list (the `resolve`
    stage's output), else every one the params use."""
    if args.datasets:
        return args.datasets
    if args.list:
        return json.loads(Path(args.list).read_text())["datasets"]
    return params.datasets()


def cmd_fetch(args: argparse.Namespace) -> None:
    from ablab.data.sources import fetch

    params = load(args.params, args.set)
    for name in _datasets(args, params):
        source = params.data.sources.get(name)
        paths = fetch(name, _root() / "data" / "raw", base_url=source.base_url if source else None)
        print(f"{name}: {len(paths)} files verified in data/raw/{name}")


def cmd_preprocess(args: argparse.Namespace) -> None:
    from ablab.data.preprocess import preprocess_dataset

    params = load(args.params, args.set)
    root, knobs = _root(), params.preprocess_knobs()
    for name in _datasets(args, params):
        print(preprocess_dataset(name, root / "data" / "raw", root / "data" / "processed", knobs))


def cmd_evaluator(args: argparse.Namespace) -> None:
    from ablab.evaluator import train_evaluator

    params = load(args.params, args.set)
    # the DVC stage's output exists even when no dataset needs an evaluator
    (_root() / "data" / "evaluators").mkdir(parents=True, exist_ok=True)
    for name in args.datasets or params.evaluator.datasets:
        e = params.evaluator
        info = train_evaluator(_root() / "data" / "processed", name, e.epochs, e.seed)
        print(
            f"{name}: evaluator test accuracy {info['test_accuracy']:.4f}, real train vs test "
            f"frechet distance {info['real_frechet_distance']:.3f}, real test inception score "
            f"{info['real_inception_score']:.2f} -> data/evaluators/{name}.pt"
        )


def cmd_train(args: argparse.Namespace) -> None:
    params = load(args.params, args.set)
    names = args.experiments or list(params.experiments)
    for name in names:
        params.experiment(name)  # every name checked before any training starts
    from ablab.config import ENTRIES
    from ablab.families import DivergedError
    from ablab.train import run_experiment

    for name in names:
        called = run_name(name, args.set)
        # results/<experiment>/ belongs to DVC's train@<experiment>; a run outside DVC writes
        # beside it, under its own name, so DVC's outputs stay what the pipeline made
        where = Path("results") / (name if under_dvc() else Path("adhoc") / called)
        try:
            metrics = run_experiment(params, name, _root(), folder=_root() / where,
                                     run_name=called)  # fmt: skip
        except DivergedError as exc:
            print(f"error: experiment {name} {exc.kind}: {exc} (its MLflow run is FAILED)",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(1) from None
        keys = ENTRIES[params.experiment(name).task].test_metrics
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
        print(f"{name}: {shown} ({where}/metrics.json; the runs: ablab ui)")


def under_dvc() -> bool:
    """Whether DVC runs this command as a stage (it sets DVC_STAGE for every stage)."""
    return bool(os.environ.get("DVC_STAGE"))


def run_name(experiment: str, overrides: list[str]) -> str:
    """An `ablab train` run's MLflow name: the experiment, and the --set overrides that apply
    to it (its own keys without their prefix), so that the runs table tells runs apart:
    `cnn/train.lr=0.003`."""
    own = f"experiments.{experiment}."
    shown = [o.removeprefix(own) for o in overrides
             if o.startswith(own) or not o.startswith("experiments.")]  # fmt: skip
    return "/".join([experiment, ",".join(shown)]) if shown else experiment


def cmd_suite(args: argparse.Namespace) -> None:
    committed = load(args.params, args.set)
    params = committed.full_size() if args.full else committed
    names = args.suites or list(params.suites)
    for name in names:
        params.suite_runs(name)  # every name checked before any training starts
    commit = _check_record(args, committed, names) if args.record else ""
    from ablab.layout import suites_dir
    from ablab.pretrain import run_pretrain
    from ablab.suite import run_suite, variant_means

    recipe = "full" if args.full else "default"
    if args.worker:  # started by `ablab suite NAME --workers N`
        from ablab.suite import run_worker

        threads = int(os.environ.get("ABLAB_SUITE_THREADS", 0)) or None
        for name in names:
            run_worker(params, name, _root(), os.environ["ABLAB_SUITE_PARENT"], recipe, threads)
        return
    for name in names:
        run_pretrain(params, name, _root(), recipe=recipe)  # nothing, where already done
        command = [sys.executable, "-m", "ablab.cli", "suite", name, "--worker",
                   "--params", args.params, *(["--full"] if args.full else []),
                   *(item for s in args.set for item in ("--set", s))]  # fmt: skip
        report = run_suite(params, name, _root(), results_dir=suites_dir(_root(), recipe),
                           recipe=recipe, workers=args.workers,
                           worker_command=command)  # fmt: skip
        for variant, means in variant_means(report).items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in means.items() if k != "diverged")
            print(f"{name}/{variant}: {shown or 'all seeds diverged'}")
        if not args.full and not under_dvc():
            print(f"note: results/suites/{name}/ is the output of DVC's stage suite@{name}: "
                  "`dvc status` shows it changed until `dvc repro` (which reuses every unit "
                  "already trained) writes the pipeline's own")  # fmt: skip
        if args.record:
            _record(committed, name, report, commit, args.as_name)


def _check_record(args: argparse.Namespace, params, names: list[str]) -> str:
    """--record's conditions, checked before anything trains; the commit the record names."""
    from ablab.records import clean_commit, spec

    if not args.full:
        raise ConfigError("--record: a record is of a suite's full recipe: add --full")
    if args.set:
        raise ConfigError("--record takes no --set: a record is of the committed recipe")
    if args.as_name and len(names) != 1:
        raise ConfigError("--as names one record: give one suite")
    for name in names:
        spec(params, name)  # ConfigError where the suite says nothing to record
    return clean_commit(_root())


def _record(params, suite: str, report: dict, commit: str, as_name: str | None) -> None:
    """reproductions/<name>.json from the finished full recipe and its units' runs."""
    from mlflow.tracking import MlflowClient

    from ablab import records

    client = MlflowClient()
    machines = []
    for run in report["runs"]:
        if run["run_id"]:
            tags = client.get_run(run["run_id"]).data.tags
            seen = {"host": tags.get("ablab.host", ""), "cpu": tags.get("ablab.machine", ""),
                    "accelerator": tags.get("ablab.device", "")}  # fmt: skip
            if seen not in machines:
                machines.append(seen)
    seconds = report["seconds"] + records.pretraining_seconds(client, _root(), suite)
    record = records.build(params, suite, report, commit, seconds, machines, as_name)
    path = records.write(_root(), record)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in record["result"].items())
    print(f"record: {path.relative_to(_root())}: {shown}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    params = load(args.params, args.set)
    names = args.suites or list(params.suites)
    for name in names:
        params.suite_runs(name)  # every name checked before any training starts
    from ablab.pretrain import pretrained_dir, run_pretrain

    pretrained_dir(_root(), "").mkdir(parents=True, exist_ok=True)  # the stage's output, always
    for name in names:
        runs = run_pretrain(params, name, _root())
        print(f"{name}: {len(runs)} pretrained networks in results/pretrained/{name}")


def cmd_report(args: argparse.Namespace) -> None:
    from ablab.report import run_report

    params = load(args.params, args.set)
    recipe = "full" if args.full else "default"
    tables = run_report(params, _root(), recipe)
    where = "results/full/report" if args.full else "results/report"
    print(f"report: {len(tables)} suites -> {where}/README.md (and an MLflow run)")


def cmd_claims(args: argparse.Namespace) -> None:
    from ablab import claims

    params = load(args.params, args.set)
    rulings = claims.rule(params, _root())
    if args.write:
        claims.write(rulings, Path(args.write))
        from ablab import tracking
        from ablab.layout import suites_dir

        tracking.use_store(_root(), params.mlflow_experiment)
        claims.tag_suites(rulings, suites_dir(_root()))
        tally = ", ".join(f"{n} {v}" for v, n in claims.counts(rulings).items())
        print(f"claims: {tally} -> {args.write}/claims.md")
        return
    if args.id:
        found = [r for r in rulings if r.cid == args.id]
        if not found:
            raise ConfigError(f"{args.params}: no claim {args.id!r}; claims: "
                              f"{', '.join(r.cid for r in rulings)}")  # fmt: skip
        print(claims.detail(found[0], _run_names(params, _root())), end="")
        return
    print(claims.markdown(rulings), end="")


def _run_names(params, root: Path) -> dict[str, str]:
    """Run id -> "name (its address in the UI)" for the runs of the project's store."""
    from mlflow.tracking import MlflowClient

    from ablab import tracking

    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    runs = MlflowClient().search_runs([experiment_id], max_results=50000)
    return {r.info.run_id: f"{r.info.run_name} ({tracking.run_url(experiment_id, r.info.run_id)})"
            for r in runs}  # fmt: skip


def cmd_reproductions(args: argparse.Namespace) -> None:
    from ablab import records

    params = load(args.params, args.set)
    text = records.table(params, records.load_all(_root()))
    if args.write:
        changed = records.write_readme(Path(args.write), text)
        print(f"{args.write}: the reproductions table {'rewritten' if changed else 'as it was'}")
        return
    print(text, end="")


def cmd_tune(args: argparse.Namespace) -> None:
    from ablab import tune

    params = load(args.params, args.set)
    if params.tune is None:
        raise ConfigError(f"{args.params}: no tune section")
    root = _root()
    if args.worker:  # started by `ablab tune --workers N`, or joining from another machine
        study = tune.load_study(params, root)
        parent = os.environ.get("ABLAB_TUNE_PARENT") or tune.parent_run(params, root, study)
        threads = int(os.environ.get("ABLAB_TUNE_THREADS", os.cpu_count() or 1))
        tune.work(params, root, parent, threads)
        return
    metrics = tune.run_tune(params, root, args.workers, args.params, args.set)
    print("tune: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))


def cmd_tuned(args: argparse.Namespace) -> None:
    from ablab.tuned import train_tuned

    metrics = train_tuned(load(args.params, args.set), _root())
    print(f"tuned: {metrics['registered']} (results/tuned/metrics.json)")


def cmd_diagnose(args: argparse.Namespace) -> None:
    from ablab.doctor import run_diagnose

    params = load(args.params, args.set)
    for line in run_diagnose(params, _root(), args.run, args.lr_find):
        print(line)


def cmd_explain(args: argparse.Namespace) -> None:
    params = load(args.params, args.set)
    targets = args.models or params.explain.experiments
    if not targets:
        raise ConfigError(f"{args.params}: explain.experiments is empty; name a model to explain")
    from ablab.explain.job import run_explain

    for what in targets:
        metrics = run_explain(params, what, _root())
        orders = [m for m in (*params.explain.methods, "random", "intensity")
                  if f"{m}_deletion_auc" in metrics]  # fmt: skip
        shown = ", ".join(
            f"{m} {metrics[f'{m}_deletion_auc']:.3f}/{metrics[f'{m}_insertion_auc']:.3f}"
            for m in orders
        )
        print(f"{what}: deletion/insertion AUC: {shown}")


def cmd_ui(args: argparse.Namespace) -> None:
    from ablab.tracking import artifact_root, experiment_url, store_root, tracking_uri, use_store

    root = _root()
    (store_root(root) / "mlruns").mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", tracking_uri(root),
        "--default-artifact-root", artifact_root(root),
        "--host", "127.0.0.1", "--port", str(args.port),
        # one worker for one user's SQLite store: MLflow's default 4 take twice as long to start
        "--workers", "1",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    try:
        name = load(args.params, args.set).mlflow_experiment
        where = f"{base}; the runs: {experiment_url(base, use_store(root, name))}"
    except ConfigError:  # no (valid) params here: the UI still serves the store
        where = base
    _serve(command, f"MLflow UI on {where}")


def cmd_dashboard(args: argparse.Namespace) -> None:
    from ablab.studies import masked, open_storage, storage_url

    params = load(args.params, args.set)
    if params.tune is None:
        raise ConfigError(f"{args.params}: no tune section (the dashboard shows its study)")
    url = storage_url(params.tune, _root())
    command = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", url,
               "--host", "127.0.0.1", "--port", str(args.port)]  # fmt: skip
    base = f"http://127.0.0.1:{args.port}/dashboard"
    name = params.tune.study_name
    try:  # the storage also holds every suite's study: open on the search's own
        study_id = open_storage(url, 60, 0).get_study_id_from_name(name)
        where = f"{base}/studies/{study_id} (the tune study {name!r}; every study: {base})"
    except KeyError:
        where = f"{base} (no tune study {name!r} yet: `ablab tune` makes it)"
    _serve(command, f"Optuna dashboard of {masked(url)} on {where}")


def _serve(command: list[str], what: str) -> None:
    """Run a server until it exits, Ctrl-C or SIGTERM; its exit code is ablab's."""
    print(f"{what} (Ctrl-C stops it)", flush=True)
    # its own process group, so that stopping ablab (Ctrl-C or SIGTERM) stops the server's
    # workers too, not only the process that started them
    server = subprocess.Popen(command, start_new_session=True)

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        code = server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(server)
    raise SystemExit(code)


def _stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process's group, SIGKILL to what is left after `grace` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:  # workers may outlive the leader
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


EXAMPLES = {
    "datasets": "ablab datasets",
    "resolve": "ablab resolve",
    "fetch": "ablab fetch mnist fashion_mnist",
    "preprocess": "ablab preprocess mnist",
    "evaluator": "ablab evaluator mnist",
    "train": "ablab train cnn --set experiments.cnn.train.lr=0.003",
    "suite": "ablab suite regularization          # --full: the full-size recipe",
    "pretrain": "ablab pretrain transfer",
    "report": "ablab report",
    "reproductions": "ablab reproductions --write README.md",
    "claims": "ablab claims C10",
    "tune": "ablab tune --workers 2",
    "tuned": "ablab tuned",
    "diagnose": "ablab diagnose regularization/baseline/seed1",
    "explain": "ablab explain cnn models:/ablab-mlp@champion",
    "ui": "ablab ui --port 5000",
    "dashboard": "ablab dashboard --port 8080",
}
# what a command's positional names are, for its help
NAMES = {"fetch": "datasets", "preprocess": "datasets", "evaluator": "datasets",
         "train": "experiments", "suite": "suites", "pretrain": "suites",
         "diagnose": "experiments", "explain": "experiments"}  # fmt: skip


def _epilog(command: str) -> str:
    """A command's help footer: the names it takes (datasets, or those in ./params.yaml) and
    an example."""
    lines = []
    kind = NAMES.get(command)
    if kind == "datasets":
        lines.append(f"datasets: {', '.join(DATASETS)}")
    elif kind:
        try:
            tree = yaml.safe_load((_root() / "params.yaml").read_text()) or {}
            names = ", ".join(tree.get(kind) or {}) or "none"
        except (OSError, yaml.YAMLError, AttributeError):
            names = "(no readable params.yaml here)"
        lines.append(f"{kind} in params.yaml: {names}")
    lines = [textwrap.fill(line, 100, subsequent_indent="  ") for line in lines]
    lines.append(f"example:\n  {EXAMPLES[command]}")
    return "\n\n".join(lines)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ablab", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.set_defaults(func=func)
        p.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="override a param by its path, e.g. experiments.cnn.train.lr=0.01 (repeatable)",
        )  # fmt: skip
        return p

    add("datasets", cmd_datasets, "the datasets the params use, one per line")
    resolve_help = ("what each DVC stage reads of the params, resolved, into data/ (the "
                    "`resolve` stage)")  # fmt: skip
    resolve = add("resolve", cmd_resolve, resolve_help)
    resolve.add_argument("--out", default="data", help="where to write (default data)")
    list_help = "the datasets listed in this JSON file (the `resolve` stage's output)"
    for name, func, help_text in (
        ("fetch", cmd_fetch, "fetch and verify raw data"),
        ("preprocess", cmd_preprocess, "raw data -> arrays and splits"),
    ):
        step = add(name, func, help_text)
        step.add_argument("datasets", nargs="*")
        step.add_argument("--list", metavar="FILE", help=list_help)
    add(
        "evaluator",
        cmd_evaluator,
        "train the classifiers that score generated images (evaluator.datasets if none named)",
    ).add_argument("datasets", nargs="*")
    add("train", cmd_train, "train experiments (all if none named)").add_argument(
        "experiments", nargs="*"
    )
    suite_parser = add("suite", cmd_suite, "run ablation suites (all if none named)")
    suite_parser.add_argument("suites", nargs="*")
    full_help = "the suites' full-size recipes (results/full/)"
    suite_parser.add_argument("--full", action="store_true", help=full_help)
    workers_help = (
        "worker processes on this machine (default 1); another machine joins with "
        "the same command, params and tune.storage"
    )
    suite_parser.add_argument("--workers", type=int, default=1, help=workers_help)
    suite_parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    record_help = ("with --full: write reproductions/<name>.json, the committed record of the "
                   "run (the suite's full.record says what it holds)")  # fmt: skip
    suite_parser.add_argument("--record", action="store_true", help=record_help)
    suite_parser.add_argument(
        "--as", dest="as_name", metavar="NAME", help="the record's name (default: full.record.name)"
    )
    pretrain_help = "train the source networks of suites' network-based transfer (all suites)"
    add("pretrain", cmd_pretrain, pretrain_help).add_argument("suites", nargs="*")
    report_parser = add("report", cmd_report, "tables and plots of every suite -> results/report/")
    report_parser.add_argument("--full", action="store_true", help=full_help)
    claims_help = "the course's claims, each decided by the suites and the records"
    claims_parser = add("claims", cmd_claims, claims_help)
    claims_parser.add_argument("id", nargs="?", help="one claim in full (e.g. C10)")
    claims_parser.add_argument(
        "--write", metavar="DIR", help="write claims.md and claims.csv there (the claims stage)"
    )
    repro_help = "the table of recorded full recipes (reproductions/*.json) beside the papers"
    repro = add("reproductions", cmd_reproductions, repro_help)
    repro.add_argument(
        "--write", metavar="FILE", help="put it between FILE's reproductions markers (README.md)"
    )
    tune_parser = add("tune", cmd_tune, "run the Optuna study of the tune section")
    tune_parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    tune_parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    tuned_help = (
        "train the search's best params on the experiment's full data and register "
        "the model as the champion (tune.registry)"
    )
    add("tuned", cmd_tuned, tuned_help)
    doctor = add("diagnose", cmd_diagnose, "the tuning checklist on one run: findings and fixes")
    doctor.add_argument(
        "run", help="an experiment (its latest run), a run name (regularization/baseline/seed1) "
        "or a run id",
    )  # fmt: skip
    lr_help = "also run Lightning's learning-rate finder on the experiment"
    doctor.add_argument("--lr-find", action="store_true", help=lr_help)
    explain_help = (
        "explain image classifiers from the store (explain.experiments if none "
        "named): maps by method, faithfulness, sanity; into a child run of each"
    )
    explain = add("explain", cmd_explain, explain_help)
    explain.add_argument(
        "models", nargs="*", help="experiments (their latest run's model), models:/ URIs "
        "(models:/ablab-cnn@champion), run names or run ids",
    )  # fmt: skip
    ui_help = "serve the MLflow UI on 127.0.0.1"
    ui = add("ui", cmd_ui, ui_help)
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    dashboard_help = "serve optuna-dashboard on 127.0.0.1 for the tune section's study storage"
    dashboard = add("dashboard", cmd_dashboard, dashboard_help)
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    keep_freed_memory()
    try:
        args.func(args)
    except (ConfigError, DataError) as exc:  # StorageError is a ConfigError
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
