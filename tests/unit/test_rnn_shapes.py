"""The two recurrent shapes beside many-to-one and encoder-decoder: synchronous many-to-many
(date_tagging: a field per character) and one-to-many (digit_names: an image -> its name)."""

import datetime as dt

import numpy as np
import pytest
import torch
import yaml

from ablab.config import ConfigError, load
from ablab.data import dates, digit_names
from ablab.data.datamodules import DigitNamesDataModule, TaggingDataModule
from ablab.data.preprocess import preprocess_date_tagging
from ablab.models.captioner import Captioner
from ablab.models.rnn import build_rnn

S, D, M, Y, W = (dates.FIELDS.index(f) for f in ("separator", "day", "month", "year", "weekday"))


def tags_of(text: str, pieces: list[tuple[str, int]]) -> list[int]:
    assert "".join(p for p, _ in pieces) == text
    return [field for piece, field in pieces for _ in piece]


def test_each_written_form_tags_its_characters_by_hand():
    day = dt.date(1998, 3, 3)  # a tuesday
    by_hand = {
        "3 march 1998": [("3", D), (" ", S), ("march", M), (" ", S), ("1998", Y)],
        "march 3, 1998": [("march", M), (" ", S), ("3", D), (", ", S), ("1998", Y)],
        "tue 3 mar 1998": [("tue", W), (" ", S), ("3", D), (" ", S), ("mar", M), (" ", S),
                           ("1998", Y)],
        "03/03/1998": [("03", D), ("/", S), ("03", M), ("/", S), ("1998", Y)],
        "3.3.98": [("3", D), (".", S), ("3", M), (".", S), ("98", Y)],
        "tuesday, march 3, 1998": [("tuesday", W), (", ", S), ("march", M), (" ", S),
                                   ("3", D), (", ", S), ("1998", Y)],
        "1998 mar 03": [("1998", Y), (" ", S), ("mar", M), (" ", S), ("03", D)],
    }  # fmt: skip
    forms = dates._fielded(day)
    assert len(forms) == len(by_hand)
    for pieces, (text, expected) in zip(forms, by_hand.items(), strict=True):
        assert "".join(p for p, _ in pieces) == text
        assert [dates.FIELDS.index(f) for p, f in pieces for _ in p] == tags_of(text, expected)
    assert dates._formats(day) == list(by_hand)  # the translation task's sources, unchanged


def test_generated_tags_line_up_with_the_text_and_the_translation_draws():
    texts, tags, forms = dates.generate_tagged(300, seed=4)
    assert texts == dates.generate(300, seed=4)[0]  # the same dates, drawn the same way
    assert all(len(t) == len(g) for t, g in zip(texts, tags, strict=True))
    assert set(forms) == set(range(7))
    for text, row in zip(texts, tags, strict=True):
        for char, field in zip(text, row, strict=True):
            if char in " ,/.":
                assert field == S
            elif char.isdigit():
                assert field in (D, M, Y)
            else:
                assert field in (M, W)


