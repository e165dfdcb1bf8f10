"""Text classifiers: the explanation is the attention map the network computes (a transformer's
[CLS] attention, an RNN's attention pooling), and the same faithfulness numbers as for images,
on tokens: deletion replaces tokens by <oov> in the map's order (most attended first) and follows
the probability of the predicted class, insertion starts from all-<oov> and puts them back; a
random order is the baseline; the randomization check compares with a re-initialised network."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from ablab.config.explain import ExplainParams
from ablab.data.text import OOV_ID
from ablab.explain import faithfulness
from ablab.models.transformer import recording_attention

BATCH = 256


def attends(net: nn.Module) -> bool:
    return getattr(net, "attention", None) not in (None, False)


@torch.no_grad()
def predict(net: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor):
    """(predicted class, its probability, attention N x T) in eval mode, in batches."""
    net.eval()
    preds, confs, weights = [], [], []
    for t, n in zip(tokens.split(BATCH), lengths.split(BATCH), strict=True):
        with recording_attention(net):
            probs = torch.softmax(net(t, n), 1)
        confidence, predicted = probs.max(1)
        attention = net.last_attention
        pad = tokens.shape[1] - attention.shape[1]  # an RNN returns only the batch's longest
        weights.append(nn.functional.pad(attention, (0, pad)))
        preds.append(predicted)
        confs.append(confidence)
    return torch.cat(preds), torch.cat(confs), torch.cat(weights)


def token_ranks(weights: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """N x T: each real token's place in the order (0: most attended; ties random); padding
    gets T, so it is never removed or inserted."""
    n, t = weights.shape
    real = torch.arange(t) < lengths.unsqueeze(1)
    scores = torch.where(real, weights, torch.tensor(-1.0))
    order = faithfulness.pixel_order(scores.view(n, 1, t), generator)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(t).expand(n, -1).contiguous())
    return torch.where(real, ranks, torch.tensor(t))


@torch.no_grad()
def curves(net: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor,
           ranks: torch.Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(deletion, insertion): N x (steps + 1) probabilities of `target` with the first
    round(k / steps * length) tokens of the order replaced by <oov> (put back), k = 0..steps."""
    n = len(tokens)
    deletion, insertion = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    real = torch.arange(tokens.shape[1]) < lengths.unsqueeze(1)
    blank = torch.where(real, torch.tensor(OOV_ID), tokens)
    for k in range(steps + 1):
        shown = ranks < torch.round(lengths.float() * k / steps).long().unsqueeze(1)
        for name, batch in (("deletion", torch.where(shown, blank, tokens)),
                            ("insertion", torch.where(shown, tokens, blank))):  # fmt: skip
            pairs = zip(batch.split(BATCH), lengths.split(BATCH), strict=True)
            probs = torch.cat([torch.softmax(net(b, n_), 1) for b, n_ in pairs])
            picked = probs.gather(1, target.view(-1, 1))[:, 0].numpy()
            (deletion if name == "deletion" else insertion)[:, k] = picked
    return deletion, insertion


def explain_text(net: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor,
                 cfg: ExplainParams) -> tuple[dict, dict, dict]:  # fmt: skip
    """(metrics, table, mean curves) for the attention map against a random order, over the
    first `cfg.images` test texts."""
    generator = torch.Generator().manual_seed(cfg.seed)
    tokens, lengths = tokens[: cfg.images], lengths[: cfg.images]
    target, _, weights = predict(net, tokens, lengths)
    n, t = tokens.shape
    orders = {"attention": token_ranks(weights, lengths, generator),
              "random": token_ranks(torch.zeros(n, t), lengths, generator)}  # fmt: skip
    table, mean_curves = {}, {}
    for name, ranks in orders.items():
        deletion, insertion = curves(net, tokens, lengths, target, ranks, cfg.steps)
        table[name] = {"deletion_auc": float(faithfulness.auc(deletion).mean()),
                       "insertion_auc": float(faithfulness.auc(insertion).mean())}  # fmt: skip
        mean_curves[name] = np.stack([deletion.mean(0), insertion.mean(0)])
    twin = faithfulness.randomized(net, cfg.seed)
    k = min(cfg.sanity_images, n)
    _, _, other = predict(twin, tokens[:k], lengths[:k])
    rhos = [spearmanr(weights[i, : lengths[i]], other[i, : lengths[i]]).statistic
            for i in range(k) if lengths[i] > 2]  # fmt: skip
    table["attention"]["randomization_rank_correlation"] = float(np.nanmean(rhos))
    metrics = {"explained_texts": n}
    for name, row in table.items():
        metrics.update({f"{name}_{key}": v for key, v in row.items()})
    return metrics, table, mean_curves
