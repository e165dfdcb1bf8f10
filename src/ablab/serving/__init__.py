"""Models that stand on their own in MLflow: a logged model carries its preprocessing and what
its outputs mean, so plain MLflow (`mlflow.pyfunc.load_model("models:/...")`, `mlflow models
serve`) uses it without ablab. Each is a TorchScript network (the preprocessing traced with it)
and a pyfunc logged as code (MLflow's models-from-code): `image_model.py` for an image
classifier, a GAN's generator and CycleGAN's mapper; `text_classifier.py` for a text classifier
(its tokenizer, as regular expressions, and vocabulary travel as JSON); `forecaster.py` for a
series forecaster. Images go in as uint8 (0..255) or as floats in [0, 1], told apart by dtype:
MLflow's tensor signature holds one dtype and casts a served request to it, so an image model's
signature declares its outputs and the model's metadata (`input`) states the input."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from torch import nn

from ablab.families.base import Loggable

CODE = Path(__file__).parent
PIXELS = "uint8 pixels 0..255, or floats in [0, 1] (the dtype decides; never the values)"


class Normalized(nn.Module):
    """Pixels in [0, 1] -> the network's logits, normalised as in training."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class Sampler(nn.Module):
    """A GAN's generator body: latent codes (and classes) -> images in [0, 1]."""

    def __init__(self, body: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.body, self.num_classes = body, num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, nn.functional.one_hot(labels, self.num_classes).to(z.dtype)], 1)
        return (self.body(z) + 1) / 2


class Mapper(nn.Module):
    """CycleGAN's mapper: images in [0, 1] -> mapped images in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x * 2 - 1) + 1) / 2


class Standardized(Normalized):
    """A forecaster: raw windows N x T -> the next value, in the data's units."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.full_like(x[:, 0], x.shape[1], dtype=torch.long)
        y = self.net(((x - self.mean) / self.std).unsqueeze(-1), lengths)
        return y.squeeze(-1) * self.std + self.mean


def requirements() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            "numpy", "pandas"]  # fmt: skip


def _images(shape) -> Schema:
    return Schema([TensorSpec(np.dtype(np.float32), (-1, *shape))])


def _log(code: str, wrapped: nn.Module, inputs: tuple, meta: dict, signature: ModelSignature,
         example, strict_trace: bool = True) -> None:  # fmt: skip
    """Trace `wrapped` on `inputs`, then log it with `meta` as the active run's model "model"."""
    with tempfile.TemporaryDirectory(prefix="ablab-model-") as folder:
        network, preprocessing = Path(folder) / "network.pt", Path(folder) / "preprocessing.json"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.jit.trace(wrapped.eval(), inputs, check_trace=strict_trace).save(str(network))
        preprocessing.write_text(json.dumps(meta))
        mlflow.pyfunc.log_model(
            name="model", python_model=str(CODE / code),
            artifacts={"network": str(network), "preprocessing": str(preprocessing)},
            signature=signature, input_example=example, pip_requirements=requirements(),
            metadata={"input": meta["input"]},
        )  # fmt: skip


def _class_outputs(classes: list[str]) -> Schema:
    return Schema([ColSpec("string", "label"), ColSpec("long", "class_index"),
                   *(ColSpec("double", name) for name in classes)])  # fmt: skip


def log_image_classifier(model: Loggable) -> None:
    """`meta`: the normalisation's `mean` and `std`, the `classes`, the `image_shape`;
    `example`: a few raw test images as uint8 (N x C x H x W)."""
    meta = {
        **model.meta,
        "kind": "classifier",
        "input": f"images N x {' x '.join(map(str, model.meta['image_shape']))}: {PIXELS}",
    }
    wrapped = Normalized(model.net, meta["mean"], meta["std"])
    x = torch.from_numpy(model.example.astype(np.float32) / 255)
    signature = ModelSignature(inputs=None, outputs=_class_outputs(list(meta["classes"])))
    _log("image_model.py", wrapped, (x,), meta, signature, model.example)


def log_text_classifier(model: Loggable) -> None:
    """`meta`: the `tokenizer` (ablab.data.text.TOKENIZER), `vocab`, `oov_id`, `max_len` and
    `classes`; `example`: a few raw `texts` and their encoded `tokens` and `lengths`."""
    meta = {**model.meta, "kind": "text_classifier",
            "input": "a `text` column (or a list of strings)"}  # fmt: skip
    example = model.example
    inputs = (torch.as_tensor(example["tokens"]), torch.as_tensor(example["lengths"]))
    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                               outputs=_class_outputs(list(meta["classes"])))  # fmt: skip
    # the model always pads to max_len, so the trace's constant shapes are the served ones
    _log("text_classifier.py", model.net, inputs, meta, signature,
         pd.DataFrame({"text": example["texts"]}), strict_trace=False)  # fmt: skip


def log_image_generator(model: Loggable) -> None:
    """`meta`: `latent_size`, `num_classes` (0: unconditional), `image_shape`; `example`: a
    few latent codes (float32 N x latent_size)."""
    k, latent = model.meta["num_classes"], model.meta["latent_size"]
    shape = model.meta["image_shape"]
    z = model.example
    labels = np.arange(len(z)) % max(k, 1)
    named = [TensorSpec(np.dtype(np.float32), (-1, latent), "z")]
    if k:
        named.append(TensorSpec(np.dtype(np.int64), (-1,), "class"))
        what = f"`z` (float32 N x {latent}) and `class` (int64 N, 0..{k - 1})"
        example = {"z": z, "class": labels}
    else:
        what = f"latent codes z: float32 N x {latent}"
        example = z
    meta = {**model.meta, "kind": "generator", "input": what}
    signature = ModelSignature(inputs=Schema(named) if k else _images([latent]),
                               outputs=_images(shape))  # fmt: skip
    inputs = (torch.from_numpy(z), torch.from_numpy(labels))
    _log("image_model.py", Sampler(model.net, k), inputs, meta, signature, example)


def log_image_mapper(model: Loggable) -> None:
    """`meta`: `image_shape` (in and out) and the `source` dataset; `example`: a few source
    images as uint8."""
    shape = model.meta["image_shape"]
    meta = {
        **model.meta,
        "kind": "mapper",
        "input": f"{model.meta['source']} images N x {' x '.join(map(str, shape))}: {PIXELS}",
    }
    x = torch.from_numpy(model.example.astype(np.float32) / 255)
    signature = ModelSignature(inputs=None, outputs=_images(shape))
    _log("image_model.py", Mapper(model.net), (x,), meta, signature, model.example)


def log_forecaster(model: Loggable) -> None:
    """`meta`: the training windows' `mean` and `std` and the `window` length; `example`: a
    few raw windows (N x window)."""
    window = model.meta["window"]
    meta = {**model.meta, "input": f"windows of the last {window} values, N x {window}"}
    x = torch.from_numpy(model.example.astype(np.float32))
    signature = ModelSignature(inputs=None, outputs=Schema([ColSpec("double", "forecast")]))
    wrapped = Standardized(model.net, meta["mean"], meta["std"])
    _log("forecaster.py", wrapped, (x,), meta, signature, model.example)


KINDS: dict[str, Callable[[Loggable], None]] = {
    "image_classifier": log_image_classifier,
    "text_classifier": log_text_classifier,
    "image_generator": log_image_generator,
    "image_mapper": log_image_mapper,
    "forecaster": log_forecaster,
}


def log_model(model: Loggable) -> None:
    """Log a family's trained network as the active run's standalone model "model"."""
    KINDS[model.kind](model)
