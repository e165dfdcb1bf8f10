"""One schema per task family: `task:` picks it, and each names the networks, data kinds and
metrics that family takes. No torch here: the families in `ablab.families` read these names."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ablab.config.common import (
    BALANCED,
    DATASETS,
    LABEL_SETS,
    Dataset,
    NonNegative,
    Probability,
    Strict,
)
from ablab.config.data import ExperimentData
from ablab.config.nets import (
    AutoencoderParams,
    CaptionerParams,
    CNNParams,
    Conv1dParams,
    CycleGANParams,
    DCGANParams,
    GANParams,
    MLPParams,
    RNNParams,
    Seq2SeqParams,
    TfidfParams,
    TransformerParams,
)

# which networks take which kind of input
ARCH_INPUTS = {
    "mlp": ("image", "series"), "cnn": ("image",), "rnn": ("text", "series", "tagging"),
    "conv1d": ("series",), "tfidf": ("text",),
    "transformer": ("text",),
    "seq2seq": ("translation",), "captioner": ("image",), "autoencoder": ("image",),
    "gan": ("image",), "dcgan": ("image",), "cyclegan": ("image",),
}  # fmt: skip


Direction = Literal["higher", "lower"]
DIRECTION_WORDS = ("higher", "lower")

# what every family's runs report beside its own metrics: losses, the train-val gap, time, size
COMMON_DIRECTIONS: dict[str, Direction] = {
    "train_loss": "lower", "train_objective": "lower", "val_loss": "lower", "test_loss": "lower",
    "train_val_gap": "lower", "seconds_per_epoch": "lower", "parameters": "lower",
}  # fmt: skip


def _directions(higher: tuple[str, ...] = (), lower: tuple[str, ...] = ()) -> dict[str, Direction]:
    out: dict[str, Direction] = dict(COMMON_DIRECTIONS)
    out.update(dict.fromkeys(higher, "higher"))
    out.update(dict.fromkeys(lower, "lower"))
    return out


class EntryBase(Strict):
    """An experiment as written in params.yaml: its family, network and the defaults it
    overrides. Subclasses name what their family reports, and for each metric the way it gets
    better (`directions`): early stopping, the checkpoint, the best epoch, a suite's best unit,
    the report's verdicts and the search read it there; nothing guesses it from a name."""

    data: ExperimentData = ExperimentData()
    train: dict[str, Any] = {}

    inputs: ClassVar[tuple[str, ...]]  # data kinds the family takes
    test_metrics: ClassVar[tuple[str, ...]]  # metrics.json; suites, report and tune read them
    epoch_metrics: ClassVar[tuple[str, ...]]  # validation values per epoch (monitor, pruning)
    train_metrics: ClassVar[tuple[str, ...]] = ("train_loss", "train_objective")  # per epoch
    reported: ClassVar[tuple[str, ...]]  # what a suite's report tabulates, in order
    compared: ClassVar[tuple[str, ...]]  # compared with the baseline in the report
    headline: ClassVar[str]  # a suite's default headline
    # compared metrics that the test predictions give per example (metric -> how: see
    # ablab.stats.METRICS): the report adds a permutation test and a bootstrap over examples
    per_example: ClassVar[dict[str, str]] = {}
    # metric -> "higher" or "lower": every test, per-epoch validation and reported metric
    directions: ClassVar[dict[str, Direction]]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "directions"):
            return  # EntryBase itself
        named = {m for kind in ("test_metrics", "epoch_metrics", "reported", "compared")
                 for m in getattr(cls, kind, ())}  # fmt: skip
        missing = sorted(named - set(cls.directions))
        if missing:
            raise TypeError(f"{cls.__name__}: no direction declared for {', '.join(missing)}")


