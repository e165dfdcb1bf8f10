"""An MLflow pyfunc model logged as code by `ablab.serving`: a TorchScript image classifier
with its preprocessing. It imports torch, numpy, pandas and MLflow only (never ablab), so plain
MLflow loads and serves it. Input: images N x C x H x W (or N x H x W, or N flat rows), pixels
in [0, 1] or 0..255 (an image whose largest pixel is above 1 is divided by 255). Output: per
image the predicted `label` (the class name), its `class_index`, and each class's
probability."""

import json

import mlflow
import numpy as np
import pandas as pd
import torch


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.network = torch.jit.load(context.artifacts["network"]).eval()
        meta = json.loads(open(context.artifacts["preprocessing"]).read())
        self.classes = list(meta["classes"])
        self.shape = tuple(meta["image_shape"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input.to_numpy()
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32)).reshape(-1, *self.shape)
        scale = torch.where(x.flatten(1).amax(1) > 1.0, 255.0, 1.0)
        x = x / scale.view(-1, *([1] * len(self.shape)))
        with torch.no_grad():
            probs = torch.softmax(self.network(x), dim=1).numpy()
        index = probs.argmax(1)
        out = pd.DataFrame(probs, columns=self.classes)
        out.insert(0, "class_index", index.astype(np.int64))
        out.insert(0, "label", [self.classes[i] for i in index])
        return out


mlflow.models.set_model(ImageClassifier())
