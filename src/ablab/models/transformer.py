"""A Transformer encoder over padded token sequences (BERT's shape at CPU scale): token and
learned position embeddings, a [CLS] vector in front, N pre-norm encoder layers (torch's
`nn.TransformerEncoder`), then the [CLS] output or the mean over real tokens -> dense head.
Padding is masked out of every attention and of the mean."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ablab.models.layers import dense_classifier


class TransformerClassifier(nn.Module):
    """(tokens N x T, lengths N) -> N x num_outputs. In eval mode, inside
    `recording_attention`, `last_attention` holds the last layer's attention (heads averaged)
    from the pooled position, [CLS] or each token's mean, over the tokens: N x T."""

    def __init__(
        self, vocab_size: int, num_outputs: int, max_len: int, embedding_dim: int = 64,
        heads: int = 4, layers: int = 2, feedforward: int = 128, dropout: float = 0.1,
        pooling: str = "cls", head: Sequence[int] = (), head_dropout: float = 0.0,
        activation_name: str = "relu",
    ) -> None:  # fmt: skip
        super().__init__()
        if embedding_dim % heads:
            raise ValueError(f"embedding_dim {embedding_dim} is not divisible by heads {heads}")
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.positions = nn.Embedding(max_len + 1, embedding_dim)  # +1: the [CLS] slot
        self.cls = nn.Parameter(torch.zeros(1, 1, embedding_dim))
        nn.init.normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embedding_dim, heads, feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embedding_dim)
        self.pooling = pooling
        self.max_len = max_len
        self.head = nn.Sequential(
            *dense_classifier(embedding_dim, list(head), num_outputs, activation_name, head_dropout)
        )
        self.attention = True  # draws an attention figure (ablab.families.classify)
        self.last_attention: torch.Tensor | None = None
        # whether an eval forward also computes `last_attention` (a second pass through the
        # layers, so only inside `recording_attention`: validation and test do without)
        self.record_attention = False

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(states N x (T+1) x D with [CLS] first, padding mask N x (T+1): True = padding)."""
        n, t = tokens.shape
        if t > self.max_len:
            raise ValueError(f"sequences of {t} tokens; the network takes at most {self.max_len}")
        x = torch.cat([self.cls.expand(n, -1, -1), self.embedding(tokens)], dim=1)
        x = x + self.positions(torch.arange(t + 1, device=tokens.device))
        padding = torch.arange(t + 1, device=tokens.device) > lengths.unsqueeze(1)
        return self.norm(self.encoder(x, src_key_padding_mask=padding)), padding

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, padding = self.encode(tokens, lengths)
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            real = (~padding[:, 1:]).unsqueeze(-1).float()
            pooled = (states[:, 1:] * real).sum(1) / real.sum(1).clamp(min=1)
        if self.record_attention and not self.training:
            self.last_attention = self._attention(tokens, lengths, padding)
        return self.head(pooled)

    @torch.no_grad()
    def _attention(self, tokens, lengths, padding) -> torch.Tensor:
        """The last layer's self-attention weights over the tokens (not [CLS]), heads
        averaged, from [CLS] (pooling cls) or averaged over the real tokens (mean)."""
        *lower, last = self.encoder.layers
        n, t = tokens.shape
        x = torch.cat([self.cls.expand(n, -1, -1), self.embedding(tokens)], dim=1)
        x = x + self.positions(torch.arange(t + 1, device=tokens.device))
        for layer in lower:
            x = layer(x, src_key_padding_mask=padding)
        h = last.norm1(x)
        _, weights = last.self_attn(h, h, h, key_padding_mask=padding, need_weights=True)
        if self.pooling == "cls":
            return weights[:, 0, 1:]
        real = (~padding[:, 1:]).unsqueeze(-1).float()
        return (weights[:, 1:, 1:] * real).sum(1) / real.sum(1).clamp(min=1)


@contextmanager
def recording_attention(net: nn.Module) -> Iterator[nn.Module]:
    """`net` with its eval forwards keeping `last_attention` (a transformer's costs a second
    pass, made only here); other networks as they are."""
    had = getattr(net, "record_attention", None)
    if had is None:
        yield net
        return
    net.record_attention = True
    try:
        yield net
    finally:
        net.record_attention = had


def build_transformer(vocab_size: int, num_outputs: int, max_len: int, **options):
    return TransformerClassifier(vocab_size, num_outputs, max_len, **options)


class MaskedTokenHead(nn.Module):
    """BERT's masked-token head over a TransformerClassifier's token states: dense, GELU,
    LayerNorm, then scores over the vocabulary tied to the token embedding (plus a bias)."""

    def __init__(self, encoder: TransformerClassifier) -> None:
        super().__init__()
        dim = encoder.embedding.embedding_dim
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(encoder.embedding.num_embeddings))
        self._encoder = (encoder,)  # a tuple: not registered as a submodule here

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states K x D -> K x vocabulary scores."""
        return self.transform(states) @ self._encoder[0].embedding.weight.T + self.bias


def mask_tokens(
    tokens: torch.Tensor, lengths: torch.Tensor, mask_prob: float, mask_id: int,
    first_word: int, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """BERT's corruption: of the real (not padding) tokens, each is picked with `mask_prob`
    (at least one per batch); a picked token becomes `mask_id` (80%), a random word id in
    [first_word, mask_id) (10%) or stays (10%). Returns (corrupted tokens, picked: bool N x T)."""
    device = tokens.device
    real = torch.arange(tokens.shape[1], device=device) < lengths.unsqueeze(1)
    draw = torch.rand(tokens.shape, generator=generator, device=device)
    picked = (draw < mask_prob) & real
    picked[0, 0] |= ~picked.any()  # at least one, decided on the device (no host sync)
    how = torch.rand(tokens.shape, generator=generator, device=device)
    random_ids = torch.randint(first_word, mask_id, tokens.shape, generator=generator,
                               device=device)  # fmt: skip
    corrupted = torch.where(picked & (how < 0.8), mask_id, tokens)
    corrupted = torch.where(picked & (how >= 0.8) & (how < 0.9), random_ids, corrupted)
    return corrupted, picked
