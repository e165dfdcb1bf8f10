"""The fixed classifier that scores generated images, and the scores. One small CNN per dataset,
trained once on the real training split (a DVC output, `data/evaluators/<dataset>.pt`), stands
in for the Inception network of FID: no weights are downloaded. Its penultimate layer gives the
features of the Fréchet and kernel distances, its softmax the Inception-Score recipe, the class
entropy and the confidence. torchmetrics does the maths; the numbers are "FID computed with our
own feature extractor", comparable within ablab, not with published FIDs."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ablab.data.sources import DataError
from ablab.files import write_atomic
from ablab.models.cnn import build_cnn

# the fixed recipe: what the evaluator is does not vary by params, so its numbers stay comparable
CHANNELS, HEAD, BATCH, LR = (32, 64), (128,), 128, 2e-3
SAMPLES = 10_000  # images per side of a test-time distance, as in the FID recipe
# images per no-grad pass: the channels-last evaluator runs ~50 us an image at 128 here, ~160
# at 512; at 1000 and NCHW, as before, ~200-260 (make bench, layout.evaluator_*)
EVAL_BATCH = 128


def evaluators_dir(processed_dir: Path) -> Path:
    """data/evaluators beside data/processed."""
    return Path(processed_dir).parent / "evaluators"


class Evaluator(nn.Module):
    """Images in [0, 1] -> class logits; `features` is the penultimate layer (what the
    distances compare). Normalises with the training split's mean and std itself."""

    def __init__(self, image_shape: tuple[int, ...], num_classes: int, mean: float = 0.0,
                 std: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        self.net = build_cnn(image_shape, num_classes, CHANNELS, batch_norm=True, head=HEAD)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.num_features = HEAD[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[:-1]((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[-1](self.features(x))


class Identity(nn.Module):
    """Features already computed, as the `feature` module torchmetrics takes."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def batched(fn, x: torch.Tensor, *more: torch.Tensor | None, size: int = EVAL_BATCH):
    """fn over x (and the same rows of each of `more`; None stays None) in batches of `size`,
    without gradients."""
    with torch.no_grad():
        return torch.cat([
            fn(x[i : i + size], *(m if m is None else m[i : i + size] for m in more))
            for i in range(0, len(x), size)
        ])  # fmt: skip


@dataclass
class Scores:
    """What the evaluator says of a set of images (and of how far they sit from real ones)."""

    frechet_distance: float
    kernel_distance: float
    inception_score: float
    class_entropy: float
    classifier_confidence: float
    predicted: np.ndarray  # the evaluator's class for each image


def frechet_distance(feature: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to the two sets' features
    (torchmetrics' FID with `feature` in place of Inception)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=feature, normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kernel_distance(feature: nn.Module, real: torch.Tensor, fake: torch.Tensor, seed: int = 0):
    """KID (Bińkowski et al. 2018): the unbiased MMD with a cubic polynomial kernel, mean over
    50 random subsets (of at most 1,000) of each set; torchmetrics' with `feature`."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(1000, len(real), len(fake))
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)  # its subsets are drawn from the global generator
        metric = KernelInceptionDistance(feature=feature, subsets=50, subset_size=size,
                                         normalize=True)  # fmt: skip
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute()[0])


def inception_score(logits: nn.Module, images: torch.Tensor, seed: int = 0) -> float:
    """exp(E KL(p(y|x) || p(y))) over 10 splits, torchmetrics' with the evaluator's logits:
    near the number of classes for sharp, varied images, 1 for one blurred class."""
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")  # "saves all extracted features in buffer": 10k x 10
        torch.manual_seed(seed)  # it permutes the images with the global generator
        metric = InceptionScore(feature=logits, splits=10)
        metric.update(images)
        return float(metric.compute()[0])


def class_stats(probs: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """(entropy in nats of the histogram of predicted classes, mean top probability, classes).
    log(10) = 2.30 for ten classes equally often; mode collapse shows as a drop."""
    predicted = probs.argmax(1)
    counts = torch.bincount(predicted, minlength=probs.shape[1]).double()
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum()) + 0.0  # + 0.0: never -0.0
    return entropy, float(probs.max(1).values.mean()), predicted.numpy()


def score(evaluator: Evaluator, real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> Scores:
    """Every score of `fake` (images in [0, 1]) against `real`; each set goes through the
    evaluator once."""
    evaluator.eval()
    real_f, fake_f = batched(evaluator.features, real), batched(evaluator.features, fake)
    with torch.no_grad():
        logits = evaluator.net[-1](fake_f)
    # the scores on the host: one transfer of the features per evaluation, not per batch
    real_f, fake_f, logits = real_f.cpu(), fake_f.cpu(), logits.cpu()
    entropy, confidence, predicted = class_stats(F.softmax(logits, 1))
    same = Identity(real_f.shape[1])
    return Scores(
        frechet_distance=frechet_distance(same, real_f, fake_f),
        kernel_distance=kernel_distance(same, real_f, fake_f, seed),
        inception_score=inception_score(Identity(logits.shape[1]), logits, seed),
        class_entropy=entropy, classifier_confidence=confidence, predicted=predicted,
    )  # fmt: skip


def image_distance(evaluator: Evaluator, real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Fréchet distance of two sets of images in the evaluator's feature space."""
    evaluator.eval()
    real_f, fake_f = batched(evaluator.features, real), batched(evaluator.features, fake)
    return frechet_distance(Identity(real_f.shape[1]), real_f.cpu(), fake_f.cpu())


def train_evaluator(processed_dir: Path, dataset: str, epochs: int, seed: int) -> dict:
    """Train the dataset's evaluator on its real training split; write data/evaluators/
    <dataset>.pt (weights) and .json (its test accuracy and the real-image floors: the
    distance between 10,000 real training and 10,000 real test images, which a perfect
    generator reaches, and the scores of real test images); return the JSON's content."""
    from ablab.data.datamodules import ImageDataModule

    torch.manual_seed(seed)
    data = ImageDataModule(Path(processed_dir) / dataset, BATCH, seed, normalize=False)
    data.setup()
    x, y = data.tensors["train"].tensors
    classes = len(data.classes)
    net = Evaluator(data.input_shape, classes, float(x.mean()), float(x.std()))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, LR, total_steps=epochs * -(-len(x) // BATCH)
    )
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    test_x, test_y = data.tensors["test"].tensors
    accuracy = float((batched(net, test_x).argmax(1) == test_y).double().mean())
    real = _real_sample(x, SAMPLES, seed)
    test = test_x[:SAMPLES]
    floor = score(net, real, test, seed)
    info = {
        "dataset": dataset, "data_hash": data.meta["data_hash"], "epochs": epochs,
        "seed": seed, "channels": list(CHANNELS), "head": list(HEAD),
        "image_shape": list(data.input_shape), "classes": classes,
        "train_size": len(x), "test_accuracy": accuracy,
        "real_frechet_distance": floor.frechet_distance,
        "real_kernel_distance": floor.kernel_distance,
        "real_inception_score": floor.inception_score,
        "real_class_entropy": floor.class_entropy,
        "real_classifier_confidence": floor.classifier_confidence,
    }  # fmt: skip
    folder = evaluators_dir(processed_dir)
    buffer = _state_bytes(net)
    write_atomic(folder / f"{dataset}.pt", buffer)
    write_atomic(folder / f"{dataset}.json", json.dumps(info, indent=2) + "\n")
    return info


def _real_sample(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    if len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def _state_bytes(net: Evaluator) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getvalue()


class EvaluatorMissing(DataError):
    """No trained evaluator for a dataset."""


def load_evaluator(processed_dir: Path, dataset: str) -> tuple[Evaluator, dict]:
    """The dataset's trained evaluator (eval mode) and its JSON; EvaluatorMissing names the
    command that makes it."""
    folder = evaluators_dir(processed_dir)
    weights, info_path = folder / f"{dataset}.pt", folder / f"{dataset}.json"
    if not weights.exists() or not info_path.exists():
        raise EvaluatorMissing(
            f"{weights}: no evaluator for {dataset}; add {dataset} to evaluator.datasets in "
            f"params.yaml and run `dvc repro evaluators` (or `ablab evaluator {dataset}`)"
        )
    info = json.loads(info_path.read_text())
    net = Evaluator(tuple(info["image_shape"]), info["classes"])
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, info
