"""Family `generate`: GANs trained with Lightning's manual optimization (the discriminator's and
the generator's steps written out; gradient clipping inside the step), scored by the dataset's
evaluator (ablab.evaluator). `gan` and `dcgan` sample from noise (optionally class-conditional);
`cyclegan` maps another dataset's images into this one and back, and is scored on the mapped
images: how close they sit to real ones and how well the evaluator reads their true class."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ablab import evaluator as quality
from ablab.config import Experiment
from ablab.data.datamodules import Batches, ImageDataModule, shuffled
from ablab.families.base import (
    CollapsedError,
    DivergedError,
    Family,
    Fit,
    Loggable,
    Task,
    build_error,
    optimizer_hparams,
)
from ablab.models.gan import build_dcgan, build_mapper, build_mlp_gan, build_patch_discriminator
from ablab.optim import make_optimizer, make_scheduler

BATCH = 500  # images per forward pass when generating and judging outside training
GRID = 8  # the fixed latent batch drawn every epoch: GRID x GRID images (a row per class: cgan)
VAL_SEED_OFFSET, TEST_SEED_OFFSET, GRID_SEED_OFFSET = 1, 2, 3


def to_image(x: torch.Tensor) -> torch.Tensor:
    """A generator's output in [-1, 1] as an image in [0, 1]."""
    return (x + 1) / 2


