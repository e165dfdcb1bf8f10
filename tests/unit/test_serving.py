"""A logged model stands on its own: plain MLflow, in a process that never imports ablab, loads
it and does what the run did: an image classifier scores the raw test images (uint8 pixels as
0..255, floats as [0, 1], by dtype) with the accuracy its run logged; a GAN's generator draws
the run's own samples from the same latent codes; a forecaster forecasts the test years."""

import json
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import load
from ablab.train import run_experiment
from tests.conftest import TINY_PARAMS, free_port, wait_until_answers

SCORE = """
import json, sys
import numpy as np
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
images = np.load(sys.argv[3])
out = {}
for name, pixels in (("uint8", images.astype(np.uint8)), ("unit", images / 255.0)):
    pred = model.predict(pixels)
    out[name] = pred["class_index"].tolist()
    out["labels"] = pred["label"].tolist()[:3]
    out["sums"] = pred.drop(columns=["label", "class_index"]).sum(axis=1).round(4).tolist()[:3]
out["ablab"] = any(m == "ablab" or m.startswith("ablab.") for m in sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def champion(digits_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    (root / "data").symlink_to(digits_root / "data")
    tree = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "log_model": True}}
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    summary = run_experiment(load(root / "params.yaml"), "cnn", root)
    uri = tracking.tracking_uri(root)
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    run = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id])[0]
    (model,) = [m for m in client.search_logged_models([run.info.experiment_id])
                if m.source_run_id == run.info.run_id]  # fmt: skip
    version = mlflow.register_model(f"models:/{model.model_id}", "digits-cnn")
    client.set_registered_model_alias("digits-cnn", "champion", version.version)
    return root, uri, summary


def test_plain_mlflow_scores_raw_images_as_the_run_did(champion, tmp_path):
    root, uri, summary = champion
    processed = root / "data" / "processed" / "digits"
    images = np.load(processed / "images.npy")
    test = np.load(processed / "splits.npz")["test"]
    labels = np.load(processed / "labels.npy")[test]
    np.save(tmp_path / "test.npy", images[test])
    champion_uri = "models:/digits-cnn@champion"
    result = subprocess.run(
        [sys.executable, "-c", SCORE, uri, champion_uri, str(tmp_path / "test.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ablab"] is False  # plain MLflow: the model's code imports no ablab
    for pixels in ("uint8", "unit"):
        accuracy = float(np.mean(np.array(out[pixels]) == labels))
        assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6), pixels
    classes = json.loads((processed / "meta.json").read_text())["classes"]
    assert set(out["labels"]) <= set(classes)
    assert out["sums"] == pytest.approx([1.0] * 3, abs=1e-3)  # class probabilities


def test_the_model_says_what_goes_in_and_out(champion):
    root, uri, _ = champion
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info("models:/digits-cnn@champion")
    # MLflow's tensor signature holds one dtype (and casts served requests to it): the input
    # is stated in the model's metadata instead
    assert info.signature.inputs is None
    assert info.metadata["input"].startswith("images N x 1 x 8 x 8: uint8 pixels 0..255, or ")
    outputs = [c["name"] for c in info.signature.outputs.to_dict()]
    assert outputs[:2] == ["label", "class_index"] and len(outputs) == 12  # + 10 classes
    assert info.saved_input_example_info is not None


def test_pixels_are_read_by_dtype_never_by_their_values(champion):
    """A dark 0..255 image (no pixel above 1) is read as 0..255; a float above 1 is refused."""
    root, uri, _ = champion
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/digits-cnn@champion")
    processed = root / "data" / "processed" / "digits"
    images = np.load(processed / "images.npy")[:20]
    dark = np.minimum(images, 1).astype(np.uint8)  # every pixel 0 or 1 out of 255
    assert dark.max() == 1
    as_uint8 = model.predict(dark)
    as_float = model.predict(dark.astype(np.float32) / 255)  # the same image in [0, 1]
    assert as_uint8["class_index"].tolist() == as_float["class_index"].tolist()
    bright = model.predict(dark.astype(np.float32))  # 0/1 as floats: a bright [0, 1] image
    assert not np.allclose(bright.iloc[:, 2:].to_numpy(), as_float.iloc[:, 2:].to_numpy())
    with pytest.raises(Exception, match=r"float pixels must lie in \[0, 1\]"):
        model.predict(images.astype(np.float32))


def test_mlflow_models_serve_answers_with_the_right_class(champion, tmp_path):
    """`mlflow models serve` (a real server process on loopback) classifies a posted image as
    the model does in process."""
    import os
    import urllib.request

    root, uri, _ = champion
    processed = root / "data" / "processed" / "digits"
    test = np.load(processed / "splits.npz")["test"]
    images = np.load(processed / "images.npy")[test[:4]]
    mlflow.set_tracking_uri(uri)
    expected = (
        mlflow.pyfunc.load_model("models:/digits-cnn@champion")
        .predict(images.astype(np.uint8))["label"]
        .tolist()
    )
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits-cnn@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", server, log=tmp_path / "serve.log")
        body = json.dumps({"inputs": images.astype(int).tolist()}).encode()  # 0..255
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    assert [row["label"] for row in answer["predictions"]] == expected


SCORE_TEXTS = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
texts = json.load(open(sys.argv[3]))
pred = model.predict(__import__("pandas").DataFrame({"text": texts}))
out = {"index": pred["class_index"].tolist(), "labels": pred["label"].tolist()[:3]}
out["ablab"] = any(m == "ablab" or m.startswith("ablab.") for m in sys.modules)
print(json.dumps(out))
"""


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_a_text_classifier_scores_raw_texts_as_its_run_did(arch, tmp_path, tiny_params_file):
    """The tokenizer and vocabulary travel with the model: plain MLflow, given the raw test
    texts, predicts every class the run predicted from its token ids."""
    from tests.conftest import write_random_text

    write_random_text(tmp_path / "data" / "processed", "tweets", per_split=30)
    model = ("{arch: rnn, cell: gru, embedding_dim: 8, hidden_size: 8, pooling: attention}"
             if arch == "rnn" else "{arch: transformer, embedding_dim: 16, heads: 2, layers: 1,"
             " feedforward: 16}")  # fmt: skip
    params = load(tiny_params_file, [
        f"experiments.text={{task: classify, model: {model}, data: {{dataset: tweets}}}}",
        "train.log_model=true",
    ])  # fmt: skip
    run_experiment(params, "text", tmp_path)
    uri = tracking.tracking_uri(tmp_path)
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id])[0]
    (logged,) = [m for m in client.search_logged_models([run.info.experiment_id])
                 if m.source_run_id == run.info.run_id]  # fmt: skip
    processed = tmp_path / "data" / "processed" / "tweets"
    texts = json.loads((processed / "texts.json").read_text())
    test = np.load(processed / "splits.npz")["test"]
    (tmp_path / "test.json").write_text(json.dumps([texts[i] for i in test]))
    result = subprocess.run(
        [sys.executable, "-c", SCORE_TEXTS, uri, f"models:/{logged.model_id}",
         str(tmp_path / "test.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ablab"] is False
    predicted = client.download_artifacts(run.info.run_id, "test_predictions.csv")
    expected = [int(line.split(",")[2]) for line in open(predicted).read().splitlines()[1:]]
    assert out["index"] == expected
    info = mlflow.models.get_model_info(f"models:/{logged.model_id}")
    assert info.signature.inputs.to_dict() == [{"type": "string", "name": "text", "required": True}]


def test_the_text_model_tokenizes_as_preprocessing_did():
    """URLs, mentions, case, punctuation, truncation and empty texts: the model's own encoding
    (regular expressions from the JSON it carries) gives preprocessing's token ids."""
    from ablab.data.text import OOV_ID, TOKENIZER, build_vocab, encode, tokenize
    from ablab.serving.text_classifier import TextClassifier

    texts = ["RT @Delta: Flight 12 delayed!! http://t.co/x1 #fail", "", "Don't... WWW.x.com ok",
             "a b c d e f g h i j k l m n"]  # fmt: skip
    vocab = build_vocab([tokenize(t) for t in texts[:3]], 50, 1)
    ids, lengths, _ = encode([tokenize(t) for t in texts], vocab, max_len=8)
    model = TextClassifier()
    model.use_preprocessing({"tokenizer": TOKENIZER, "vocab": vocab, "oov_id": OOV_ID,
                             "max_len": 8, "classes": ["a", "b"]})  # fmt: skip
    for row, text in enumerate(texts):
        assert model.encode(text) == ids[row, : lengths[row]].tolist(), text


SAMPLE = """
import json, sys
import numpy as np
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
z = np.load(sys.argv[3])
k = int(sys.argv[4])
images = model.predict({"z": z, "class": np.arange(len(z)) // 8} if k else z)
np.save(sys.argv[5], images)
print(json.dumps({"ablab": any(m == "ablab" or m.startswith("ablab.") for m in sys.modules)}))
"""


@pytest.mark.parametrize("conditional", [False, True], ids=["gan", "cgan"])
def test_a_generator_from_plain_mlflow_draws_the_runs_own_samples(conditional, tmp_path,
                                                                 digits_root):  # fmt: skip
    """`samples.png`, the run's picture of its generator at a fixed batch of latent codes,
    comes out pixel for pixel from the logged model given the same codes, in a process that
    never imports ablab."""

    import torch
    from PIL import Image

    from ablab.evaluator import train_evaluator
    from ablab.families.generate import GRID, GRID_SEED_OFFSET, grid_image

    (tmp_path / "data" / "processed").mkdir(parents=True)
    (tmp_path / "data" / "processed" / "digits").symlink_to(
        digits_root / "data" / "processed" / "digits"
    )
    train_evaluator(tmp_path / "data" / "processed", "digits", epochs=1, seed=0)
    tree = {**TINY_PARAMS, "evaluator": {"datasets": ["digits"]}, "experiments": {"gan": {
        "task": "generate", "model": {"arch": "gan", "hidden": [16], "latent_size": 8,
                                      "conditional": conditional},
        "train": {"max_epochs": 1, "log_model": True,
                  "early_stopping": {"enabled": False, "monitor": "val_frechet_distance"}}}},
        "suites": {}, "tune": None}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    run_experiment(load(tmp_path / "params.yaml"), "gan", tmp_path)
    uri = tracking.tracking_uri(tmp_path)
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id])[0]
    (logged,) = [m for m in client.search_logged_models([run.info.experiment_id])
                 if m.source_run_id == run.info.run_id]  # fmt: skip
    count = 10 * GRID if conditional else GRID * GRID  # fixed_grid: a row per class (cgan)
    z = torch.randn(count, 8, generator=torch.Generator().manual_seed(7 + GRID_SEED_OFFSET))
    np.save(tmp_path / "z.npy", z.numpy())
    result = subprocess.run(
        [sys.executable, "-c", SAMPLE, uri, f"models:/{logged.model_id}", str(tmp_path / "z.npy"),
         str(int(conditional)), str(tmp_path / "images.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["ablab"] is False
    drawn = grid_image(torch.from_numpy(np.load(tmp_path / "images.npy")))
    png = client.download_artifacts(run.info.run_id, "samples.png", str(tmp_path))
    with Image.open(png) as picture:
        logged_grid = np.asarray(picture)[::3, ::3]  # drawn 3x, nearest neighbour
    assert drawn.shape == logged_grid.shape
    assert np.abs(drawn.astype(int) - logged_grid.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "model",
    ["{arch: rnn, cell: gru, hidden_size: 8}", "{arch: mlp, depth: 1, width: 8}",
     "{arch: conv1d, channels: [4], head: [8]}"],
    ids=["gru", "mlp", "conv1d"],
)  # fmt: skip
def test_a_forecaster_forecasts_in_the_datas_units(tmp_path, tiny_params_file, model):
    from tests.unit.test_experiments import prepare

    prepare(tmp_path, "sunspots")
    params = load(tiny_params_file, [
        f"experiments.sun={{task: regress, model: {model}, data: {{dataset: sunspots}}}}",
        "train.log_model=true",
    ])  # fmt: skip
    summary = run_experiment(params, "sun", tmp_path)
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    mlflow.set_tracking_uri(tracking.tracking_uri(tmp_path))
    run = client.search_runs([client.get_experiment_by_name("ablab-test").experiment_id])[0]
    (logged,) = [m for m in client.search_logged_models([run.info.experiment_id])
                 if m.source_run_id == run.info.run_id]  # fmt: skip
    model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    processed = tmp_path / "data" / "processed" / "sunspots"
    windows = np.load(processed / "windows.npy")
    actual = np.load(processed / "labels.npy")  # the next value after each window
    test = np.load(processed / "splits.npz")["test"]
    forecast = model.predict(windows[test])["forecast"].to_numpy()
    assert np.abs(actual[test]).mean() > 10  # sunspot counts, not standardised values
    assert np.mean(np.abs(forecast - actual[test])) == pytest.approx(summary["test_mae"], rel=1e-4)
