"""Family `pseudo_label`: semi-supervised classification by pseudo-labels (Lee 2013). A few
training images keep their label; on the rest the network's own argmax is the target, its
cross-entropy weighted by alpha(t), which rises from 0 so that early, mostly wrong
pseudo-labels do not teach the network its own mistakes. How right the pseudo-labels are is
measured per epoch against the hidden true labels."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from ablab.config import Experiment
from ablab.data.datamodules import SemiSupervisedDataModule, eval_batch_size
from ablab.families.base import Sums, build_error, network_regularizers, optimizer_hparams
from ablab.families.classify import ClassificationTask, Classify
from ablab.models import build


def pseudo_label_weight(epoch: int, alpha_final: float, start_epoch: int, full_epoch: int) -> float:
    """alpha(t) of Lee 2013: 0 before `start_epoch`, rising linearly to `alpha_final` at
    `full_epoch`, constant after."""
    if epoch < start_epoch:
        return 0.0
    if epoch >= full_epoch:
        return alpha_final
    return alpha_final * (epoch - start_epoch) / (full_epoch - start_epoch)


class PseudoLabelTask(ClassificationTask):
    """Cross-entropy on the labelled batch plus alpha(epoch) x the cross-entropy of the
    unlabelled batch against its own (detached) argmax, over the examples whose softmax
    confidence reaches `threshold`, divided by the unlabelled batch's size."""

    def __init__(self, net, num_classes: int, alpha_final: float, start_epoch: int,
                 full_epoch: int, threshold: float, labelled_by: str = "same_pass",
                 **kwargs) -> None:  # fmt: skip
        super().__init__(net, num_classes, **kwargs)
        self.hparams.update(alpha_final=alpha_final, start_epoch=start_epoch,
                            full_epoch=full_epoch, threshold=threshold,
                            labelled_by=labelled_by)  # fmt: skip
        self._pseudo = Sums()  # correct among kept, kept, seen: this epoch's
        self.last_pseudo: dict[str, float] = {}

    def alpha(self) -> float:
        hp = self.hparams
        return pseudo_label_weight(self.current_epoch, hp.alpha_final, hp.start_epoch,
                                   hp.full_epoch)  # fmt: skip

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, x_unlabelled, y_hidden = batch
        hp = self.hparams
        logits = self(x)
        objective = self.objective(logits, y)
        loss = F.cross_entropy(logits.detach(), y)
        if hp.alpha_final:
            alpha = self.alpha()
            labeller = None
            if hp.labelled_by == "mean_network":
                labeller = self._mean_network(x_unlabelled)
            if alpha > 0 or labeller is None:  # the trained pass: before T1 only measured
                with torch.set_grad_enabled(alpha > 0):
                    unlabelled = self(x_unlabelled)
                labeller = unlabelled.detach() if labeller is None else labeller
            confidence, pseudo = labeller.softmax(1).max(1)
            kept = confidence >= hp.threshold
            self._pseudo.add(correct=((pseudo == y_hidden) & kept).sum(), kept=kept.sum(),
                             seen=len(pseudo))  # fmt: skip
            if alpha > 0:
                # every example kept (threshold 0): no boolean index, whose size the host
                # would have to wait for; an empty selection sums to 0
                picked = (
                    (unlabelled, pseudo) if not hp.threshold else (unlabelled[kept], pseudo[kept])
                )
                pseudo_loss = F.cross_entropy(*picked, reduction="sum")
                objective = objective + alpha * pseudo_loss / len(pseudo)
        self.record_train(loss, objective, len(y))
        return objective

    @torch.no_grad()
    def _mean_network(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits as at test time (dropout off), then back to training."""
        self.net.eval()
        logits = self(x)
        self.net.train()
        return logits

    def epoch_extras(self) -> dict[str, float]:
        out = super().epoch_extras()
        sums = self._pseudo.read()
        self._pseudo = Sums()
        correct, kept, seen = (sums.get(k, 0) for k in ("correct", "kept", "seen"))
        if seen:
            self.last_pseudo = {
                "pseudo_label_accuracy": correct / kept if kept else float("nan"),
                "pseudo_label_fraction": kept / seen,
                "alpha": self.alpha(),
            }
            out.update(self.last_pseudo)
        return out


class PseudoLabel(Classify):
    name = "pseudo_label"

    def data(self, exp: Experiment, processed_dir: Path, fold=None) -> SemiSupervisedDataModule:
        hp, pl = exp.train, exp.pseudo_label
        return SemiSupervisedDataModule(
            Path(processed_dir) / exp.dataset, hp.batch_size, exp.seed, exp.subset,
            exp.val_subset, augment=hp.augment, input_noise=hp.regularize.input_noise,
            eval_batch_size=eval_batch_size(exp.model.arch), labels=pl.labels,
            unlabelled_batch_size=pl.unlabelled_batch_size,
            where=f"params.yaml: experiments.{exp.name}.pseudo_label.labels",
        )  # fmt: skip

    def module(self, exp: Experiment, data) -> PseudoLabelTask:
        reg, pl = exp.train.regularize, exp.pseudo_label
        try:
            net = build(exp.model, data.input_shape, len(data.classes))
        except ValueError as exc:
            raise build_error(exp, exc) from None
        network_regularizers(net, exp)
        return PseudoLabelTask(
            net, len(data.classes), pl.alpha_final, pl.start_epoch, pl.full_epoch, pl.threshold,
            pl.labelled_by, **optimizer_hparams(exp), l1=reg.l1, l2=reg.l2, max_norm=reg.max_norm,
        )  # fmt: skip

    def params(self, exp: Experiment, module, data) -> dict:
        logged = super().params(exp, module, data)
        logged["data"]["unlabelled_size"] = data.meta["unlabelled_size"]
        return logged

    def summary(self, exp: Experiment, module, data) -> dict[str, float]:
        last = module.last_pseudo
        return {f"final_{k}": v for k, v in last.items() if k != "alpha"}
