"""Small networks by hand: two convolutions chained through a max-pool, a conv + sigmoid + FC + sigmoid network,
and gradient descent on a one-parameter loss curve.

``tests/handwork/test_conv_nets.py`` recomputes every matrix and printed number with autograd in float64.
No torch, no streamlit here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnviz.handwork.conv_math import ConvForward, conv_backward, conv_forward, squared_error_grad
from cnnviz.handwork.graph_ops import sigmoid
from cnnviz.handwork.matrices import CellSum, Matrix, as_matrix, cell_lines, correlate, matrix_text
from cnnviz.handwork.pooling import CellGradient, PoolForward, pool, pool_backward, route_lines
from cnnviz.numbers import factor, fmt

# ---------------------------------------------------------------------------------------------------------------
# Two convolutions chained: image -> conv1 -> conv2 -> max-pool -> loss


@dataclass(frozen=True, eq=False)
class ChainStep:
    """One step of the backward walk: what it computes, from which matrices, and the result."""

    title: str
    formula: str
    inputs: tuple[tuple[str, Matrix], ...]
    result_name: str
    result: Matrix
    cells: tuple[CellSum, ...] = ()  # the result's entries as sums of products (convolution steps)
    routes: tuple[CellGradient, ...] = ()  # the pool step: where each cell's gradient comes from

    def lines(self) -> str:
        """Every entry of the result as its sum of products (zeros left out), or as the shares routed to it."""
        if self.cells:
            return cell_lines(self.cells, self.result_name, skip_zeros=True)
        if self.routes:
            return route_lines(self.routes, self.result_name)
        return ""


@dataclass(frozen=True, eq=False)
class ChainRecord:
    image: Matrix
    f1: Matrix
    f2: Matrix
    target: Matrix
    conv1: ConvForward
    conv2: ConvForward
    pooled: PoolForward
    loss: float
    grad_pooled: Matrix  # dE/dP = P - T
    grad_conv2: Matrix  # dConv2 = the pool's routing of dE/dP
    grad_f2: Matrix
    grad_conv1: Matrix
    grad_f1: Matrix
    grad_image: Matrix
    steps: tuple[ChainStep, ...]

    @property
    def forward_maps(self) -> tuple[tuple[str, Matrix], ...]:
        return (("image", self.image), ("Conv1 = image ⋆ F1", self.conv1.output),
                ("Conv2 = Conv1 ⋆ F2", self.conv2.output), ("P = maxpool(Conv2)", self.pooled.output))

    def loss_line(self) -> str:
        return f"E = ½ Σ (P − T)² = **{fmt(self.loss)}**; the ★ marks each pool window's maximum."


def two_conv_chain(image: Matrix, f1: Matrix, f2: Matrix, target: Matrix | None = None,
                   pool_kernel: int = 2, pool_stride: int | None = None) -> ChainRecord:
    """image -> conv1 (F1) -> conv2 (F2) -> max-pool -> E = ½ Σ (P − T)², stepped backward.

    Both convolutions have stride 1 and no padding, no bias, no activation, so each gradient is a convolution
    you can check by hand. ``target`` defaults to zeros.

    Raises:
        ValueError: a filter or the pool window does not fit, or the target has the wrong shape.
    """
    image, f1, f2 = as_matrix(image, "image"), as_matrix(f1, "F1"), as_matrix(f2, "F2")
    c1 = conv_forward(image, f1)
    c2 = conv_forward(c1.output, f2)
    pooled = pool(c2.output, pool_kernel, pool_stride, "max")
    t = np.zeros_like(pooled.output) if target is None else as_matrix(target, "T")
    if t.shape != pooled.output.shape:
        raise ValueError(f"the target T must have the pooled output's shape {pooled.output.shape}, got {t.shape}")
    loss, grad_p = squared_error_grad(pooled.output, t)
    pb = pool_backward(pooled, grad_p)
    b2 = conv_backward(c2, pb.grad_input)
    b1 = conv_backward(c1, b2.grad_input)
    steps = (
        ChainStep("Loss gradient", "E = ½ Σ (P − T)²  →  dE/dP = P − T",
                  (("P", pooled.output), ("T", t)), "dE/dP", grad_p),
        ChainStep("Through the max-pool", "dConv2 = each window's dE/dP sent to its argmax, 0 elsewhere",
                  (("Conv2", c2.output), ("dE/dP", grad_p)), "dConv2", pb.grad_input, routes=pb.cells),
        ChainStep("Filter 2", "dF2 = conv(Conv1 output, dConv2)",
                  (("Conv1", c1.output), ("dConv2", pb.grad_input)), "dF2", b2.grad_filter, b2.grad_filter_cells),
        ChainStep("Into conv1's output", "dConv1 = full-conv(dConv2, F2 rotated 180°)",
                  (("dConv2 zero-padded", b2.grad_output_full), ("F2 rotated 180°", b2.f_rot180)), "dConv1",
                  b2.grad_input, b2.grad_input_cells),
        ChainStep("Filter 1", "dF1 = conv(image, dConv1)",
                  (("image", image), ("dConv1", b2.grad_input)), "dF1", b1.grad_filter, b1.grad_filter_cells),
        ChainStep("Into the image", "dImage = full-conv(dConv1, F1 rotated 180°)",
                  (("dConv1 zero-padded", b1.grad_output_full), ("F1 rotated 180°", b1.f_rot180)), "dImage",
                  b1.grad_input, b1.grad_input_cells),
    )
    return ChainRecord(image, f1, f2, t, c1, c2, pooled, loss, grad_p, pb.grad_input, b2.grad_filter,
                       b2.grad_input, b1.grad_filter, b1.grad_input, steps)


# ---------------------------------------------------------------------------------------------------------------
# conv + sigmoid + fully connected + sigmoid


@dataclass(frozen=True, eq=False)
class NetStep:
    label: str  # "Z1 = X * f"
    detail: str  # the numbers
    value: Matrix


def step_list(steps: tuple[NetStep, ...]) -> str:
    """A numbered markdown list: ``1. **Z1 = X * f**: ...``"""
    return "\n".join(f"{n}. **{s.label}**: {s.detail}" for n, s in enumerate(steps, 1))


@dataclass(frozen=True, eq=False)
class TinyNetRecord:
    x: Matrix
    f: Matrix
    w: Matrix  # same shape as A (one weight per activation), used as W^T A on the flattened A
    b: float
    target: float  # y'
    z1: Matrix
    a1: Matrix
    z2: float
    o: float
    e: float
    grad_o: float  # dE/dO = -(y' - O)
    grad_z2: float  # dE/dO · O(1 - O)
    grad_w: Matrix  # -(y' - O) O (1 - O) A
    grad_b: float
    grad_a1: Matrix  # dE/dZ2 · W
    grad_z1: Matrix  # dE/dA1 · A1 (1 - A1)
    grad_f: Matrix  # X ⋆ dE/dZ1
    grad_f_cells: tuple[CellSum, ...]
    forward_steps: tuple[NetStep, ...]
    backward_steps: tuple[NetStep, ...]


def conv_sigmoid_fc(x: Matrix, f: Matrix, w: Matrix, b: float, target: float) -> TinyNetRecord:
    """Z1 = X ⋆ f; A = σ(Z1); Z2 = Wᵀ A + b; O = σ(Z2); E = ½ (y' − O)², and every gradient back to f.

    ``w`` has the shape of A (one weight per activation); Wᵀ A is the sum of their products.

    Raises:
        ValueError: f does not fit in X, or w does not have the shape of X ⋆ f.
    """
    x, f, w = as_matrix(x, "X"), as_matrix(f, "f"), as_matrix(w, "W")
    z1 = conv_forward(x, f).output
    if w.shape != z1.shape:
        raise ValueError(f"W needs one weight per activation: shape {z1.shape}, got {w.shape}")
    a1 = sigmoid(z1)
    z2 = math.fsum((w * a1).ravel()) + float(b)
    o = float(sigmoid(z2))
    e = 0.5 * (target - o) ** 2
    grad_o = -(target - o)
    grad_z2 = grad_o * o * (1 - o)
    grad_w = grad_z2 * a1
    grad_a1 = grad_z2 * w
    grad_z1 = grad_a1 * a1 * (1 - a1)
    grad_f, cells = correlate(x, grad_z1)

    wa = " + ".join(f"{factor(wi)}·{factor(ai)}" for wi, ai in zip(w.ravel(), a1.ravel(), strict=True))
    forward = (
        NetStep("Z1 = X * f", f"X cross-correlated with f = {matrix_text(z1)}", z1),
        NetStep("A = sigmoid(Z1)", f"1 / (1 + e^(−Z1)) = {matrix_text(a1)}", a1),
        NetStep("Z2 = Wᵀ A + b", f"{wa} + {factor(b)} = {fmt(z2)}", np.array([[z2]])),
        NetStep("O = sigmoid(Z2)", f"1 / (1 + e^(−{factor(z2)})) = {fmt(o)}", np.array([[o]])),
        NetStep("E = ½ (y' − O)²", f"½ ({fmt(target)} − {fmt(o)})² = {fmt(e)}", np.array([[e]])),
    )
    backward = (
        NetStep("dE/dO = −(y' − O)", f"−({fmt(target)} − {fmt(o)}) = {fmt(grad_o)}", np.array([[grad_o]])),
        NetStep("dE/dZ2 = dE/dO · O (1 − O)",
                f"{factor(grad_o, first=True)} · {factor(o)} · {factor(1 - o)} = {fmt(grad_z2)}",
                np.array([[grad_z2]])),
        NetStep("dE/dW = −(y' − O) O (1 − O) A", f"{factor(grad_z2, first=True)} · A = {matrix_text(grad_w)}",
                grad_w),
        NetStep("dE/db = dE/dZ2", fmt(grad_z2), np.array([[grad_z2]])),
        NetStep("dE/dA1 = dE/dZ2 · W", f"{factor(grad_z2, first=True)} · W = {matrix_text(grad_a1)}", grad_a1),
        NetStep("dE/dZ1 = dE/dA1 · A1 (1 − A1)", f"= {matrix_text(grad_z1)}", grad_z1),
        NetStep("dE/df = X * dE/dZ1", f"X cross-correlated with dE/dZ1 = {matrix_text(grad_f)}", grad_f),
    )
    return TinyNetRecord(x, f, w, float(b), float(target), z1, a1, z2, o, e, grad_o, grad_z2, grad_w, grad_z2,
                         grad_a1, grad_z1, grad_f, cells, forward, backward)


# ---------------------------------------------------------------------------------------------------------------
# Gradient descent on a 1-D loss curve


@dataclass(frozen=True)
class Curve:
    name: str
    formula: str
    loss: Callable[[float], float]
    slope: Callable[[float], float]
    minimum: float  # where the lowest point is (for the convergence verdict)


CURVES: dict[str, Curve] = {
    "parabola": Curve("parabola", "L(a) = (a − 1)² + 0.5", lambda a: (a - 1) ** 2 + 0.5,
                      lambda a: 2 * (a - 1), 1.0),
    "two valleys": Curve("two valleys", "L(a) = a⁴/4 − a² + a/2 + 2",
                         lambda a: a ** 4 / 4 - a ** 2 + a / 2 + 2, lambda a: a ** 3 - 2 * a + 0.5,
                         -1.5250),
}

DIVERGED_AT = 1e6


@dataclass(frozen=True, eq=False)
class DescentRecord:
    curve: str
    learning_rate: float
    start: float
    positions: tuple[float, ...]  # a_0 = start, a_1, ...
    losses: tuple[float, ...]
    slopes: tuple[float, ...]  # slope at each position
    verdict: str  # "converges", "oscillates and converges", "oscillates without settling", "diverges"
    explanation: str

    def table(self) -> list[dict[str, str]]:
        """One row per step: a, L(a), the slope, and the update written out with its numbers."""
        lr, pos = self.learning_rate, self.positions
        return [{"step": str(n), "a": fmt(a), "L(a)": fmt(loss), "slope L'(a)": fmt(slope),
                 "next a = a − lr·slope": (f"{fmt(a)} − {fmt(lr)}·{factor(slope)} = {fmt(pos[n + 1])}"
                                           if n + 1 < len(pos) else "")}
                for n, (a, loss, slope) in enumerate(zip(pos, self.losses, self.slopes, strict=True))]


def gradient_descent(curve: str, start: float, learning_rate: float, steps: int) -> DescentRecord:
    """Run ``a <- a - lr * slope(a)`` from ``start`` for ``steps`` steps on a named curve.

    Raises:
        KeyError: unknown curve.  ValueError: negative learning rate or step count.
    """
    if curve not in CURVES:
        raise KeyError(f"unknown curve {curve!r}; choose one of {', '.join(CURVES)}")
    if learning_rate < 0 or steps < 0:
        raise ValueError("the learning rate and the number of steps must not be negative")
    c = CURVES[curve]
    positions, losses, slopes = [float(start)], [], []
    diverged = False
    for _ in range(steps + 1):
        a = positions[-1]
        losses.append(float(c.loss(a)))
        slopes.append(float(c.slope(a)))
        if len(positions) > steps:
            break
        nxt = a - learning_rate * slopes[-1]
        if not math.isfinite(nxt) or abs(nxt) > DIVERGED_AT:
            diverged = True
            break
        positions.append(nxt)
    verdict, why = _verdict(positions, slopes, diverged, learning_rate)
    return DescentRecord(curve, float(learning_rate), float(start), tuple(positions), tuple(losses), tuple(slopes),
                         verdict, why)


def _verdict(positions: list[float], slopes: list[float], diverged: bool, lr: float) -> tuple[str, str]:
    steps = np.abs(np.diff(positions))
    growing = len(steps) >= 2 and steps[-1] > 1.05 * steps[0]
    if diverged or growing:
        return "diverges", (f"lr = {fmt(lr)} is too large: each step overshoots further than the last, and a runs "
                            "away from the valley.")
    if len(steps) == 0 or lr == 0 or steps.max() == 0:
        return "does not move", "With lr = 0, no steps, or a start where the slope is 0, a never changes."
    signs = np.sign(slopes[: len(steps) + 1])
    flips = int(np.sum(signs[1:] * signs[:-1] < 0))
    settled = abs(slopes[-1]) < 1e-3
    shrinking = len(steps) >= 2 and steps[-1] < 0.9 * steps[0]
    if flips >= max(1, len(steps) // 2):
        if settled or shrinking:
            return "oscillates and converges", (
                "a jumps over the bottom each step (the slope changes sign), but the jumps shrink: it settles.")
        return "oscillates without settling", (
            "a bounces from one side of the valley to the other without getting closer.")
    if settled:
        return "converges", "a walks downhill and stops where the slope is zero."
    return "converges (slowly)", "a walks downhill but has not reached the bottom yet: more steps or a larger lr."
