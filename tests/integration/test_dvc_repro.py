"""`dvc repro` end to end on a tiny digits config, in a temporary git repo."""

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import CHROMIUM, REPO, TINY_PARAMS, chromium

pytestmark = pytest.mark.integration


def sh(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """A tiny project after `dvc repro`, with `dvc plots show`'s page in plots_page/."""
    root, env = make_repo(tmp_path_factory.mktemp("reproduced") / "repo")
    sh(["dvc", "repro"], root, env)
    sh(["dvc", "plots", "show", "-o", "plots_page"], root, env)
    return root, env


def make_repo(root: Path) -> tuple[Path, dict]:
    root.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "reproductions", root / "reproductions")  # the claims stage reads it
    shutil.copytree(
        REPO / "pipelines", root / "pipelines", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    tree = copy.deepcopy(TINY_PARAMS)  # and a GAN, scored by the evaluators stage's output
    tree["evaluator"] = {"datasets": ["digits"], "epochs": 1}
    tree["experiments"]["gan"] = {
        "task": "generate",
        "model": {"arch": "dcgan", "channels": [8, 8], "latent_size": 8, "collapse_entropy": 0},
        "train": {"early_stopping": {"enabled": False, "monitor": "val_frechet_distance"},
                  "lr": 0.002, "max_epochs": 2},
    }  # fmt: skip
    # explain@cnn: the tiny CNN's logged model, explained after train@cnn
    tree["experiments"]["cnn"]["train"] = {"log_model": True, "max_epochs": 2}
    tree["explain"] = {"experiments": ["cnn"], "images": 60, "sanity_images": 20, "steps": 8,
                       "activation_max": {"steps": 8, "channels": 2}}  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "ABLAB_CACHE": str(root.parent / "cache"),  # never the user's cache
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    sh(["git", "init", "-q"], root, env)
    sh(["dvc", "init", "-q"], root, env)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the project's, as cloned
    sh([sys.executable, "-m", "ablab.plots_page", str(root / ".dvc" / "plots.html")], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "tiny"], root, env)
    return root, env


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `make test` installs Debian's "
                    "chromium where apt-get works as root")  # fmt: skip
def test_the_plots_page_draws_every_chart_offline_in_a_browser(reproduced):
    """`dvc plots show`'s page carries Vega (the project's html_template), so a browser with no
    network draws every declared curve; DVC's own page would fetch Vega from a CDN."""
    root, _ = reproduced
    html = (root / "plots_page" / "index.html").read_text()
    dom = chromium((root / "plots_page" / "index.html").as_uri(), "--dump-dom")
    dom = re.sub(r"<script.*?</script>", "", dom, flags=re.S)
    drawn = re.findall(r'class="marks" width="(\d+)" height="(\d+)"', dom)
    charts = html.count("vegaEmbed('#")
    assert charts >= 4 and len(drawn) == charts, (charts, drawn)
    assert all(int(w) > 0 and int(h) > 0 for w, h in drawn), drawn


