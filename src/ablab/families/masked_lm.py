"""Family `masked_lm`: a transformer encoder learns to predict masked tokens of a text
dataset's training texts (BERT's pretraining at CPU scale; the labels are never read). Its
network is a `TransformerClassifier` whose token embedding has one extra row, [MASK]; a
classify experiment with `mlm` fine-tunes that network's encoder (its head is new). Validation
and test mask with a fixed generator, so every epoch is scored on the same masked tokens."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from ablab.config import Experiment
from ablab.data.datamodules import TextDataModule
from ablab.families.base import Family, Sums, Task, build_error, optimizer_hparams
from ablab.models import build
from ablab.models.transformer import MaskedTokenHead, TransformerClassifier, mask_tokens

FIRST_WORD = 2  # token ids 0 and 1 are <pad> and <oov>: never drawn as random replacements
EVAL_MASK_SEED = 0  # validation and test mask the same tokens every time


def mlm_network(exp: Experiment, data: TextDataModule) -> TransformerClassifier:
    """The experiment's transformer with room for [MASK] (id = the data's vocabulary size):
    the network masked_lm trains and a classify experiment with `mlm` fine-tunes."""
    try:
        return build(exp.model, data.input_shape, len(data.classes), mask_id(data) + 1)
    except ValueError as exc:
        raise build_error(exp, exc) from None


def mask_id(data: TextDataModule) -> int:
    return int(data.meta["vocab_size"])


class MaskedLmTask(Task):
    """Cross-entropy on the picked tokens only (`mask_tokens`); `mlm_accuracy` is the share of
    picked tokens whose original the network ranks first."""

    def __init__(
        self, net: TransformerClassifier, mask_id: int, mask_prob: float = 0.15,
        optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
        momentum: float = 0.9, schedule: dict | None = None, max_epochs: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.lm_head = MaskedTokenHead(net)
        self._reset_eval()
        self._eval_generator: torch.Generator | None = None

    def _loss(self, batch, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy over the picked tokens, correct predictions, picked count)."""
        tokens, lengths = batch[0], batch[1]
        tokens = tokens[:, : int(lengths.max())]
        hp = self.hparams
        corrupted, picked = mask_tokens(
            tokens, lengths, hp.mask_prob, hp.mask_id, FIRST_WORD, generator
        )
        states, _ = self.net.encode(corrupted, lengths)
        scores = self.lm_head(states[:, 1:][picked])
        truth = tokens[picked]
        loss = F.cross_entropy(scores, truth, reduction="sum")
        return loss, (scores.argmax(1) == truth).sum(), truth.numel()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _, n = self._loss(batch)
        mean = loss / n
        self.record_train(mean, mean, n)
        return mean

    def _reset_eval(self) -> None:
        self._sums = Sums()  # loss, correct, picked
        self._eval_generator = None  # seeded on the batches' device at the first step

    def _eval_step(self, batch) -> None:
        if self._eval_generator is None:
            device = batch[0].device
            self._eval_generator = torch.Generator(device).manual_seed(EVAL_MASK_SEED)
        loss, correct, n = self._loss(batch, self._eval_generator)
        self._sums.add(loss=loss, correct=correct, picked=n)

    def _eval_end(self, prefix: str) -> None:
        sums = self._sums.read()
        n = max(sums.get("picked", 0), 1)
        mean = sums.get("loss", 0.0) / n
        values = {"loss": mean, "mlm_accuracy": sums.get("correct", 0) / n}
        if prefix == "test":
            values["perplexity"] = math.exp(min(mean, 50.0))
        self.publish(prefix, values)


class MaskedLm(Family):
    name = "masked_lm"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> TextDataModule:
        return TextDataModule.from_experiment(
            exp, processed_dir, fold, length_buckets=exp.train.length_buckets
        )

    def module(self, exp: Experiment, data: TextDataModule) -> MaskedLmTask:
        return MaskedLmTask(
            mlm_network(exp, data), mask_id(data), exp.mlm.mask_prob, **optimizer_hparams(exp)
        )

    def probe_inputs(self, data) -> None:
        return None  # the network's own head is not what this family trains
