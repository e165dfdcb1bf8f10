"""What a run starts from when it is not trained from scratch: the experiment that pretrains
its network (the `pretrain` stage trains each once per suite and key), or None.

- adapt, network-based methods (PRETRAINED_METHODS): the experiment as `source_only`,
  trained for `adapt.pretrain_epochs` on the source;
- classify with `mlm`: the same transformer as task `masked_lm` on the same texts, trained for
  `mlm.epochs` with `mlm.seed`, the last epoch kept."""

from __future__ import annotations

import hashlib
import json

from ablab.config.families import PRETRAINED_METHODS
from ablab.config.load import Experiment, trained_tree


def pretraining(exp: Experiment) -> Experiment | None:
    """The experiment whose trained network `exp` starts from; None: from scratch."""
    if exp.task == "adapt" and exp.adapt.method in PRETRAINED_METHODS:
        a = exp.adapt
        adapt = type(a)(method="source_only", source=a.source, source_subset=a.source_subset,
                        pretrain_epochs=a.pretrain_epochs,
                        target_labels=a.target_labels)  # fmt: skip
        # an intermediate network: the run it starts logs the model, not the pretraining
        train = exp.train.model_copy(update={"max_epochs": a.pretrain_epochs, "log_model": False})
        return exp.model_copy(update={"adapt": adapt, "train": train})
    if exp.task == "classify" and exp.mlm is not None:
        stopping = exp.train.early_stopping.model_copy(
            update={"enabled": False, "monitor": "val_loss"}
        )
        train = exp.train.model_copy(update={
            "max_epochs": exp.mlm.epochs, "test_checkpoint": "last",
            "early_stopping": stopping, "log_model": False,
        })  # fmt: skip
        seed = exp.seed if exp.mlm.seed is None else exp.mlm.seed
        return exp.model_copy(update={"task": "masked_lm", "train": train, "seed": seed})
    return None


def pretraining_key(exp: Experiment) -> str:
    """Names the network `pretraining(exp)` trains: equal keys, equal weights; a suite's
    worker (its own thread count) finds the network the `pretrain` stage trained."""
    tree = trained_tree(pretraining(exp))
    del tree["name"]
    if tree["adapt"] is not None:
        tree["adapt"].pop("target_labels")  # a source_only run reads no target label
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]
