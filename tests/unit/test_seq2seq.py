"""The date-format task: generation, and a seq2seq with attention that learns a tiny case."""

import datetime as dt

import torch
from torch.nn import functional as F

from ablab.data import dates
from ablab.models.seq2seq import Seq2Seq


def test_generated_pairs_have_one_right_answer():
    sources, targets = dates.generate(500, seed=3)
    assert len(set(sources)) == 500
    for target in targets:
        assert dt.date.fromisoformat(target).year in range(1950, 2050)
    assert dates.generate(50, seed=3) == (sources[:50], targets[:50])  # seeded


def test_every_format_says_the_same_date():
    day = dt.date(1998, 3, 3)
    for text in dates._formats(day):
        assert "3" in text and ("98" in text)


def test_seq2seq_with_attention_learns_a_tiny_copy_task():
    torch.manual_seed(0)
    # copy 4 symbols: a task with one right answer, learnable in a few hundred steps
    source = torch.randint(3, 8, (64, 4))
    lengths = torch.full((64,), 4)
    target = torch.cat([source, torch.full((64, 1), dates.EOS_ID)], 1)
    net = Seq2Seq(8, 8, embedding_dim=16, hidden_size=32, attention=True)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    bos = torch.full((64, 1), dates.BOS_ID)
    for _ in range(150):
        logits = net(source, lengths, torch.cat([bos, target[:, :-1]], 1))
        loss = F.cross_entropy(logits.transpose(1, 2), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    decoded = net.greedy(source, lengths, 5, dates.BOS_ID)
    exact = (decoded == target).all(1).float().mean().item()
    assert exact > 0.9
    attention = net.last_attention  # N x steps x source
    assert torch.allclose(attention.sum(-1), torch.ones(64, 5), atol=1e-5)
    # copying: output step t looks mostly at source position t
    assert (attention[:, :4].argmax(-1) == torch.arange(4)).float().mean() > 0.8


def test_padding_in_the_source_is_never_attended():
    torch.manual_seed(0)
    net = Seq2Seq(10, 6, embedding_dim=4, hidden_size=8).eval()
    source = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    out = net.greedy(source, lengths, 3, dates.BOS_ID)
    assert net.last_attention[1, :, 2:].abs().max() == 0
    junk = source.clone()
    junk[1, 2:] = 9
    assert torch.equal(net.greedy(junk, lengths, 3, dates.BOS_ID), out)


def test_exact_and_character_accuracy_on_a_known_decoding():
    """Exact match ignores padding; character accuracy counts the target's real tokens."""
    from torch import nn

    from ablab.data.dates import PAD_ID
    from ablab.families.translate import TranslationTask

    target = torch.tensor([[5, 6, PAD_ID], [7, 8, 9], [4, 4, 4]])
    decoded = torch.tensor([[5, 6, 3], [7, 0, 9], [4, 4, 5]])

    class Known(nn.Module):
        def forward(self, source, lengths, decoder_input):
            return torch.zeros(len(source), decoder_input.shape[1], 12)

        def greedy(self, source, lengths, steps, bos):
            return decoded

    task = TranslationTask(Known())
    source = torch.ones(3, 4, dtype=torch.long)
    task._eval_step((source, torch.tensor([4, 4, 4]), target))
    sums = task._sums.read()
    assert sums["exact"] == 1  # row 1 only: its padded position does not count
    assert sums["count"] == 3
    assert sums["tokens"] == 8
    assert sums["chars"] == 2 + 2 + 2
