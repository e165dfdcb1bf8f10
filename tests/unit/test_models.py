import pytest
import torch
from torch import nn

from ablab.config import CNNParams, MLPParams
from ablab.models import build, count_parameters


@pytest.mark.parametrize(
    "activation", ["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "identity"]
)
@pytest.mark.parametrize("init", ["default", "xavier", "kaiming"])
def test_mlp_shapes_for_every_activation_and_init(activation, init):
    params = MLPParams(
        arch="mlp",
        depth=3,
        width=16,
        activation=activation,
        init=init,
        dropout=0.5,
        batch_norm=True,
    )
    net = build(params, (1, 28, 28), 10)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 3


def test_mlp_parameter_count_matches_hand_count():
    net = build(MLPParams(arch="mlp", depth=2, width=256), (1, 28, 28), 10)
    assert count_parameters(net) == (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)


def test_input_dropout_drops_pixels_and_leaves_other_layouts_alone():
    plain = build(MLPParams(arch="mlp", depth=1, width=8), (1, 4, 4), 3)
    assert not any(isinstance(m, nn.Dropout) for m in plain)  # same keys as before
    net = build(MLPParams(arch="mlp", depth=1, width=8, input_dropout=0.5), (1, 4, 4), 3)
    assert isinstance(net[1], nn.Dropout) and net[1].p == 0.5
    net.train()
    dropped = net[1](torch.ones(1000, 16))
    assert 0.4 < (dropped == 0).float().mean().item() < 0.6


def test_kaiming_init_gives_he_variance():
    net = build(MLPParams(arch="mlp", depth=1, width=2000, init="kaiming"), (1, 50, 50), 10)
    weight = net[1].weight
    assert weight.std().item() == pytest.approx((2 / 2500) ** 0.5, rel=0.05)
    assert torch.count_nonzero(net[1].bias) == 0


@pytest.mark.parametrize(
    "padding, pool, expected_side", [("same", "max", 7), ("valid", "avg", 5), ("same", "none", 28)]
)
def test_cnn_shapes(padding, pool, expected_side):
    params = CNNParams(
        arch="cnn",
        channels=[4, 8],
        padding=padding,
        pool=pool,
        batch_norm=True,
        dropout=0.1,
        head=[16],
        head_dropout=0.2,
    )
    net = build(params, (1, 28, 28), 10)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    first_linear = next(m for m in net.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 8 * expected_side * expected_side


def test_cnn_that_shrinks_input_to_nothing_is_refused():
    params = CNNParams(arch="cnn", channels=[4, 4, 4, 4], padding="valid", kernel_size=3)
    with pytest.raises(ValueError, match="shrink"):
        build(params, (1, 8, 8), 10)


def test_same_padding_with_stride_is_refused_at_load():
    with pytest.raises(ValueError, match="stride 1"):
        CNNParams(arch="cnn", padding="same", stride=2)


def test_a_channels_last_cnn_computes_what_the_nchw_one_does():
    from ablab.models.cnn import build_cnn

    torch.manual_seed(0)
    fast = build_cnn((1, 28, 28), 10, (8, 16), batch_norm=True, head=(32,))
    torch.manual_seed(0)
    plain = build_cnn((1, 28, 28), 10, (8, 16), batch_norm=True, head=(32,), channels_last=False)
    second = [[m for m in net if isinstance(m, nn.Conv2d)][1] for net in (fast, plain)]
    assert second[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not second[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(
        torch.equal(a, b) for a, b in zip(fast.parameters(), plain.parameters(), strict=True)
    )
    x = torch.randn(5, 1, 28, 28)
    fast.eval()
    plain.eval()
    assert torch.allclose(fast(x), plain(x), atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [MLPParams(arch="mlp", depth=4, width=32, activation="identity"),
     CNNParams(arch="cnn", channels=[4, 8], pool="avg", head=[16], activation="identity"),
     MLPParams(arch="mlp", depth=4, width=32, activation="relu")],
    ids=["mlp", "cnn", "relu_control"],
)  # fmt: skip
def test_an_identity_network_is_linear(params):
    """f(a x + b y) - f(0) = a (f(x) - f(0)) + b (f(y) - f(0)); a ReLU net breaks it."""
    torch.manual_seed(0)
    net = build(params, (1, 28, 28), 10).eval()
    x, y, zero = torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28), torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        f0 = net(zero)
        left = net(2.0 * x - 0.5 * y) - f0
        right = 2.0 * (net(x) - f0) - 0.5 * (net(y) - f0)
    linear = torch.allclose(left, right, atol=1e-4 * right.abs().max().item())
    assert linear == (params.activation == "identity")
