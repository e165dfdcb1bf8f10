"""Attribution maps: for each image, one non-negative H x W map of the evidence for a class.
The attribution maths is captum's (saliency, Integrated Gradients, SmoothGrad, Grad-CAM,
occlusion) and torchcam's (CAM, Grad-CAM++); ablab only picks the layers and shapes the output.
`model` takes pixels in [0, 1] (the normalisation inside, ablab.serving.Normalized)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablab.config.explain import ExplainParams

CHUNK = 100  # images per attribution call: bounds memory (IG holds ig_steps copies of each)


class NotApplicable(ValueError):
    """This method cannot explain this network; the message says why and what would do."""


def first_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise NotApplicable("the network has no conv layer")
    return convs[0]


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise NotApplicable("the network has no conv layer (Grad-CAM reads a conv layer's maps)")
    return convs[-1]


def cam_layers(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(the layer whose maps global average pooling reads, the one linear layer after it):
    what CAM needs (cnn with `readout: gap` and `head: []`)."""
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        layers = list(seq)
        for i, layer in enumerate(layers[1:], 1):
            rest = [m for m in layers[i + 1 :] if not isinstance(m, nn.Flatten | nn.Dropout)]
            if (isinstance(layer, nn.AdaptiveAvgPool2d) and len(rest) == 1
                    and isinstance(rest[0], nn.Linear)):  # fmt: skip
                return layers[i - 1], rest[0]
    raise NotApplicable(
        "its head is not global average pooling then one linear layer (CAM's network: "
        "a cnn with model.readout gap and model.head [])"
    )


def _channels_max(attr: torch.Tensor) -> torch.Tensor:
    return attr.abs().amax(1)


def _positive_sum(attr: torch.Tensor) -> torch.Tensor:
    return attr.sum(1).clamp(min=0)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x h x w (or N x 1 x h x w) -> N x H x W, bilinear, clamped at 0."""
    maps = maps if maps.dim() == 4 else maps.unsqueeze(1)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0].clamp(min=0)


def _saliency(model, x, target, cfg):
    from captum.attr import Saliency

    return _channels_max(Saliency(model).attribute(x, target=target, abs=True))


def _integrated_gradients(model, x, target, cfg):
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=cfg.ig_steps,
        internal_batch_size=max(len(x), 1) * 8,
    )  # fmt: skip
    return _positive_sum(attr)  # the evidence for the class (black baseline)


def _smoothgrad(model, x, target, cfg):
    from captum.attr import NoiseTunnel, Saliency

    attr = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=cfg.smoothgrad_samples,
        nt_samples_batch_size=cfg.smoothgrad_samples, stdevs=cfg.smoothgrad_noise,
        target=target, abs=True,
    )  # fmt: skip
    return _channels_max(attr)


def _grad_cam(model, x, target, cfg):
    from captum.attr import LayerGradCam

    attr = LayerGradCam(model, last_conv(model)).attribute(x, target=target, relu_attributions=True)
    return _upsample(attr, x.shape[-2:])


def _torchcam(kind: str) -> Callable:
    def method(model, x, target, cfg):
        from torchcam import methods

        if kind == "CAM":
            layer, fc = cam_layers(model)
            extractor = methods.CAM(model, target_layer=layer, fc_layer=fc,
                                    input_shape=tuple(x.shape[1:]))  # fmt: skip
        else:
            extractor = methods.GradCAMpp(model, target_layer=last_conv(model),
                                          input_shape=tuple(x.shape[1:]))  # fmt: skip
        try:
            with torch.set_grad_enabled(kind != "CAM"):
                scores = model(x)
                (maps,) = extractor(target.tolist(), scores, normalized=False)
        finally:
            extractor.remove_hooks()
        return _upsample(maps.detach(), x.shape[-2:])

    return method


def _occlusion(model, x, target, cfg):
    from captum.attr import Occlusion

    c, h, w = x.shape[1:]
    side = max(2, min(h, w) // 7)
    attr = Occlusion(model).attribute(
        x, sliding_window_shapes=(c, side, side), strides=(c, max(1, side // 2), max(1, side // 2)),
        baselines=0.0, target=target,
    )  # fmt: skip
    return _positive_sum(attr)


METHODS: dict[str, Callable] = {
    "cam": _torchcam("CAM"),
    "grad_cam": _grad_cam,
    "grad_cam_pp": _torchcam("GradCAMpp"),
    "saliency": _saliency,
    "integrated_gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
    "occlusion": _occlusion,
}


def check(method: str, model: nn.Module) -> None:
    """NotApplicable, before any work, when the network lacks what the method reads."""
    if method == "cam":
        cam_layers(model)
    elif method in ("grad_cam", "grad_cam_pp"):
        last_conv(model)


def attribute(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
              cfg: ExplainParams) -> torch.Tensor:  # fmt: skip
    """N x H x W maps of `method` for images `x` (N x C x H x W, pixels in [0, 1]) and
    classes `target`, computed CHUNK images at a time; NaNs (a 0/0 inside a method) are 0."""
    check(method, model)
    out = []
    for xs, ts in zip(x.split(CHUNK), target.split(CHUNK), strict=True):
        maps = METHODS[method](model, xs.clone().requires_grad_(True), ts, cfg)
        out.append(torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0))
    return torch.cat(out)


def without_inplace(model: nn.Module) -> nn.Module:
    """Backward hooks (Grad-CAM's, captum's) fail on in-place activations: turn them off."""
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return model
