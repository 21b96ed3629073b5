"""Max- and average-pooling and ReLU on small matrices, forward and backward, window by window.

Max-pool ties go to the first maximum in reading order (row by row), which is what PyTorch's kernels pick;
overlapping windows add up in the backward pass (a cell that wins several windows collects the sum).
``tests/handwork/test_pooling.py`` recomputes everything with ``F.max_pool2d``, ``F.avg_pool2d``, ``F.relu`` and
autograd in float64. No torch, no streamlit here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnviz.handwork.conv_math import AxisSize, output_size
from cnnviz.handwork.matrices import Matrix, Pos, as_matrix, matrix_text
from cnnviz.numbers import factor, fmt


@dataclass(frozen=True, eq=False)
class PoolWindow:
    at: Pos  # the output entry
    top: int
    left: int
    values: Matrix  # the window's entries
    winner: Pos | None  # max-pool: the input cell that wins (first maximum in reading order); avg: None
    value: float  # the output entry
    maxima: tuple[Pos, ...] = ()  # max-pool: every cell holding the maximum; more than one is a tie

    def describe(self) -> str:
        """``Window (0, 1) = [[2, 2], [1, 0]]: its maximum is 2 at X[0, 2].`` (or its mean)"""
        head = f"Window ({self.at[0]}, {self.at[1]}) = {matrix_text(self.values)}"
        if self.winner is None:
            return f"{head}: its mean is {fmt(self.value)}."
        return f"{head}: its maximum is {fmt(self.value)} at X[{self.winner[0]}, {self.winner[1]}]."

    def tie(self) -> str | None:
        """How a tie in this window is resolved, or None when there is no tie."""
        if len(self.maxima) < 2 or self.winner is None:
            return None
        where = ", ".join(f"X[{r}, {c}]" for r, c in self.maxima)
        return (f"Tie in window ({self.at[0]}, {self.at[1]}): the maximum {fmt(self.value)} sits at {where}; "
                f"PyTorch (and this lab) picks the first, X[{self.winner[0]}, {self.winner[1]}].")


@dataclass(frozen=True, eq=False)
class PoolForward:
    x: Matrix
    kernel: int
    stride: int
    mode: str  # "max" or "avg"
    output: Matrix
    windows: tuple[PoolWindow, ...]  # row by row
    rows: AxisSize
    cols: AxisSize

    @property
    def overlapping(self) -> bool:
        return self.stride < self.kernel

    @property
    def winners(self) -> list[Pos]:
        """Max-pool: each window's winning input cell (the ★ cells); avg: none."""
        return [w.winner for w in self.windows if w.winner is not None]

    def ties(self) -> list[str]:
        return [t for t in (w.tie() for w in self.windows) if t]


@dataclass(frozen=True, eq=False)
class CellGradient:
    """What one input cell receives in the backward pass: a share from each window that routes to it."""

    at: Pos
    sources: tuple[tuple[Pos, float], ...]  # (output entry, amount it sends here)
    value: float

    def expression(self, digits: int = 6) -> str:
        """``3 + 4 = 7``: the shares this cell receives and their sum."""
        if not self.sources:
            return "0"
        parts = " + ".join(factor(a, digits) for _, a in self.sources)
        return parts if len(self.sources) == 1 else f"{parts} = {fmt(self.value, digits)}"

    def line(self, name: str) -> str:
        """``dE/dX[1, 1] = 1 + 2 = 3  (from windows (0, 0), (0, 1))``"""
        windows = ", ".join(f"({w[0]}, {w[1]})" for w, _ in self.sources)
        return (f"{name}[{self.at[0]}, {self.at[1]}] = {self.expression()}  "
                f"(from window{'s' if len(self.sources) > 1 else ''} {windows})")


def route_lines(cells: Sequence[CellGradient], name: str, max_pool: bool = True) -> str:
    """Where each cell's gradient comes from, one markdown bullet per cell that receives some."""
    lines = [f"- {c.line(name)}" for c in cells if c.sources]
    if max_pool:
        lines.append("- every other cell: 0 (it won no window)")
    return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class PoolBackward:
    forward: PoolForward
    grad_output: Matrix
    grad_input: Matrix
    cells: tuple[CellGradient, ...]  # one per input cell, row by row

    @property
    def collectors(self) -> list[Pos]:
        """Max-pool: the cells that won several windows and collect the sum of their gradients."""
        return [c.at for c in self.cells if len(c.sources) > 1] if self.forward.mode == "max" else []

    def summary(self) -> str:
        return f"output = {matrix_text(self.forward.output)};  dE/dX = {matrix_text(self.grad_input)}"


