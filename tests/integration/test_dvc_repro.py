"""`dvc repro` end to end on a tiny digits config, in a temporary git repo."""

import copy
import json
import os
import re
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
    tree["experiments"]["cnn"]["train"] = {"log_model": True}
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

    # `dvc exp run --temp` (as a queued experiment) trains in a temporary copy: its run goes
    # to the project's store, named and tagged after the DVC experiment and its baseline
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "reproduced"], root, env)
    baseline = sh(["git", "rev-parse", "HEAD"], root, env).strip()
    sh(["dvc", "exp", "run", "--temp", "-n", "wide-mlp", "train@mlp",
        "-S", "experiments.mlp.model.width=48"], root, env)  # fmt: skip
    (tried,) = client.search_runs(
        [experiment.experiment_id], "tags.`ablab.dvc_experiment` = 'wide-mlp'"
    )
    assert tried.info.run_name == "mlp/wide-mlp" and tried.info.status == "FINISHED"
    assert tried.data.tags["ablab.dvc_baseline"] == baseline
    assert tried.data.params["model.width"] == "48"
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], root, env))
    assert "wide-mlp" in json.dumps(shown)

    # bench/units.py tables the runs `dvc repro` made (tag ablab.dvc_stage), by DVC stage: not
    # the DVC experiment above, nor a run of `ablab train` outside DVC
    table = units_table(root)
    assert {"train@mlp", "suite@reg", "tune", "report"} <= {
        line.split("**")[1] for line in table if line.startswith("| **")}  # fmt: skip
    sh(["ablab", "train", "mlp", "--set", "experiments.mlp.train.max_epochs=1"], root, env)
    assert units_table(root) == table

    # a training knob reruns the `datasets` stage (same list), never fetch or preprocess
    tree = yaml.safe_load((root / "params.yaml").read_text())
    tree["experiments"]["mlp"]["train"] = {"max_epochs": 3}
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    data = sh(["dvc", "repro", "preprocess"], root, env)
    assert "Running stage 'datasets'" in data
    assert "Running stage 'fetch'" not in data and "Running stage 'preprocess'" not in data


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
