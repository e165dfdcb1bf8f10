"""Plain torch.nn builders, one file per family; `build` picks one from params."""

from __future__ import annotations

from torch import nn

from ablab.config import CNNParams, MLPParams
from ablab.models.cnn import build_cnn
from ablab.models.mlp import build_mlp


def build(
    params: MLPParams | CNNParams, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The network described by a model section of params.yaml."""
    options = params.model_dump(exclude={"arch"})
    options["activation_name"] = options.pop("activation")
    if params.arch == "mlp":
        return build_mlp(input_shape, num_classes, **options)
    return build_cnn(input_shape, num_classes, **options)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
