"""Tiny end-to-end runs of the series and the seq2seq experiments through `ablab`."""

import json

from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.cli import main


def run_cli(root, monkeypatch, *args):
    monkeypatch.setenv("ABLAB_ROOT", str(root))
    main([*args, "--params", str(root / "params.yaml")])


def test_sunspots_forecast_and_dates_translation(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(json.dumps({
        "seed": 1,
        "mlflow_experiment": "seq",
        "data": {"series": {"window": 10}, "dates": {"examples": 300}},
        "train": {"max_epochs": 2, "threads": 1, "log_model": False},
        "experiments": {
            "sunspots": {"task": "regress", "data": {"dataset": "sunspots"},
                         "model": {"arch": "rnn", "cell": "gru", "hidden_size": 8}},
            "dates": {"task": "translate", "data": {"dataset": "dates"},
                      "model": {"arch": "seq2seq", "embedding_dim": 8, "hidden_size": 16}},
        },
    }))  # fmt: skip
    for command in ("fetch", "preprocess", "train"):
        run_cli(tmp_path, monkeypatch, command)
    meta = json.loads((tmp_path / "data/processed/sunspots/meta.json").read_text())
    years = meta["split_years"]
    assert years["train"][1] < years["val"][0] <= years["val"][1] < years["test"][0]
    # `ablab train` outside DVC writes beside the pipeline's outputs
    series = json.loads((tmp_path / "results/adhoc/sunspots/metrics.json").read_text())
    # in the data's units (yearly sunspot counts, spread ~40), not the standardised ones (~1)
    assert 5 < series["test_mae"] < series["test_rmse"] < 200
    translated = json.loads((tmp_path / "results/adhoc/dates/metrics.json").read_text())
    assert 0 <= translated["test_accuracy"] <= translated["test_char_accuracy"] <= 1
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name("seq").experiment_id])}  # fmt: skip
    assert "forecast.png" in {a.path for a in client.list_artifacts(runs["sunspots"].info.run_id)}
    dates_artifacts = {a.path for a in client.list_artifacts(runs["dates"].info.run_id)}
    assert {"attention_0.png", "test_decodings.json"} <= dates_artifacts
