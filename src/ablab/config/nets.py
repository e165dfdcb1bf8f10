"""The model section: one schema per network, told apart by `arch`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ablab.config.common import (
    Activation,
    Init,
    InitScale,
    NonNegative,
    Probability,
    Strict,
    Widths,
)


class MLPParams(Strict):
    arch: Literal["mlp"]
    depth: Annotated[int, Field(ge=0, le=64)] = 2
    width: Annotated[int, Field(ge=1, le=65536)] = 256
    activation: Activation = "relu"
    init: Init = "default"
    init_scale: InitScale = 1.0
    dropout: Probability = 0.0
    input_dropout: Probability = 0.0  # on the input pixels (Srivastava et al. used 0.2)
    # on the output layer's logits, in training (what the course says never to do)
    output_dropout: Probability = 0.0
    batch_norm: bool = False


class CNNParams(Strict):
    arch: Literal["cnn"]
    channels: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [32, 64]
    kernel_size: Annotated[int, Field(ge=1, le=15)] = 3
    stride: Annotated[int, Field(ge=1, le=4)] = 1
    padding: Literal["same", "valid"] = "same"
    pool: Literal["max", "avg", "none"] = "max"
    batch_norm: bool = False
    dropout: Probability = 0.0  # after each conv block
    head: Widths = [128]  # hidden widths of the classifier
    head_dropout: Probability = 0.0
    # how the feature maps reach the head: flattened, or global average pooling (one value per
    # channel); `gap` with `head: []` is the CAM network (Zhou et al. 2016): GAP then linear
    readout: Literal["flatten", "gap"] = "flatten"
    activation: Activation = "relu"
    init: Init = "default"
    init_scale: InitScale = 1.0
    # feature maps in channels-last memory (oneDNN's layout on CPU): 1.5x faster training steps
    # here (make bench); false keeps PyTorch's default NCHW, whose numbers differ in rounding
    channels_last: bool = True

    @model_validator(mode="after")
    def _same_needs_stride_one(self) -> CNNParams:
        if self.padding == "same" and self.stride != 1:
            raise ValueError("padding 'same' needs stride 1 (use padding 'valid' with stride > 1)")
        return self


class RNNParams(Strict):
    """Embedding -> recurrent layers -> pooling over time -> dense head."""

    arch: Literal["rnn"]
    cell: Literal["rnn", "lstm", "gru"] = "lstm"  # rnn: Elman, tanh
    embedding_dim: Annotated[int, Field(ge=1, le=4096)] = 64
    hidden_size: Annotated[int, Field(ge=1, le=4096)] = 64
    layers: Annotated[int, Field(ge=1, le=8)] = 1
    bidirectional: bool = False
    dropout: Probability = 0.0  # between recurrent layers (needs layers >= 2)
    # lstm: the forget gate's bias at the start (Gers et al. 2000; Keras starts it at 1, torch
    # at about 0): 1 keeps the cell's memory open until training decides otherwise
    forget_bias: Annotated[float, Field(ge=-10.0, le=10.0)] = 0.0
    pooling: Literal["last", "mean", "max", "attention"] = "last"
    head: Widths = []  # hidden widths after pooling
    head_dropout: Probability = 0.0
    activation: Activation = "relu"  # of the head

    @model_validator(mode="after")
    def _dropout_needs_layers(self) -> RNNParams:
        if self.dropout and self.layers < 2:
            raise ValueError("dropout acts between recurrent layers: it needs layers >= 2")
        if self.forget_bias and self.cell != "lstm":
            raise ValueError(f"forget_bias: only an lstm has a forget gate; cell is {self.cell}")
        return self


class Conv1dParams(Strict):
    """A forecaster over a fixed window of past values: [Conv1d (same padding) -> activation]
    per channel count, flattened -> dense head -> the next value."""

    arch: Literal["conv1d"]
    channels: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [16]
    kernel_size: Annotated[int, Field(ge=1, le=31)] = 3
    activation: Activation = "relu"
    head: Widths = [32]
    dropout: Probability = 0.0  # before the head's layers


class TransformerParams(Strict):
    """A Transformer encoder (BERT's shape, small): token + learned position embeddings, a
    [CLS] vector in front, `layers` pre-norm encoder layers, [CLS] or mean pooling -> head."""

    arch: Literal["transformer"]
    embedding_dim: Annotated[int, Field(ge=1, le=4096)] = 64  # d_model
    heads: Annotated[int, Field(ge=1, le=64)] = 4
    layers: Annotated[int, Field(ge=1, le=24)] = 2
    feedforward: Annotated[int, Field(ge=1, le=65536)] = 128  # the position-wise layer's width
    dropout: Probability = 0.1  # in every encoder layer
    pooling: Literal["cls", "mean"] = "cls"
    head: Widths = []  # hidden widths after pooling
    head_dropout: Probability = 0.0
    activation: Activation = "relu"  # of the head

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.embedding_dim % self.heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be a multiple of heads ({self.heads})"
            )
        return self


class TfidfParams(Strict):
    """The linear baseline: TF-IDF of word n-grams -> logistic regression (scikit-learn)."""

    arch: Literal["tfidf"]
    ngram_max: Annotated[int, Field(ge=1, le=3)] = 2
    min_df: Annotated[int, Field(ge=1)] = 2
    C: Annotated[float, Field(gt=0.0)] = 1.0  # inverse regularization strength


class Seq2SeqParams(Strict):
    """Encoder LSTM -> decoder LSTM, with or without additive attention."""

    arch: Literal["seq2seq"]
    embedding_dim: Annotated[int, Field(ge=1, le=4096)] = 32
    hidden_size: Annotated[int, Field(ge=1, le=4096)] = 64
    attention: bool = True


class CaptionerParams(Strict):
    """One image in, a character sequence out: [Conv -> BatchNorm -> ReLU -> max pool] per
    channel count -> a code of hidden_size that starts a GRU decoder (no class head)."""

    arch: Literal["captioner"]
    channels: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [
        16, 32,
    ]  # fmt: skip
    embedding_dim: Annotated[int, Field(ge=1, le=4096)] = 16
    hidden_size: Annotated[int, Field(ge=1, le=4096)] = 64


class Corruption(Strict):
    """How a denoising autoencoder corrupts its training input (the loss is against the clean
    input): Gaussian noise of std `level`, clipped to [0, 1]; masking noise zeroing a `level`
    fraction of pixels without rescaling (Vincent et al. 2010); or dropout right after the
    input, which zeroes the same fraction and rescales the rest by 1/(1 - level)."""

    kind: Literal["none", "gaussian", "masking", "dropout"] = "none"
    level: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0

    @model_validator(mode="after")
    def _level_fits_kind(self) -> Corruption:
        if self.kind in ("masking", "dropout") and not 0.0 < self.level < 1.0:
            raise ValueError(f"level is the fraction corrupted by {self.kind}: 0 < level < 1")
        if self.kind == "gaussian" and self.level <= 0.0:
            raise ValueError("level is the noise std for gaussian: it must be > 0")
        return self


class Sparsity(Strict):
    """A penalty on the code's activity: `l1` adds weight * mean |code|; `kl` adds weight * the
    KL divergence of each unit's mean activation from `target` (needs a sigmoid code)."""

    kind: Literal["none", "l1", "kl"] = "none"
    weight: NonNegative = 1e-3
    target: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05  # kl: the wanted mean activation


class AutoencoderParams(Strict):
    """Encoder -> code -> decoder -> sigmoid image. `encoder: mlp` stacks `hidden` dense layers
    (mirrored in the decoder); `conv` stacks conv + max-pool blocks of `channels` and decodes by
    transposed convolutions or by upsampling + conv. Both end in a dense code of `code_size`."""

    arch: Literal["autoencoder"]
    encoder: Literal["mlp", "conv"] = "mlp"
    hidden: Widths = [256]  # mlp: encoder widths, input side first
    channels: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [
        16,
        32,
    ]  # conv: encoder channels
    decoder: Literal["transposed", "upsample"] = "transposed"  # conv only
    code_size: Annotated[int, Field(ge=1, le=65536)] = 32
    code_activation: Literal["linear", "relu", "sigmoid"] = "linear"
    activation: Activation = "relu"
    tied: bool = False  # mlp: each decoder layer uses its encoder layer's weights transposed
    corruption: Corruption = Corruption()
    sparsity: Sparsity = Sparsity()
    loss: Literal["mse", "bce"] = "mse"  # per pixel; test_recon_loss is always the MSE
    pretrain_epochs: Annotated[int, Field(ge=0, le=1000)] = 0  # mlp: greedy, per layer

    @model_validator(mode="after")
    def _consistent(self) -> AutoencoderParams:
        if self.tied and self.encoder != "mlp":
            raise ValueError(
                "tied needs encoder 'mlp': a conv encoder's pooling has no transpose to tie "
                "(set tied: false, or encoder: mlp)"
            )
        if self.pretrain_epochs and self.encoder != "mlp":
            raise ValueError("pretrain_epochs (greedy layer-wise pretraining) needs encoder 'mlp'")
        if self.sparsity.kind == "kl" and self.code_activation != "sigmoid":
            raise ValueError(
                "sparsity kind 'kl' compares mean activations in (0, 1) with the target: it "
                f"needs code_activation 'sigmoid'; got {self.code_activation!r}"
            )
        return self


class AdversarialParams(Strict):
    """What every GAN shares: the optimizer's momentum and the discriminator's game."""

    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5  # Adam's beta1 (Radford et al.: 0.5)
    label_smoothing: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0  # D's real target 1 - this
    d_steps: Annotated[int, Field(ge=1, le=10)] = 1  # discriminator updates per generator update
    spectral_norm: bool = False  # on the discriminator's layers (Miyato et al. 2018)
    d_dropout: Probability = 0.0  # in the discriminator
    # the run fails as collapsed when the test samples' class entropy (nats) is below this
    collapse_entropy: Annotated[float, Field(ge=0.0)] = 0.5


class GANParams(AdversarialParams):
    """The MLP GAN (Goodfellow et al. 2014): dense generator of `hidden` widths (ReLU, tanh
    out), discriminator of the widths reversed (LeakyReLU); non-saturating generator loss."""

    arch: Literal["gan"]
    latent_size: Annotated[int, Field(ge=1, le=4096)] = 64
    hidden: Widths = [256, 512]
    batch_norm: bool = False  # in the generator's hidden layers (not in Goodfellow et al.)
    conditional: bool = False  # class in, to both networks
    # how the discriminator takes the class: projection (Miyato & Koyama 2018) or concat
    # (appended to its input, Mirza & Osindero 2014)
    conditioning: Literal["projection", "concat"] = "projection"


class DCGANParams(AdversarialParams):
    """DCGAN (Radford et al. 2015): strided transposed convs with BatchNorm and ReLU in the
    generator, strided convs with LeakyReLU in the discriminator; `channels` from the
    generator's first maps down (the discriminator mirrors them)."""

    arch: Literal["dcgan"]
    latent_size: Annotated[int, Field(ge=1, le=4096)] = 64
    channels: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = [
        64,
        32,
    ]
    conditional: bool = False  # class in, to both networks: samples of a chosen class
    conditioning: Literal["projection", "concat"] = "projection"  # as for gan


class CycleGANParams(AdversarialParams):
    """CycleGAN (Zhu et al. 2017): maps `source` images into the experiment's dataset and back
    without pairs: least-squares adversarial losses, cycle consistency (weight `cycle_weight`)
    and optionally identity (`identity_weight`). Source images are resized to the target's
    MNIST layout (a 20x20 box centred in 28x28)."""

    arch: Literal["cyclegan"]
    source: Literal["digits", "mnist", "fashion_mnist"] = "digits"
    width: Annotated[int, Field(ge=1, le=1024)] = 16
    residual_blocks: Annotated[int, Field(ge=0, le=16)] = 1
    cycle_weight: NonNegative = 10.0
    identity_weight: NonNegative = 5.0  # 0.5 x cycle_weight, as Zhu et al.; keeps the class here
