"""The `transformer` arch: padding never changes a prediction, attention covers the real tokens
only, and sizes that cannot make a network are refused naming the key."""

import pytest
import torch

from ablab.config import ConfigError, load
from ablab.models.transformer import TransformerClassifier, recording_attention
from tests.conftest import TINY_PARAMS


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_changes_no_prediction_and_gets_no_attention(pooling):
    torch.manual_seed(0)
    net = TransformerClassifier(50, 3, max_len=12, embedding_dim=16, heads=4, layers=2,
                                feedforward=32, pooling=pooling).eval()  # fmt: skip
    tokens = torch.randint(1, 50, (4, 8))
    lengths = torch.tensor([8, 5, 3, 1])
    for i, n in enumerate(lengths):
        tokens[i, n:] = 0
    out = net(tokens, lengths)
    assert net.last_attention is None  # validation and test make no second pass
    with recording_attention(net):
        assert torch.equal(net(tokens, lengths), out)
    attention = net.last_attention
    assert out.shape == (4, 3) and attention.shape == (4, 8)
    padded = torch.cat([tokens, torch.zeros(4, 4, dtype=torch.long)], dim=1)
    assert torch.allclose(net(padded, lengths), out, atol=1e-5)  # 4 more padding tokens
    garbage = tokens.clone()
    garbage[1, 5:] = 7  # what stands in the padding does not matter either
    assert torch.allclose(net(garbage, lengths), out, atol=1e-5)
    mask = torch.arange(8) < lengths.unsqueeze(1)
    assert torch.all(attention[~mask] == 0)
    # from [CLS] the weights over the tokens sum to 1 minus what [CLS] keeps for itself
    assert torch.all(attention.sum(1) <= 1 + 1e-5) and torch.all(attention.sum(1) > 0)
    with pytest.raises(ValueError, match="at most 12"):
        net(torch.ones(1, 13, dtype=torch.long), torch.tensor([13]))


def test_training_moves_every_layer():
    torch.manual_seed(0)
    net = TransformerClassifier(20, 2, max_len=6, embedding_dim=8, heads=2, layers=2,
                                feedforward=16, dropout=0.0)  # fmt: skip
    tokens, lengths = torch.randint(1, 20, (16, 6)), torch.full((16,), 6)
    labels = (tokens[:, 0] > 10).long()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(tokens, lengths), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 4  # it learns which first token means which class


def test_heads_must_divide_the_embedding(tmp_path):
    import yaml

    tree = {**TINY_PARAMS, "experiments": {"bert": {
        "task": "classify", "data": {"dataset": "tweets"},
        "model": {"arch": "transformer", "embedding_dim": 30, "heads": 4}}}}  # fmt: skip
    tree = {k: v for k, v in tree.items() if k not in ("suites", "tune")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"experiments.bert.*embedding_dim \(30\) must be a "
                       r"multiple of heads \(4\)"):  # fmt: skip
        load(tmp_path / "params.yaml")
