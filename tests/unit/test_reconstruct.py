"""Autoencoders: tied weights, corruptions, sparsity penalties, greedy layer-wise pretraining
and the probe, each checked against what it is defined to do."""

import copy
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from ablab.config import AutoencoderParams
from ablab.families.base import Fit
from ablab.families.reconstruct import (
    corrupt,
    pretrain_layerwise,
    probe_accuracy,
    sparsity_penalty,
)
from ablab.models import build, count_parameters
from ablab.models.autoencoder import TiedLinear


def net(**options):
    params = AutoencoderParams(arch="autoencoder", **{"hidden": [64], "code_size": 8, **options})
    return build(params, (1, 8, 8), 0)


def test_tied_decoder_uses_the_encoder_weights_transposed_at_half_the_parameters():
    untied, tied = net(), net(tied=True)
    # weights: 64*64 + 64*8 in the encoder; untied repeats them in the decoder; biases apart
    biases = (64 + 8) + (64 + 64)  # encoder's; the decoder's own, tied or not
    assert count_parameters(untied) == 2 * (64 * 64 + 64 * 8) + biases
    assert count_parameters(tied) == (64 * 64 + 64 * 8) + biases
    layers = [m for m in tied.decoder.modules() if isinstance(m, TiedLinear)]
    assert len(layers) == 2 and not any(isinstance(m, nn.Linear) for m in tied.decoder.modules())
    encoder = [m for m in tied.encoder.modules() if isinstance(m, nn.Linear)]
    assert layers[0]._source[0] is encoder[1] and layers[1]._source[0] is encoder[0]
    code = torch.randn(3, 8)
    expected = code @ encoder[1].weight + layers[0].bias
    assert torch.allclose(layers[0](code), expected)
    x = torch.rand(2, 1, 8, 8)
    out, code = tied(x)
    assert out.shape == x.shape and code.shape == (2, 8) and 0 <= out.min() <= out.max() <= 1
    out.sum().backward()  # the shared weight gets gradient from both ends
    assert encoder[0].weight.grad is not None


@pytest.mark.parametrize("decoder", ["transposed", "upsample"])
def test_conv_autoencoder_restores_the_image_shape(decoder):
    params = AutoencoderParams(
        arch="autoencoder", encoder="conv", channels=[4, 8], code_size=5, decoder=decoder
    )
    model = build(params, (1, 28, 28), 0)
    out, code = model(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 1, 28, 28) and code.shape == (3, 5)
    with pytest.raises(ValueError, match="not divisible by 8"):
        build(params.model_copy(update={"channels": [4, 8, 8]}), (1, 28, 28), 0)


def test_corruptions_do_what_their_names_say():
    x = torch.full((200, 1, 10, 10), 0.5)
    g = torch.Generator().manual_seed(0)
    masked = corrupt(x, "masking", 0.3, g)
    zeros = (masked == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.02)
    assert set(masked.unique().tolist()) == {0.0, 0.5}  # masking noise: no rescaling
    dropped = corrupt(x, "dropout", 0.3, g)
    kept = dropped[dropped != 0]
    assert torch.allclose(kept, torch.tensor(0.5 / 0.7))  # dropout rescales by 1/(1-p)
    noisy = corrupt(x, "gaussian", 0.4, g)
    assert 0 <= noisy.min() and noisy.max() <= 1  # clipped to the image range
    assert 0.25 < (noisy - x).std().item() < 0.4  # std 0.4, less what clipping trims
    assert corrupt(x, "none", 0.0) is x


def test_sparsity_penalties_match_their_formulas():
    code = torch.tensor([[0.1, 0.5], [0.3, 0.1]])
    assert sparsity_penalty(code, "l1", 2.0, 0.05).item() == pytest.approx(2.0 * (0.6 + 0.4) / 2)
    rho = 0.05
    by_hand = sum(
        rho * math.log(rho / m) + (1 - rho) * math.log((1 - rho) / (1 - m)) for m in (0.2, 0.3)
    )
    assert sparsity_penalty(code, "kl", 0.5, rho).item() == pytest.approx(0.5 * by_hand)
    at_target = torch.full((4, 3), rho)
    assert sparsity_penalty(at_target, "kl", 1.0, rho).item() == pytest.approx(0.0, abs=1e-6)


