"""Saliency, integrated gradients and Grad-CAM, all answering one named objective, safe on a shared model.

Every method differentiates the same objective (``OBJECTIVES``): the target class's logit (default) or the
cross-entropy loss for it, and each result carries that objective's name and a plain-words description.
Saliency and integrated gradients run Captum; Grad-CAM is the paper's formula written out (one forward and one
backward pass give the map at every candidate layer, which is how a non-degenerate default layer is chosen).

Captum registers its own hooks per call, and Grad-CAM registers forward hooks. Each call runs on a private copy of
the model's module objects (``cnnviz.engine.capture.borrowed``), registers hooks inside ``try`` and removes them in
``finally``, so they never sit on the shared model and another session's forward pass cannot fire them. The
"randomise the weights" sanity check (Adebayo et al. 2018) re-initialises a full copy; the shared model is never
changed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from cnnviz.engine.capture import borrowed
from cnnviz.engine.models import REGISTRY, ModelCard
from cnnviz.numbers import fmt

METHODS = ("saliency", "integrated_gradients", "grad_cam")
OBJECTIVES = ("logit", "loss")
CAM_KINDS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)  # layers with (C, h, w) maps Grad-CAM can use
RANDOMIZE_MODES = ("cascade", "all")


@dataclass(frozen=True)
class Attribution:
    """One attribution map for one input.

    ``values`` is what to draw: (H, W) at the input's size (saliency: max over channels of |d obj/d x|;
    integrated gradients: sum over channels, signed; Grad-CAM: the ReLU'd map upsampled bilinearly).
    """

    method: str  # "saliency", "integrated_gradients" or "grad_cam"
    target: int  # the class whose logit / loss is the objective
    values: np.ndarray  # (H, W) for display; signed where the method is signed
    raw: np.ndarray  # the method's own output without batch dim: (C, H, W), or (1, h, w) for Grad-CAM
    layer: str | None = None  # Grad-CAM's layer
    objective: str = "logit"  # "logit" or "loss": the number that was differentiated
    objective_text: str = ""  # that objective in plain words, for the page
    method_text: str = ""  # what this map shows, in plain words, for this objective
    baseline: str | None = None  # integrated gradients: the baseline's name
    all_zero: bool = False  # the map is zero everywhere (nothing to show)
    zero_reason: str = ""  # why, in plain words, when all_zero
    layer_choice: str = ""  # Grad-CAM: how the layer was chosen (default rule or "chosen by the caller")


@dataclass(frozen=True)
class RandomizedStep:
    """The same attribution on a copy whose top layers (``randomized``) have fresh random weights."""

    randomized: tuple[str, ...]  # module names re-initialised so far, top (output) first
    attribution: Attribution
    spearman: float  # Spearman rank correlation of |trained map| and |this map|; nan if a map is constant


@dataclass(frozen=True)
class SanityCheck:
    """Adebayo et al. (2018) model-randomisation test: does the map depend on what the model learned?"""

    mode: str  # "cascade" (re-initialise from the top, one layer more per step) or "all" (every layer at once)
    seed: int
    trained: Attribution
    steps: tuple[RandomizedStep, ...]
    text: str = field(default="")  # how to read the numbers


# ----------------------------------------------------------------------------------------------- objectives


def _class_name(target: int, classes: tuple[str, ...] | None) -> str:
    return f"'{classes[target]}'" if classes and 0 <= target < len(classes) else f"class {target}"


def objective_text(objective: str, target: int, classes: tuple[str, ...] | None = None) -> str:
    """The objective in plain words, e.g. "the score (logit) of '7' before softmax"."""
    name = _class_name(target, classes)
    if objective == "logit":
        return f"the score (logit) z of {name}, before softmax"
    if objective == "loss":
        return f"the cross-entropy loss L = -log p({name}) for target {name}"
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def method_text(method: str, objective: str, target: int, classes: tuple[str, ...] | None = None) -> str:
    """What a map of ``method`` shows when it answers ``objective``, in plain words."""
    name = _class_name(target, classes)
    what = "the score of " + name if objective == "logit" else "the loss"
    if method == "saliency":
        sym = "dz/dx" if objective == "logit" else "dL/dx"
        return (f"|{sym}|, largest over colour channels: how strongly a small change of each input value would move "
                f"{what}. It measures sensitivity, not evidence.")
    if method == "integrated_gradients":
        towards = (f"positive = this pixel raised the score of {name}" if objective == "logit"
                   else f"positive = this pixel raised the loss (evidence against {name})")
        return (f"how much each pixel contributed to {what} on the straight path from the baseline to this picture "
                f"(summed over colour channels; the map adds up to {what} here minus at the baseline); {towards}.")
    if method == "grad_cam":
        if objective == "logit":
            return (f"where the layer's channels that raise the score of {name} are active (each channel weighted by "
                    "its average gradient, summed, negatives cut by a ReLU): evidence for the class.")
        return (f"where the layer's channels that raise the loss are active (weighted by their average gradient, "
                f"negatives cut by a ReLU): evidence AGAINST {name}.")
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


class _Objective(nn.Module):
    """Wraps a network so its only output column is the objective: z_target or the cross-entropy of target."""

    def __init__(self, net: nn.Module, target: int, objective: str) -> None:
        super().__init__()
        self.net, self.target, self.objective = net, int(target), objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)  # (N, K)
        if not 0 <= self.target < logits.shape[1]:
            raise ValueError(f"target {self.target} is not a class index (0..{logits.shape[1] - 1})")
        if self.objective == "logit":
            return logits[:, self.target:self.target + 1]  # (N, 1)
        return -F.log_softmax(logits, dim=1)[:, self.target:self.target + 1]  # (N, 1) cross-entropy per row


def _check(x: torch.Tensor, objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must have shape (1, C, H, W), got {tuple(getattr(x, 'shape', ()))}")
    if not torch.isfinite(x).all():
        raise ValueError("the input contains inf or nan")


def _zero(values: np.ndarray, method: str) -> tuple[bool, str]:
    if np.any(values != 0):
        return False, ""
    return True, (f"the {method.replace('_', ' ')} map is zero everywhere: the objective's gradient with respect to "
                  "the input is zero (every path from the pixels to the output is blocked by ReLUs or max-pools).")


# ----------------------------------------------------------------------------------------------- saliency, IG


def saliency(model: nn.Module, x: torch.Tensor, target: int, objective: str = "logit",
             classes: tuple[str, ...] | None = None) -> Attribution:
    """|d objective / d x|, the largest over channels: which pixels the objective is most sensitive to.

    Args:
        model: the (shared) model; a private copy runs.
        x: (1, C, H, W) normalised input.
        target: class index; objective: "logit" (z_target) or "loss" (cross-entropy of target).
        classes: class names, for the texts only.
    """
    _check(x, objective)
    with borrowed(model) as net:
        xi = x.detach().clone().requires_grad_(True)
        grads = Saliency(_Objective(net, target, objective)).attribute(xi, target=0, abs=True)  # (1, C, H, W)
    raw = grads[0].detach().numpy()
    values = raw.max(0)
    zero, reason = _zero(values, "saliency")
    return Attribution("saliency", int(target), values, raw, objective=objective,
                       objective_text=objective_text(objective, target, classes),
                       method_text=method_text("saliency", objective, target, classes), all_zero=zero,
                       zero_reason=reason)


def black_baseline(x: torch.Tensor, card: ModelCard | None = None) -> tuple[torch.Tensor, str]:
    """The black image (pixel value 0 in every channel) after normalisation: (0 - mean_c) / std_c per channel.

    Args:
        x: (1, C, H, W) input, for the shape and dtype.
        card: the model's card (mean, std); without one, the registry model whose input shape matches x.
    Returns:
        (baseline tensor like x, its name for the page).
    """
    if card is not None:
        mean, std = card.mean, card.std
    else:
        spec = next((s for s in REGISTRY.values() if tuple(s.input_shape) == tuple(x.shape[1:])), None)
        if spec is None:
            raise ValueError(f"no model card given and no known model takes inputs of shape {tuple(x.shape[1:])}; "
                             "pass the card (its mean and std define the black image)")
        mean, std = spec.mean, spec.std
    if len(mean) != x.shape[1]:
        raise ValueError(f"the card has {len(mean)} channel means, the input {x.shape[1]} channels")
    per_channel = [(0.0 - m) / s for m, s in zip(mean, std, strict=True)]
    base = torch.tensor(per_channel, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x).clone()
    values = ", ".join(fmt(v, 4) for v in per_channel)
    return base, f"black image (pixel value 0; after normalisation (0 - mean) / std = {values} per channel)"


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, steps: int = 32,
                         baseline: torch.Tensor | None = None, objective: str = "logit", card: ModelCard | None = None,
                         classes: tuple[str, ...] | None = None, baseline_name: str | None = None) -> Attribution:
    """Integrated gradients (Gauss-Legendre, ``steps`` points) from a baseline to x, summed over channels.

    Args:
        baseline: (1, C, H, W); default: the black image per channel (``black_baseline``), named in the result.
        card: the model's card, for the black baseline's mean/std and the class names.
        baseline_name: the name to record for a caller's own baseline.
    """
    _check(x, objective)
    if baseline is None:
        baseline, baseline_name = black_baseline(x, card)
    elif baseline_name is None:
        baseline_name = "the caller's baseline"
    classes = classes or (card.classes if card is not None else None)
    with borrowed(model) as net:
        attr = IntegratedGradients(_Objective(net, target, objective)).attribute(
            x.detach().clone(), baselines=baseline.to(x.dtype), target=0, n_steps=int(steps),
            internal_batch_size=16,
        )  # (1, C, H, W)
    raw = attr[0].detach().numpy()
    values = raw.sum(0)
    zero, reason = _zero(values, "integrated_gradients")
    return Attribution("integrated_gradients", int(target), values, raw, objective=objective,
                       objective_text=objective_text(objective, target, classes),
                       method_text=method_text("integrated_gradients", objective, target, classes),
                       baseline=baseline_name, all_zero=zero, zero_reason=reason)


# ----------------------------------------------------------------------------------------------- Grad-CAM


def conv_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def cam_layer_names(model: nn.Module) -> list[str]:
    """Layers Grad-CAM can use, in forward order: every conv, 2-D batch norm, ReLU and max-pool (maps (C, h, w))."""
    return [n for n, m in model.named_modules() if isinstance(m, CAM_KINDS) and next(m.children(), None) is None]


def _cam_reason(acts: torch.Tensor, grads: torch.Tensor, cam_pre: torch.Tensor) -> str:
    if not bool(torch.any(acts != 0)):
        return "every channel of this layer is zero for this input (all its units are switched off), so nothing is left"
    if not bool(torch.any(grads != 0)):
        return ("the objective's gradient reaches this layer as zero everywhere (blocked by ReLUs or max-pools "
                "further on), so every channel weight is 0")
    return ("all positive evidence was removed by the ReLU: no position has a positive weighted sum of channels "
            f"(the largest is {fmt(float(cam_pre.max()), 4)})")


def _cam_maps(model: nn.Module, x: torch.Tensor, target: int, layers: list[str], objective: str,
              classes: tuple[str, ...] | None) -> dict[str, Attribution]:
    """Grad-CAM at every layer in ``layers`` from one forward and one backward pass (hooks on a private copy)."""
    acts: dict[str, torch.Tensor] = {}
    with borrowed(model) as net:
        modules = dict(net.named_modules())
        handles = []
        try:
            for name in layers:
                handles.append(modules[name].register_forward_hook(
                    lambda m, args, out, name=name: acts.__setitem__(name, out)))
            with torch.enable_grad():
                obj = _Objective(net, target, objective)(x.detach().clone())[0, 0]
                found = [n for n in layers if n in acts]
                grads = torch.autograd.grad(obj, [acts[n] for n in found], allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
    results = {}
    for name, g in zip(found, grads, strict=True):
        a = acts[name].detach()  # (1, K, h, w)
        g = torch.zeros_like(a) if g is None else g.detach()
        weights = g.mean(dim=(2, 3), keepdim=True)  # alpha_k: the spatial mean of d objective / d A_k
        cam_pre = (weights * a).sum(1, keepdim=True)  # (1, 1, h, w)
        cam = torch.relu(cam_pre)
        up = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        zero = not bool(torch.any(cam > 0))
        results[name] = Attribution(
            "grad_cam", int(target), up[0, 0].numpy(), cam[0].numpy(), name, objective=objective,
            objective_text=objective_text(objective, target, classes),
            method_text=method_text("grad_cam", objective, target, classes), all_zero=zero,
            zero_reason=_cam_reason(a, g, cam_pre) if zero else "", layer_choice="chosen by the caller")
    return results


def _default_order(model: nn.Module) -> list[str]:
    """Preferred Grad-CAM layers, best first: ReLU outputs from the last backwards (the rectified feature maps the
    paper uses), then the remaining candidates from the last backwards."""
    names = cam_layer_names(model)
    modules = dict(model.named_modules())
    relus = [n for n in reversed(names) if isinstance(modules[n], nn.ReLU)]
    return relus + [n for n in reversed(names) if n not in relus]


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, layer: str | None = None, objective: str = "logit",
             classes: tuple[str, ...] | None = None) -> Attribution:
    """Grad-CAM at ``layer``, upsampled bilinearly to the input size (ReLU applied, as in the paper).

    Args:
        layer: a name from ``cam_layer_names``; None chooses the default: the last ReLU (the last conv block's
            rectified output) whose map is not all zero for this input, else the last candidate with a non-zero map.
    Returns:
        The Attribution; ``all_zero`` and ``zero_reason`` say when and why the map is empty, ``layer_choice`` how the
        layer was chosen.
    """
    _check(x, objective)
    if layer is not None:
        if layer not in cam_layer_names(model):
            raise ValueError(f"{layer!r} is not a layer Grad-CAM can use (a conv, batch norm, ReLU or max-pool layer)")
        return _cam_maps(model, x, target, [layer], objective, classes)[layer]
    order = _default_order(model)
    maps = _cam_maps(model, x, target, order, objective, classes)
    order = [n for n in order if n in maps]
    if not order:
        raise ValueError("this model has no layer with spatial maps for Grad-CAM")
    first = order[0]
    chosen = next((n for n in order if not maps[n].all_zero), first)
    if chosen == first:
        why = f"default: the last ReLU ({first}), the last conv block's rectified feature maps, as in the paper"
        if maps[first].all_zero:
            why += "; every candidate layer's map is all zero for this input"
    else:
        why = (f"default: the last ReLU ({first}) gives an all-zero map for this input "
               f"({maps[first].zero_reason}), so {chosen}, the last layer whose map is not all zero, is shown")
    return _replace(maps[chosen], layer_choice=why)


def _replace(a: Attribution, **changes) -> Attribution:
    return dataclasses.replace(a, **changes)


# ----------------------------------------------------------------------------------------------- dispatch


def attribute(model: nn.Module, x: torch.Tensor, target: int, method: str, layer: str | None = None,
              objective: str = "logit", card: ModelCard | None = None, steps: int = 32) -> Attribution:
    """Dispatch by method name: "saliency", "integrated_gradients" or "grad_cam", all answering ``objective``.

    Args:
        layer: Grad-CAM's layer; None picks the default (see ``grad_cam``).
        card: the model's card: class names for the texts, mean/std for integrated gradients' black baseline.
        steps: integrated gradients' number of points on the path.
    """
    classes = card.classes if card is not None else None
    if method == "saliency":
        return saliency(model, x, target, objective, classes)
    if method == "integrated_gradients":
        return integrated_gradients(model, x, target, steps=steps, objective=objective, card=card)
    if method == "grad_cam":
        return grad_cam(model, x, target, layer, objective, classes)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


# ----------------------------------------------------------------------------------------------- sanity check


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped arrays (ties get their average rank); nan if one is constant."""

    def ranks(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).ravel()
        order = np.argsort(v, kind="mergesort")
        r = np.empty(v.size, dtype=np.float64)
        r[order] = np.arange(v.size, dtype=np.float64)
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        return (np.bincount(inverse, weights=r) / counts)[inverse]

    if np.shape(a) != np.shape(b):
        raise ValueError(f"maps of different shapes: {np.shape(a)} and {np.shape(b)}")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def parametrised_layers(model: nn.Module) -> list[str]:
    """Leaf modules with weights, in forward (definition) order: what the randomisation re-initialises."""
    return [n for n, m in model.named_modules()
            if next(m.children(), None) is None and any(True for _ in m.parameters(recurse=False))]