def pool(x: Matrix, kernel: int = 2, stride: int | None = None, mode: str = "max") -> PoolForward:
    """Max- or average-pool a matrix (no padding), window by window.

    Ties in max-pool go to the first maximum in reading order, as in PyTorch.

    Raises:
        ValueError: unknown mode, or the window does not fit.
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    x = as_matrix(x, "X")
    stride = kernel if stride is None else stride
    rows = output_size(x.shape[0], kernel, 0, stride)
    cols = output_size(x.shape[1], kernel, 0, stride)
    out = np.zeros((rows.out, cols.out))
    windows = []
    for i in range(rows.out):
        for j in range(cols.out):
            top, left = i * stride, j * stride
            win = x[top:top + kernel, left:left + kernel].copy()
            if mode == "max":
                a, b = np.unravel_index(int(np.argmax(win)), win.shape)  # first maximum, row by row
                winner: Pos | None = (top + int(a), left + int(b))
                value = float(win[a, b])
                maxima = tuple((top + int(r), left + int(c)) for r, c in zip(*np.nonzero(win == value), strict=True))
            else:
                winner, value, maxima = None, math.fsum(win.ravel()) / win.size, ()
            out[i, j] = value
            windows.append(PoolWindow((i, j), top, left, win, winner, value, maxima))
    return PoolForward(x, kernel, stride, mode, out, tuple(windows), rows, cols)


def pool_backward(fwd: PoolForward, grad_output: Matrix) -> PoolBackward:
    """Route each window's gradient back: max sends all of it to the winner, avg splits it equally.

    Overlapping windows add up: a cell that wins several windows collects the sum.

    Raises:
        ValueError: ``grad_output`` does not have the output's shape.
    """
    g = as_matrix(grad_output, "dE/dO")
    if g.shape != fwd.output.shape:
        raise ValueError(f"dE/dO must have the output's shape {fwd.output.shape}, got {g.shape}")
    sources: dict[Pos, list[tuple[Pos, float]]] = {}
    k = fwd.kernel
    for w in fwd.windows:
        amount = float(g[w.at])
        if fwd.mode == "max":
            assert w.winner is not None
            sources.setdefault(w.winner, []).append((w.at, amount))
        else:
            share = amount / (k * k)
            for a in range(k):
                for b in range(k):
                    sources.setdefault((w.top + a, w.left + b), []).append((w.at, share))
    h, wd = fwd.x.shape
    grad_x = np.zeros((h, wd))
    cells = []
    for i in range(h):
        for j in range(wd):
            src = tuple(sources.get((i, j), ()))
            total = math.fsum(a for _, a in src)
            grad_x[i, j] = total
            cells.append(CellGradient((i, j), src, total))
    return PoolBackward(fwd, g, grad_x, tuple(cells))


# ---------------------------------------------------------------------------------------------------------------
# ReLU


@dataclass(frozen=True, eq=False)
class ReluRecord:
    x: Matrix
    output: Matrix  # max(0, x)
    mask: Matrix  # 1 where x > 0, else 0 (PyTorch's gradient at exactly 0 is 0)
    grad_output: Matrix
    grad_input: Matrix  # grad_output * mask

    def lines(self) -> tuple[str, str]:
        """The forward pass and the backward pass, each as one sentence with its matrices."""
        return (f"ReLU({matrix_text(self.x)}) = {matrix_text(self.output)}",
                f"Backward: dE/dY = {matrix_text(self.grad_output)} times the mask {matrix_text(self.mask)} "
                f"gives dE/dX = {matrix_text(self.grad_input)}")


def relu(x: Matrix, grad_output: Matrix | None = None) -> ReluRecord:
    """ReLU forward and its backward mask. ``grad_output`` defaults to all ones.

    Raises:
        ValueError: ``grad_output`` does not have the shape of ``x``.
    """
    x = as_matrix(x, "X")
    g = np.ones_like(x) if grad_output is None else as_matrix(grad_output, "dE/dY")
    if g.shape != x.shape:
        raise ValueError(f"dE/dY must have the shape of X {x.shape}, got {g.shape}")
    mask = (x > 0).astype(np.float64)
    return ReluRecord(x, np.maximum(x, 0.0), mask, g, g * mask)
