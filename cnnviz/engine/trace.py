"""Frozen dataclasses the pages consume. numpy arrays only: a page never holds a live tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LayerRecord:
    """One leaf module's forward and backward pass, batch dimension removed.

    ``grad_output`` is dL/d(output) and ``grad_input`` is dL/d(input), where L is the trace's objective.
    """

    name: str  # qualified name in model.named_modules()
    kind: str  # conv, batchnorm, relu, maxpool, avgpool, linear, dropout, flatten, or the class name
    index: int  # position in forward order
    call: int  # 0 for the module's first call in this forward pass, 1 for its second, ...
    input: np.ndarray
    output: np.ndarray
    grad_output: np.ndarray
    grad_input: np.ndarray
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_grad: np.ndarray | None = None
    bias_grad: np.ndarray | None = None
    hparams: dict[str, Any] = field(default_factory=dict)  # kernel_size, stride, padding, channels, ...
    pool_indices: np.ndarray | None = None  # max-pool: flat index into each input plane of each window's argmax
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # batchnorm: scale, shift, running mean/var


@dataclass(frozen=True)
class Trace:
    """Everything one forward + one backward pass computed, for one input."""

    logits: np.ndarray  # (K,)
    probs: np.ndarray  # (K,)
    pred: int
    target: int
    objective: str  # "loss" (cross-entropy for target) or "logit" (target's logit)
    loss: float  # cross-entropy of target, whatever the objective
    objective_value: float  # the number that was differentiated
    input: np.ndarray  # (C, H, W), normalised as the model saw it
    input_grad: np.ndarray  # (C, H, W), d objective / d input
    layers: tuple[LayerRecord, ...]

    def layer(self, name: str, call: int = 0) -> LayerRecord:
        for rec in self.layers:
            if rec.name == name and rec.call == call:
                return rec
        raise KeyError(f"no layer {name!r} (call {call}) in this trace")


@dataclass(frozen=True)
class LayerUpdate:
    name: str  # parameter's qualified name, e.g. "block1.conv1.weight"
    delta: np.ndarray  # new - old, same shape as the parameter
    norm: float  # ||delta||
    relative: float  # ||delta|| / ||old||


@dataclass(frozen=True)
class StepRecord:
    """One plain SGD step on a single input, applied to a private copy of the model."""

    lr: float
    target: int
    loss_before: float
    loss_after: float
    probs_before: np.ndarray
    probs_after: np.ndarray
    updates: tuple[LayerUpdate, ...]
    diverged: bool  # the step produced inf/nan

    def update(self, name: str) -> LayerUpdate:
        for u in self.updates:
            if u.name == name:
                return u
        raise KeyError(name)


@dataclass(frozen=True)
class GradientCheck:
    autograd: float
    finite_difference: float
    relative_error: float
    eps: float
