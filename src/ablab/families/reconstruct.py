"""Family `reconstruct`: autoencoders. Images in [0, 1] are encoded to a dense code and decoded
back; the denoising kind corrupts the training input, the sparse kind penalises the code's
activity, the stacked kind may be pretrained greedily layer by layer. What the code kept is
measured by a linear probe (a logistic regression on frozen train codes, scored on the test
codes) beside PCA at the same code size, scored by the same probe."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ablab import regularize
from ablab.config import Experiment
from ablab.data.datamodules import Batches, ImageDataModule, shuffled
from ablab.families.base import (
    Family,
    Fit,
    Sums,
    Task,
    build_error,
    network_regularizers,
    optimizer_hparams,
)
from ablab.figures import Figure, plt
from ablab.models import build
from ablab.models.autoencoder import build_dense_autoencoder

ACTIVE_THRESHOLD = 0.1  # a code unit counts as active for an example when |value| exceeds this
# the corruption every run is also scored on, whatever it trained with (the Keras denoising
# example's), so that the suite compares denoisers and plain autoencoders on one task
NOISY_TEST = ("gaussian", 0.4)
EVAL_BATCH = 512
DECODED_SEED_OFFSET = 2  # the draws of decoded training images: apart from the run's own


def corrupt(x: torch.Tensor, kind: str, level: float, generator=None) -> torch.Tensor:
    """The denoising corruptions: gaussian (std `level`, clipped to [0, 1]); masking (a `level`
    fraction of pixels set to 0, the rest unchanged, as in Vincent et al. 2010); dropout (the
    same zeros, the rest scaled by 1 / (1 - level), as nn.Dropout does)."""
    if kind == "none":
        return x
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (x + level * noise).clamp_(0.0, 1.0)
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= level
    return x * keep if kind == "masking" else x * keep / (1.0 - level)


def sparsity_penalty(code: torch.Tensor, kind: str, weight: float, target: float) -> torch.Tensor:
    """l1: weight * mean over examples of sum |code|; kl: weight * sum over units of
    KL(target || the unit's mean activation in the batch)."""
    if kind == "l1":
        return weight * code.abs().sum(1).mean()
    rho = code.mean(0).clamp(1e-6, 1 - 1e-6)
    kl = target * torch.log(target / rho) + (1 - target) * torch.log((1 - target) / (1 - rho))
    return weight * kl.sum()


class AutoencoderTask(Task):
    """Trains an `Autoencoder`: reconstruction loss against the clean input (mse or bce per
    pixel) plus the sparsity and weight penalties. val/test `loss` is that reconstruction loss
    on clean inputs, `recon_loss` always the MSE per pixel."""

    def __init__(
        self, net: nn.Module, corruption: dict | None = None, sparsity: dict | None = None,
        loss: str = "mse", optimizer: str = "adam", lr: float = 1e-3,
        weight_decay: float = 0.0, momentum: float = 0.9, schedule: dict | None = None,
        max_epochs: int = 1, l1: float = 0.0, l2: float = 0.0, max_norm: float | None = None,
        pretrain_epochs: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.corruption = corruption or {"kind": "none", "level": 0.0}
        self.sparsity = sparsity or {"kind": "none", "weight": 0.0, "target": 0.05}
        self.test_predictions: dict[str, np.ndarray] = {}  # the linear probe's, per test image
        self._reset_eval()

    def _reset_eval(self) -> None:
        self._sums = Sums()

    def loss(self, logits: torch.Tensor, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.hparams.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, x, reduction=reduction)
        return F.mse_loss(torch.sigmoid(logits), x, reduction=reduction)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        c = self.corruption
        code = self.net.encode(corrupt(x, c["kind"], c["level"]))
        loss = self.loss(self.net.decode_logits(code), x)
        objective = loss
        s, hp = self.sparsity, self.hparams
        if s["kind"] != "none":
            objective = objective + sparsity_penalty(code, s["kind"], s["weight"], s["target"])
        if hp.l1 or hp.l2:
            objective = objective + regularize.penalty(self.net, hp.l1, hp.l2)
        self.record_train(loss, objective, len(x))
        return objective

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.max_norm is not None:
            regularize.apply_max_norm(self.net, self.hparams.max_norm)

    def _eval_step(self, batch) -> None:
        x, _ = batch
        logits = self.net.decode_logits(self.net.encode(x))
        self._sums.add(loss=self.loss(logits, x, reduction="sum"),
                       squares=F.mse_loss(torch.sigmoid(logits), x, reduction="sum"),
                       pixels=x.numel())  # fmt: skip

    def _eval_end(self, prefix: str) -> None:
        sums = self._sums.read()
        pixels = max(sums.get("pixels", 0), 1)
        self.publish(prefix, {"loss": sums.get("loss", 0.0) / pixels,
                              "recon_loss": sums.get("squares", 0.0) / pixels})  # fmt: skip


class _LayerTask(pl.LightningModule):
    """Greedy layer-wise pretraining of one (encoder block, decoder block) pair: reconstruct
    the block's input (the frozen lower blocks' output) through the pair."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, lr: float, image: bool) -> None:
        super().__init__()
        self.encoder, self.decoder, self.lr, self.image = encoder, decoder, lr, image

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (h,) = batch
        out = self.decoder(self.encoder(h))
        if self.image:  # the outermost pair: logits against pixels in [0, 1]
            return F.mse_loss(torch.sigmoid(out), h.flatten(1))
        return F.mse_loss(out, h)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _batches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return torch.cat([module(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def probe(train_x, train_y, test_x, seed: int) -> np.ndarray | None:
    """A linear classifier (standardised inputs, multinomial logistic regression) trained on
    one representation of the training images: its predictions for the test images' (None
    with a single class to learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return model.fit(train_x, train_y).predict(test_x)


def probe_accuracy(train_x, train_y, test_x, test_y, seed: int) -> float:
    """The probe's test accuracy; NaN with a single class to learn."""
    predicted = probe(train_x, train_y, test_x, seed)
    return math.nan if predicted is None else float(np.mean(predicted == test_y))


class Reconstruct(Family):
    name = "reconstruct"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> ImageDataModule:
        return ImageDataModule.from_experiment(exp, processed_dir, fold, normalize=False)

    def module(self, exp: Experiment, data: ImageDataModule) -> AutoencoderTask:
        m, reg = exp.model, exp.train.regularize
        try:
            net = build(m, data.input_shape, 0)
        except ValueError as exc:
            raise build_error(exp, exc) from None
        network_regularizers(net, exp)
        return AutoencoderTask(
            net, m.corruption.model_dump(), m.sparsity.model_dump(), m.loss,
            **optimizer_hparams(exp), l1=reg.l1, l2=reg.l2, max_norm=reg.max_norm,
            pretrain_epochs=m.pretrain_epochs,
        )  # fmt: skip

    def run(self, fit: Fit, module: AutoencoderTask, data: ImageDataModule) -> None:
        hp = module.hparams
        if hp.pretrain_epochs:
            pretrain_layerwise(fit, module.net, data, hp.pretrain_epochs, hp.lr, data.seed)
        super().run(fit, module, data)

    def test_results(self, exp: Experiment, module: AutoencoderTask, data) -> dict[str, float]:
        codes = _codes(module, data)
        train_y, test_y = (data.tensors[s].tensors[1].numpy() for s in ("train", "test"))
        predicted = probe(codes["train"], train_y, codes["test"], exp.seed)
        accuracy = math.nan
        module.test_predictions = {}
        if predicted is not None:
            accuracy = float(np.mean(predicted == test_y))
            module.test_predictions = {"target": test_y, "prediction": predicted}
        return {
            "test_recon_loss": module.test_results["test_recon_loss"],
            "test_probe_accuracy": accuracy,
            "test_code_active_fraction": float(np.mean(np.abs(codes["test"]) > ACTIVE_THRESHOLD)),
        }

    def summary(self, exp: Experiment, module: AutoencoderTask, data) -> dict[str, float]:
        """PCA at the same code size, scored like the autoencoder; and the MSE of the
        reconstructions of noisy test images (NOISY_TEST) against the clean ones."""
        from sklearn.decomposition import PCA

        x_train, x_test = (data.tensors[s].tensors[0].flatten(1).numpy() for s in ("train", "test"))
        y_train, y_test = (data.tensors[s].tensors[1].numpy() for s in ("train", "test"))
        size = min(exp.model.code_size, *x_train.shape)
        pca = PCA(size, svd_solver="randomized", random_state=exp.seed).fit(x_train)
        test_codes = pca.transform(x_test)
        restored = np.clip(pca.inverse_transform(test_codes), 0.0, 1.0)
        out = {
            "pca_recon_loss": float(np.mean((restored - x_test) ** 2)),
            "pca_probe_accuracy": probe_accuracy(
                pca.transform(x_train), y_train, test_codes, y_test, exp.seed
            ),
        }
        x = data.tensors["test"].tensors[0]
        noisy = corrupt(x, *NOISY_TEST, torch.Generator().manual_seed(exp.seed))
        restored = _batches(_Reconstruction(module.net), noisy)
        out["test_noisy_recon_loss"] = float(F.mse_loss(restored, x))
        return out

    def predictions(self, exp: Experiment, module: AutoencoderTask, data) -> dict | None:
        """The linear probe's test predictions (set by test_results)."""
        return module.test_predictions or None

    def artifacts(self, exp: Experiment, module: AutoencoderTask, data, title: str) -> dict:
        x, y = data.tensors["test"].tensors
        picks = [int(torch.nonzero(y == c)[0]) for c in range(len(data.classes)) if (y == c).any()]
        originals = x[picks]
        rows = {"test image": originals}
        c = exp.model.corruption
        inputs = originals
        if c.kind != "none":
            generator = torch.Generator().manual_seed(exp.seed)
            inputs = corrupt(originals, c.kind, c.level, generator)
            rows[f"{c.kind} {c.level:g}"] = inputs
        rows["reconstruction"] = _batches(_Reconstruction(module.net), inputs)
        codes = _codes(module, data)["test"]
        return {
            "reconstructions.png": reconstructions_figure(rows, f"{title}: test reconstructions"),
            "codes.png": codes_figure(codes, y.numpy(), data.classes, f"{title}: test codes"),
        }


class _Reconstruction(nn.Module):
    """The autoencoder's reconstruction alone (its forward also returns the code)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def _codes(module: AutoencoderTask, data) -> dict[str, np.ndarray]:
    """The clean train and test images' codes, computed once per trained module."""
    if getattr(module, "_codes_cache", None) is None:
        encoder = module.net.encoder
        module._codes_cache = {
            s: _batches(encoder, data.tensors[s].tensors[0]).numpy() for s in ("train", "test")
        }
    return module._codes_cache


def pretrain_layerwise(fit: Fit, net: nn.Module, data, epochs: int, lr: float, seed: int) -> None:
    """Greedy layer-wise pretraining (Bengio et al. 2007): each (encoder, decoder) pair learns
    to reconstruct the output of the pairs below it, which stay fixed; input side first."""
    inputs = data.tensors["train"].tensors[0]
    for i, (encoder, decoder) in enumerate(net.pairs()):
        generator = torch.Generator().manual_seed(seed + i)
        order = shuffled(len(inputs), data.batch_size, generator)
        loader = Batches(TensorDataset(inputs), data.batch_size, order)
        layer = _LayerTask(encoder, decoder, lr, image=i == 0)
        fit.plain_fit(layer, loader, epochs)
        inputs = _batches(encoder, inputs)
    net.train()


def reconstructions_figure(rows: dict[str, torch.Tensor], title: str) -> Figure:
    """One row of images per entry (originals, corrupted inputs, reconstructions)."""
    count = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), count, figsize=(1.1 * count + 1.2, 1.25 * len(rows)),
                             squeeze=False)  # fmt: skip
    for r, (label, images) in enumerate(rows.items()):
        for c in range(count):
            ax = axes[r][c]
            image = images[c].numpy()
            ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0),
                      cmap="gray", vmin=0, vmax=1)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def codes_figure(codes: np.ndarray, labels: np.ndarray, classes, title: str) -> Figure:
    """The codes projected on their first two principal components, coloured by class."""
    centred = codes[:2000] - codes[:2000].mean(0)
    labels = labels[:2000]
    if centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T
    else:
        points = np.column_stack([centred[:, 0], np.zeros(len(centred))])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    for k, name in enumerate(classes):
        mine = labels == k
        ax.scatter(points[mine, 0], points[mine, 1], s=4, color=colours[k % 10], label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def add_decoded(fit: Fit, data: ImageDataModule, samples: int, epochs: int, hidden: list[int],
                code_size: int, spread: float, lr: float) -> nn.Module:  # fmt: skip
    """Autoencoder as data augmentation (`train.ae_augment`): a denoising dense autoencoder
    trained on the data module's training images alone (in [0, 1]); then, the classes in turn,
    codes of the class's own images (one picked at random per sample) moved by Gaussian noise
    of `spread` times the class's code spread per dimension, and decoded: `samples` images
    appended to the training set (normalised like it), labelled with their class. Returns the
    autoencoder."""
    images, y = data.training_pixels()
    seed, k = data.seed, len(data.classes)
    missing = sorted(set(range(k)) - set(y.unique().tolist()))
    if missing:
        raise ValueError(f"train.ae_augment: no training image of class {missing} to decode "
                         "codes from; use a larger data.subset")  # fmt: skip
    net = build_dense_autoencoder(tuple(images.shape[1:]), hidden, code_size)
    task = AutoencoderTask(net, {"kind": "gaussian", "level": 0.3}, lr=lr, max_epochs=epochs,
                           schedule={"name": "none"})  # fmt: skip
    dataset = TensorDataset(images, y)
    loader = Batches(dataset, 64, shuffled(len(dataset), 64, torch.Generator().manual_seed(seed)))
    fit.plain_fit(task, loader, epochs)
    net = net.cpu()
    codes = _batches(net.encoder, images)
    draws = torch.Generator().manual_seed(seed + DECODED_SEED_OFFSET)
    labels = torch.arange(samples) % k
    moved = torch.empty(samples, code_size)
    for c in range(k):
        mine, wanted = codes[y == c], (labels == c).nonzero().squeeze(1)
        picked = mine[torch.randint(len(mine), (len(wanted),), generator=draws)]
        noise = torch.randn(len(wanted), code_size, generator=draws)
        moved[wanted] = picked + noise * mine.std(0, correction=0) * spread
    with torch.no_grad():
        made = torch.sigmoid(net.decode_logits(moved))
    data.add_training(made, labels, "decoded_size")
    return net
