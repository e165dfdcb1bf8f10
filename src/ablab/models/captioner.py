"""One-to-many: an image's CNN code starts a GRU that writes a character sequence one step
at a time (a tiny image captioner). No class head: the CNN's last layer is the code."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ablab.models.cnn import build_cnn


class Captioner(nn.Module):
    """(images N x C x H x W, decoder input ids N x T) -> logits N x T x V (teacher forcing);
    `greedy` decodes feeding back its own argmax."""

    def __init__(
        self, input_shape: tuple[int, int, int], target_vocab: int,
        channels: Sequence[int] = (16, 32), embedding_dim: int = 16, hidden_size: int = 64,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder = build_cnn(input_shape, hidden_size, channels=channels, batch_norm=True,
                                 head=())  # fmt: skip
        self.embedding = nn.Embedding(target_vocab, embedding_dim, padding_idx=0)
        self.decoder = nn.GRUCell(embedding_dim, hidden_size)
        self.out = nn.Linear(hidden_size, target_vocab)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's first state: the image's code."""
        return torch.tanh(self.encoder(images))

    def forward(self, images: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        h = self.encode(images)
        logits = []
        for t in range(decoder_input.shape[1]):
            h = self.decoder(self.embedding(decoder_input[:, t]), h)
            logits.append(self.out(h))
        return torch.stack(logits, 1)

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, steps: int, bos: int) -> torch.Tensor:
        """Decode `steps` tokens from BOS; N x steps ids."""
        h = self.encode(images)
        token = torch.full((images.shape[0],), bos, dtype=torch.long, device=images.device)
        outputs = []
        for _ in range(steps):
            h = self.decoder(self.embedding(token), h)
            token = self.out(h).argmax(1)
            outputs.append(token)
        return torch.stack(outputs, 1)
