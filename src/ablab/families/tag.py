"""Family `tag`: synchronous many-to-many, one label per input token (each character of a
written date tagged with its field) by a recurrent network whose head reads every step's
state; token and whole-sequence accuracy, and the test taggings as an artifact."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from ablab.config import Experiment
from ablab.data.datamodules import TaggingDataModule
from ablab.data.dates import IGNORE
from ablab.families.base import Family, NetTask, build_error, optimizer_hparams
from ablab.models import build


class TaggingTask(NetTask):
    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(tokens, lengths)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        tokens, lengths, tags = batch
        loss = F.cross_entropy(self(tokens, lengths).transpose(1, 2), tags, ignore_index=IGNORE)
        self.record_train(loss, loss, len(tags))
        return loss

    def _eval_step(self, batch) -> None:
        tokens, lengths, tags = batch
        logits = self(tokens, lengths)
        real = tags != IGNORE
        loss = F.cross_entropy(logits.transpose(1, 2), tags, ignore_index=IGNORE,
                               reduction="sum")  # fmt: skip
        right = (logits.argmax(-1) == tags) & real
        self._sums.add(loss=loss, tokens=real.sum(), right=right.sum(),
                       sequences=(right | ~real).all(1).sum(), count=len(tags))  # fmt: skip

    def _eval_end(self, prefix: str) -> None:
        sums = self._sums.read()
        tokens = max(sums.get("tokens", 0), 1)
        self.publish(prefix, {
            "loss": sums.get("loss", 0.0) / tokens,
            "token_accuracy": sums.get("right", 0) / tokens,
            "sequence_accuracy": sums.get("sequences", 0) / max(sums.get("count", 0), 1),
        })  # fmt: skip
        self._reset_eval()


class Tag(Family):
    name = "tag"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> TaggingDataModule:
        return TaggingDataModule.from_experiment(exp, processed_dir, fold)

    def module(self, exp: Experiment, data: TaggingDataModule) -> TaggingTask:
        try:
            net = build(exp.model, data.input_shape, len(data.classes), data.meta["vocab_size"],
                        each_step=True)  # fmt: skip
        except ValueError as exc:
            raise build_error(exp, exc) from None
        return TaggingTask(net, **optimizer_hparams(exp))

    def artifacts(self, exp: Experiment, module: TaggingTask, data, title: str) -> dict:
        """The first test dates with each character's field, true and predicted."""
        count = 8
        tokens, lengths, tags = (t[:count] for t in data.tensors["test"].tensors)
        module.net.eval()
        with torch.no_grad():
            predicted = module.net(tokens, lengths).argmax(-1)
        fields = data.classes
        rows = []
        for i in range(count):
            n = int(lengths[i])
            rows.append({
                "text": "".join(data.vocab[t] for t in tokens[i, :n].tolist()),
                "fields": [fields[t] for t in tags[i, :n].tolist()],
                "predicted": [fields[t] for t in predicted[i, :n].tolist()],
            })  # fmt: skip
        return {"test_taggings.json": rows}
