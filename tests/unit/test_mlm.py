"""Masked-token pretraining (BERT's idea at CPU scale): the corruption, that pretraining learns
to fill in tokens, and that a fine-tuned classifier starts from the `pretrain` stage's encoder
(one network shared by the suite's seeds), tagged with the run that trained it."""

import copy
import json

import lightning.pytorch as pl
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from ablab import tracking
from ablab.config import ConfigError, load
from ablab.config.pretraining import pretraining_key
from ablab.families import Fit, family
from ablab.families.classify import pretrained_encoder
from ablab.families.masked_lm import MaskedLmTask
from ablab.models.transformer import TransformerClassifier, mask_tokens
from ablab.pretrain import run_pretrain
from ablab.suite import run_suite
from ablab.train import run_experiment
from tests.conftest import TINY_PARAMS, write_random_text

TINY_TRANSFORMER = {"arch": "transformer", "embedding_dim": 8, "heads": 2, "layers": 1,
                    "feedforward": 16}  # fmt: skip


def test_masking_picks_real_tokens_only_in_berts_proportions():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, 100, (4000, 30))
    lengths = torch.randint(1, 31, (4000,))
    real = torch.arange(30) < lengths.unsqueeze(1)
    tokens[~real] = 0
    corrupted, picked = mask_tokens(tokens, lengths, 0.15, 100, 2, generator)
    assert not picked[~real].any()  # padding is never predicted
    assert picked.sum() / real.sum() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(corrupted[~picked], tokens[~picked])
    after, before = corrupted[picked], tokens[picked]
    assert (after == 100).float().mean() == pytest.approx(0.8, abs=0.01)  # [MASK]
    kept = (after == before).float().mean()  # 10% kept, plus random draws of the same word
    assert kept == pytest.approx(0.1 + 0.1 / 98, abs=0.01)
    replaced = after[(after != 100) & (after != before)]
    assert len(replaced) / len(after) == pytest.approx(0.1, abs=0.01)
    assert replaced.min() >= 2 and replaced.max() < 100  # never <pad>, <oov> or [MASK]


def test_pretraining_learns_to_fill_in_the_masked_tokens():
    """Rows count upwards (mod 20): a masked token follows from its neighbours."""
    torch.manual_seed(0)
    starts = torch.randint(0, 20, (256, 1))
    tokens = 2 + (starts + torch.arange(12)) % 20
    lengths = torch.full((256,), 12)
    net = TransformerClassifier(23, 3, max_len=12, embedding_dim=32, heads=2, layers=2,
                                feedforward=64, dropout=0.0)  # fmt: skip
    task = MaskedLmTask(net, mask_id=22, mask_prob=0.15)
    optimizer = torch.optim.Adam(task.parameters(), lr=0.003)

    def accuracy() -> float:
        with torch.no_grad():
            _, correct, n = task._loss((tokens, lengths), torch.Generator().manual_seed(1))
        return int(correct) / n

    before = accuracy()
    for _ in range(200):
        loss, _, n = task._loss((tokens, lengths))
        optimizer.zero_grad()
        (loss / n).backward()
        optimizer.step()
    assert before < 0.2 and accuracy() > 0.8


def params_tree() -> dict:
    tree = copy.deepcopy(TINY_PARAMS)
    tree["experiments"] = {"bert": {
        "task": "classify", "model": TINY_TRANSFORMER, "data": {"dataset": "tweets"},
        "train": {"max_epochs": 1}}}  # fmt: skip
    tree["suites"] = {"text": {
        "experiment": "bert", "seeds": [1, 2], "baseline": "scratch",
        "variants": {"scratch": {}, "pretrained": {"mlm": {"epochs": 2}}}}}  # fmt: skip
    tree.pop("tune")
    return tree


@pytest.fixture
def root(tmp_path):
    write_random_text(tmp_path / "data" / "processed", "tweets", per_split=60)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_tree()))
    return tmp_path


def test_fine_tuning_starts_from_one_pretrained_encoder_for_every_seed(root):
    params = load(root / "params.yaml")
    networks = run_pretrain(params, "text", root)
    assert len(networks) == 1  # mlm.seed 0: seeds 1 and 2 fine-tune the same network
    (key, pretrain_run), = networks.items()  # fmt: skip
    runs = {(r.variant, r.seed): r.experiment for r in params.suite_runs("text")}
    assert key == pretraining_key(runs[("pretrained", 2)])
    tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    pretrained = client.get_run(pretrain_run).data
    assert pretrained.tags["ablab.family"] == "masked_lm"
    assert pretrained.tags["ablab.stage"] == "pretrain"
    assert 0 <= pretrained.metrics["test_mlm_accuracy"] <= 1
    assert pretrained.metrics["test_perplexity"] > 1

    # the classifier gets every pretrained weight but the head
    folder = root / "results" / "pretrained" / "text"
    saved = torch.load(folder / f"{key}.pt", weights_only=True)
    exp = runs[("pretrained", 1)]
    fam = family("classify")
    data = fam.data(exp, root / "data" / "processed")
    data.setup("fit")
    module = fam.module(exp, data)
    state = pretrained_encoder(Fit(trainer=None, pretrained_dir=folder), module, data)
    assert set(saved) - set(state) == {k for k in saved if k.startswith("head.")}
    loaded = module.net.load_state_dict(state, strict=False)
    assert not loaded.unexpected_keys and all(k.startswith("head.") for k in loaded.missing_keys)
    # the family's run loads it before fitting (here 0 epochs: the weights as loaded)
    module = fam.module(exp, data)
    head = copy.deepcopy(module.net.head.state_dict())
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    fam.run(Fit(trainer, "last", pretrained_dir=folder), module, data)
    now = module.net.state_dict()
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert all(torch.equal(now[f"head.{k}"], v) for k, v in head.items())  # a new head
    assert module.pretrained_run == pretrain_run

    report = run_suite(params, "text", root)
    for r in report["runs"]:
        assert r["status"] == "finished"
        tags = client.get_run(r["run_id"]).data.tags
        assert tags.get("ablab.pretrained_run") == (
            pretrain_run if r["variant"] == "pretrained" else None
        )


def test_outside_a_suite_the_run_pretrains_first(root):
    tree = params_tree()
    tree["experiments"]["bert"]["mlm"] = {"epochs": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    summary = run_experiment(load(root / "params.yaml"), "bert", root, fast_dev_run=2)
    assert 0 <= summary["test_accuracy"] <= 1
    written = json.loads((root / "results" / "bert" / "metrics.json").read_text())
    assert written["test_accuracy"] == summary["test_accuracy"]


def test_masked_token_pretraining_needs_a_transformer(root):
    tree = params_tree()
    tree["experiments"]["bert"]["model"] = {"arch": "rnn", "hidden_size": 4}
    tree["experiments"]["bert"]["mlm"] = {"epochs": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"experiments.bert: mlm: masked-token pretraining is "
                       r"for model.arch transformer; this is rnn"):  # fmt: skip
        load(root / "params.yaml")