class MlmParams(Strict):
    """BERT's pretraining at CPU scale: the transformer first learns to predict masked tokens
    of the training texts (labels unread) for `epochs`, then fine-tunes on the labels. Of the
    real tokens, `mask_prob` are predicted: 80% of those replaced by [MASK], 10% by a random
    token, 10% kept (Devlin et al. 2019). One pretrained network per setting, trained with
    `seed` (null: each run's own seed), like one downloaded checkpoint fine-tuned per seed."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 4
    mask_prob: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = 0


class ClassifyEntry(EntryBase):
    task: Literal["classify"]
    model: Annotated[
        MLPParams | CNNParams | RNNParams | TransformerParams | TfidfParams,
        Field(discriminator="arch"),
    ]
    # a transformer pretrained by masked-token prediction first (the `pretrain` stage's, in a
    # suite); null: from scratch
    mlm: MlmParams | None = None
    inputs = ("image", "text")
    test_metrics = ("test_loss", "test_accuracy", "test_macro_f1")
    epoch_metrics = ("val_loss", "val_accuracy", "val_macro_f1")
    # test_minority_recall on a skewed training set; the shift metrics with train.test_shift
    # (recurrent networks: first_step_grad_norm, the gradient reaching the first time step)
    reported = ("test_accuracy", "test_macro_f1", "test_loss", "test_minority_recall",
                "test_shifted_accuracy", "test_shift_drop", "first_step_grad_norm")  # fmt: skip
    compared = ("test_accuracy", "test_macro_f1", "test_minority_recall", "test_shift_drop")
    headline = "test_accuracy"
    per_example = {
        "test_accuracy": "accuracy",
        "test_macro_f1": "macro_f1",
        "test_minority_recall": "minority_recall",
    }
    directions = _directions(
        higher=("test_accuracy", "test_macro_f1", "test_minority_recall", "val_accuracy",
                "val_macro_f1", "test_shifted_accuracy", "first_step_grad_norm"),
        # test_nll, test_ece: an ensemble suite's (ablab.ensembles)
        lower=("test_shift_drop", "test_nll", "test_ece"),
    )  # fmt: skip


class RegressEntry(EntryBase):
    task: Literal["regress"]
    # a recurrent net reads the window step by step; mlp and conv1d see it whole
    model: Annotated[RNNParams | MLPParams | Conv1dParams, Field(discriminator="arch")]
    inputs = ("series",)
    test_metrics = ("test_loss", "test_mae", "test_rmse")
    epoch_metrics = ("val_loss", "val_mae")
    reported = ("test_mae", "test_rmse", "test_loss")
    compared = ("test_mae", "test_rmse")
    headline = "test_mae"
    directions = _directions(lower=("test_mae", "test_rmse", "val_mae"))


class TranslateEntry(EntryBase):
    """A sequence out, decoded a character at a time: from a sequence (seq2seq: encoder-decoder
    many-to-many) or from one image (captioner: one-to-many, an MNIST digit's name)."""

    task: Literal["translate"]
    model: Annotated[Seq2SeqParams | CaptionerParams, Field(discriminator="arch")]
    inputs = ("translation", "image")
    test_metrics = ("test_loss", "test_accuracy", "test_char_accuracy")  # accuracy: exact match
    epoch_metrics = ("val_loss", "val_accuracy")
    reported = ("test_accuracy", "test_char_accuracy", "test_loss")
    compared = ("test_accuracy", "test_char_accuracy")
    headline = "test_accuracy"
    directions = _directions(higher=("test_accuracy", "test_char_accuracy", "val_accuracy"))


class TagEntry(EntryBase):
    task: Literal["tag"]
    model: RNNParams  # its head reads every step's state: synchronous many-to-many
    inputs = ("tagging",)
    test_metrics = ("test_loss", "test_token_accuracy", "test_sequence_accuracy")
    epoch_metrics = ("val_loss", "val_token_accuracy", "val_sequence_accuracy")
    reported = ("test_token_accuracy", "test_sequence_accuracy", "test_loss")
    compared = ("test_token_accuracy", "test_sequence_accuracy")
    headline = "test_sequence_accuracy"
    directions = _directions(higher=(
        "test_token_accuracy", "test_sequence_accuracy", "val_token_accuracy",
        "val_sequence_accuracy",
    ))  # fmt: skip

    @model_validator(mode="after")
    def _no_pooling(self) -> TagEntry:
        if self.model.pooling != "last":
            raise ValueError(
                f"model.pooling: a tagger labels every step, nothing is pooled; got "
                f"{self.model.pooling!r} (leave it out)"
            )
        return self


class ReconstructEntry(EntryBase):
    task: Literal["reconstruct"]
    model: AutoencoderParams
    inputs = ("image",)
    test_metrics = ("test_recon_loss", "test_probe_accuracy", "test_code_active_fraction")
    epoch_metrics = ("val_loss",)
    reported = (
        "test_probe_accuracy", "test_recon_loss", "test_noisy_recon_loss",
        "test_code_active_fraction", "pca_probe_accuracy", "pca_recon_loss",
    )  # fmt: skip
    compared = ("test_probe_accuracy", "test_recon_loss", "test_noisy_recon_loss")
    headline = "test_probe_accuracy"
    per_example = {"test_probe_accuracy": "accuracy"}  # the linear probe's predictions
    # active code: the share of code units a test image turns on (sparse codes aim low, but
    # a larger share is a code that keeps more: higher)
    directions = _directions(
        higher=("test_probe_accuracy", "pca_probe_accuracy", "test_code_active_fraction"),
        lower=("test_recon_loss", "test_noisy_recon_loss", "pca_recon_loss"),
    )


class GenerateEntry(EntryBase):
    """GANs, scored by the dataset's evaluator (ablab.evaluator): distances in its feature
    space, not Inception's. val_loss is the discriminator's loss on validation images and as
    many generated ones; cgan adds test_conditional_accuracy, cyclegan test_mapped_accuracy
    and test_unmapped_accuracy (the evaluator reading source images with and without the
    mapping)."""

    task: Literal["generate"]
    model: Annotated[GANParams | DCGANParams | CycleGANParams, Field(discriminator="arch")]
    inputs = ("image",)
    test_metrics = (
        "test_frechet_distance", "test_kernel_distance", "test_inception_score",
        "test_class_entropy", "test_classifier_confidence",
    )  # fmt: skip
    epoch_metrics = ("val_loss", "val_frechet_distance")
    # d_real, d_fake: the discriminator's mean probability of "real" for real and generated
    # images (cycle_loss: cyclegan's)
    train_metrics = ("d_loss", "g_loss", "d_real", "d_fake", "cycle_loss")
    reported = (
        "test_frechet_distance", "test_kernel_distance", "test_inception_score",
        "test_class_entropy", "test_classifier_confidence", "test_conditional_accuracy",
        "test_mapped_accuracy", "test_unmapped_accuracy", "real_frechet_distance",
    )  # fmt: skip
    compared = ("test_frechet_distance", "test_inception_score", "test_class_entropy")
    headline = "test_frechet_distance"
    # class entropy: every class present is ln(10); classifier confidence: samples the
    # evaluator reads as a clear digit
    directions = _directions(
        higher=(
            "test_inception_score", "test_class_entropy", "test_classifier_confidence",
            "test_conditional_accuracy", "test_mapped_accuracy", "test_unmapped_accuracy",
        ),
        lower=(
            "test_frechet_distance", "test_kernel_distance", "real_frechet_distance",
            "val_frechet_distance",
        ),
    )  # fmt: skip


class PseudoLabelParams(Strict):
    """Pseudo-labels (Lee 2013): `labels` of the training examples keep their label, the rest
    are unlabelled; each step adds alpha(t) x the cross-entropy of an unlabelled batch against
    the network's own argmax, alpha rising linearly from 0 at `start_epoch` to `alpha_final` at
    `full_epoch`. alpha_final 0: supervised only (the unlabelled examples are never read)."""

    labels: Annotated[int, Field(ge=10)] = 600  # labelled training examples, stratified
    alpha_final: NonNegative = 3.0  # the paper's alpha_f
    start_epoch: Annotated[int, Field(ge=0, le=10000)] = 2  # T1: alpha is 0 before it
    full_epoch: Annotated[int, Field(ge=1, le=10000)] = 8  # T2: alpha_f from here on
    # keep a pseudo-label only where the softmax confidence reaches this (0: keep all)
    threshold: Probability = 0.0
    unlabelled_batch_size: Annotated[int, Field(ge=1, le=65536)] = 256  # the paper's 256
    # whose argmax is the pseudo-label: same_pass, the very forward pass that is trained on it
    # (dropout on); mean_network, the network as it predicts at test time (dropout off:
    # Hinton et al.'s mean network), one more forward pass without gradient
    labelled_by: Literal["same_pass", "mean_network"] = "same_pass"

    @model_validator(mode="after")
    def _rises(self) -> PseudoLabelParams:
        if self.full_epoch <= self.start_epoch:
            raise ValueError(
                f"full_epoch ({self.full_epoch}) must come after start_epoch ({self.start_epoch})"
            )
        return self


class ImageClassifierEntry(EntryBase):
    """A family that trains an image classifier its own way (pseudo_label, adapt): classify's
    networks and metrics; a subclass names its own per-epoch and reported extras."""

    model: Annotated[MLPParams | CNNParams, Field(discriminator="arch")]
    inputs = ("image",)
    test_metrics = ClassifyEntry.test_metrics
    epoch_metrics = ClassifyEntry.epoch_metrics
    compared = ("test_accuracy", "test_macro_f1")
    headline = "test_accuracy"
    per_example = {"test_accuracy": "accuracy", "test_macro_f1": "macro_f1"}
    directions = _directions(higher=(
        "test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1",
        "final_pseudo_label_accuracy", "source_test_accuracy",
    ))  # fmt: skip


class PseudoLabelEntry(ImageClassifierEntry):
    """Semi-supervised classification by pseudo-labels. Per epoch, on the unlabelled batches:
    pseudo_label_accuracy (the kept pseudo-labels against the hidden true labels),
    pseudo_label_fraction (the share kept by the threshold) and alpha."""

    task: Literal["pseudo_label"]
    pseudo_label: PseudoLabelParams = PseudoLabelParams()
    train_metrics = (
        "train_loss", "train_objective", "pseudo_label_accuracy", "pseudo_label_fraction", "alpha",
    )  # fmt: skip
    reported = ("test_accuracy", "test_macro_f1", "test_loss", "final_pseudo_label_accuracy")


ADAPT_METHODS = (
    "target_only", "source_only", "freeze", "finetune", "finetune_discriminative", "instance",
    "dann", "oracle",
)  # fmt: skip
# methods that read the source's labels as the target's: the two label sets must be the same
SHARED_LABEL_METHODS = ("source_only", "instance", "dann")
# methods that start from the `pretrain` stage's source network
PRETRAINED_METHODS = ("source_only", "freeze", "finetune", "finetune_discriminative", "dann")


class AdaptParams(Strict):
    """Transfer from a labelled `source` dataset to the experiment's dataset (the target), of
    which `target_labels` training examples keep their label. Images are brought to one shape:
    grey repeated to colour, smaller images resized up (bilinear)."""

    method: Literal[ADAPT_METHODS] = "source_only"
    source: Dataset = "mnist"
    target_labels: Annotated[int, Field(ge=1)] = 100
    source_subset: Annotated[int, Field(ge=10)] | None = None  # source training examples kept
    # network-based and dann: epochs on the source first (the `pretrain` stage's, in a suite)
    pretrain_epochs: Annotated[int, Field(ge=1, le=1000)] = 3
    body_lr_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1  # finetune_discriminative
    # dann: the domain head's hidden width and the reversal's ceiling (lambda_p x this)
    domain_hidden: Annotated[int, Field(ge=1, le=65536)] = 100
    reversal_weight: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    # instance: density ratios p_target(x)/p_source(x) clipped to at most this, then the
    # weights scaled to mean 1
    max_weight: Annotated[float, Field(ge=1.0, le=1e6)] = 10.0


class AdaptEntry(ImageClassifierEntry):
    """Domain adaptation: every method is tested on the target's test split. dann logs per
    epoch the domain classifier's accuracy (domain_accuracy: near 0.5 when the features no
    longer tell the domains apart) and the reversal strength lambda_p. source_test_accuracy
    (where the label sets match): every 5th source test image, what adapting cost the source."""

    task: Literal["adapt"]
    adapt: AdaptParams = AdaptParams()
    train_metrics = ("train_loss", "train_objective", "domain_accuracy", "reversal")
    reported = ("test_accuracy", "test_macro_f1", "test_loss", "source_test_accuracy")


class MaskedLmEntry(EntryBase):
    """Masked-token prediction on a text dataset's training texts (labels unread): what a
    classify experiment's `mlm` pretrains. test_mlm_accuracy: the masked tokens predicted
    right; test_perplexity: exp(test_loss), the cross-entropy on masked tokens."""

    task: Literal["masked_lm"]
    model: TransformerParams
    mlm: MlmParams = MlmParams()
    inputs = ("text",)
    test_metrics = ("test_loss", "test_mlm_accuracy", "test_perplexity")
    epoch_metrics = ("val_loss", "val_mlm_accuracy")
    reported = ("test_mlm_accuracy", "test_perplexity", "test_loss")
    compared = ("test_mlm_accuracy", "test_loss")
    headline = "test_mlm_accuracy"
    directions = _directions(
        higher=("test_mlm_accuracy", "val_mlm_accuracy"), lower=("test_perplexity",)
    )


ENTRIES: dict[str, type[EntryBase]] = {
    "classify": ClassifyEntry,
    "regress": RegressEntry,
    "translate": TranslateEntry,
    "tag": TagEntry,
    "reconstruct": ReconstructEntry,
    "generate": GenerateEntry,
    "pseudo_label": PseudoLabelEntry,
    "adapt": AdaptEntry,
    "masked_lm": MaskedLmEntry,
}
ExperimentEntry = Annotated[
    ClassifyEntry
    | RegressEntry
    | TranslateEntry
    | TagEntry
    | ReconstructEntry
    | GenerateEntry
    | PseudoLabelEntry
    | AdaptEntry
    | MaskedLmEntry,
    Field(discriminator="task"),
]


def direction(task: str, metric: str) -> Direction:
    """The way `metric` of family `task` gets better, as the family declares it; a metric it
    does not declare is an error naming it (a suite headline or monitor is checked on load)."""
    declared = ENTRIES[task].directions
    if metric not in declared:
        raise ValueError(
            f"{metric!r}: task {task} declares no direction for it; its metrics: "
            f"{', '.join(sorted(declared))}"
        )
    return declared[metric]


def higher_is_better(task: str, metric: str) -> bool:
    return direction(task, metric) == "higher"


# the families whose trained network `train.log_model` logs as a standalone MLflow model
# (ablab.serving): classifiers (not TF-IDF, which is scikit-learn), forecasters, GANs
LOGGABLE = ("classify", "regress", "generate", "pseudo_label", "adapt")


def report_metrics(task: str) -> tuple[str, ...]:
    """The values a suite of this family tabulates, in the report's order."""
    return ENTRIES[task].reported


def check_techniques(exp) -> None:
    """Refuse what the experiment's family, network or data cannot take (a ValueError says
    which key and why). `exp` is a resolved Experiment."""
    entry = ENTRIES[exp.task]
    kind, num_classes = DATASETS[exp.dataset]
    reg, aug = exp.train.regularize, exp.train.augment
    if kind not in entry.inputs:
        raise ValueError(
            f"task: {exp.task} takes {' or '.join(entry.inputs)} data; {exp.dataset} is {kind}"
        )
    if kind not in ARCH_INPUTS[exp.model.arch]:
        raise ValueError(
            f"model.arch: {exp.model.arch} takes {' or '.join(ARCH_INPUTS[exp.model.arch])} "
            f"data; {exp.dataset} is {kind}"
        )
    if exp.model.arch == "captioner" and LABEL_SETS.get(exp.dataset) != "digits":
        digits = ", ".join(d for d, labels in LABEL_SETS.items() if labels == "digits")
        raise ValueError(
            f"model.arch: captioner writes a digit's name; data.dataset {exp.dataset} is not "
            f"digits (allowed: {digits})"
        )
    if exp.train.log_model and (exp.task not in LOGGABLE or exp.model.arch == "tfidf"):
        what = "model.arch tfidf (scikit-learn)" if exp.task in LOGGABLE else f"task {exp.task}"
        raise ValueError(
            f"train.log_model: {what} logs no standalone model (those that do: task "
            f"{', '.join(LOGGABLE)}, a network); set train.log_model: false"
        )
    if exp.task == "generate" and exp.train.schedule.name == "inverse_power":
        raise ValueError(
            "train.schedule.name: a GAN's schedules step once per epoch (none, step, "
            "exponential, cosine, plateau); got 'inverse_power', which steps every batch"
        )
    monitor = exp.train.early_stopping.monitor
    if monitor not in entry.epoch_metrics:
        raise ValueError(
            f"train.early_stopping.monitor: {exp.task} reports {', '.join(entry.epoch_metrics)} "
            f"per epoch; got {monitor!r}"
        )
    if kind != "image" and (aug.enabled or reg.input_noise):
        raise ValueError(f"train.augment and input_noise need images; {exp.dataset} is {kind}")
    if exp.image_size is not None and not (exp.task == "classify" and kind == "image"):
        raise ValueError(
            f"data.image_size resizes the images of an image classifier; {exp.dataset} is "
            f"{kind} data, task {exp.task}"
        )
    if exp.sequence_length is not None and not (exp.task == "classify" and kind == "text"):
        raise ValueError(
            f"data.sequence_length keeps the first tokens of a text classifier's sequences; "
            f"{exp.dataset} is {kind} data, task {exp.task}"
        )
    if exp.train.test_shift and not (exp.task == "classify" and kind == "image"):
        raise ValueError(
            f"train.test_shift moves test images of an image classifier; {exp.dataset} is "
            f"{kind} data, task {exp.task}"
        )
    if exp.task == "reconstruct" and reg.input_noise:
        raise ValueError(
            "train.regularize.input_noise would corrupt the autoencoder's target too: use "
            "model.corruption {kind: gaussian, level: ...} for a denoising autoencoder"
        )
    for key, made in (("gan_augment", "generated"), ("ae_augment", "decoded")):
        classifies_images = exp.task == "classify" and kind == "image"
        if getattr(exp.train, key).samples and not (
            classifies_images and exp.model.arch in ("mlp", "cnn")
        ):
            raise ValueError(
                f"train.{key}: {made} images are added to an image classifier's training set "
                f"(task classify, image data, arch mlp or cnn); this is task {exp.task}, "
                f"{exp.dataset} ({kind}), {exp.model.arch}"
            )
    if exp.train.imbalance == "combined" and exp.skew is None and exp.dataset in BALANCED:
        raise ValueError(
            f"train.imbalance: combined evens out unequal classes, but {exp.dataset}'s training "
            "classes are equal in number; make them unequal with data.skew, or use none"
        )
    if exp.task == "generate":
        used = [f"train.regularize.{k}" for k, v in reg.model_dump().items()
                if k != "grad_clip" and v]  # fmt: skip
        used += ["train.augment"] if aug.enabled else []
        if used:
            raise ValueError(
                f"{', '.join(used)}: not for task generate (its knobs are model.label_smoothing, "
                "d_steps, spectral_norm, d_dropout; train.regularize.grad_clip clips both nets)"
            )
    if reg.dropconnect and not _hidden_linear_layers(exp.model):
        raise ValueError(
            "train.regularize.dropconnect needs a hidden linear layer; this model has none "
            "(mlp depth 0, a cnn with an empty head, or a tied autoencoder)"
        )
    if exp.target_outliers is not None and exp.task != "regress":
        raise ValueError(
            f"data.target_outliers: corrupts a series' training targets, for task regress; "
            f"this is {exp.task}"
        )
    if exp.task != "classify":
        classy = {
            "data.skew": exp.skew is not None,
            "data.label_noise": bool(exp.label_noise),
            "train.imbalance": exp.train.imbalance != "none",
            "train.regularize.label_smoothing": bool(reg.label_smoothing),
            "train.regularize.disturb_label": bool(reg.disturb_label),
            "train.folds": bool(exp.train.folds),
        }
        used = [k for k, on in classy.items() if on]
        if used:
            raise ValueError(f"{', '.join(used)}: only for task classify; this is {exp.task}")
    if exp.task == "adapt":
        _check_adapt(exp)
    if exp.task == "pseudo_label" and exp.subset is not None:
        if exp.pseudo_label.labels >= exp.subset:
            raise ValueError(
                f"pseudo_label.labels: {exp.pseudo_label.labels} labels leave no unlabelled "
                f"example of the {exp.subset} training examples data.subset keeps; use fewer "
                "labels or a larger subset"
            )
    if exp.mlm is not None and exp.model.arch != "transformer":
        raise ValueError(
            f"mlm: masked-token pretraining is for model.arch transformer; this is {exp.model.arch}"
        )
    if exp.skew is not None and max(exp.skew.classes) >= num_classes:
        raise ValueError(
            f"data.skew.classes: {exp.dataset} has classes 0..{num_classes - 1}; "
            f"got {exp.skew.classes}"
        )


def _check_adapt(exp) -> None:
    a = exp.adapt
    if DATASETS[a.source][0] != "image":
        raise ValueError(f"adapt.source: transfer takes image data; {a.source} is "
                         f"{DATASETS[a.source][0]}")  # fmt: skip
    if a.source == exp.dataset:
        raise ValueError(f"adapt.source: {a.source} is the target (data.dataset) too; "
                         "transfer needs two domains")  # fmt: skip
    if a.method in SHARED_LABEL_METHODS and LABEL_SETS[a.source] != LABEL_SETS[exp.dataset]:
        raise ValueError(
            f"adapt.method: {a.method} reads {a.source}'s labels as {exp.dataset}'s, but their "
            f"classes differ ({LABEL_SETS[a.source]} vs {LABEL_SETS[exp.dataset]}); with other "
            "classes use freeze, finetune or finetune_discriminative (a new head)"
        )


def _hidden_linear_layers(model) -> int:
    if model.arch == "mlp":
        return model.depth
    if model.arch == "autoencoder":
        return 0 if model.tied else 1
    return len(getattr(model, "head", []))
