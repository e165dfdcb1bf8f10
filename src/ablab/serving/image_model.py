"""An MLflow pyfunc model logged as code by `ablab.serving`: a TorchScript image network with
its preprocessing, one of three kinds (preprocessing.json's `kind`). It imports torch, numpy,
pandas and MLflow only (never ablab), so plain MLflow loads and serves it.

- classifier: images N x C x H x W (or N x H x W, or N flat rows) -> per image the predicted
  `label` (the class name), its `class_index` and each class's probability;
- generator: latent codes (float32 N x latent; a conditional one takes {"z", "class"}) ->
  images N x C x H x W in [0, 1];
- mapper (CycleGAN): source images -> mapped images N x C x H x W in [0, 1].

Images go in as uint8 (0..255) or as floats in [0, 1]: the dtype says which, never the values
(a dark 0..255 image is not mistaken for a bright [0, 1] one); floats outside [0, 1] are
refused."""

import json

import mlflow
import numpy as np
import pandas as pd
import torch


def pixels(values, shape):
    """Images as float32 in [0, 1], shaped N x `shape`, from uint8-like integers or floats."""
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy()
    x = np.asarray(values)
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError("integer pixels must lie in 0..255")
        x = x.astype(np.float32) / 255
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1):
            raise ValueError(
                "float pixels must lie in [0, 1]; send uint8 (or integers) for 0..255 pixels"
            )
        x = x.astype(np.float32)
    else:
        raise ValueError(f"pixels must be integers 0..255 or floats in [0, 1]; got {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, *shape)


class ImageModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.network = torch.jit.load(context.artifacts["network"]).eval()
        self.meta = json.loads(open(context.artifacts["preprocessing"]).read())
        self.shape = tuple(self.meta["image_shape"])

    def predict(self, context, model_input, params=None):
        kind = self.meta["kind"]
        with torch.no_grad():
            if kind == "generator":
                return self._generate(model_input)
            out = self.network(pixels(model_input, self.shape))
        if kind == "mapper":
            return out.numpy()
        probs = torch.softmax(out, dim=1).numpy()
        index = probs.argmax(1)
        classes = list(self.meta["classes"])
        frame = pd.DataFrame(probs, columns=classes)
        frame.insert(0, "class_index", index.astype(np.int64))
        frame.insert(0, "label", [classes[i] for i in index])
        return frame

    def _generate(self, model_input):
        if isinstance(model_input, dict):
            z, labels = model_input["z"], model_input.get("class")
        else:
            z, labels = model_input, None
        z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(-1, self.meta["latent_size"])
        if self.meta["num_classes"] and labels is None:
            raise ValueError("a conditional generator takes {'z': ..., 'class': ...}")
        labels = np.zeros(len(z)) if labels is None else labels
        return self.network(z, torch.as_tensor(np.asarray(labels, dtype=np.int64))).numpy()


mlflow.models.set_model(ImageModel())
