"""Family `pseudo_label`: alpha(t) as Lee (2013) schedules it, the paired labelled/unlabelled
batches, one real training step's objective and counters, and the errors for labels the data
cannot give and for data that has no classes."""

import copy

import pytest
import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ablab.config import ConfigError, load
from ablab.data.datamodules import PairedBatches
from ablab.families import family
from ablab.families.base import Sums
from ablab.families.pseudo_label import pseudo_label_weight
from tests.conftest import TINY_PARAMS, write_random_processed

SEMI = {
    "task": "pseudo_label",
    "model": {"arch": "mlp", "depth": 1, "width": 16},
    "data": {"dataset": "mnist"},
    "pseudo_label": {"labels": 20, "alpha_final": 3.0, "start_epoch": 1, "full_epoch": 3,
                     "unlabelled_batch_size": 16},
    "train": {"max_epochs": 1, "batch_size": 8},
}  # fmt: skip


def params(tmp_path, **changes):
    tree = copy.deepcopy(TINY_PARAMS)
    entry = copy.deepcopy(SEMI)
    for key, value in changes.items():
        section, name = key.split("__")
        entry.setdefault(section, {})[name] = value
    tree["experiments"] = {"semi": entry}
    tree.pop("suites")
    tree.pop("tune")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load(path)


def test_alpha_is_zero_then_rises_linearly_then_stays():
    alphas = [pseudo_label_weight(t, 3.0, start_epoch=10, full_epoch=40) for t in range(50)]
    assert alphas[:10] == [0.0] * 10
    assert alphas[10] == 0.0 and alphas[25] == pytest.approx(1.5)
    assert alphas[40:] == [3.0] * 10
    rising = alphas[10:41]
    assert all(b - a == pytest.approx(0.1) for a, b in zip(rising, rising[1:], strict=False))


def test_paired_batches_pace_an_epoch_by_the_unlabelled_set():
    labelled = TensorDataset(torch.arange(5), torch.arange(5) + 100)
    unlabelled = TensorDataset(torch.arange(10, 33), torch.arange(10, 33) + 100)
    batches = PairedBatches(labelled, unlabelled, 2, 4, torch.Generator().manual_seed(0))
    epoch = list(batches)
    assert len(epoch) == len(batches) == 6  # ceil(23 / 4)
    seen_unlabelled = torch.cat([b[2] for b in epoch])
    assert sorted(seen_unlabelled.tolist()) == list(range(10, 33))  # each once
    for x, y, xu, yu in epoch:
        assert torch.equal(y, x + 100) and torch.equal(yu, xu + 100)  # pairs stay together
    # 6 labelled batches of 2 from 5 examples: passes of 3 batches (2, 2, 1), each a permutation
    labelled_seen = [b[0] for b in epoch]
    for start in (0, 3):
        assert sorted(torch.cat(labelled_seen[start : start + 3]).tolist()) == list(range(5))


def test_a_training_step_adds_alpha_times_the_pseudo_label_loss(tmp_path):
    write_random_processed(tmp_path / "processed", "mnist", per_split=60, seed=3)
    exp = params(tmp_path).experiment("semi")
    fam = family("pseudo_label")
    data = fam.data(exp, tmp_path / "processed")
    data.setup()
    assert data.meta["train_size"] == 20 and len(data.unlabelled) == 40
    module = fam.module(exp, data)
    x, y, xu, yu = next(iter(data.train_dataloader()))
    assert (len(x), len(xu)) == (8, 16)

    for alpha in (0.0, 1.5):  # before T1 and halfway to alpha_f
        module._pseudo = Sums()
        module.alpha = lambda a=alpha: a  # the schedule itself is tested above
        objective = module.training_step((x, y, xu, yu), 0)
        with torch.no_grad():
            logits, unlabelled = module(x), module(xu)
        pseudo = unlabelled.argmax(1)
        expected = F.cross_entropy(logits, y) + alpha * F.cross_entropy(unlabelled, pseudo)
        assert objective.item() == pytest.approx(expected.item(), rel=1e-5)
        sums = module._pseudo.read()
        assert (sums["kept"], sums["seen"]) == (16, 16)  # threshold 0: every one kept
        assert sums["correct"] == int((pseudo == yu).sum())
    # the pseudo-label term carries gradient to the network (the targets themselves do not)
    objective.backward()
    assert module.net[-1].weight.grad.abs().sum() > 0


