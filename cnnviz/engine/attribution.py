"""Captum wrappers: saliency, integrated gradients and Grad-CAM, safe on a model shared by many sessions.

Captum registers its own hooks per call. Each call here runs Captum on a private copy of the model's module
objects (``cnnviz.engine.capture.borrowed``), so those hooks never sit on the shared model and another session's forward
pass cannot fire them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from cnnviz.engine.capture import borrowed

METHODS = ("saliency", "integrated_gradients", "grad_cam")


@dataclass(frozen=True)
class Attribution:
    method: str
    target: int
    values: np.ndarray  # (H, W) for display; signed where the method is signed
    raw: np.ndarray  # the method's own output without batch dim: (C, H, W), or (1, h, w) for Grad-CAM
    layer: str | None = None


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must have shape (1, C, H, W), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("the input contains inf or nan")


def saliency(model: nn.Module, x: torch.Tensor, target: int) -> Attribution:
    """|d logit_target / d x|, the largest over channels: which pixels the class score is most sensitive to."""
    _check(x)
    with borrowed(model) as net:
        xi = x.detach().clone().requires_grad_(True)
        grads = Saliency(net).attribute(xi, target=int(target), abs=True)  # (1, C, H, W)
    raw = grads[0].detach().numpy()
    return Attribution("saliency", int(target), raw.max(0), raw)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, steps: int = 32,
                         baseline: torch.Tensor | None = None) -> Attribution:
    """Integrated gradients from a baseline (default: a black image in pixel space) to x, summed over channels."""
    _check(x)
    if baseline is None:
        baseline = torch.full_like(x, float(x.min()))
    with borrowed(model) as net:
        attr = IntegratedGradients(net).attribute(
            x.detach().clone(), baselines=baseline, target=int(target), n_steps=int(steps), internal_batch_size=16,
        )
    raw = attr[0].detach().numpy()
    return Attribution("integrated_gradients", int(target), raw.sum(0), raw)


def conv_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, layer: str) -> Attribution:
    """Grad-CAM at the named conv layer, upsampled to the input size (ReLU applied, as in the paper)."""
    _check(x)
    if layer not in conv_layer_names(model):
        raise ValueError(f"{layer!r} is not a conv layer of this model")
    with borrowed(model) as net:
        module = dict(net.named_modules())[layer]
        cam = LayerGradCam(net, module).attribute(x.detach().clone(), target=int(target), relu_attributions=True)
        up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return Attribution("grad_cam", int(target), up[0, 0].detach().numpy(), cam[0].detach().numpy(), layer)


def attribute(model: nn.Module, x: torch.Tensor, target: int, method: str, layer: str | None = None) -> Attribution:
    """Dispatch by method name: "saliency", "integrated_gradients" or "grad_cam" (needs ``layer``)."""
    if method == "saliency":
        return saliency(model, x, target)
    if method == "integrated_gradients":
        return integrated_gradients(model, x, target)
    if method == "grad_cam":
        return grad_cam(model, x, target, layer or conv_layer_names(model)[-1])
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
