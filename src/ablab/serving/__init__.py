"""Models that stand on their own in MLflow: a logged classifier carries its preprocessing and
its class names, so plain MLflow (`mlflow.pyfunc.load_model("models:/...")`, `mlflow models
serve`) scores raw inputs without ablab. An image classifier takes pixels (the training split's
normalisation is traced to TorchScript with the network); a text classifier takes strings (its
tokenizer, as regular expressions, and vocabulary travel as a JSON artifact). The pyfunc code is
`image_classifier.py` or `text_classifier.py`, logged as code (MLflow's models-from-code)."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from torch import nn

IMAGE_CODE = Path(__file__).with_name("image_classifier.py")
TEXT_CODE = Path(__file__).with_name("text_classifier.py")


class Normalized(nn.Module):
    """Pixels in [0, 1] -> the network's logits, normalised as in training."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def signature(inputs: Schema, classes: list[str]) -> ModelSignature:
    outputs = Schema([ColSpec("string", "label"), ColSpec("long", "class_index"),
                      *(ColSpec("double", name) for name in classes)])  # fmt: skip
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            "numpy", "pandas"]  # fmt: skip


def log_classifier(net: nn.Module, preprocessing: dict, example) -> None:
    """Log a classifier as the active run's model "model", by `preprocessing["input"]`:
    "image" or "text" (see log_image_classifier, log_text_classifier)."""
    if preprocessing["input"] == "text":
        log_text_classifier(net, preprocessing, example)
    else:
        log_image_classifier(net, preprocessing, example)


def log_image_classifier(net: nn.Module, preprocessing: dict, example: np.ndarray) -> None:
    """Log `net` as the active run's model "model": `preprocessing` has the normalisation's
    `mean` and `std`, the `classes` and the `image_shape`; `example` is a few raw images in
    [0, 1] (float32, N x C x H x W)."""
    shape = tuple(preprocessing["image_shape"])
    wrapped = Normalized(net.eval(), preprocessing["mean"], preprocessing["std"]).eval()
    with tempfile.TemporaryDirectory(prefix="ablab-model-") as folder:
        network, meta = Path(folder) / "network.pt", Path(folder) / "preprocessing.json"
        with torch.no_grad():
            torch.jit.trace(wrapped, torch.from_numpy(example)).save(str(network))
        meta.write_text(json.dumps({**preprocessing, "image_shape": list(shape)}))
        mlflow.pyfunc.log_model(
            name="model", python_model=str(IMAGE_CODE),
            artifacts={"network": str(network), "preprocessing": str(meta)},
            signature=signature(Schema([TensorSpec(np.dtype(np.float32), (-1, *shape))]),
                                list(preprocessing["classes"])),
            input_example=example, pip_requirements=requirements(),
        )  # fmt: skip


def log_text_classifier(net: nn.Module, preprocessing: dict, example: dict) -> None:
    """Log a sequence classifier `net(tokens N x max_len, lengths N)` as the active run's model
    "model": `preprocessing` has the `tokenizer` (ablab.data.text.TOKENIZER), the `vocab`,
    `oov_id`, `max_len` and `classes`; `example` has a few raw `texts` and their encoded
    `tokens` and `lengths` (the tracing inputs)."""
    net = net.eval()
    with tempfile.TemporaryDirectory(prefix="ablab-model-") as folder:
        network, meta = Path(folder) / "network.pt", Path(folder) / "preprocessing.json"
        inputs = (torch.as_tensor(example["tokens"]), torch.as_tensor(example["lengths"]))
        # the model always pads to max_len, so the trace's constant shapes are the served ones
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.jit.trace(net, inputs, check_trace=False).save(str(network))
        meta.write_text(json.dumps(preprocessing))
        mlflow.pyfunc.log_model(
            name="model", python_model=str(TEXT_CODE),
            artifacts={"network": str(network), "preprocessing": str(meta)},
            signature=signature(Schema([ColSpec("string", "text")]),
                                list(preprocessing["classes"])),
            input_example=pd.DataFrame({"text": example["texts"]}),
            pip_requirements=requirements(),
        )  # fmt: skip
