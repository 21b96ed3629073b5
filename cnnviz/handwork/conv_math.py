"""One single-channel convolution written out cell by cell, forward and backward, and the output-size formula.

Conventions (the same as PyTorch):
- "convolution" is cross-correlation: ``O[i, j] = sum_ab Xpad[i*S + a, j*S + b] * F[a, b]``, no kernel flip;
- ``W_out = floor((W - F + 2P) / S) + 1``: when the division is not whole, the last rows/columns are left over;
  when the stride is larger than the kernel, the rows between two windows are skipped (gaps).

``tests/handwork/test_conv_math.py`` recomputes every matrix and every printed number with ``F.conv2d`` and
autograd in float64. No torch, no streamlit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnviz.handwork.matrices import (
    CellSum,
    Matrix,
    Pos,
    Term,
    as_matrix,
    correlate,
    dilate,
    matrix_text,
    rot180,
    zero_pad,
)
from cnnviz.numbers import fmt

# ---------------------------------------------------------------------------------------------------------------
# Output size


def _rows(indices: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in indices)


@dataclass(frozen=True, eq=False)
class AxisSize:
    """The output-size formula on one axis, with everything needed to explain it."""

    width: int  # W, the input size
    kernel: int  # F
    padding: int  # P
    stride: int  # S
    numerator: int  # W - F + 2P
    quotient: float  # (W - F + 2P) / S
    out: int  # floor(quotient) + 1
    whole: bool  # the division has no remainder
    padded_width: int  # W + 2P
    starts: tuple[int, ...]  # first padded index of each kernel position
    uncovered_padded: tuple[int, ...]  # padded indices no kernel position reaches
    uncovered_input: tuple[int, ...]  # of those, the real input rows/columns (0-based, unpadded)
    left_over: tuple[int, ...] = ()  # padded indices after the last window: the remainder of the division
    gaps: tuple[int, ...] = ()  # padded indices between two windows, skipped by a stride larger than the kernel

    def input_rows(self, padded: tuple[int, ...]) -> tuple[int, ...]:
        """Those padded indices that are input rows/columns, counted from 0 in the unpadded input."""
        return tuple(i - self.padding for i in padded if self.padding <= i < self.padding + self.width)

    def formula(self) -> str:
        """``(26 − 2 + 2·0) / 2 + 1 = 12 + 1 = 13``"""
        q = fmt(self.quotient)
        floor = "" if self.whole else f" → floor({q}) + 1"
        return (f"({self.width} − {self.kernel} + 2·{self.padding}) / {self.stride} + 1 = {q} + 1"
                f"{floor} = {self.out}")

    def coverage(self) -> tuple[str, str]:
        """("success" | "warning", a sentence): which rows are left over at the end, which the stride skips."""
        if not self.uncovered_padded:
            return "success", ("The division is whole: the kernel's positions cover every row and column of the "
                               "padded input.")
        parts = []
        if self.left_over:
            n = len(self.left_over)
            lost = self.input_rows(self.left_over)
            what = (f"input rows/columns {_rows(lost)} (counting from 0) are never covered: the kernel never sees "
                    "them" if lost else "only padding is left over, so every input row is still seen")
            parts.append(
                f"The division is not whole: ({self.width} − {self.kernel} + 2·{self.padding}) / {self.stride} = "
                f"{fmt(self.quotient)}. PyTorch floors it, so there are {self.out} positions and the last {n} "
                f"row{'s' if n > 1 else ''}/column{'s' if n > 1 else ''} of the padded input (padded index "
                f"{_rows(self.left_over)}) {'are' if n > 1 else 'is'} left over at the end: {what}.")
        if self.gaps:
            skipped = self.input_rows(self.gaps)
            what = (f"input rows/columns {_rows(skipped)} (counting from 0), which are never covered"
                    if skipped else "only padding, so every input row is still seen")
            parts.append(
                f"The stride ({self.stride}) is larger than the kernel ({self.kernel}): each jump skips the rows "
                f"between two windows (gaps at padded index {_rows(self.gaps)}): {what}.")
        return "warning", " ".join(parts)


def output_size(width: int, kernel: int, padding: int = 0, stride: int = 1) -> AxisSize:
    """``W_out = floor((W - F + 2P) / S) + 1``, the rows left over at the end and the rows the stride skips.

    Raises:
        ValueError: when the kernel does not fit in the padded input, or a size is not positive.
    """
    if width < 1 or kernel < 1 or stride < 1 or padding < 0:
        raise ValueError("sizes and stride must be at least 1 and padding at least 0")
    padded = width + 2 * padding
    if kernel > padded:
        raise ValueError(
            f"the kernel ({kernel}) is larger than the padded input ({width} + 2·{padding} = {padded}): "
            "make the kernel smaller or the padding larger"
        )
    numerator = width - kernel + 2 * padding
    out = numerator // stride + 1
    starts = tuple(i * stride for i in range(out))
    covered = set()
    for s in starts:
        covered.update(range(s, s + kernel))
    uncovered = tuple(i for i in range(padded) if i not in covered)
    end = starts[-1] + kernel  # one past the last covered index
    uncovered_input = tuple(i - padding for i in uncovered if padding <= i < padding + width)
    return AxisSize(width, kernel, padding, stride, numerator, numerator / stride, out, numerator % stride == 0,
                    padded, starts, uncovered, uncovered_input, tuple(i for i in uncovered if i >= end),
                    tuple(i for i in uncovered if i < end))


# ---------------------------------------------------------------------------------------------------------------
# Convolution forward and backward


@dataclass(frozen=True, eq=False)
class ConvForward:
    """``O = X ⋆ F`` (cross-correlation, as ``F.conv2d``), with stride and zero padding."""

    x: Matrix
    f: Matrix
    stride: int
    padding: int
    x_padded: Matrix
    output: Matrix
    cells: tuple[CellSum, ...]  # row by row; each term's left_at is a position in x_padded
    rows: AxisSize
    cols: AxisSize

    def window(self, k: int) -> tuple[CellSum, Pos]:
        """The k-th kernel position (row by row): its output entry and the window's top-left in x_padded."""
        cell = self.cells[k]
        return cell, cell.terms[0].left_at

    def summary(self) -> str:
        return f"Output size: rows {self.rows.formula()}; columns {self.cols.formula()}. O = {matrix_text(self.output)}"