def to_gan(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


class _Adversarial(Task):
    """What both kinds of GAN task share: two optimizers stepped by hand, the epoch's losses
    and discriminator outputs as tensors (read once per epoch), the evaluator (not a
    submodule: not trained, not saved), and the evaluation images gathered batch by batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._sums: dict[str, torch.Tensor] = {}
        self._batches = 0
        self.frames: list[np.ndarray] = []  # the fixed batch's grid after every epoch

    def attach(self, evaluator: nn.Module, info: dict) -> None:
        self._tools = {"evaluator": evaluator, "info": info}

    def _apply(self, fn, recurse: bool = True):
        """Moved (or cast) with the module, as Lightning moves it: the evaluator, which is no
        submodule (not trained, not in checkpoints), and any tensors a subclass holds."""
        super()._apply(fn, recurse)
        if hasattr(self, "_tools"):
            self._tools["evaluator"]._apply(fn, recurse)
        return self

    @property
    def evaluator(self) -> nn.Module:
        return self._tools["evaluator"]

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.grad_clip:
            self.clip_gradients(optimizer, self.hparams.grad_clip, "norm")
        optimizer.step()

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach()
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._batches += 1

    def epoch_extras(self) -> dict[str, float]:
        n = max(self._batches, 1)
        out = {k: float(v) / n for k, v in self._sums.items()}
        self._sums, self._batches = {}, 0
        bad = [k for k, v in out.items() if not math.isfinite(v)]
        if bad:
            raise DivergedError(f"{', '.join(bad)} not finite in epoch {self.current_epoch}")
        return out

    def configure_optimizers(self):
        hp = self.hparams
        optimizers = [self._optimizer(p) for p in self.parameter_groups()]
        schedules = [make_scheduler(o, max_epochs=hp.max_epochs, **hp.schedule)
                     for o in optimizers]  # fmt: skip
        if schedules[0] is None:
            return optimizers
        return optimizers, schedules

    def _optimizer(self, parameters) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer in ("adam", "adamw"):
            kind = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
            return kind(parameters, lr=hp.lr, betas=(hp.beta1, 0.999),
                        weight_decay=hp.weight_decay)  # fmt: skip
        return make_optimizer(parameters, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)

    def on_train_epoch_end(self) -> None:
        """Manual optimization steps no schedule by itself: once per epoch here."""
        schedules = self.lr_schedulers()
        if schedules is None:
            return
        for schedule in schedules if isinstance(schedules, list) else [schedules]:
            if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
                schedule.step(self.trainer.callback_metrics["val_frechet_distance"])
            else:
                schedule.step()

    def _reset_eval(self) -> None:
        self._eval_images: list[torch.Tensor] = []
        self._eval_labels: list[torch.Tensor] = []
        self._eval_loss = [0.0, 0]

    def _eval_step(self, batch) -> None:
        x, y = batch
        self._eval_images.append(x)
        self._eval_labels.append(y)

    def _evaluation_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self._eval_images), torch.cat(self._eval_labels)


class GANTask(_Adversarial):
    """A generator and a discriminator from noise: non-saturating generator loss, one-sided
    label smoothing, `d_steps` discriminator updates per generator update."""

    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, num_classes: int = 0,
        latent_size: int = 64, beta1: float = 0.5, label_smoothing: float = 0.0,
        d_steps: int = 1, grad_clip: float | None = None, optimizer: str = "adam",
        lr: float = 2e-4, weight_decay: float = 0.0, momentum: float = 0.9,
        schedule: dict | None = None, max_epochs: int = 1, seed: int = 0,
        collapse_entropy: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.generator, self.discriminator = generator, discriminator
        self._reset_eval()

    def parameter_groups(self):
        return [self.discriminator.parameters(), self.generator.parameters()]

    def _labels(self, n: int, generator: torch.Generator | None = None,
                device: torch.device | None = None) -> torch.Tensor | None:  # fmt: skip
        k = self.hparams.num_classes
        return torch.randint(0, k, (n,), generator=generator, device=device) if k else None

    def sample(self, n: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images in [0, 1], drawn from a generator of their own (the global one untouched):
        the codes are drawn on the CPU, so a run on a GPU draws the same ones, then moved."""
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.hparams.latent_size, generator=generator)
        if labels is None:
            labels = self._labels(n, generator)
        z, labels = z.to(self.device), labels if labels is None else labels.to(self.device)
        return quality.batched(lambda zs, ys: to_image(self.generator(zs, ys)), z, labels,
                               size=BATCH)  # fmt: skip

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        x = to_gan(x)
        hp = self.hparams
        opt_d, opt_g = self.optimizers()
        conditional = y if hp.num_classes else None
        device, n = x.device, len(x)
        real_target = torch.full((n,), 1.0 - hp.label_smoothing, device=device)
        for _ in range(hp.d_steps):
            z = torch.randn(n, hp.latent_size, device=device)
            wanted = self._labels(n, device=device)
            with torch.no_grad():
                fake = self.generator(z, wanted)
            real_logits = self.discriminator(x, conditional)
            fake_logits = self.discriminator(fake, wanted)
            d_loss = F.binary_cross_entropy_with_logits(
                real_logits, real_target
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros(n, device=device))
            self._step(opt_d, d_loss)
        z = torch.randn(n, hp.latent_size, device=device)
        wanted = self._labels(n, device=device)
        fake_logits = self.discriminator(self.generator(z, wanted), wanted)
        # non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z)))
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones(n, device=device))
        self._step(opt_g, g_loss)
        self._record({
            "d_loss": d_loss, "g_loss": g_loss, "d_real": torch.sigmoid(real_logits).mean(),
            "d_fake": torch.sigmoid(fake_logits).mean(),
        })  # fmt: skip

    def _eval_end(self, prefix: str) -> None:
        real, real_labels = self._evaluation_set()
        n, hp = len(real), self.hparams
        offset = VAL_SEED_OFFSET if prefix == "val" else TEST_SEED_OFFSET
        labels = torch.arange(n) % hp.num_classes if hp.num_classes else None
        fake = self.sample(n, hp.seed + offset, labels)
        # the discriminator's loss on held-out real images and as many generated ones
        real_logits = _judge(self.discriminator, real, real_labels if hp.num_classes else None)
        fake_logits = _judge(self.discriminator, fake, labels)
        loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones(n, device=real_logits.device)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros(n, device=self.device))
        if prefix == "val":
            distance = quality.image_distance(self.evaluator, real, fake)
            self.publish("val", {"loss": loss, "frechet_distance": distance})
            if not self.trainer.sanity_checking:
                self.frames.append(grid_image(self.fixed_grid()))
            return
        scores = quality.score(self.evaluator, real, fake, hp.seed)
        values = _scores(scores)
        if labels is not None:
            values["conditional_accuracy"] = float(np.mean(scores.predicted == labels.numpy()))
        self.publish("test", {"loss": loss, **values})

    def fixed_grid(self) -> torch.Tensor:
        """The same GRID x GRID latents every epoch (cgan: a row per class, GRID columns)."""
        k = self.hparams.num_classes
        labels = torch.arange(k).repeat_interleave(GRID) if k else None
        return self.sample(k * GRID if k else GRID * GRID, self.hparams.seed + GRID_SEED_OFFSET,
                           labels)  # fmt: skip


