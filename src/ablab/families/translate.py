"""Family `translate`: a character sequence out, decoded one step at a time, from a sequence in
(written dates -> ISO 8601, an encoder-decoder: many-to-many) or from one image (an MNIST
digit -> its name, a captioner: one-to-many); teacher-forced cross-entropy, greedy decoding,
exact-match accuracy, and the decodings (with the attention over the source, or the images)
drawn per example. A batch is (the network's inputs..., target ids)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ablab.config import DATASETS, Experiment
from ablab.data.datamodules import DigitNamesDataModule, TranslationDataModule
from ablab.data.dates import BOS_ID, PAD_ID, decode_chars
from ablab.families.base import Family, NetTask, build_error, optimizer_hparams
from ablab.figures import Figure, plt
from ablab.models import build


class TranslationTask(NetTask):
    def _logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        *inputs, target = batch
        bos = torch.full_like(target[:, :1], BOS_ID)
        return self.net(*inputs, torch.cat([bos, target[:, :-1]], 1)), target

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
        decoded = self.net.greedy(*batch[:-1], target.shape[1], BOS_ID)
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

    def data(
        self, exp: Experiment, processed_dir: Path, fold=None
    ) -> TranslationDataModule | DigitNamesDataModule:
        if DATASETS[exp.dataset][0] == "image":
            return DigitNamesDataModule.from_experiment(exp, processed_dir, fold)
        return TranslationDataModule.from_experiment(exp, processed_dir, fold)

    def probe_inputs(self, data) -> None:
        return None  # the seq2seq network has no ReLU

    def module(self, exp: Experiment, data: TranslationDataModule) -> TranslationTask:
        meta = data.meta
        try:
            net = build(exp.model, data.input_shape, 1, meta.get("source_vocab_size"),
                        meta["target_vocab_size"])  # fmt: skip
        except ValueError as exc:
            raise build_error(exp, exc) from None
        return TranslationTask(net, **optimizer_hparams(exp))

    def artifacts(self, exp: Experiment, module: TranslationTask, data, title: str) -> dict:
        """Greedy decodings of the first test examples and, with attention, their heat maps;
        from images, the images with what was written for each."""
        net = module.net
        *inputs, target = data.tensors["test"].tensors
        images = inputs[0].dim() == 4
        count = 8 if images else 4
        inputs, target = [t[:count] for t in inputs], target[:count]
        net.eval()
        decoded = net.greedy(*inputs, target.shape[1], BOS_ID)
        vocab = data.target_vocab
        rows, out_files = [], {}
        for i in range(count):
            out = decode_chars(decoded[i].tolist(), vocab)
            truth = decode_chars(target[i].tolist(), vocab)
            rows.append({"source": data.source_text("test", i), "target": truth, "decoded": out})
            if getattr(net, "last_attention", None) is not None:
                chars = list(rows[-1]["source"])
                weights = net.last_attention[i, : len(out), : len(chars)].numpy()
                out_files[f"attention_{i}.png"] = alignment_figure(
                    chars, list(out), weights, f"{title}: attention"
                )
        if images:
            out_files["test_decodings.png"] = decodings_figure(
                inputs[0], [r["decoded"] for r in rows], title
            )
        out_files["test_decodings.json"] = rows
        return out_files


def decodings_figure(images: torch.Tensor, words: list[str], title: str) -> Figure:
    """Each image with the word decoded from it."""
    fig, axes = plt.subplots(1, len(words), figsize=(1.2 * len(words), 1.6))
    for ax, image, word in zip(axes, images, words, strict=True):
        ax.imshow(image.float().mean(0).numpy(), cmap="gray")
        ax.set_title(word or "(nothing)", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


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
