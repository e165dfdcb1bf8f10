"""Models that stand on their own in MLflow: a logged image classifier carries its
preprocessing (the training split's normalisation) and its class names, so plain MLflow
(`mlflow.pyfunc.load_model("models:/...")`, `mlflow models serve`) scores raw images without
ablab. The network and the normalisation are traced to TorchScript together; the pyfunc code is
`image_classifier.py`, logged as code (MLflow's models-from-code)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from torch import nn

CODE = Path(__file__).with_name("image_classifier.py")


class Normalized(nn.Module):
    """Pixels in [0, 1] -> the network's logits, normalised as in training."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def signature(image_shape: tuple[int, ...], classes: list[str]) -> ModelSignature:
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape))])
    outputs = Schema([ColSpec("string", "label"), ColSpec("long", "class_index"),
                      *(ColSpec("double", name) for name in classes)])  # fmt: skip
    return ModelSignature(inputs=inputs, outputs=outputs)


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
            name="model", python_model=str(CODE),
            artifacts={"network": str(network), "preprocessing": str(meta)},
            signature=signature(shape, list(preprocessing["classes"])),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"mlflow=={mlflow.__version__}", "numpy", "pandas"],
        )  # fmt: skip