def weight_groups(model: nn.Module) -> list[list[str]]:
    """The layers with weights, in forward order, each batch norm grouped with the layer before it (conv + BN is
    one step of the cascading randomisation)."""
    groups: list[list[str]] = []
    modules = dict(model.named_modules())
    for name in parametrised_layers(model):
        if isinstance(modules[name], nn.modules.batchnorm._BatchNorm) and groups:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def randomized_copy(model: nn.Module, layers: list[str] | None = None, seed: int = 0) -> nn.Module:
    """A full copy of ``model`` (eval mode) whose ``layers`` (default: all with weights) get fresh random weights.

    Each layer is reset with its own ``reset_parameters`` (PyTorch's default initialisation; batch norm also gets
    running mean 0, variance 1), under a fixed seed; the global random state is left as it was.
    """
    net = copy.deepcopy(model).eval()
    modules = dict(net.named_modules())
    names = parametrised_layers(net) if layers is None else layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            module = modules[name]
            if not hasattr(module, "reset_parameters"):
                raise ValueError(f"layer {name!r} cannot be re-initialised")
            with torch.no_grad():
                module.reset_parameters()
    return net


def sanity_check(model: nn.Module, x: torch.Tensor, target: int, method: str, layer: str | None = None,
                 objective: str = "logit", card: ModelCard | None = None, mode: str = "all", seed: int = 0,
                 steps: int = 32) -> SanityCheck:
    """The model-randomisation sanity check (Adebayo et al. 2018) for one attribution.

    Args:
        method, layer, objective, card, steps: as for ``attribute`` (Grad-CAM keeps the trained map's layer).
        mode: "all" re-initialises every layer with weights at once (one step); "cascade" re-initialises them
            from the top (output) down, one more layer (a conv with its batch norm) per step. Cost: one attribution
            per step (integrated gradients in cascade mode on CIFAR-10: about a minute on 2 busy CPU cores).
        seed: the re-initialisation's seed.
    Returns:
        A SanityCheck: the trained map and, per step, the randomised map and the Spearman rank correlation of the
        two maps' absolute values (near 1: the map barely depends on the learned weights, a warning sign; near 0:
        it does).
    """
    if mode not in RANDOMIZE_MODES:
        raise ValueError(f"mode must be one of {RANDOMIZE_MODES}, got {mode!r}")
    trained = attribute(model, x, target, method, layer, objective, card, steps)
    layer = trained.layer
    top_first = [name for group in reversed(weight_groups(model)) for name in group]
    if mode == "all":
        steps_of = [top_first]
    else:
        sizes = np.cumsum([len(g) for g in reversed(weight_groups(model))])
        steps_of = [top_first[:k] for k in sizes]
    out = []
    for names in steps_of:
        net = randomized_copy(model, names, seed)
        attr = attribute(net, x, target, method, layer, objective, card, steps)
        if method == "grad_cam":
            attr = _replace(attr, layer_choice=f"the trained map's layer ({layer})")
        out.append(RandomizedStep(tuple(names), attr, spearman(np.abs(trained.values), np.abs(attr.values))))
    text = ("Spearman rank correlation of |map| between the trained model and a copy with random weights: near 1 "
            "means the map hardly depends on what the model learned (it mostly shows the input's edges); near 0 "
            "means it does; nan means one of the two maps is constant (e.g. all zero, see its zero_reason). "
            "Adebayo et al., 'Sanity Checks for Saliency Maps', NeurIPS 2018.")
    return SanityCheck(mode, int(seed), trained, tuple(out), text)
