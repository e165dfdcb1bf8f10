"""The MLflow UI in a real headless browser (Debian's chromium): `ablab ui` on a store holding a
real tiny run renders the runs table with the run's name, a metric chart on the run's page and
the confusion-matrix artifact, each within a bounded time. The runs table's screenshot is what
the README shows (ABLAB_SCREENSHOTS=<folder> keeps it)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import load
from ablab.train import run_experiment
from tests.conftest import CHROMIUM, TINY_PARAMS, chromium, free_port, text, wait_until_answers

pytestmark = pytest.mark.integration


@pytest.fixture
def ui(digits_root, tmp_path):
    (tmp_path / "data").symlink_to(digits_root / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    run_experiment(load(tmp_path / "params.yaml"), "mlp", tmp_path)
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name(TINY_PARAMS["mlflow_experiment"])
    (run,) = client.search_runs([experiment.experiment_id])
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "ablab"), "ui", "--port", str(port)],
        env={**os.environ, "ABLAB_ROOT": str(tmp_path)}, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{base}/health", server)
        yield base, experiment.experiment_id, run, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `make test` installs Debian's "
                    "chromium where apt-get works as root")  # fmt: skip
def test_the_ui_renders_the_runs_table_a_chart_and_the_confusion_matrix(ui):
    base, experiment_id, run, root = ui
    runs_table = tracking.experiment_url(base, experiment_id)  # what `ablab ui` prints
    page = text(chromium(runs_table, "--dump-dom"))
    assert "Run Name" in page and " mlp " in page, page[:2000]
    assert "No data available" not in page  # not the GenAI traces overview

    run_page = f"{base}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
    flow = tracking.ML_WORKFLOW
    charts = chromium(f"{run_page}/model-metrics?{flow}", "--dump-dom")
    assert 'class="main-svg"' in charts  # plotly drew a chart
    assert "mlp (val_loss)" in text(charts) or "mlp (grad_norm/" in text(charts)

    artifact = chromium(f"{run_page}/artifacts/confusion_matrix.png?{flow}", "--dump-dom")
    assert re.search(r'<img[^>]*alt="confusion_matrix.png"[^>]*src="blob:', artifact)

    shot = root / "runs-table.png"
    chromium(runs_table, f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("ABLAB_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["ABLAB_SCREENSHOTS"]) / "runs-table.png")