def test_dvc_repro_trains_every_experiment_and_suite_then_is_up_to_date(reproduced):
    root, env = reproduced
    for name in ("mlp", "cnn"):
        metrics = json.loads((root / "results" / name / "metrics.json").read_text())
        assert 0.5 < metrics["test_accuracy"] <= 1.0, name
        assert (root / "results" / name / "curves.csv").exists()
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], root, env))
    assert "test_accuracy" in json.dumps(shown)
    gan = json.loads((root / "results" / "gan" / "metrics.json").read_text())
    assert gan["test_frechet_distance"] > gan["real_frechet_distance"] > 0
    assert (root / "data" / "evaluators" / "digits.pt").exists()

    explained = json.loads((root / "results" / "explain" / "cnn" / "metrics.json").read_text())
    assert 0 <= explained["grad_cam_deletion_auc"] <= 1 and "cam_deletion_auc" not in explained

    suite = json.loads((root / "results" / "suites" / "reg" / "metrics.json").read_text())
    assert set(suite) == {"baseline", "dropout"}
    tuned = json.loads((root / "results" / "tune" / "metrics.json").read_text())
    assert tuned["trials_complete"] + tuned["trials_pruned"] == 2
    champion = json.loads((root / "results" / "tuned" / "metrics.json").read_text())
    assert champion["registered"] == "tiny-mlp@champion (v1)"
    report = (root / "results" / "report" / "README.md").read_text()
    assert "## reg" in report and "| dropout |" in report

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("ablab-test")
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(r.info.run_name for r in runs)
    tuning = ["tune/ablab/trial-0", "tune/ablab/trial-1", "tuned/ablab", "tune/ablab"]
    assert names == sorted(["cnn", "cnn/explain", "gan", "mlp", "report", "suite/reg", *tuning] + [
        f"reg/{v}/seed{s}" for v in ("baseline", "dropout") for s in (1, 2)
    ])  # fmt: skip
    parent = next(r for r in runs if r.info.run_name == "suite/reg")
    assert parent.data.tags["ablab.verdict.dropout"]  # the report tagged its verdict
    assert (root / "results" / "suites" / "reg" / "predictions.npz").exists()
    assert all(r.info.status == "FINISHED" for r in runs)
    commit = sh(["git", "rev-parse", "HEAD"], root, env).strip()
    assert all(r.data.tags["mlflow.source.git.commit"] == commit for r in runs)

    plots = sh(["dvc", "plots", "show", "--json"], root, env)
    assert "reg_test_accuracy.png" in plots and "suites (mean test accuracy)" in plots
    shown = json.loads(plots)
    assert not shown.get("errors"), shown.get("errors")
    for name in ("results/mlp/epochs.csv", "results/gan/epochs.csv", "results/mlp/curves.png",
                 "results/suites/reg/epochs.csv"):  # fmt: skip
        assert name in shown["data"], name
    html = (root / "plots_page" / "index.html").read_text()  # Vega inside, no CDN
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    metrics = subprocess.run(["dvc", "metrics", "show"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert metrics.returncode == 0 and not metrics.stderr.strip(), metrics.stderr

    again = sh(["dvc", "repro"], root, env)
    assert "Data and pipelines are up to date" in again
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)

    sh(["git", "add", "-A"], root, env)  # as the README says: the lock and what DVC leaves to git
    sh(["git", "commit", "-qm", "reproduced"], root, env)
    baseline = sh(["git", "rev-parse", "HEAD"], root, env).strip()
    experiments_do_not_pile_up(root, env, client, experiment.experiment_id, baseline)
    nothing_changes_dvc_outputs_outside_dvc(root, env)
    a_failed_stage_deletes_nothing(root, env)
    a_knob_reruns_only_what_reads_it(root, env)


def readme_lines(start: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.startswith(start)]


def experiments_do_not_pile_up(root, env, client, experiment_id, baseline) -> None:
    """The README's `dvc exp run --temp -S` lines, run in a row after committing the run (the
    lock and the outputs DVC leaves to git): each experiment holds its own change only and
    retrains only what it reaches (cnn; with the lock alone committed DVC ran every stage
    again); its run is named and tagged after it; the README's table of experiments has at
    most 40 columns."""
    assert readme_lines("git add -A") == ['git add -A && git commit -m "dvc repro"']
    first, second = readme_lines("dvc exp run --temp")[:2]
    for line in (first, second):
        ran = set(re.findall(r"Running stage '([^']+)'", sh(shlex.split(line), root, env)))
        assert "train@cnn" in ran and ran <= {"resolve", "train@cnn", "explain@cnn"}, ran
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], root, env))
    params = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                tree = rev["data"]["params"]["params.yaml"]["data"]
                params[rev["name"]] = tree["experiments"]["cnn"]
    assert len(params) == 2, params
    by_change = sorted(params.values(), key=lambda cnn: "dropout" in cnn["model"])
    assert by_change[0]["train"].get("lr") == 0.003 and "dropout" not in by_change[0]["model"]
    assert by_change[1]["model"]["dropout"] == 0.5 and "lr" not in by_change[1]["train"]
    for name in params:  # each experiment's run, named and tagged after it
        (tried,) = client.search_runs(
            [experiment_id], f"tags.`ablab.dvc_experiment` = '{name}' and "
            "tags.`ablab.experiment` = 'cnn' and tags.`ablab.stage` = 'train'")  # fmt: skip
        assert tried.info.run_name == f"cnn/{name}" and tried.info.status == "FINISHED"
        assert tried.data.tags["ablab.dvc_baseline"] == baseline
    table = next(line for line in readme_lines("dvc exp show") if "--only-changed" in line)
    header = sh([*shlex.split(table), "--csv"], root, env).splitlines()[0]
    assert len(header.split(",")) <= 40, header
    assert "test_accuracy" in header and "experiments.cnn.model.dropout" in header
    rows = [line for line in sh(["dvc", "metrics", "show", "--md"], root, env).splitlines()
            if line.startswith("|")]  # fmt: skip
    columns = rows[0].strip("|").split("|")
    assert len(columns) <= 40 and len(rows) - 2 <= 5, rows  # a row per experiment, tune, tuned
    (dag,) = [line for line in readme_lines("dvc dag")]
    drawn = sh(shlex.split(dag), root, env)
    assert "train@cnn" in drawn and max(map(len, drawn.splitlines())) <= 100, drawn


