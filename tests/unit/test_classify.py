import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_recall_fscore_support
from torch import nn
from torch.nn import functional as F

from ablab.families import DivergedError
from ablab.families.classify import ClassificationTask, confusion_matrix, scores_from_confusion


def test_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    p[p == 4] = 3  # class 4 never predicted: its precision is undefined -> 0
    cm = confusion_matrix(torch.from_numpy(p), torch.from_numpy(y), 5)
    scores = scores_from_confusion(cm)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p, labels=range(5), zero_division=0
    )
    np.testing.assert_allclose(scores["precision"], precision)
    np.testing.assert_allclose(scores["recall"], recall)
    np.testing.assert_allclose(scores["f1"], f1)
    assert scores["macro_f1"].item() == pytest.approx(f1_score(y, p, average="macro"))
    assert scores["accuracy"].item() == pytest.approx((y == p).mean())
    assert cm[2, 2].item() == int(((y == 2) & (p == 2)).sum())


def test_label_smoothing_loss_follows_its_formula():
    task = ClassificationTask(nn.Identity(), 4, label_smoothing=0.2)
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0]])
    log_p = torch.log_softmax(logits, dim=1)[0]
    expected = -(0.8 * log_p[1] + 0.2 * log_p.mean())
    loss = task.objective(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_loss_and_penalty_enter_the_objective():
    net = nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]))
        net.bias.zero_()
    weights = torch.tensor([1.0, 2.0, 0.5])
    task = ClassificationTask(net, 3, l1=0.1, l2=0.01, class_weights=weights)
    logits = torch.tensor([[0.2, 1.0, -0.3], [1.5, 0.0, 0.1]])
    y = torch.tensor([1, 2])
    log_p = torch.log_softmax(logits, 1)
    ce = -(2.0 * log_p[0, 1] + 0.5 * log_p[1, 2]) / (2.0 + 0.5)  # torch's weighted mean
    penalty = 0.1 * 6.5 + 0.01 * 14.25  # sum |w| = 6.5, sum w^2 = 14.25; the bias is exempt
    assert task.objective(logits, y).item() == pytest.approx(ce.item() + penalty, rel=1e-6)


def test_train_loss_is_plain_cross_entropy_on_true_labels():
    """train_loss stays comparable with val_loss whatever the regularizers add; both are epoch
    means over examples."""
    task = ClassificationTask(nn.Identity(), 3, label_smoothing=0.3)
    x1, y1 = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    x2, y2 = torch.tensor([[0.0, 1.0, 0.5], [1.0, 1.0, 1.0]]), torch.tensor([2, 1])
    objectives = [task.training_step((x1, y1), 0).item(), task.training_step((x2, y2), 1).item()]
    extras = task.epoch_extras()
    plain = F.cross_entropy(torch.cat([x1, x2]), torch.cat([y1, y2])).item()
    assert extras["train_loss"] == pytest.approx(plain)
    assert extras["train_objective"] == pytest.approx((objectives[0] + 2 * objectives[1]) / 3)
    assert extras["train_objective"] > extras["train_loss"]  # smoothing costs on right answers
    assert task.epoch_extras() == {}  # reset for the next epoch


def test_nan_loss_raises_diverged():
    task = ClassificationTask(nn.Identity(), 3)
    x = torch.tensor([[float("nan"), 0.0, 0.0]])
    with pytest.raises(DivergedError, match="nan"):
        task.training_step((x, torch.tensor([0])), 0)
