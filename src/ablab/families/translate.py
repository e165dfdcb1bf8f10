"""Family `translate`: a sequence in, another out (written dates -> ISO 8601) by an
encoder-decoder; teacher-forced cross-entropy, greedy decoding, exact-match accuracy, and the
decoder's attention over the source drawn per example."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ablab.config import Experiment
from ablab.data.datamodules import TranslationDataModule
from ablab.data.dates import BOS_ID, EOS_ID, PAD_ID
from ablab.families.base import Family, Sums, Task, build_error, optimizer_hparams
from ablab.figures import Figure, plt
from ablab.models import build


class TranslationTask(Task):
    def __init__(
        self, net: nn.Module, optimizer: str = "adam", lr: float = 1e-3,
        weight_decay: float = 0.0, momentum: float = 0.9, schedule: dict | None = None,
        max_epochs: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self._reset_eval()

    def _reset_eval(self) -> None:
        self._sums = Sums()

    def _logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        source, lengths, target = batch
        bos = torch.full_like(target[:, :1], BOS_ID)
        return self.net(source, lengths, torch.cat([bos, target[:, :-1]], 1)), target

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        logits, target = self._logits(batch)
        loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=PAD_ID)
        self.record_train(loss, loss, len(target))
        return loss

    def _eval_step(self, batch) -> None:
        logits, target = self._logits(batch)
        real = target != PAD_ID
        loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=PAD_ID,
                               reduction="sum")  # fmt: skip
        source, lengths, _ = batch
        decoded = self.net.greedy(source, lengths, target.shape[1], BOS_ID)
        right = (decoded == target) | ~real
        self._sums.add(loss=loss, tokens=real.sum(), exact=right.all(1).sum(),
                       chars=((decoded == target) & real).sum(), count=len(target))  # fmt: skip

    def _eval_end(self, prefix: str) -> None:
        sums = self._sums.read()
        tokens = max(sums.get("tokens", 0), 1)
        self.publish(prefix, {
            "loss": sums.get("loss", 0.0) / tokens,
            "accuracy": sums.get("exact", 0) / max(sums.get("count", 0), 1),  # exact match
            "char_accuracy": sums.get("chars", 0) / tokens,
        })  # fmt: skip
        self._reset_eval()


class Translate(Family):
    name = "translate"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> TranslationDataModule:
        return TranslationDataModule.from_experiment(exp, processed_dir, fold)

    def probe_inputs(self, data) -> None:
        return None  # the seq2seq network has no ReLU

    def module(self, exp: Experiment, data: TranslationDataModule) -> TranslationTask:
        meta = data.meta
        try:
            net = build(exp.model, data.input_shape, 1, meta["source_vocab_size"],
                        meta["target_vocab_size"])  # fmt: skip
        except ValueError as exc:
            raise build_error(exp, exc) from None
        return TranslationTask(net, **optimizer_hparams(exp))

    def artifacts(self, exp: Experiment, module: TranslationTask, data, title: str) -> dict:
        """Greedy decodings of the first test pairs and, with attention, their heat maps."""
        count = 4
        net = module.net
        source, lengths, target = (t[:count] for t in data.tensors["test"].tensors)
        net.eval()
        decoded = net.greedy(source, lengths, target.shape[1], BOS_ID)
        rows, out_files = [], {}
        for i in range(count):
            chars = [data.source_vocab[t] for t in source[i, : lengths[i]].tolist()]
            out = []
            for t in decoded[i].tolist():
                if t == EOS_ID:
                    break
                out.append(data.target_vocab[t])
            rows.append({"source": "".join(chars), "decoded": "".join(out)})
            if net.last_attention is not None:
                weights = net.last_attention[i, : len(out), : lengths[i]].numpy()
                out_files[f"attention_{i}.png"] = alignment_figure(
                    chars, out, weights, f"{title}: attention"
                )
        out_files["test_decodings.json"] = rows
        return out_files


def alignment_figure(
    source: Sequence[str], output: Sequence[str], weights: np.ndarray, title: str
) -> Figure:
    """Attention of each output character (rows) over the source characters (columns)."""
    fig, ax = plt.subplots(figsize=(0.3 * len(source) + 1.5, 0.3 * len(output) + 1.2))
    ax.imshow(weights, cmap="Greys", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(source)), [c if c != " " else "␣" for c in source], fontsize=7)
    ax.set_yticks(range(len(output)), output, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
