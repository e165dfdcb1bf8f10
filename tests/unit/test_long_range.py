"""The long-range task: the class is the first token and nothing after it; experiments keep the
first `data.sequence_length` tokens."""

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression

from ablab.config import ConfigError, load
from ablab.data import long_range
from ablab.data.datamodules import TextDataModule
from ablab.data.preprocess import preprocess_long_range


def bag_of_tokens(tokens: np.ndarray) -> np.ndarray:
    """Counts of each token id per sequence."""
    return np.stack([np.bincount(row, minlength=len(long_range.VOCAB)) for row in tokens])


def test_the_first_token_is_the_class_and_the_rest_says_nothing():
    tokens, labels = long_range.generate(4000, seed=5)
    assert tokens.shape == (4000, long_range.LENGTH)
    assert (tokens[:, 0] == labels + long_range.FIRST_KEY).all()
    keys = range(long_range.FIRST_KEY, long_range.FIRST_KEY + long_range.KEYS)
    assert not np.isin(tokens[:, 1:], list(keys)).any()  # no key after the first place
    assert np.bincount(labels).min() > 900  # four balanced classes
    train, test = slice(0, 3000), slice(3000, None)
    for seen, expected in ((slice(0, 1), (0.99, 1.0)), (slice(1, None), (0.2, 0.3)),
                           (slice(-10, None), (0.2, 0.3))):  # fmt: skip
        x = bag_of_tokens(tokens[:, seen])
        model = LogisticRegression(max_iter=2000).fit(x[train], labels[train])
        accuracy = model.score(x[test], labels[test])
        assert expected[0] <= accuracy <= expected[1], (seen, accuracy)  # chance: 0.25


def test_sequence_length_keeps_the_first_tokens(tmp_path):
    processed = tmp_path / "data" / "processed"
    preprocess_long_range("long_range", processed, 0.1, 0.2, 0)
    tree = {"experiments": {"rnn": {"task": "classify", "model": {"arch": "rnn"},
                                    "data": {"dataset": "long_range"}}}}  # fmt: skip
    whole = {}
    for keep in (None, 10):
        tree["experiments"]["rnn"]["data"]["sequence_length"] = keep
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
        data = TextDataModule.from_experiment(load(tmp_path / "params.yaml").experiment("rnn"),
                                              processed)  # fmt: skip
        data.setup()
        whole[keep] = data.tensors["test"].tensors
        assert data.input_shape == (keep or long_range.LENGTH,)
    tokens, lengths, labels = whole[10]
    assert tokens.shape[1] == 10 and (lengths == 10).all()
    torch.testing.assert_close(tokens, whole[None][0][:, :10])
    assert (tokens[:, 0] - long_range.FIRST_KEY == labels).all()
    for bad, message in ((0, "greater than or equal to 1"), (-3, "greater than or equal to 1")):
        tree["experiments"]["rnn"]["data"]["sequence_length"] = bad
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
        with pytest.raises(ConfigError, match=rf"sequence_length.*{message}"):
            load(tmp_path / "params.yaml")
    tree["experiments"]["rnn"] = {"task": "classify", "model": {"arch": "mlp"},
                                  "data": {"dataset": "digits", "sequence_length": 10}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="data.sequence_length keeps the first tokens"):
        load(tmp_path / "params.yaml")


def test_first_step_grad_norm_is_the_gradient_at_the_first_embedding():
    from torch.nn import functional as F

    from ablab.families.classify import first_step_grad_norm
    from ablab.models.rnn import build_rnn

    torch.manual_seed(0)
    net = build_rnn(22, 4, cell="rnn", embedding_dim=8, hidden_size=8, pooling="last")
    tokens, labels = (torch.from_numpy(a) for a in long_range.generate(16, seed=1, length=30))
    lengths = torch.full((16,), 30)
    measured = first_step_grad_norm(net, tokens, lengths, labels)
    assert all(p.grad is None for p in net.parameters())  # no gradient left behind
    embedded = net.embedding(tokens).detach().requires_grad_()
    net.embedding = torch.nn.Identity()  # the same network from the embeddings on
    F.cross_entropy(net(embedded, lengths), labels, reduction="sum").backward()
    expected = embedded.grad[:, 0].norm(dim=-1).mean().item()
    assert measured == pytest.approx(expected, rel=1e-5)
    assert embedded.grad[:, -1].norm(dim=-1).mean() > expected  # the last step gets more
