"""Plain torch.nn builders, one file per family; `build` picks one from params."""

from __future__ import annotations

from torch import nn

from ablab.config import CNNParams, MLPParams, RNNParams
from ablab.models.cnn import build_cnn
from ablab.models.mlp import build_mlp
from ablab.models.rnn import build_rnn
from ablab.models.seq2seq import Seq2Seq


def build(
    params: MLPParams | CNNParams | RNNParams,
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = None,
    target_vocab_size: int | None = None,
) -> nn.Module:
    """The network described by a model section of params.yaml; num_classes is the number of
    outputs (1 for a regression); vocab_size None means a series, not text."""
    options = params.model_dump(exclude={"arch"})
    if params.arch == "seq2seq":
        return Seq2Seq(vocab_size, target_vocab_size, **options)
    options["activation_name"] = options.pop("activation")
    if params.arch == "mlp":
        return build_mlp(input_shape, num_classes, **options)
    if params.arch == "rnn":
        return build_rnn(vocab_size, num_classes, **options)
    return build_cnn(input_shape, num_classes, **options)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
