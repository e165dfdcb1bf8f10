"""An MLflow pyfunc model logged as code by `ablab.serving`: a TorchScript text classifier with
its tokenizer (regular expressions, as data) and vocabulary. It imports torch, numpy, pandas and
MLflow only (never ablab), so plain MLflow loads and serves it. Input: texts (a `text` column,
or a list of strings). Output: per text the predicted `label`, its `class_index`, and each
class's probability."""

import json
import re

import mlflow
import numpy as np
import pandas as pd
import torch


class TextClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.network = torch.jit.load(context.artifacts["network"]).eval()
        self.use_preprocessing(json.loads(open(context.artifacts["preprocessing"]).read()))

    def use_preprocessing(self, meta):
        """Classes, vocabulary and tokenizer from the model's preprocessing.json."""
        self.classes = list(meta["classes"])
        self.max_len = int(meta["max_len"])
        self.oov_id = int(meta["oov_id"])
        self.index = {token: i for i, token in enumerate(meta["vocab"])}
        spec = meta["tokenizer"]
        self.lowercase = bool(spec["lowercase"])
        self.substitutions = [(re.compile(p), r) for p, r in spec["substitutions"]]
        self.token = re.compile(spec["token"])

    def encode(self, text):
        """Token ids as in training: the first max_len tokens; an empty text is one OOV."""
        text = text.lower() if self.lowercase else text
        for pattern, replacement in self.substitutions:
            text = pattern.sub(replacement, text)
        ids = [self.index.get(t, self.oov_id) for t in self.token.findall(text)]
        return ids[: self.max_len] or [self.oov_id]

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input["text"] if "text" in model_input else model_input.iloc[:, 0]
        encoded = [self.encode(str(text)) for text in list(model_input)]
        tokens = np.zeros((len(encoded), self.max_len), dtype=np.int64)  # padded with id 0
        for row, ids in enumerate(encoded):
            tokens[row, : len(ids)] = ids
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.int64)
        with torch.no_grad():
            probs = torch.softmax(self.network(torch.from_numpy(tokens), lengths), dim=1).numpy()
        index = probs.argmax(1)
        out = pd.DataFrame(probs, columns=self.classes)
        out.insert(0, "class_index", index.astype(np.int64))
        out.insert(0, "label", [self.classes[i] for i in index])
        return out


mlflow.models.set_model(TextClassifier())
