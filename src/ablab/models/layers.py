"""Pieces every model family shares: activations by name and weight initialisation."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def initialise(net: nn.Module, scheme: str, activation_name: str) -> None:
    """Re-initialise linear and conv weights: xavier (glorot) or kaiming (he); biases to zero."""
    if scheme == "default":
        return
    relu_like = activation_name in ("relu", "leaky_relu", "elu", "gelu")
    for module in net.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            if scheme == "xavier":
                gain = nn.init.calculate_gain("tanh" if activation_name == "tanh" else "linear")
                nn.init.xavier_uniform_(module.weight, gain=gain)
            else:
                nonlinearity = "relu" if relu_like else "linear"
                nn.init.kaiming_normal_(module.weight, nonlinearity=nonlinearity)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
