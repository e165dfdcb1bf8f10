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


def test_shifted_test_images_move_whole_pixels_the_same_way_each_time():
    from ablab.families.classify import shifted_test_images

    x = torch.full((64, 1, 9, 9), -1.0)
    x[:, 0, 4, 4] = 5.0  # one bright pixel in the middle of a background of -1
    moved = shifted_test_images(x, 3, -1.0, batch_idx=7)
    torch.testing.assert_close(moved, shifted_test_images(x, 3, -1.0, batch_idx=7))
    assert not torch.equal(moved, shifted_test_images(x, 3, -1.0, batch_idx=8))
    offsets = set()
    for image in moved[:, 0]:
        assert (image == 5.0).sum() == 1 and ((image == 5.0) | (image == -1.0)).all()
        row, col = divmod(int(image.argmax()), 9)
        assert abs(row - 4) <= 3 and abs(col - 4) <= 3
        offsets.add((row - 4, col - 4))
    assert len(offsets) > 10  # each image its own move


def test_test_shift_scores_the_moved_test_images(tmp_path):
    """train.test_shift adds the moved images' accuracy and the drop from the plain one."""
    import yaml

    from ablab.config import ConfigError, load
    from ablab.train import run_experiment
    from tests.unit.test_experiments import prepare

    tree = {
        "seed": 3, "mlflow_experiment": "shift",
        "train": {"max_epochs": 8, "lr": 0.01, "threads": 1, "log_model": False,
                  "test_shift": 2},
        "experiments": {"cnn": {"task": "classify", "data": {"dataset": "digits"},
                                "model": {"arch": "cnn", "channels": [4], "head": [8]}}},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    prepare(tmp_path, "digits")
    summary = run_experiment(load(tmp_path / "params.yaml"), "cnn", tmp_path)
    shifted = summary["test_shifted_accuracy"]
    assert 0.0 < shifted < summary["test_accuracy"]  # 2 pixels of 8 move a digit a lot
    assert summary["test_shift_drop"] == pytest.approx(summary["test_accuracy"] - shifted)
    tree["experiments"]["cnn"]["data"]["dataset"] = "tweets"
    tree["experiments"]["cnn"]["model"] = {"arch": "rnn"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="train.test_shift moves test images"):
        load(tmp_path / "params.yaml")


def test_image_size_resizes_every_split_by_area_averaging(tmp_path):
    import yaml

    from ablab.config import ConfigError, load
    from ablab.data.datamodules import ImageDataModule
    from tests.unit.test_experiments import prepare

    tree = {
        "experiments": {"mlp": {"task": "classify", "data": {"dataset": "digits"},
                                "model": {"arch": "mlp"}}},
    }  # fmt: skip
    prepare(tmp_path, "digits")
    processed = tmp_path / "data" / "processed"
    sides = {}
    for size in (None, 4, 8):
        tree["experiments"]["mlp"]["data"]["image_size"] = size
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
        exp = load(tmp_path / "params.yaml").experiment("mlp")
        data = ImageDataModule.from_experiment(exp, processed)
        data.setup()
        sides[size] = {s: t.tensors[0] for s, t in data.tensors.items()}
        assert data.input_shape == (1, size or 8, size or 8)
    for split, full in sides[None].items():
        assert sides[4][split].shape[-2:] == (4, 4)
        torch.testing.assert_close(sides[8][split], full)  # its own size: as it was
    # 8 -> 4: each pixel the mean of a 2x2 block (in [0, 1], before normalising by the mean
    # and std of the resized training split)
    plain = ImageDataModule.from_experiment(exp.model_copy(update={"image_size": None}),
                                            processed)  # fmt: skip
    pixels = plain._pixels(np.load(processed / "digits" / "images.npy"), np.arange(3))
    small = plain.__class__(processed / "digits", 32, 0, image_size=4)._pixels(
        np.load(processed / "digits" / "images.npy"), np.arange(3))  # fmt: skip
    torch.testing.assert_close(small, F.avg_pool2d(pixels, 2))
    tree["experiments"]["mlp"] = {"task": "regress", "data": {"dataset": "sunspots",
                                  "image_size": 8}, "model": {"arch": "mlp"}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="data.image_size resizes the images"):
        load(tmp_path / "params.yaml")
