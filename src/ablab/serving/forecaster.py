"""An MLflow pyfunc model logged as code by `ablab.serving`: a TorchScript series forecaster
with its standardisation inside. It imports torch, numpy, pandas and MLflow only (never
ablab). Input: windows of the last `window` values, N x window (a DataFrame, an array or a
list), in the data's own units. Output: a `forecast` column, the next value of each window."""

import json

import mlflow
import numpy as np
import pandas as pd
import torch


class Forecaster(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.network = torch.jit.load(context.artifacts["network"]).eval()
        self.window = int(json.loads(open(context.artifacts["preprocessing"]).read())["window"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input.to_numpy()
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32)).reshape(-1, self.window)
        with torch.no_grad():
            return pd.DataFrame({"forecast": self.network(x).numpy().astype(float)})


mlflow.models.set_model(Forecaster())