def test_the_mean_network_labels_what_the_dropout_pass_learns(tmp_path):
    write_random_processed(tmp_path / "processed", "mnist", per_split=60, seed=3)
    exp = params(tmp_path, model__dropout=0.5, pseudo_label__labelled_by="mean_network")
    exp = exp.experiment("semi")
    fam = family("pseudo_label")
    data = fam.data(exp, tmp_path / "processed")
    data.setup()
    module = fam.module(exp, data)
    module.train()
    x, y, xu, yu = next(iter(data.train_dataloader()))
    module.alpha = lambda: 1.0
    torch.manual_seed(0)
    objective = module.training_step((x, y, xu, yu), 0)
    assert module.training  # back to training after labelling
    with torch.no_grad():
        module.eval()
        pseudo = module(xu).argmax(1)  # dropout off
        module.train()
    assert module._pseudo.read()["correct"] == int((pseudo == yu).sum())
    torch.manual_seed(0)  # the same dropout masks: the trained passes are the ones above
    logits, unlabelled = module(x), module(xu)
    expected = F.cross_entropy(logits, y) + F.cross_entropy(unlabelled, pseudo)
    assert objective.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(unlabelled.argmax(1), pseudo)  # dropout's own argmax differs


def test_a_confidence_threshold_keeps_only_confident_pseudo_labels(tmp_path):
    write_random_processed(tmp_path / "processed", "mnist", per_split=60, seed=3)
    exp = params(tmp_path, pseudo_label__threshold=0.99).experiment("semi")
    fam = family("pseudo_label")
    data = fam.data(exp, tmp_path / "processed")
    data.setup()
    module = fam.module(exp, data)
    x, y, xu, yu = next(iter(data.train_dataloader()))
    with torch.no_grad():
        module.net[-1].weight.zero_()
        module.net[-1].bias.copy_(torch.arange(10.0) * 10)  # class 9 at softmax ~1 for all
        module.net[-1].bias[0] = 0.0
    module.training_step((x, y, xu, yu), 0)
    sums = module._pseudo.read()
    assert (sums["kept"], sums["seen"]) == (16, 16) and sums["correct"] == int((yu == 9).sum())
    with torch.no_grad():
        module.net[-1].bias.zero_()  # uniform: 0.1 < 0.99, nothing kept
    module._pseudo = Sums()
    module.training_step((x, y, xu, yu), 0)
    assert module._pseudo.read() == {"correct": 0, "kept": 0, "seen": 16}
    extras = module.epoch_extras()
    assert extras["pseudo_label_fraction"] == 0.0


def test_labels_that_leave_nothing_unlabelled_are_refused(tmp_path):
    write_random_processed(tmp_path / "processed", "mnist", per_split=60, seed=3)
    exp = params(tmp_path, pseudo_label__labels=60).experiment("semi")
    data = family("pseudo_label").data(exp, tmp_path / "processed")
    with pytest.raises(ConfigError, match=r"experiments.semi.pseudo_label.labels: 60 labels "
                       r"leave no unlabelled example; the training split has 60"):  # fmt: skip
        data.setup()


def test_pseudo_labels_on_a_regression_dataset_are_refused(tmp_path):
    refused = r"experiments.semi: task: pseudo_label takes image data; sunspots is series"
    with pytest.raises(ConfigError, match=refused):
        params(tmp_path, data__dataset="sunspots")
