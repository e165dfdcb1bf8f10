"""The diagnose section: the thresholds of `ablab diagnose`'s checks (ablab.diagnose)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ablab.config.common import Strict

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class DiagnoseParams(Strict):
    # overfitting: val_loss at the last epoch this far (relative) above its lowest, and this
    # far above train_loss
    overfit_rise: Fraction = 0.2
    overfit_gap: Annotated[float, Field(gt=0.0)] = 0.25
    # underfitting: train_loss still falling by more than this fraction per epoch over the last
    # three epochs, and val_loss by more than half of it
    underfit_slope: Fraction = 0.02
    # learning rate too high: an epoch's train_loss this many times the previous epoch's
    spike_ratio: Annotated[float, Field(gt=1.0)] = 2.0
    # learning rate too low: train_loss fell by less than this fraction over the whole run,
    # and never rose
    slow_drop: Fraction = 0.2
    # gradients: a layer's mean gradient norm below this fraction of the largest layer's
    # (vanishing), or any above this norm (exploding), in the last epoch
    vanishing_ratio: Fraction = 1e-3
    exploding_norm: Annotated[float, Field(gt=0.0)] = 100.0
    # dead ReLUs: this share of ReLU units never active on a validation batch
    dead_relu: Fraction = 0.25
    # class imbalance, on an imbalanced training set (data.skew): per-class test recall spread
    # (max - min) above this
    recall_spread: Fraction = 0.3
    # lr finder (--lr-find): its suggestion this many times away from the lr used
    lr_find_factor: Annotated[float, Field(gt=1.0)] = 10.0