def conv_forward(x: Matrix, f: Matrix, stride: int = 1, padding: int = 0) -> ConvForward:
    """Forward pass of one single-channel convolution, entry by entry.

    Raises:
        ValueError: the filter does not fit in the padded input, or stride < 1 / padding < 0.
    """
    x, f = as_matrix(x, "X"), as_matrix(f, "F")
    rows = output_size(x.shape[0], f.shape[0], padding, stride)
    cols = output_size(x.shape[1], f.shape[1], padding, stride)
    xp = zero_pad(x, padding)
    output, cells = correlate(xp, f, stride, (rows.out, cols.out))
    return ConvForward(x, f, stride, padding, xp, output, cells, rows, cols)


@dataclass(frozen=True, eq=False)
class ConvBackward:
    """Gradients of one convolution given the upstream gradient dE/dO.

    dE/dF = X_padded ⋆ (dE/dO dilated by the stride); dE/dX = full convolution: the dilated dE/dO padded with
    ``kernel - 1`` zeros (plus the never-covered rows/columns) cross-correlated with F rotated 180°, then the
    padding's border cut off.
    """

    forward: ConvForward
    grad_output: Matrix  # dE/dO
    grad_output_dilated: Matrix  # stride - 1 zeros between entries
    grad_filter: Matrix  # dE/dF
    grad_filter_cells: tuple[CellSum, ...]  # left_at in x_padded, right_at in grad_output (undilated)
    grad_output_full: Matrix  # dilated and zero-padded for the full convolution
    f_rot180: Matrix
    grad_input_padded: Matrix  # gradient for every entry of x_padded
    grad_input: Matrix  # dE/dX: grad_input_padded without the padding's border
    grad_input_cells: tuple[CellSum, ...]  # one per entry of X; left_at in grad_output_full, right_at in f_rot180

    @property
    def inserted_zeros(self) -> set[Pos]:
        """Cells of the padded, dilated dE/dO that are inserted zeros, not entries of dE/dO (drawn grey)."""
        s = self.forward.stride
        kh, kw = self.forward.f.shape
        ho, wo = self.grad_output.shape
        real = {(kh - 1 + i * s, kw - 1 + j * s) for i in range(ho) for j in range(wo)}
        hf, wf = self.grad_output_full.shape
        return {(i, j) for i in range(hf) for j in range(wf)} - real

    def stride_note(self) -> str | None:
        """What the stride does to dE/dF's windows, in words; None for stride 1."""
        s = self.forward.stride
        if s == 1:
            return None
        return (f"With stride {s}, the window's cells are {s} apart: the same as sliding dE/dO with {s - 1} "
                f"zero{'s' if s > 2 else ''} between its entries.")

    def padding_note(self) -> str | None:
        """Why dE/dX is cut out of a larger full convolution; None without padding."""
        if not self.forward.padding:
            return None
        h, w = self.grad_input_padded.shape
        return (f"The full convolution gives a gradient for every cell of the padded X ({h}x{w}); the padding's "
                "border is cut off, leaving dE/dX with the shape of X.")

    def summary(self) -> str:
        return f"dE/dF = {matrix_text(self.grad_filter)};  dE/dX = {matrix_text(self.grad_input)}"


