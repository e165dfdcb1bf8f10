"""Family `adapt`: transfer learning from a labelled source dataset to the experiment's
dataset (the target), tested on the target. Methods (adapt.method):

- target_only: from scratch on the few target labels (the floor); oracle: on every target
  training label (the ceiling);
- source_only: trained on the source, tested on the target (no adaptation);
- network-based: the source-trained network's body with a new head, then `freeze` (the head
  alone learns), `finetune` (everything) or `finetune_discriminative` (the body at a lower lr);
- instance: source examples weighted by the density ratio p_target(x) / p_source(x) that a
  domain classifier estimates (clipped), trained together with the target labels;
- dann: Ganin & Lempitsky (2015): a domain classifier on the features behind a gradient
  reversal, whose strength rises as lambda_p = 2 / (1 + exp(-10 p)) - 1 (times
  `reversal_weight`); no target labels. It adapts the source-trained network (head included:
  the labels are shared) rather than starting from scratch as the paper does: over a few
  epochs lambda_p rises before features form, and from scratch it fell below source_only here.

Source-trained networks come from the `pretrain` stage (`Fit.pretrained_dir`, keyed by
`ablab.config.pretraining`) or, outside a suite, are trained at the start of the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ablab import regularize
from ablab.config import Experiment
from ablab.config.common import LABEL_SETS
from ablab.config.families import PRETRAINED_METHODS
from ablab.config.pretraining import pretraining, pretraining_key
from ablab.data.datamodules import DomainDataModule, eval_batch_size
from ablab.families.base import Fit, Sums, build_error, network_regularizers, optimizer_hparams
from ablab.families.classify import ClassificationTask, Classify
from ablab.figures import Figure, plt
from ablab.models import build
from ablab.models.domain import (
    domain_classifier,
    reversal_schedule,
    reverse_gradient,
    split_features,
    split_head,
)

FEATURE_POINTS = 500  # per domain, in the feature projection figure


class AdaptTask(ClassificationTask):
    """A classifier trained as `method` says (see the module). The network's last Linear is
    its head, everything before it the body; dann's domain classifier reads the features of
    `split_features` (a CNN's conv blocks)."""

    def __init__(self, net: nn.Sequential, num_classes: int, input_shape: tuple[int, ...],
                 method: str,
                 body_lr_factor: float = 0.1, reversal_weight: float = 1.0,
                 domain_hidden: int = 100, max_weight: float = 10.0, **kwargs) -> None:  # fmt: skip
        super().__init__(net, num_classes, **kwargs)
        self.hparams.update(method=method, body_lr_factor=body_lr_factor,
                            reversal_weight=reversal_weight, domain_hidden=domain_hidden,
                            max_weight=max_weight)  # fmt: skip
        self.domain = None
        # (feature extractor, label predictor): views of `net`, in a tuple so that they are
        # not registered twice as submodules
        self._split = split_features(net)
        if method == "dann":
            extractor = self._split[0]
            with torch.no_grad():
                width = extractor.eval()(torch.zeros(2, *input_shape)).flatten(1).shape[1]
            extractor.train()
            self.domain = domain_classifier(width, domain_hidden)
        self._domain = Sums()  # correct, seen: this epoch's domain predictions
        self.reversal = 0.0
        self.source_classes = num_classes  # network-based methods: the source's classes
        self.initial_state: dict[str, torch.Tensor] | None = None  # for the features figure

    @property
    def body(self) -> nn.Sequential:
        return split_head(self.net)[0]

    def freeze_body(self) -> None:
        for p in self.body.parameters():
            p.requires_grad_(False)

    def on_fit_start(self) -> None:
        if self.initial_state is None:  # a resumed fit has it from its checkpoint
            self.initial_state = {k: v.clone() for k, v in self.net.state_dict().items()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["initial_state"] = self.initial_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("initial_state") is not None and self.initial_state is None:
            self.initial_state = checkpoint["initial_state"]

    def on_train_epoch_start(self) -> None:
        if self.hparams.method == "freeze":
            self.body.eval()  # frozen: batch-norm statistics and dropout stay as pretrained

    def optimizer_parameters(self):
        hp = self.hparams
        body, head = split_head(self.net)
        if hp.method == "freeze":
            return list(head.parameters())
        if hp.method == "finetune_discriminative":
            return [{"params": list(body.parameters()), "lr": hp.lr * hp.body_lr_factor},
                    {"params": list(head.parameters())}]  # fmt: skip
        return self.parameters()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        method = self.hparams.method
        if method == "dann":
            return self._dann_step(*batch["source"], *batch["unlabelled"])
        if method == "instance":
            return self._instance_step(*batch["source"], *batch["target"])
        stream = "source" if method == "source_only" else "target"
        return super().training_step(batch[stream], batch_idx)

    def _instance_step(self, xs, ys, weights, xt, yt) -> torch.Tensor:
        logits = self(torch.cat([xs, xt]))
        source = (F.cross_entropy(logits[: len(xs)], ys, reduction="none") * weights).mean()
        target = F.cross_entropy(logits[len(xs) :], yt)
        objective = source + target
        if self.hparams.l1 or self.hparams.l2:
            objective = objective + regularize.penalty(self.net, self.hparams.l1, self.hparams.l2)
        self.record_train(target, objective, len(yt))
        return objective

    def _dann_step(self, xs, ys, xu) -> torch.Tensor:
        extractor, predictor = self._split
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        self.reversal = self.hparams.reversal_weight * reversal_schedule(self.global_step / total)
        # each domain through the network on its own, as the reference implementations do:
        # batch norm then normalises each domain's batch by its own statistics
        features = extractor(xs).flatten(1)
        logits = predictor(features)
        objective = self.objective(logits, ys)
        for x, is_target in ((features, 0.0), (extractor(xu).flatten(1), 1.0)):
            domain = self.domain(reverse_gradient(x, self.reversal)).squeeze(1)
            target = torch.full_like(domain, is_target)
            objective = objective + F.binary_cross_entropy_with_logits(domain, target)
            self._domain.add(correct=((domain > 0).float() == target).sum(), seen=len(target))
        self.record_train(F.cross_entropy(logits.detach(), ys), objective, len(ys))
        return objective

    def epoch_extras(self) -> dict[str, float]:
        out = super().epoch_extras()
        sums = self._domain.read()
        self._domain = Sums()
        if sums.get("seen"):
            out.update(domain_accuracy=sums["correct"] / sums["seen"], reversal=self.reversal)
        return out

    def features(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """The body's output for images `x`, with the weights in `state` if given."""
        current = None
        if state is not None:
            current = {k: v.clone() for k, v in self.net.state_dict().items()}
            self.net.load_state_dict(state)
        body = self.body.eval()
        try:
            with torch.no_grad():
                return body(x).flatten(1)
        finally:
            if current is not None:
                self.net.load_state_dict(current)


def density_ratios(source: torch.Tensor, target: torch.Tensor, max_weight: float,
                   seed: int) -> torch.Tensor:  # fmt: skip
    """Per source example, p_target(x) / p_source(x) as a logistic-regression domain classifier
    on 2x-downsampled pixels estimates it (odds times the source-to-target size ratio), clipped
    to at most `max_weight` and scaled to mean 1."""
    from sklearn.linear_model import LogisticRegression

    def pixels(x: torch.Tensor) -> np.ndarray:
        return F.avg_pool2d(x, 2).flatten(1).numpy()

    x = np.concatenate([pixels(source), pixels(target)])
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    model = LogisticRegression(max_iter=200, C=0.1, random_state=seed).fit(x, y)
    log_odds = model.decision_function(pixels(source))
    ratio = np.exp(np.clip(log_odds, -50, 50)) * len(source) / len(target)
    weights = np.minimum(ratio, max_weight)
    return torch.from_numpy(weights / weights.mean()).float()


class Adapt(Classify):
    name = "adapt"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> DomainDataModule:
        hp, a = exp.train, exp.adapt
        processed_dir = Path(processed_dir)
        return DomainDataModule(
            processed_dir / exp.dataset, hp.batch_size, exp.seed, exp.subset, exp.val_subset,
            augment=hp.augment, input_noise=hp.regularize.input_noise,
            eval_batch_size=eval_batch_size(exp.model.arch), source_folder=processed_dir / a.source,
            method=a.method, target_labels=a.target_labels, source_subset=a.source_subset,
            where=f"params.yaml: experiments.{exp.name}.adapt",
        )  # fmt: skip

    def tags(self, exp: Experiment) -> dict[str, str]:
        return {"ablab.source": exp.adapt.source, "ablab.target": exp.dataset,
                "ablab.method": exp.adapt.method}  # fmt: skip

    def module(self, exp: Experiment, data: DomainDataModule) -> AdaptTask:
        task = self._task(exp, data, exp.adapt.method, len(data.classes))
        if exp.adapt.method in PRETRAINED_METHODS:
            task.pretrain_key = pretraining_key(exp)
            task.pretrain = pretraining(exp)
            task.source_classes = len(data.meta["source_classes"])
        return task

    def _task(self, exp: Experiment, data, method: str, classes: int) -> AdaptTask:
        a, reg = exp.adapt, exp.train.regularize
        try:
            net = build(exp.model, data.input_shape, classes)
        except ValueError as exc:
            raise build_error(exp, exc) from None
        network_regularizers(net, exp)
        return AdaptTask(
            net, classes, tuple(data.input_shape), method, a.body_lr_factor, a.reversal_weight,
            a.domain_hidden, a.max_weight, **optimizer_hparams(exp), l1=reg.l1, l2=reg.l2,
            max_norm=reg.max_norm,
        )  # fmt: skip

    def run(self, fit: Fit, module: AdaptTask, data: DomainDataModule) -> None:
        method = module.hparams.method
        if method == "instance":
            source = data.source["train"].tensors[0]
            data.source_weights = density_ratios(
                source, data.unlabelled.tensors[0], module.hparams.max_weight, data.seed
            )
        if method not in PRETRAINED_METHODS:
            return super().run(fit, module, data)
        state = self._pretrained(fit, module, data)
        if method == "source_only" and state is not None:  # the pretrained network itself
            module.net.load_state_dict(state)
            module.initial_state = {k: v.clone() for k, v in state.items()}
            fit.trainer.test(module, datamodule=data, verbose=False)
            return
        if state is not None and method == "dann":
            module.net.load_state_dict(state)  # the same classes: the head is kept too
        elif state is not None:
            body = {k: v for k, v in state.items() if not k.startswith(f"{len(module.net) - 1}.")}
            module.net.load_state_dict(body, strict=False)  # the head stays new
        if method == "freeze":
            module.freeze_body()
        super().run(fit, module, data)

    def _pretrained(self, fit: Fit, module: AdaptTask, data) -> dict | None:
        """The source network's state dict: the `pretrain` stage's, else trained here (None
        for source_only, which is then trained as the run itself)."""
        found = fit.pretrained(module.pretrain_key)
        if found is not None:
            state, module.pretrained_run = found
            return state
        if module.hparams.method == "source_only":
            return None
        exp = module.pretrain
        source = self._task(exp, data, "source_only", module.source_classes)
        fit.plain_fit(source, data.stream_batches("source_only"), exp.adapt.pretrain_epochs)
        return source.net.state_dict()

    def params(self, exp: Experiment, module, data) -> dict:
        logged = super().params(exp, module, data)
        for key in ("unlabelled_size", "source_train_size", "source_data_hash"):
            logged["data"][key] = data.meta[key]
        return logged

    def summary(self, exp: Experiment, module: AdaptTask, data) -> dict[str, float]:
        out: dict[str, float] = {}
        if LABEL_SETS[exp.adapt.source] == LABEL_SETS[exp.dataset]:
            x, y = data.source["test"].tensors
            module.net.eval()
            with torch.no_grad():
                preds = torch.cat([module.net(b).argmax(1) for b in x.split(data.eval_batch_size)])
            out["source_test_accuracy"] = float((preds == y).float().mean())
        return out

    def artifacts(self, exp: Experiment, module: AdaptTask, data, title: str) -> dict[str, object]:
        out = super().artifacts(exp, module, data, title)
        names = (exp.adapt.source, exp.dataset)
        out["features.png"] = features_figure(module, data, names, f"{title}: features")
        return out


def features_figure(module: AdaptTask, data: DomainDataModule, names: tuple[str, str],
                    title: str) -> Figure:  # fmt: skip
    """Source and target test images' features projected on the two principal axes of both,
    with the network's weights at the start of training and at the end."""
    x_source = data.source["test"].tensors[0][:FEATURE_POINTS]
    x_target = data.tensors["test"].tensors[0][:FEATURE_POINTS]
    stages = [("at the start of training", module.initial_state), ("trained", None)]
    if module.initial_state is None:
        stages = stages[1:]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4.5), squeeze=False)
    for ax, (label, state) in zip(axes[0], stages, strict=True):
        features = module.features(torch.cat([x_source, x_target]), state)
        centred = features - features.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False, niter=4)
        points = (centred @ v[:, :2]).numpy()
        n = len(x_source)
        ax.scatter(*points[:n].T, s=4, alpha=0.5, label=f"source: {names[0]}")
        ax.scatter(*points[n:].T, s=4, alpha=0.5, label=f"target: {names[1]}")
        ax.set_title(label)
        ax.set_xlabel("principal axis 1")
        ax.set_ylabel("principal axis 2")
        ax.legend(markerscale=3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
