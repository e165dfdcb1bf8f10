"""The explain section: which trained image classifiers `dvc repro` explains, with which
methods, and the sizes of the faithfulness measures (ablab.explain)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ablab.config.common import Strict

Method = Literal["cam", "grad_cam", "grad_cam_pp", "saliency", "integrated_gradients",
                 "smoothgrad", "occlusion"]  # fmt: skip
METHODS: tuple[str, ...] = Method.__args__


class ActivationMaxParams(Strict):
    """Gradient ascent on the input from noise, regularised so the picture is not adversarial
    noise: random jitter each step, a Gaussian blur every few steps, an L2 penalty."""

    steps: Annotated[int, Field(ge=1, le=10000)] = 128
    lr: Annotated[float, Field(gt=0.0)] = 0.05
    jitter: Annotated[int, Field(ge=0, le=16)] = 2  # pixels, each direction
    blur_every: Annotated[int, Field(ge=0)] = 4  # 0: never
    blur_sigma: Annotated[float, Field(gt=0.0)] = 0.5  # pixels
    l2: Annotated[float, Field(ge=0.0)] = 1e-3
    channels: Annotated[int, Field(ge=0, le=512)] = 8  # of the last conv layer; 0: none


class ExplainParams(Strict):
    experiments: list[str] = []  # explained from the model each one's latest run logged
    methods: list[Method] = list(METHODS[:-1])  # occlusion: on demand (slow)
    images: Annotated[int, Field(ge=1)] = 500  # test images the faithfulness numbers average
    steps: Annotated[int, Field(ge=2, le=1024)] = 32  # deletion / insertion curve points
    sanity_images: Annotated[int, Field(ge=1)] = 100  # maps compared for the randomization test
    # a method whose maps correlate this much (Spearman) with a randomized model's fails the
    # sanity check (Adebayo et al. 2018)
    sanity_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    blur_sigma: Annotated[float, Field(gt=0.0)] = 2.0  # insertion starts from this blur (pixels)
    smoothgrad_samples: Annotated[int, Field(ge=1, le=256)] = 16
    smoothgrad_noise: Annotated[float, Field(gt=0.0, le=1.0)] = 0.15  # of the pixel range
    ig_steps: Annotated[int, Field(ge=2, le=512)] = 32
    examples_per_class: Annotated[int, Field(ge=1, le=10)] = 2  # in the figure
    activation_max: ActivationMaxParams = ActivationMaxParams()
    seed: int = 0
