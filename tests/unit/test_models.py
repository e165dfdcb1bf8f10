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


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("init", ["default", "kaiming"])
def test_init_scale_multiplies_every_weight_and_no_bias(arch, init):
    """init_scale 10 starts from ten times the weights init 1 would give, biases unchanged."""

    def built(scale):
        torch.manual_seed(3)
        if arch == "mlp":
            params = MLPParams(arch="mlp", depth=2, width=8, init=init, init_scale=scale)
        else:
            params = CNNParams(arch="cnn", channels=[4], head=[8], init=init, init_scale=scale)
        return dict(build(params, (1, 8, 8), 3).named_parameters())

    plain, scaled = built(1.0), built(10.0)
    weights = [k for k in plain if k.endswith("weight")]
    assert len(weights) >= 2
    for key, value in plain.items():
        factor = 10.0 if key.endswith("weight") else 1.0
        torch.testing.assert_close(scaled[key], factor * value)


def test_output_dropout_drops_logits_in_training_only():
    torch.manual_seed(0)
    net = build(MLPParams(arch="mlp", depth=1, width=16, output_dropout=0.5), (1, 4, 4), 10)
    x = torch.randn(64, 1, 4, 4)
    net.train()
    dropped = (net(x) == 0).float().mean().item()
    assert 0.3 < dropped < 0.7  # about half the logits zeroed
    net.eval()
    assert (net(x) != 0).all()
    plain = build(MLPParams(arch="mlp", depth=1, width=16), (1, 4, 4), 10)
    assert plain.state_dict().keys() == net.state_dict().keys()
    assert not any(isinstance(m, nn.Dropout) for m in plain)


def test_forget_bias_sets_the_lstm_forget_gate_and_only_there():
    from ablab.config import RNNParams

    torch.manual_seed(0)
    plain = build(RNNParams(arch="rnn", cell="lstm", hidden_size=4, layers=2), (5,), 3, 10)
    torch.manual_seed(0)
    opened = build(RNNParams(arch="rnn", cell="lstm", hidden_size=4, layers=2,
                             bidirectional=True, forget_bias=1.0), (5,), 3, 10)  # fmt: skip
    biases = {k: v for k, v in opened.rnn.named_parameters() if k.startswith("bias_")}
    assert len(biases) == 8  # 2 layers x 2 directions x (ih, hh)
    for name, bias in biases.items():
        gates = bias.detach().view(4, 4)  # input, forget, cell, output
        expected = 1.0 if name.startswith("bias_ih") else 0.0
        assert torch.equal(gates[1], torch.full((4,), expected)), name
    # the other gates keep torch's own start
    torch.testing.assert_close(opened.rnn.bias_ih_l0.view(4, 4)[[0, 2, 3]],
                               plain.rnn.bias_ih_l0.view(4, 4)[[0, 2, 3]])  # fmt: skip
    with pytest.raises(ValueError, match="only an lstm has a forget gate"):
        RNNParams(arch="rnn", cell="gru", forget_bias=1.0)