class _Data:
    def __init__(self, x):
        self.tensors = {"train": torch.utils.data.TensorDataset(x, torch.zeros(len(x)))}
        self.batch_size = 32


def _pair_loss(encoder, decoder, h, image):
    with torch.no_grad():
        out = decoder(encoder(h))
        target = h.flatten(1) if image else h
        return torch.nn.functional.mse_loss(torch.sigmoid(out) if image else out, target).item()


def _pair_inputs(model, x):
    inputs = [x]
    for encoder, _ in model.pairs()[:-1]:
        inputs.append(encoder(inputs[-1]).detach())
    return inputs


def test_greedy_layerwise_pretraining_trains_each_pair_on_the_codes_below_it():
    pl.seed_everything(0, verbose=False)
    model = net(hidden=[32, 16])
    x = torch.rand(256, 1, 8, 8).round()  # binary images: something to learn
    untrained = copy.deepcopy(model)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    pretrain_layerwise(Fit(trainer), model, _Data(x), epochs=20, lr=0.01, seed=0)
    assert model.training  # handed back ready for fine-tuning
    inputs = _pair_inputs(model, x)  # what each pair saw: the trained pairs below it
    pairs, fresh = model.pairs(), untrained.pairs()
    assert len(pairs) == 3
    for i, ((e, d), (e0, d0), h) in enumerate(zip(pairs, fresh, inputs, strict=True)):
        trained, initial = _pair_loss(e, d, h, i == 0), _pair_loss(e0, d0, h, i == 0)
        assert trained < 0.8 * initial, (i, trained, initial)


def test_probe_reads_a_linearly_separable_code_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    informative = np.eye(3)[y] + 0.1 * rng.standard_normal((600, 3))
    noise = rng.standard_normal((600, 3))
    assert probe_accuracy(informative[:400], y[:400], informative[400:], y[400:], 0) > 0.95
    assert probe_accuracy(noise[:400], y[:400], noise[400:], y[400:], 0) < 0.5


def test_ae_augment_adds_decoder_outputs_class_by_class(digits_root):
    """The added images are what the run's autoencoder decodes (its own reconstruction barely
    moves them, unlike a real image's), each near its own class, in the pixel range."""
    from ablab.data.datamodules import ImageDataModule
    from ablab.families.reconstruct import add_decoded

    data = ImageDataModule(digits_root / "data" / "processed" / "digits", 64, 3, subset=400)
    data.setup()
    x, y = data.tensors["train"].tensors
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    ae = add_decoded(Fit(trainer), data, samples=200, epochs=40, hidden=[64], code_size=16,
                     spread=0.5, lr=3e-3).eval()  # fmt: skip
    x2, y2 = data.tensors["train"].tensors
    assert len(x2) == len(x) + 200 and torch.equal(x2[: len(x)], x)
    assert y2[len(x) :].tolist() == [i % 10 for i in range(200)]
    mean, std = data.meta["mean"], data.meta["std"]
    real, made = (x * std + mean).clamp(0, 1), x2[len(x) :] * std + mean
    assert made.min() >= -1e-5 and made.max() <= 1 + 1e-5
    with torch.no_grad():
        moved = {name: (ae(images)[0] - images).pow(2).mean().item()
                 for name, images in (("real", real), ("made", made))}  # fmt: skip
    assert moved["made"] < 0.5 * moved["real"], moved
    centres = torch.stack([real[y == c].mean(0) for c in range(10)]).flatten(1)
    nearest = torch.cdist(made.flatten(1), centres).argmin(1)
    assert (nearest == y2[len(x) :]).float().mean() > 0.6  # decoded class by class
    assert torch.cdist(made.flatten(1), real.flatten(1)).min() > 1e-3  # no copies
    assert data.meta["decoded_size"] == 200
