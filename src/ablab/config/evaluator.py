"""The `evaluator` section: which datasets get the fixed classifier that scores generated
images (ablab.evaluator), trained by the DVC stage `evaluators`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ablab.config.common import Strict


class EvaluatorParams(Strict):
    datasets: list[Literal["digits", "mnist", "fashion_mnist"]] = []
    epochs: Annotated[int, Field(ge=1, le=100)] = 1
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
