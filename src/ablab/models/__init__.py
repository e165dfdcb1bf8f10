"""Plain torch.nn builders, one file per kind of network; `build` picks one from params."""

from __future__ import annotations

import torch
from torch import nn

from ablab.config import ModelParams
from ablab.models.autoencoder import build_conv_autoencoder, build_dense_autoencoder
from ablab.models.captioner import Captioner
from ablab.models.cnn import build_cnn
from ablab.models.mlp import build_mlp
from ablab.models.rnn import build_rnn
from ablab.models.seq2seq import Seq2Seq
from ablab.models.transformer import build_transformer
from ablab.models.window import build_conv1d


def build(
    params: ModelParams,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    target_vocab_size: int | None = None,
    each_step: bool = False,
) -> nn.Module:
    """The network described by a model section of params.yaml: num_outputs classes (1 for a
    regression; unused by seq2seq and autoencoders); vocab_size None means a series, not text;
    `each_step`: a recurrent net's outputs at every step (a tagger). Sizes that cannot make a
    network raise ValueError."""
    options = params.model_dump(exclude={"arch"})
    if params.arch == "seq2seq":
        return Seq2Seq(vocab_size, target_vocab_size, **options)
    if params.arch == "captioner":
        return Captioner(input_shape, target_vocab_size, **options)
    options["activation_name"] = options.pop("activation")
    if params.arch == "autoencoder":
        shared = {k: options[k] for k in ("code_size", "activation_name", "code_activation")}
        if params.encoder == "conv":
            return build_conv_autoencoder(
                input_shape, params.channels, decoder=params.decoder, **shared
            )
        return build_dense_autoencoder(input_shape, params.hidden, tied=params.tied, **shared)
    if params.arch == "mlp":
        return build_mlp(input_shape, num_outputs, **options)
    if params.arch == "rnn":
        return build_rnn(vocab_size, num_outputs, each_step=each_step, **options)
    if params.arch == "conv1d":
        return build_conv1d(input_shape, num_outputs, **options)
    if params.arch == "transformer":
        return build_transformer(vocab_size, num_outputs, input_shape[0], **options)
    return build_cnn(input_shape, num_outputs, **options)


def dead_relu_fraction(net: nn.Module, inputs: tuple) -> float | None:
    """The share of ReLU units (a channel, for feature maps) that output 0 for every example
    of `inputs`, in eval mode; None if the network has no ReLU."""
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        return None
    counts = [0, 0]  # dead, total

    def hook(module, args, out) -> None:
        alive = (out > 0).transpose(0, 1).reshape(out.shape[1], -1).any(1)
        counts[0] += int((~alive).sum())
        counts[1] += alive.numel()

    handles = [m.register_forward_hook(hook) for m in relus]
    net.eval()
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return counts[0] / counts[1] if counts[1] else None


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
