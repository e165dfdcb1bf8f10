"""A tiny end-to-end text run: tweets-shaped random tokens through the rnn and the baseline."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import f1_score

from ablab import tracking
from ablab.config import load
from tests.conftest import write_random_text


def test_rnn_and_tfidf_runs_log_like_the_image_runs(tmp_path, tiny_params_file):
    from ablab.suite import run_suite

    write_random_text(tmp_path / "data" / "processed", "tweets", per_split=60)
    params = load(tiny_params_file, [
        "experiments.lstm={task: classify, model: {arch: rnn, cell: gru, embedding_dim: 8,"
        " hidden_size: 8, pooling: attention}, data: {dataset: tweets}}",
        "suites={seq: {experiment: lstm, seeds: [1], variants: {gru: {},"
        " tfidf: {model: {arch: tfidf, min_df: 1}}, rnn: {model.cell: rnn}}}}",
    ])  # fmt: skip
    report = run_suite(params, "seq", tmp_path)
    assert [r["status"] for r in report["runs"]] == ["finished"] * 3
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name("ablab-test").experiment_id])}  # fmt: skip
    for row in report["runs"]:  # macro-F1 as scikit-learn computes it from the predictions
        name = f"seq/{row['variant']}/seed1"
        path = client.download_artifacts(runs[name].info.run_id, "test_predictions.csv")
        pairs = np.loadtxt(path, delimiter=",", skiprows=1, dtype=int)[:, 1:]
        expected = f1_score(pairs[:, 0], pairs[:, 1], average="macro", labels=range(3),
                            zero_division=0)  # fmt: skip
        assert row["summary"]["test_macro_f1"] == pytest.approx(expected, abs=1e-6), name
    gru = runs["seq/gru/seed1"]
    assert any(k.startswith("grad_norm/rnn.weight_hh_l0") for k in gru.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(gru.info.run_id)}
    assert {"attention.png", "vocab.json", "confusion_matrix.png"} <= artifacts
    tfidf = runs["seq/tfidf/seed1"]
    assert tfidf.data.params["model.arch"] == "tfidf" and "test_macro_f1" in tfidf.data.metrics
    assert int(tfidf.data.params["features"]) > 0
