"""Frozen dataclasses the pages consume. numpy arrays only: a page never holds a live tensor."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
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


class LazyRecords(Sequence):
    """The layers of a trace, in forward order, each LayerRecord made on first access and then kept.

    capture() returns as soon as autograd is done; turning its ~110 tensors into numpy records (about a fifth of a
    capture's time) happens only for the records a page reads. Safe to read from several threads."""

    def __init__(self, count: int, build: Callable[[int], LayerRecord]) -> None:
        self._records: list[LayerRecord | None] = [None] * count
        self._build: Callable[[int], LayerRecord] | None = build
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        rec = self._records[i]
        if rec is None:
            with self._lock:
                rec = self._records[i]
                if rec is None:
                    rec = self._records[i] = self._build(i)
                    if all(r is not None for r in self._records):
                        self._build = None  # every record made: the capture's closure (and its tensors) can go
        return rec

    def __repr__(self) -> str:
        return f"LazyRecords({len(self)} layers)"


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
    layers: Sequence[LayerRecord]  # a LazyRecords from capture(): each record built when first read

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
class GradientCheck:
    autograd: float
    finite_difference: float  # central: (f(x + eps) - f(x - eps)) / (2 eps), the mean of the two one-sided slopes
    relative_error: float
    eps: float
    left_slope: float  # (f(x) - f(x - eps)) / eps
    right_slope: float  # (f(x + eps) - f(x)) / eps
    kink: bool  # the one-sided slopes differ, by about as much at a 10x larger step: no derivative at x


@dataclass(frozen=True)
class LayerChange:
    """How far one layer's parameters (weight and bias together) moved in one step, relative to their size."""

    layer: str  # module name, e.g. "block1.conv1"
    params: tuple[str, ...]  # its parameters' qualified names, e.g. ("block1.conv1.weight", "block1.conv1.bias")
    size: float  # ||W|| before the step: the Euclidean norm of all its parameters together
    change: float  # ||delta||, delta = new - old, over the same parameters
    relative: float  # change / size (inf when size is 0 and something changed, 0 when neither)
    large: bool  # relative > the LearnRecord's threshold


@dataclass(frozen=True)
class HeldOutScore:
    """The model on a fixed batch of test images it never learns from."""

    n: int  # images in the batch
    correct: int
    accuracy: float  # correct / n, in [0, 1]
    mean_loss: float  # mean cross-entropy over the batch (computed in float64 from the logits)


@dataclass(frozen=True)
class LearnRecord:
    """One plain SGD step (theta <- theta - lr * dL/dtheta) on one input, applied to a private full copy."""

    lr: float
    target: int
    mode: str  # "eval": dropout off, batch norm on its running statistics (which the step does not change)
    mode_text: str  # the same in words, for the page
    loss_before: float  # cross-entropy of target on this input (float64 from the logits)
    loss_after: float
    probs_before: np.ndarray  # (K,)
    probs_after: np.ndarray  # (K,)
    pred_before: int
    pred_after: int
    layers: tuple[LayerChange, ...]  # forward order
    params: tuple[LayerUpdate, ...]  # per parameter, with its delta array
    threshold: float  # a layer changed by more than this fraction of its size is flagged (0.10)
    large_layers: tuple[str, ...]  # layers with relative > threshold
    warning: str  # "" or sentences naming them and any held-out accuracy drop above 5 points, for the page
    heldout_before: HeldOutScore | None  # None when no held-out batch was given
    heldout_after: HeldOutScore | None
    heldout_text: str  # what the held-out batch is, e.g. "256 test images (seed 0)"
    diverged: bool  # the step produced inf/nan

    def layer(self, name: str) -> LayerChange:
        for change in self.layers:
            if change.layer == name:
                return change
        raise KeyError(name)