def conv_backward(fwd: ConvForward, grad_output: Matrix) -> ConvBackward:
    """Backward pass of :func:`conv_forward` for the upstream gradient ``grad_output`` (shape of the output).

    Raises:
        ValueError: ``grad_output`` does not have the output's shape.
    """
    g = as_matrix(grad_output, "dE/dO")
    if g.shape != fwd.output.shape:
        raise ValueError(f"dE/dO must have the output's shape {fwd.output.shape}, got {g.shape}")
    s, p = fwd.stride, fwd.padding
    kh, kw = fwd.f.shape
    xp = fwd.x_padded
    ho, wo = g.shape

    # dE/dF[a, b] = sum_ij Xpad[i*S + a, j*S + b] * dE/dO[i, j]
    grad_filter = np.zeros((kh, kw))
    f_cells = []
    for a in range(kh):
        for b in range(kw):
            terms = tuple(Term(float(xp[i * s + a, j * s + b]), float(g[i, j]), (i * s + a, j * s + b), (i, j))
                          for i in range(ho) for j in range(wo))
            total = math.fsum(t.left * t.right for t in terms)
            grad_filter[a, b] = total
            f_cells.append(CellSum((a, b), terms, total))

    # dE/dXpad = full convolution of dilated dE/dO with rot180(F); the never-covered rows/cols get extra zeros
    gd = dilate(g, s)
    extra_r = fwd.rows.padded_width - ((ho - 1) * s + kh)  # never-covered rows at the bottom
    extra_c = fwd.cols.padded_width - ((wo - 1) * s + kw)
    g_full = zero_pad(gd, kh - 1, kw - 1, kh - 1 + extra_r, kw - 1 + extra_c)
    frot = rot180(fwd.f)
    grad_xp, full_cells = correlate(g_full, frot)
    assert grad_xp.shape == xp.shape
    h, w = fwd.x.shape
    grad_x = grad_xp[p:p + h, p:p + w].copy()
    by_pos = {c.at: c for c in full_cells}
    x_cells = tuple(CellSum((i, j), by_pos[(i + p, j + p)].terms, by_pos[(i + p, j + p)].value)
                    for i in range(h) for j in range(w))
    return ConvBackward(fwd, g, gd, grad_filter, tuple(f_cells), g_full, frot, grad_xp, grad_x, x_cells)


def squared_error_grad(output: Matrix, target: Matrix | float = 0.0) -> tuple[float, Matrix]:
    """E = ½ Σ (O − T)² and dE/dO = O − T."""
    diff = output - target
    return 0.5 * float(np.sum(diff * diff)), diff