def test_the_tagging_data_pads_tags_with_ignore_and_a_forward_tagger_must_guess(tmp_path):
    processed = tmp_path / "data" / "processed"
    meta = preprocess_date_tagging("date_tagging", processed, 0.1, 0.2, 0, 1200)
    assert meta["fields"] == dates.FIELDS
    tree = {"experiments": {"tagger": {"task": "tag", "model": {"arch": "rnn"},
                                       "data": {"dataset": "date_tagging", "subset": 500},
                                       "train": {"log_model": False}}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    exp = load(tmp_path / "params.yaml").experiment("tagger")
    data = TaggingDataModule.from_experiment(exp, processed)
    data.setup()
    tokens, lengths, tags = data.tensors["train"].tensors
    assert len(tokens) == 500
    positions = torch.arange(tokens.shape[1])
    padded = positions >= lengths.unsqueeze(1)
    assert (tags[padded] == dates.IGNORE).all() and (tags[~padded] >= 0).all()
    assert (tokens[padded] == dates.PAD_ID).all()
    # a character's field is not always decided by what came before it: the same prefix
    # carries different fields (why C27 is tested here)
    texts = json_texts(processed / "date_tagging")
    _, all_tags, _ = dates.generate_tagged(1200, seed=0)
    seen: dict[str, set[int]] = {}
    for text, row in zip(texts, all_tags, strict=True):
        for i in range(len(text)):
            seen.setdefault(text[: i + 1], set()).add(row[i])
    assert sum(len(fields) > 1 for fields in seen.values()) >= 5


def json_texts(folder):
    import json

    return json.loads((folder / "texts.json").read_text())


def test_a_tagger_labels_every_step_and_ignores_padding():
    torch.manual_seed(0)
    net = build_rnn(12, 5, cell="gru", embedding_dim=4, hidden_size=8, each_step=True).eval()
    tokens = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    lengths = torch.tensor([3, 2])
    out = net(tokens, lengths)
    assert out.shape == (2, 4, 5)
    junk = tokens.clone()
    junk[1, 2:] = 9
    torch.testing.assert_close(net(junk, lengths)[1, :2], out[1, :2])  # padding never read
    # a unidirectional tagger's output at step t depends on no later token
    later = tokens.clone()
    later[0, 2] = 8
    torch.testing.assert_close(net(later, lengths)[0, :2], out[0, :2])


def test_a_tagger_refuses_pooling_by_name(tmp_path):
    tree = {"experiments": {"tagger": {"task": "tag",
                                       "model": {"arch": "rnn", "pooling": "mean"},
                                       "data": {"dataset": "date_tagging"}}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="experiments.tagger: model.pooling: a tagger labels"):
        load(tmp_path / "params.yaml")


def test_digit_names_are_the_targets_and_decode_back():
    ids = digit_names.name_ids(np.array([7, 0, 3]))
    assert ids.shape == (3, digit_names.LENGTH)
    words = [dates.decode_chars(row.tolist(), digit_names.VOCAB) for row in ids]
    assert words == ["seven", "zero", "three"]
    for row, word in zip(ids, words, strict=True):  # one EOS right after the name, then padding
        assert row[len(word)] == dates.EOS_ID and (row[len(word) + 1 :] == dates.PAD_ID).all()


def test_the_captioner_writes_from_the_image_code_alone():
    torch.manual_seed(0)
    net = Captioner((1, 28, 28), len(digit_names.VOCAB)).eval()
    assert not any(m.out_features == 10 for m in net.modules() if isinstance(m, torch.nn.Linear))
    images = torch.randn(3, 1, 28, 28)
    steps = digit_names.LENGTH
    decoded = net.greedy(images, steps, dates.BOS_ID)
    assert decoded.shape == (3, steps)
    # teacher forcing with its own greedy output gives the same argmax at every step
    bos = torch.full((3, 1), dates.BOS_ID)
    logits = net(images, torch.cat([bos, decoded[:, :-1]], 1))
    assert torch.equal(logits.argmax(-1), decoded)
    # a different image changes what is written: the decoder reads the code
    other = net(torch.randn(3, 1, 28, 28), torch.cat([bos, decoded[:, :-1]], 1))
    assert not torch.allclose(other, logits)


def test_digit_names_data_are_images_and_their_names(tmp_path):
    from ablab.data.preprocess import save

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (200, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(200) % 10
    splits = {"train": np.arange(120), "val": np.arange(120, 160), "test": np.arange(160, 200)}
    save("mnist", tmp_path, {"images": images}, labels, splits, 0, 0.1, {"kind": "image"})
    tree = {"experiments": {"names": {"task": "translate", "model": {"arch": "captioner"},
                                      "data": {"dataset": "mnist"},
                                      "train": {"log_model": False}}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    exp = load(tmp_path / "params.yaml").experiment("names")
    data = DigitNamesDataModule.from_experiment(exp, tmp_path)
    data.setup()
    x, target = data.tensors["test"].tensors
    assert x.shape == (40, 1, 28, 28)
    words = [dates.decode_chars(row.tolist(), digit_names.VOCAB) for row in target]
    assert words == [digit_names.NAMES[i] for i in labels[160:]]
    tree["experiments"]["names"]["data"]["dataset"] = "fashion_mnist"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="captioner writes a digit's name.*fashion_mnist"):
        load(tmp_path / "params.yaml")
