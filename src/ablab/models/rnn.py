"""Recurrent networks over padded token sequences: embedding -> RNN/LSTM/GRU -> pooling over
time (last, mean, max or additive attention) -> dense head. Sequences are packed, so padding
never enters the recurrence, and every pooling ignores it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ablab.models.layers import dense_classifier

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class AdditiveAttention(nn.Module):
    """Bahdanau-style scoring v^T tanh(W h_t); softmax over the real (unpadded) steps."""

    def __init__(self, size: int, hidden: int | None = None) -> None:
        super().__init__()
        self.project = nn.Linear(size, hidden or size)
        self.score = nn.Linear(hidden or size, 1, bias=False)

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.project(states))).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights


class RecurrentNet(nn.Module):
    """Many-to-one: (tokens N x T, lengths N) -> N x num_outputs; with vocab_size None the
    input is already a sequence of feature vectors (N x T x input_size), e.g. a time series.
    With `each_step`, synchronous many-to-many: the head reads every step's state, N x T x
    num_outputs (no pooling; padded steps' outputs are there to be ignored)."""

    def __init__(
        self, vocab_size: int | None, num_outputs: int, cell: str = "lstm", embedding_dim: int = 64,
        hidden_size: int = 64, layers: int = 1, bidirectional: bool = False,
        dropout: float = 0.0, pooling: str = "last", head: Sequence[int] = (),
        head_dropout: float = 0.0, activation_name: str = "relu", input_size: int = 1,
        forget_bias: float = 0.0, each_step: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embedding = None
        if vocab_size is not None:
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            input_size = embedding_dim
        self.rnn = CELLS[cell](
            input_size, hidden_size, num_layers=layers, batch_first=True,
            bidirectional=bidirectional, dropout=dropout,
        )  # fmt: skip
        if forget_bias:  # torch orders an LSTM's gates input, forget, cell, output
            forget = slice(hidden_size, 2 * hidden_size)
            with torch.no_grad():
                for name, bias in self.rnn.named_parameters():
                    if name.startswith("bias_"):
                        bias[forget] = forget_bias if name.startswith("bias_ih") else 0.0
        self.cell, self.pooling, self.each_step = cell, pooling, each_step
        self.directions = 2 if bidirectional else 1
        size = hidden_size * self.directions
        self.attention = AdditiveAttention(size) if pooling == "attention" else None
        self.head = nn.Sequential(
            *dense_classifier(size, list(head), num_outputs, activation_name, head_dropout)
        )
        self.last_attention: torch.Tensor | None = None  # N x T, from the latest forward

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = tokens if self.embedding is None else self.embedding(tokens)
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        states, final = self.rnn(packed)
        if self.each_step:
            states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])
            return self.head(states)
        if self.pooling == "last":
            h_n = final[0] if self.cell == "lstm" else final  # layers*directions x N x H
            pooled = torch.cat(list(h_n[-self.directions :]), dim=1)
            return self.head(pooled)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])
        mask = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)
        if self.pooling == "mean":
            pooled = (states * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(1)
        elif self.pooling == "max":
            pooled = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
        else:
            pooled, weights = self.attention(states, mask)
            self.last_attention = weights.detach()
        return self.head(pooled)


def build_rnn(vocab_size: int | None, num_outputs: int, **options) -> RecurrentNet:
    """Over token ids (vocab_size given) or over one-value-per-step series (vocab_size None)."""
    if vocab_size is None:
        options = {k: v for k, v in options.items() if k != "embedding_dim"}
    return RecurrentNet(vocab_size, num_outputs, **options)