def _judge(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None):
    """The discriminator's logits (a PatchGAN's maps) for images in [0, 1], batched."""
    if labels is None:  # a PatchGAN takes no class
        return quality.batched(lambda x: discriminator(to_gan(x)), images, size=BATCH)
    return quality.batched(lambda x, y: discriminator(to_gan(x), y), images, labels, size=BATCH)


def _scores(scores: quality.Scores) -> dict[str, float]:
    return {
        "frechet_distance": scores.frechet_distance, "kernel_distance": scores.kernel_distance,
        "inception_score": scores.inception_score, "class_entropy": scores.class_entropy,
        "classifier_confidence": scores.classifier_confidence,
    }  # fmt: skip


class CycleGANTask(_Adversarial):
    """Two mappers (source -> target, target -> source) and two PatchGAN discriminators, with
    least-squares adversarial losses, cycle consistency and optional identity loss (Zhu et al.
    2017). The source images come with the task (`source`: split -> (images, labels), already
    in the target's layout); the data module's batches are the target's."""

    def __init__(
        self, to_target: nn.Module, to_source: nn.Module, d_target: nn.Module,
        d_source: nn.Module, source: dict[str, tuple[torch.Tensor, torch.Tensor]],
        beta1: float = 0.5, label_smoothing: float = 0.0, d_steps: int = 1,
        cycle_weight: float = 10.0, identity_weight: float = 0.0,
        grad_clip: float | None = None, optimizer: str = "adam", lr: float = 2e-4,
        weight_decay: float = 0.0, momentum: float = 0.9, schedule: dict | None = None,
        max_epochs: int = 1, seed: int = 0, collapse_entropy: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters(
            ignore=["to_target", "to_source", "d_target", "d_source", "source"]
        )
        self.to_target, self.to_source = to_target, to_source
        self.d_target, self.d_source = d_target, d_source
        self.source = source
        self._reset_eval()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if hasattr(self, "source"):  # the source images travel with the module
            self.source = {k: tuple(fn(t) for t in v) for k, v in self.source.items()}
        return self

    def parameter_groups(self):
        return [
            [*self.d_target.parameters(), *self.d_source.parameters()],
            [*self.to_target.parameters(), *self.to_source.parameters()],
        ]

    def training_step(self, batch, batch_idx: int) -> None:
        target, _ = batch
        target = to_gan(target)
        pool = self.source["train"][0]
        source = to_gan(pool[torch.randint(0, len(pool), (len(target),), device=pool.device)])
        hp = self.hparams
        opt_d, opt_g = self.optimizers()
        real = 1.0 - hp.label_smoothing
        for _ in range(hp.d_steps):
            with torch.no_grad():
                fake_target, fake_source = self.to_target(source), self.to_source(target)
            d_loss = _lsgan(self.d_target(target), real) + _lsgan(self.d_target(fake_target), 0)
            d_loss = (
                d_loss + _lsgan(self.d_source(source), real) + _lsgan(self.d_source(fake_source), 0)
            )
            self._step(opt_d, d_loss / 2)
        fake_target, fake_source = self.to_target(source), self.to_source(target)
        adversarial = _lsgan(self.d_target(fake_target), 1) + _lsgan(self.d_source(fake_source), 1)
        cycle = F.l1_loss(self.to_source(fake_target), source) + F.l1_loss(
            self.to_target(fake_source), target
        )
        g_loss = adversarial + hp.cycle_weight * cycle
        if hp.identity_weight:
            identity = F.l1_loss(self.to_target(target), target) + F.l1_loss(
                self.to_source(source), source
            )
            g_loss = g_loss + hp.identity_weight * identity
        self._step(opt_g, g_loss)
        with torch.no_grad():
            d_real, d_fake = self.d_target(target).mean(), self.d_target(fake_target).mean()
        self._record({"d_loss": d_loss / 2, "g_loss": g_loss, "cycle_loss": cycle,
                      "d_real": d_real, "d_fake": d_fake})  # fmt: skip

    def mapped(self, split: str) -> torch.Tensor:
        """The split's source images mapped into the target domain, in [0, 1]."""

        def into_target(x: torch.Tensor) -> torch.Tensor:
            return to_image(self.to_target(to_gan(x)))

        return quality.batched(into_target, self.source[split][0], size=BATCH)

    def _eval_end(self, prefix: str) -> None:
        real, _ = self._evaluation_set()
        fake = self.mapped(prefix)
        d = self.d_target
        loss = _lsgan(_judge(d, real), 1) + _lsgan(_judge(d, fake), 0)
        if prefix == "val":
            distance = quality.image_distance(self.evaluator, real, fake)
            self.publish("val", {"loss": loss, "frechet_distance": distance})
            if not self.trainer.sanity_checking:
                self.frames.append(grid_image(self.mapping_rows(GRID)))
            return
        scores = quality.score(self.evaluator, real, fake, self.hparams.seed)
        source_x, source_y = self.source["test"]
        with torch.no_grad():
            unmapped = self.evaluator(source_x).argmax(1).cpu().numpy()
        values = _scores(scores)
        truth = source_y.cpu().numpy()
        values["mapped_accuracy"] = float(np.mean(scores.predicted == truth))
        values["unmapped_accuracy"] = float(np.mean(unmapped == truth))
        self.publish("test", {"loss": loss, **values})

    def mapping_rows(self, per_row: int) -> torch.Tensor:
        """Rows of test source images, their mapped images and the mapped images mapped back
        (one column per class while there are classes)."""
        x, y = self.source["test"]
        picks = [int(torch.nonzero(y == c)[0]) for c in torch.unique(y)][:per_row]
        source = x[picks]
        with torch.no_grad():
            mapped = self.to_target(to_gan(source))
            back = to_image(self.to_source(mapped))
        return torch.cat([source, to_image(mapped), back])


def _lsgan(logits: torch.Tensor, target: float) -> torch.Tensor:
    """The least-squares GAN loss CycleGAN uses: mean (D(x) - target)^2 over the patch map."""
    return ((logits - target) ** 2).mean()


def to_layout(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Images resized into another dataset's layout: as MNIST was made, the image fitted to a
    box 20/28 of the side, centred (8x8 digits -> 20x20 in 28x28)."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    side = shape[-1]
    box = round(side * 20 / 28)
    resized = F.interpolate(x, size=(box, box), mode="bilinear", align_corners=False)
    before = (side - box) // 2
    return F.pad(resized, (before, side - box - before, before, side - box - before)).clamp(0, 1)


def grid_image(images: torch.Tensor, columns: int = GRID) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one uint8 grid, `columns` per row, 2 px apart."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, c), 255, np.uint8)
    pixels = (images.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    pixels = pixels.transpose(0, 2, 3, 1)
    for i in range(n):
        top, left = 2 + (i // columns) * (h + 2), 2 + (i % columns) * (w + 2)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid[..., 0] if c == 1 else grid


def png(grid: np.ndarray, scale: int = 3) -> bytes:
    from PIL import Image

    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                         Image.NEAREST)  # fmt: skip
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gif(frames: list[np.ndarray], scale: int = 3) -> bytes:
    """The frames as an animation, 0.5 s each, the last held for 2 s."""
    from PIL import Image

    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
              for f in frames]  # fmt: skip
    buffer = io.BytesIO()
    durations = [500] * (len(images) - 1) + [2000]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)  # fmt: skip
    return buffer.getvalue()


class Generate(Family):
    name = "generate"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> ImageDataModule:
        return ImageDataModule.from_experiment(exp, processed_dir, fold, normalize=False)

    def module(self, exp: Experiment, data: ImageDataModule) -> _Adversarial:
        m, hp = exp.model, exp.train
        common = {**optimizer_hparams(exp), "beta1": m.beta1,
                  "label_smoothing": m.label_smoothing, "d_steps": m.d_steps,
                  "grad_clip": hp.regularize.grad_clip, "seed": exp.seed,
                  "collapse_entropy": m.collapse_entropy}  # fmt: skip
        shape, classes = data.input_shape, len(data.classes)
        try:
            if m.arch == "cyclegan":
                task = CycleGANTask(
                    build_mapper(shape[0], m.width, m.residual_blocks),
                    build_mapper(shape[0], m.width, m.residual_blocks),
                    build_patch_discriminator(shape[0], m.width, m.spectral_norm),
                    build_patch_discriminator(shape[0], m.width, m.spectral_norm),
                    _source(exp, data), cycle_weight=m.cycle_weight,
                    identity_weight=m.identity_weight, **common,
                )  # fmt: skip
            else:
                k = classes if m.conditional else 0
                options = (m.latent_size, k, m.spectral_norm, m.d_dropout, m.conditioning)
                if m.arch == "gan":
                    generator, discriminator = build_mlp_gan(
                        shape, m.hidden, *options, batch_norm=m.batch_norm
                    )
                else:
                    generator, discriminator = build_dcgan(shape, m.channels, *options)
                task = GANTask(generator, discriminator, k, m.latent_size, **common)
        except ValueError as exc:
            raise build_error(exp, exc) from None
        task.attach(*quality.load_evaluator(data.folder.parent, exp.dataset))
        return task

    def run(self, fit: Fit, module: _Adversarial, data: ImageDataModule) -> None:
        """Fit and test; samples whose classes collapsed end the run as failed."""
        super().run(fit, module, data)
        entropy = module.test_results["test_class_entropy"]
        threshold = module.hparams.collapse_entropy
        if entropy < threshold and not fit.fast_dev_run:
            raise CollapsedError(
                f"test_class_entropy {entropy:.3f} < collapse_entropy {threshold:g} nats "
                "(the evaluator sees few classes among the samples: mode collapse)"
            )

    def params(self, exp: Experiment, module: _Adversarial, data) -> dict:
        logged = super().params(exp, module, data)
        info = module._tools["info"]
        logged["evaluator"] = {k: info[k] for k in ("epochs", "test_accuracy", "train_size")}
        logged["evaluator"]["features"] = (
            f"{info['head'][-1]}-d penultimate layer of data/evaluators/{exp.dataset}.pt, "
            "not Inception: distances compare within ablab only"
        )
        return logged

    def summary(self, exp: Experiment, module: _Adversarial, data) -> dict[str, float]:
        """The family's own test values (cgan, cyclegan) and the real-image floors."""
        info = module._tools["info"]
        extra = ("test_conditional_accuracy", "test_mapped_accuracy", "test_unmapped_accuracy")
        out = {k: module.test_results[k] for k in extra if k in module.test_results}
        out.update(
            {
                k: info[k]
                for k in (
                    "real_frechet_distance",
                    "real_kernel_distance",
                    "real_inception_score",
                    "real_class_entropy",
                )
            }
        )
        out["evaluator_accuracy"] = info["test_accuracy"]
        return out

    def probe_inputs(self, data) -> None:
        return None

    def artifacts(self, exp: Experiment, module: _Adversarial, data, title: str) -> dict:
        out: dict[str, object] = {}
        for epoch, frame in enumerate(module.frames):
            out[f"samples/epoch_{epoch:03d}.png"] = png(frame)
        if module.frames:
            out["samples.gif"] = gif(module.frames)
        if isinstance(module, CycleGANTask):
            rows = module.mapping_rows(10)
            out["mapping.png"] = png(grid_image(rows, len(rows) // 3))
            return out
        out["samples.png"] = png(grid_image(module.fixed_grid()))
        out["interpolation.png"] = png(grid_image(interpolation(module), 10))
        k = module.hparams.num_classes
        if k:
            labels = torch.arange(k).repeat_interleave(10)
            out["classes.png"] = png(grid_image(module.sample(10 * k, exp.seed, labels), 10))
        return out

    def loggable_model(self, exp: Experiment, module: _Adversarial, data) -> Loggable:
        """gan and dcgan: the generator (latent codes, and the class when conditional ->
        images); cyclegan: the source -> target mapper."""
        shape = list(data.input_shape)
        if isinstance(module, CycleGANTask):
            example = (module.source["test"][0][:2] * 255).round().to(torch.uint8).cpu().numpy()
            meta = {"image_shape": shape, "source": exp.model.source}
            return Loggable("image_mapper", module.to_target.eval(), meta, example)
        hp = module.hparams
        z = np.random.default_rng(0).standard_normal((2, hp.latent_size)).astype(np.float32)
        meta = {"latent_size": hp.latent_size, "num_classes": hp.num_classes, "image_shape": shape}
        return Loggable("image_generator", module.generator.body.eval(), meta, z)


def interpolation(module: GANTask, rows: int = 6, steps: int = 10) -> torch.Tensor:
    """Straight lines in latent space between pairs of random codes, `steps` images each
    (cgan: each row keeps one class)."""
    hp = module.hparams
    generator = torch.Generator().manual_seed(hp.seed + GRID_SEED_OFFSET)
    ends = torch.randn(2, rows, hp.latent_size, generator=generator)
    t = torch.linspace(0, 1, steps)[None, :, None]
    z = (ends[0][:, None] * (1 - t) + ends[1][:, None] * t).reshape(rows * steps, -1)
    labels = (
        (torch.arange(rows) % hp.num_classes).repeat_interleave(steps) if hp.num_classes else None
    )
    with torch.no_grad():
        return to_image(module.generator(z, labels))


def add_generated(fit: Fit, data: ImageDataModule, samples: int, epochs: int,
                  hidden: list[int], lr: float) -> None:  # fmt: skip
    """GAN as data augmentation: a class-conditional MLP GAN (BatchNorm in the generator, a
    projection discriminator; Adam, beta1 0.5, batch 64) trained on the data module's training
    images alone, then `samples` of its images, the classes in turn, appended to the training
    set (normalised like it)."""
    images, y = data.training_pixels()
    k, seed = len(data.classes), data.seed
    generator, discriminator = build_mlp_gan(tuple(images.shape[1:]), hidden, 64, k,
                                             batch_norm=True)  # fmt: skip
    task = GANTask(generator, discriminator, k, 64, lr=lr, max_epochs=epochs, seed=seed,
                   schedule={"name": "none"})  # fmt: skip
    dataset = TensorDataset(images, y)
    loader = Batches(dataset, 64, shuffled(len(dataset), 64, torch.Generator().manual_seed(seed)))
    fit.plain_fit(task, loader, epochs)  # no validation: the GAN is scored by the classifier
    task.eval()
    labels = torch.arange(samples) % k
    data.add_training(task.sample(samples, seed + TEST_SEED_OFFSET, labels), labels,
                      "generated_size")  # fmt: skip


def _source(exp: Experiment, data: ImageDataModule) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The source domain's splits in the target's layout (no subset: all of them)."""
    source = ImageDataModule(data.folder.parent / exp.model.source, exp.train.batch_size,
                             exp.seed, normalize=False)  # fmt: skip
    source.setup()
    data.setup()
    return {split: (to_layout(t.tensors[0], data.input_shape), t.tensors[1])
            for split, t in source.tensors.items()}  # fmt: skip
