"""The train section: epochs, optimizer, schedule, early stopping and every technique."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ablab.config.common import NonNegative, Optimizer, Positive, Probability, Strict


class EarlyStopping(Strict):
    enabled: bool = True
    # which values a family reports per epoch is the family's: checked when an experiment resolves
    monitor: Literal[
        "val_loss", "val_accuracy", "val_macro_f1", "val_mae", "val_frechet_distance"
    ] = "val_loss"
    patience: Annotated[int, Field(ge=1)] = 3
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0


class Schedule(Strict):
    """Learning-rate schedule, stepped once per epoch, except inverse_power: lr / (1 + rate
    p)^power at training progress p (steps done / all steps, 0 to 1), set every step (Ganin
    et al. 2016: rate 10, power 0.75). Momentum (momentum and nesterov) may rise linearly from
    `momentum_start` to train.momentum over the first `momentum_epochs` epochs, then stay
    (Srivastava et al. 2014: 0.5 to 0.99); momentum_epochs 0: train.momentum throughout."""

    name: Literal["none", "step", "exponential", "cosine", "plateau", "inverse_power"] = "none"
    step_size: Annotated[int, Field(ge=1)] = 5  # step: epochs between decays
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # step, exponential, plateau factor
    patience: Annotated[int, Field(ge=0)] = 2  # plateau: epochs without val_loss improvement
    warmup_epochs: Annotated[int, Field(ge=0)] = 0  # linear warm-up from lr/10 before the rest
    rate: Annotated[float, Field(ge=0.0, le=1e6)] = 10.0  # inverse_power's rate
    power: Annotated[float, Field(ge=0.0, le=100.0)] = 0.75  # inverse_power's power
    momentum_start: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    momentum_epochs: Annotated[int, Field(ge=0, le=10000)] = 0

    @model_validator(mode="after")
    def _plateau_has_no_warmup(self) -> Schedule:
        if self.name in ("plateau", "inverse_power") and self.warmup_epochs:
            raise ValueError(f"warmup_epochs must be 0 with the {self.name} schedule")
        return self


class Regularize(Strict):
    """Techniques that change the loss, the network or the update; all off by default."""

    l1: NonNegative = 0.0  # l1 * sum|w| added to the loss (weights of linear and conv layers)
    l2: NonNegative = 0.0  # l2 * sum w^2 added to the loss (same weights)
    label_smoothing: Probability = 0.0
    disturb_label: Probability = 0.0  # DisturbLabel's alpha: a label is redrawn with this prob
    dropconnect: Probability = 0.0  # drop probability of hidden linear layers' weights
    input_noise: NonNegative = 0.0  # std of Gaussian noise added to the (normalised) input
    hidden_noise: NonNegative = 0.0  # std of Gaussian noise added after hidden activations
    max_norm: Positive | None = None  # cap on the L2 norm of each unit's incoming weights
    grad_clip: Positive | None = None  # clip the global gradient norm to this


class Augment(Strict):
    """Random image transformations of training batches (each example its own draw)."""

    shift: Annotated[int, Field(ge=0, le=8)] = 0  # up to this many pixels in x and y
    hflip: bool = False  # mirror left-right with probability 0.5
    rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 0.0  # up to +/- this many degrees
    erasing: Probability = 0.0  # probability of blanking a random rectangle
    # pixels times a factor drawn from [1 - brightness, 1 + brightness] (torchvision's
    # ColorJitter), then clipped to [0, 1]
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # each image's pixels pushed from (or pulled to) its own mean by a factor from
    # [1 - contrast, 1 + contrast], then clipped to [0, 1]
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.hflip or self.rotation or self.erasing
                    or self.brightness or self.contrast)  # fmt: skip


class GanAugment(Strict):
    """Generated training images: a class-conditional MLP GAN (the `gan` arch: BatchNorm in
    the generator, a projection discriminator; Adam, beta1 0.5, batch 64) trained on the run's
    own training images alone, then `samples` of its images, the classes in turn, added to the
    training set. 0 samples: off."""

    samples: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    epochs: Annotated[int, Field(ge=1, le=10000)] = 100  # the GAN's
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1)] = [
        256,
        512,
    ]
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3


class AeAugment(Strict):
    """Decoded training images: a denoising dense autoencoder (Gaussian corruption 0.3, MSE,
    Adam) trained on the run's own training images alone; then, the classes in turn, codes of
    a class's images moved by Gaussian noise (`spread` times that class's code spread per
    dimension) and decoded: `samples` images added to the training set. 0 samples: off."""

    samples: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    epochs: Annotated[int, Field(ge=1, le=10000)] = 30  # the autoencoder's
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1)] = [256]
    code_size: Annotated[int, Field(ge=1, le=4096)] = 32
    spread: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3


class TrainParams(Strict):
    max_epochs: Annotated[int, Field(ge=1, le=1000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 128
    optimizer: Optimizer = "adam"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # for momentum, nesterov, rmsprop
    weight_decay: NonNegative = 0.0  # in the optimizer: decoupled for adamw, coupled otherwise
    schedule: Schedule = Schedule()
    early_stopping: EarlyStopping = EarlyStopping()
    regularize: Regularize = Regularize()
    augment: Augment = Augment()
    gan_augment: GanAugment = GanAugment()
    ae_augment: AeAugment = AeAugment()
    # how training treats unequal classes: reweight the loss, the sampler, or resample the set
    # (combined: the largest classes undersampled and the smallest oversampled to the mean)
    imbalance: Literal[
        "none", "weighted_loss", "weighted_sampling", "oversample", "undersample", "combined"
    ] = "none"
    regression_loss: Literal["mse", "mae"] = "mse"  # series forecasting
    # token sequences: training batches of similar length, drawn from pools of this many
    # batches sorted by length (fewer recurrent steps per batch); 0: uniformly shuffled
    length_buckets: Annotated[int, Field(ge=0, le=100_000)] = 50
    folds: Annotated[int, Field(ge=0, le=20)] = 0  # k >= 2: k-fold cross-validation
    # the weights tested: the best validation epoch's (checkpointing is then itself a form of
    # early stopping) or the last epoch's
    test_checkpoint: Literal["best", "last"] = "best"
    # image classifiers: the test images also scored moved by up to this many pixels each way
    # (every image its own draw, the same draws for every model): test_shifted_accuracy, and
    # test_shift_drop (test_accuracy minus it); 0: not scored
    test_shift: Annotated[int, Field(ge=0, le=8)] = 0

    @field_validator("devices")
    @classmethod
    def _one_device(cls, devices: int | list[int]) -> int | list[int]:
        if devices != 1 and not (isinstance(devices, list) and len(devices) == 1
                                 and devices[0] >= 0):  # fmt: skip
            raise ValueError(
                f"got {devices}; one device per run: 1, or [index] for the GPU to use "
                "(units share a GPU side by side: --workers N)"
            )
        return devices

    @model_validator(mode="after")
    def _momentum_ramp_needs_momentum(self) -> TrainParams:
        if self.schedule.momentum_epochs and self.optimizer not in ("momentum", "nesterov"):
            raise ValueError(
                f"schedule.momentum_epochs ramps the momentum of optimizer momentum or "
                f"nesterov; got optimizer {self.optimizer!r} (set momentum_epochs 0)"
            )
        return self

    @field_validator("folds")
    @classmethod
    def _folds_are_off_or_several(cls, folds: int) -> int:
        if folds == 1:
            raise ValueError("must be 0 (a plain validation split) or at least 2")
        return folds

    threads: Annotated[int, Field(ge=1, le=256)] = 2
    log_model: bool = True  # the trained model as an MLflow artifact
    # where training runs: auto picks a GPU where Lightning finds one, else the CPU
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # one device per run (several units share a GPU: --workers N): 1, or [index] to pick one
    devices: int | list[int] = 1
    # bf16-mixed / 16-mixed: autocast on a GPU (the networks here are too small to gain much)
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