def nothing_changes_dvc_outputs_outside_dvc(root, env) -> None:
    """bench/units.py tables the runs `dvc repro` made (tag ablab.dvc_stage), by DVC stage: not
    the DVC experiments, nor a run of `ablab train` outside DVC, which writes beside DVC's
    outputs (results/adhoc/<run name>/) and leaves `dvc status` clean."""
    table = units_table(root)
    assert {"train@mlp", "suite@reg", "tune", "report"} <= {
        line.split("**")[1] for line in table if line.startswith("| **")}  # fmt: skip
    kept = (root / "results" / "mlp" / "metrics.json").read_bytes()
    out = sh(["ablab", "train", "mlp", "--set", "experiments.mlp.train.max_epochs=1"], root, env)
    assert "(results/adhoc/mlp/train.max_epochs=1/metrics.json;" in out
    assert (root / "results" / "adhoc" / "mlp" / "train.max_epochs=1" / "metrics.json").exists()
    assert (root / "results" / "mlp" / "metrics.json").read_bytes() == kept
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], root, env)
    assert units_table(root) == table


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}  # fmt: skip


def a_failed_stage_deletes_nothing(root, env) -> None:
    """A bad key: `dvc repro` fails in `resolve`, nothing under data/ changes, and with the
    params restored `dvc status` is clean. An offline fetch of a new dataset: `resolve` lists
    it, `fetch` fails and keeps every dataset it had (DVC used to delete data/raw first); with
    the params restored, `dvc repro` only resolves them again, fetching and preprocessing
    nothing, and `dvc status` is clean."""
    good = (root / "params.yaml").read_text()
    tree = yaml.safe_load(good)
    before = snapshot(root / "data")
    tree_bad = {**tree, "train": {**tree["train"], "max_epohcs": 3}}
    (root / "params.yaml").write_text(yaml.safe_dump(tree_bad))
    failed = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert failed.returncode != 0 and "max_epohcs" in failed.stdout + failed.stderr
    assert snapshot(root / "data") == before
    (root / "params.yaml").write_text(good)
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], root, env)

    data = {k: v for k, v in before.items() if k.startswith(("raw/", "processed/"))}
    mirror = "http://127.0.0.1:9/"  # nothing listens: the fetch fails at once
    offline = {**tree, "data": {**tree["data"], "sources": {"imdb": {"base_url": mirror}}},
               "experiments": {**tree["experiments"], "imdb": {
                   "task": "classify", "data": {"dataset": "imdb"},
                   "model": {"arch": "rnn", "hidden_size": 4}}}}  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(offline))
    failed = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert failed.returncode != 0 and "imdb" in failed.stdout + failed.stderr
    now = snapshot(root / "data")
    assert {k: v for k, v in now.items() if k.startswith(("raw/", "processed/"))} == data
    (root / "params.yaml").write_text(good)
    again = sh(["dvc", "repro"], root, env)
    assert "Running stage 'resolve'" in again and "Running stage 'fetch'" not in again
    assert "Running stage 'preprocess'" not in again and "Running stage 'train" not in again
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], root, env)


def a_knob_reruns_only_what_reads_it(root, env) -> None:
    """An epoch count reruns `resolve` (never fetch or preprocess) and then only what inherits
    it: mlp, not cnn, which sets its own."""
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["train"]["max_epochs"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    data = sh(["dvc", "repro", "preprocess"], root, env)
    assert "Running stage 'resolve'" in data
    assert "Running stage 'fetch'" not in data and "Running stage 'preprocess'" not in data
    status = json.loads(sh(["dvc", "status", "--json"], root, env))
    assert "train@mlp" in status and "train@cnn" not in status, status


def units_table(root: Path) -> list[str]:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import units
    finally:
        sys.path.pop(0)
    return units.table(root, "ablab-test")


def test_bad_params_stop_the_pipeline_before_any_run(repo):
    root, env = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["experiments"]["cnn"]["model"]["dropout"] = 1.5
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        ["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "experiments.cnn.model.dropout" in output
    assert not (root / "mlruns" / "mlflow.db").exists()
    assert not (root / "data" / "raw").exists()
