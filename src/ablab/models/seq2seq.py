"""Encoder-decoder LSTM with additive (Bahdanau) attention over the encoder's states."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Seq2Seq(nn.Module):
    """(source ids N x S, source lengths N, decoder input ids N x T) -> logits N x T x V_out;
    the attention weights of the latest call are kept in `last_attention` (N x T x S)."""

    def __init__(
        self, source_vocab: int, target_vocab: int, embedding_dim: int = 32,
        hidden_size: int = 64, attention: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.source_embedding = nn.Embedding(source_vocab, embedding_dim, padding_idx=0)
        self.target_embedding = nn.Embedding(target_vocab, embedding_dim, padding_idx=0)
        self.encoder = nn.LSTM(embedding_dim, hidden_size, batch_first=True)
        self.use_attention = attention
        context = hidden_size if attention else 0
        self.decoder = nn.LSTMCell(embedding_dim + context, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.out = nn.Linear(hidden_size + context, target_vocab)
        self.last_attention: torch.Tensor | None = None

    def encode(self, source: torch.Tensor, lengths: torch.Tensor):
        packed = pack_padded_sequence(
            self.source_embedding(source), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        states, (h, c) = self.encoder(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=source.shape[1])
        mask = torch.arange(source.shape[1], device=source.device) < lengths.unsqueeze(1)
        return states, mask, (h[-1], c[-1])

    def step(self, token, state, states, keys, mask):
        """One decoder step: (logits N x V, new state, attention N x S or None)."""
        h, c = state
        embedded = self.target_embedding(token)
        weights = None
        if self.use_attention:
            scores = self.score(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(-1)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            context = torch.bmm(weights.unsqueeze(1), states).squeeze(1)
            h, c = self.decoder(torch.cat([embedded, context], 1), (h, c))
            logits = self.out(torch.cat([h, context], 1))
        else:
            h, c = self.decoder(embedded, (h, c))
            logits = self.out(h)
        return logits, (h, c), weights

    def forward(self, source, lengths, decoder_input):
        """Teacher forcing: decoder_input is the target shifted right (BOS first)."""
        states, mask, state = self.encode(source, lengths)
        keys = self.key(states)
        logits, attention = [], []
        for t in range(decoder_input.shape[1]):
            out, state, weights = self.step(decoder_input[:, t], state, states, keys, mask)
            logits.append(out)
            attention.append(weights)
        if self.use_attention:
            self.last_attention = torch.stack(attention, 1).detach()
        return torch.stack(logits, 1)

    @torch.no_grad()
    def greedy(self, source, lengths, steps: int, bos: int) -> torch.Tensor:
        """Decode `steps` tokens feeding back the argmax; N x steps ids."""
        states, mask, state = self.encode(source, lengths)
        keys = self.key(states)
        token = torch.full((source.shape[0],), bos, dtype=torch.long, device=source.device)
        outputs, attention = [], []
        for _ in range(steps):
            logits, state, weights = self.step(token, state, states, keys, mask)
            token = logits.argmax(1)
            outputs.append(token)
            attention.append(weights)
        if self.use_attention:
            self.last_attention = torch.stack(attention, 1)
        return torch.stack(outputs, 1)
