import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.models.mlp import build_mlp


def test_penalty_equals_hand_computed_l1_and_l2():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Conv1d(1, 1, 2), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[2].weight.copy_(torch.tensor([[[-1.0, 2.0]]]))
        net[0].bias.fill_(100.0)  # biases and batch-norm parameters are not penalised
    # sum |w| = 1 + 2 + 3 + 0.5 + 1 + 2 = 9.5; sum w^2 = 1 + 4 + 9 + 0.25 + 1 + 4 = 19.25
    assert regularize.penalty(net, l1=0.1).item() == pytest.approx(0.95)
    assert regularize.penalty(net, l2=0.01).item() == pytest.approx(0.1925)
    assert regularize.penalty(net, 0.1, 0.01).item() == pytest.approx(0.95 + 0.1925)
    assert regularize.penalty(net).item() == 0.0


def test_penalty_gradient_is_the_derivative():
    net = nn.Linear(3, 1, bias=False)
    regularize.penalty(net, l1=0.5, l2=0.25).backward()
    w = net.weight.detach()
    assert torch.allclose(net.weight.grad, 0.5 * torch.sign(w) + 0.5 * w)


def test_dropconnect_masks_weights_only_in_training():
    torch.manual_seed(0)
    net = build_mlp((8,), 3, depth=2, width=64)
    keys = list(net.state_dict())
    assert regularize.add_dropconnect(net, 0.5) == 2  # the two hidden layers, not the output
    assert list(net.state_dict()) == keys  # a checkpoint still loads
    assert type(net[-1]) is nn.Linear
    layer = net[1]
    assert isinstance(layer, regularize.DropConnectLinear)
    eye = torch.eye(8)
    layer.eval()
    expected = F.linear(eye, layer.weight, layer.bias)
    assert torch.equal(layer(eye), expected)  # eval: the plain layer, deterministic
    layer.train()
    out = layer(eye) - layer.bias  # row i: column i of the masked, rescaled weights
    effective = out.T
    dropped = effective == 0
    assert 0.4 < dropped.float().mean().item() < 0.6
    kept = ~dropped
    assert torch.allclose(effective[kept], layer.weight[kept] * 2.0)  # scaled by 1/(1-p)
    assert not torch.equal(layer(eye), layer(eye))  # a new mask per batch


def test_disturb_label_changes_about_alpha_of_the_labels():
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (200_000,), generator=generator)
    disturbed = regularize.disturb_labels(y, 0.2, 10, generator)
    changed = (disturbed != y).float().mean().item()
    # a redrawn label is uniform over the classes, so it stays put 1 time in 10
    assert changed == pytest.approx(0.2 * 9 / 10, abs=0.005)
    counts = torch.bincount(disturbed[disturbed != y], minlength=10).float()
    assert (counts / counts.mean()).sub(1).abs().max() < 0.05  # the new labels are uniform
    assert torch.equal(regularize.disturb_labels(y, 0.0, 10), y)


def test_hidden_noise_only_in_training():
    torch.manual_seed(0)
    net = build_mlp((4,), 2, depth=3, width=8)
    assert regularize.add_hidden_noise(net, 0.5) == 3
    x = torch.randn(5, 4)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))
    noise = regularize.GaussianNoise(0.5).train()
    sample = noise(torch.zeros(100_000))
    assert sample.std().item() == pytest.approx(0.5, rel=0.02)


def test_max_norm_caps_each_units_incoming_weights():
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 10.0]]))
    regularize.apply_max_norm(layer, 2.0)
    norms = layer.weight.norm(dim=1)
    assert torch.allclose(norms, torch.tensor([2.0, 0.5, 2.0]), atol=1e-5)
    assert torch.allclose(layer.weight[0], torch.tensor([1.2, 1.6]), atol=1e-5)  # direction kept


def test_class_weights_from_counts():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    weights = regularize.class_weights(labels, 4)  # class 3 absent: weight 0
    assert torch.allclose(weights, torch.tensor([10 / 24, 10 / 12, 10 / 4, 0.0]))
    assert torch.allclose(regularize.class_weights(torch.arange(4).repeat(5), 4), torch.ones(4))
