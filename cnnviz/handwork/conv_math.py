"""Convolution, pooling and ReLU written out cell by cell, forward and backward, for small matrices.

Every entry a page shows is a :class:`CellSum`: the products that make it up, each factor with its position, and
their total, so the page can print ``1·2 + 3·0 + ... = 14``. The functions here use plain numpy loops on purpose:
they are meant to be read. ``tests/test_conv_math.py`` recomputes every matrix with ``F.conv2d``,
``F.max_pool2d``, ``F.avg_pool2d`` and autograd in float64.

Conventions (the same as PyTorch):
- "convolution" is cross-correlation: ``O[i, j] = sum_ab Xpad[i*S + a, j*S + b] * F[a, b]``, no kernel flip;
- ``W_out = floor((W - F + 2P) / S) + 1``: when the division is not whole, the last rows/columns are never covered;
- max-pool ties go to the first maximum in reading order (row by row), which is what PyTorch's kernels pick.

No streamlit here.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Matrix = np.ndarray  # 2-D float64
Pos = tuple[int, int]

MAX_TEXT_CHARS = 4000


class MatrixError(ValueError):
    """A matrix typed by the learner cannot be used. The message says what to fix."""


# ---------------------------------------------------------------------------------------------------------------
# Numbers and matrices as text


def fmt(value: float, digits: int = 4) -> str:
    """A number as a learner would write it: integers without decimals, others with ``digits`` significant digits."""
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if abs(v - round(v)) < 1e-9 and abs(v) < 1e12:
        return str(round(v))
    text = f"{v:.{digits}g}"
    return "0" if text in ("-0", "0") else text


def matrix_text(m: np.ndarray, digits: int = 4) -> str:
    """``[[0, 494], [460, 0]]``: a matrix on one line, the way it is typed."""
    arr = np.atleast_2d(np.asarray(m, dtype=np.float64))
    return "[" + ", ".join("[" + ", ".join(fmt(v, digits) for v in row) + "]" for row in arr) + "]"


def matrix_rows_text(m: np.ndarray, digits: int = 4) -> str:
    """One row per line, entries separated by spaces: the format of the page's text boxes."""
    arr = np.atleast_2d(np.asarray(m, dtype=np.float64))
    return "\n".join(" ".join(fmt(v, digits) for v in row) for row in arr)


def parse_matrix(text: str, name: str = "matrix", max_shape: tuple[int, int] = (8, 8)) -> Matrix:
    """Read a matrix typed as rows of numbers, or as a Python/JSON list of lists.

    Accepted: ``"1 2 3\\n4 5 6"``, ``"1, 2; 3, 4"``, ``"[[1, 2], [3, 4]]"``.

    Args:
        text: what the learner typed.
        name: the matrix's name, used in error messages.
        max_shape: the largest (rows, columns) allowed.
    Returns:
        A float64 array of shape (rows, columns).
    Raises:
        MatrixError: with a message that says what is wrong and how to fix it.
    """
    if text is None or not str(text).strip():
        raise MatrixError(f"{name} is empty. Type one row per line, numbers separated by spaces, e.g. `1 2` / `3 4`.")
    text = str(text).strip()
    if len(text) > MAX_TEXT_CHARS:
        raise MatrixError(f"{name} is too long ({len(text)} characters). Keep it to {max_shape[0]}x{max_shape[1]}.")
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise MatrixError(f"{name}: `{text[:40]}` is not a list of rows like `[[1, 2], [3, 4]]`.") from None
        if not isinstance(value, (list, tuple)) or not value:
            raise MatrixError(f"{name}: write a list of rows like `[[1, 2], [3, 4]]`.")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            value = [value]  # one row
        rows: list[list[object]] = []
        for row in value:
            if not isinstance(row, (list, tuple)):
                raise MatrixError(f"{name}: every row must be a list of numbers, like `[1, 2]`.")
            rows.append(list(row))
    else:
        lines = [line.strip() for line in re.split(r"[\n;]", text)]
        rows = [[tok for tok in re.split(r"[,\s]+", line) if tok] for line in lines if line.strip(" ,")]
    if not rows:
        raise MatrixError(f"{name} is empty. Type one row per line, e.g. `1 2` / `3 4`.")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        lengths = ", ".join(str(len(r)) for r in rows)
        raise MatrixError(f"{name}: every row needs the same number of entries (the rows have {lengths}).")
    values = np.empty((len(rows), widths.pop()), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, tok in enumerate(row):
            if isinstance(tok, bool) or not isinstance(tok, (int, float, str)):
                raise MatrixError(f"{name}: row {i + 1}, entry {j + 1} is not a number.")
            try:
                values[i, j] = float(tok)
            except (TypeError, ValueError, OverflowError):
                raise MatrixError(f"{name}: row {i + 1}, entry {j + 1} (`{str(tok)[:20]}`) is not a number.") from None
    if not np.isfinite(values).all():
        raise MatrixError(f"{name}: use finite numbers only (no inf or nan).")
    if np.abs(values).max() > 1e6:
        raise MatrixError(f"{name}: keep the numbers between -1,000,000 and 1,000,000.")
    if values.shape[0] > max_shape[0] or values.shape[1] > max_shape[1]:
        raise MatrixError(
            f"{name} is {values.shape[0]}x{values.shape[1]}; the largest allowed here is "
            f"{max_shape[0]}x{max_shape[1]}."
        )
    return values


# ---------------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, eq=False)
class Term:
    """One product ``left * right`` inside a sum, with where each factor sits in its matrix."""

    left: float
    right: float
    left_at: Pos
    right_at: Pos


@dataclass(frozen=True, eq=False)
class CellSum:
    """One entry of a result matrix as a sum of products."""

    at: Pos  # (row, column) of the entry in the result
    terms: tuple[Term, ...]
    value: float

    def expression(self, skip_zeros: bool = False, digits: int = 4) -> str:
        """``1·2 + 3·(-1) = -1``; with ``skip_zeros`` the products with a zero factor are left out."""
        terms = [t for t in self.terms if not (skip_zeros and (t.left == 0 or t.right == 0))]
        if not terms:
            return f"0 = {fmt(self.value, digits)}"

        def factor(v: float) -> str:
            s = fmt(v, digits)
            return f"({s})" if s.startswith("-") else s

        body = " + ".join(f"{factor(t.left)}·{factor(t.right)}" for t in terms)
        return f"{body} = {fmt(self.value, digits)}"

    @property
    def left_positions(self) -> tuple[Pos, ...]:
        return tuple(t.left_at for t in self.terms)


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

    def formula(self) -> str:
        """``(26 - 2 + 2·0) / 2 + 1 = 13``"""
        q = fmt(self.quotient, 4)
        floor = "" if self.whole else f" → floor({q}) + 1"
        return (f"({self.width} − {self.kernel} + 2·{self.padding}) / {self.stride} + 1 = {q} + 1"
                f"{floor} = {self.out}")


def output_size(width: int, kernel: int, padding: int = 0, stride: int = 1) -> AxisSize:
    """``W_out = floor((W - F + 2P) / S) + 1`` and the rows/columns never covered when the division is not whole.

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
    uncovered_input = tuple(i - padding for i in uncovered if padding <= i < padding + width)
    return AxisSize(width, kernel, padding, stride, numerator, numerator / stride, out, numerator % stride == 0,
                    padded, starts, uncovered, uncovered_input)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


def as_matrix(m: Sequence[Sequence[float]] | np.ndarray, name: str = "matrix") -> Matrix:
    arr = np.array(m, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {arr.shape}")
    return arr


def zero_pad(x: Matrix, top: int, left: int | None = None, bottom: int | None = None,
             right: int | None = None) -> Matrix:
    """Zeros around ``x``: ``zero_pad(x, p)`` pads every side by p."""
    left = top if left is None else left
    bottom = top if bottom is None else bottom
    right = left if right is None else right
    return np.pad(x, ((top, bottom), (left, right)))


def dilate(g: Matrix, stride: int) -> Matrix:
    """Insert ``stride - 1`` zeros between neighbouring entries (what a stride does to the gradient's layout)."""
    if stride == 1:
        return g.copy()
    h, w = g.shape
    out = np.zeros(((h - 1) * stride + 1, (w - 1) * stride + 1))
    out[::stride, ::stride] = g
    return out


def rot180(f: Matrix) -> Matrix:
    """The filter turned by 180 degrees: ``F[::-1, ::-1]``."""
    return f[::-1, ::-1].copy()


def correlate(left: Matrix, kernel: Matrix, stride: int = 1, out_shape: Pos | None = None
              ) -> tuple[Matrix, tuple[CellSum, ...]]:
    """Valid cross-correlation of ``left`` with ``kernel``, each entry as its sum of products.

    Args:
        left: the (already padded) matrix the kernel slides over.
        kernel: the matrix it slides.
        stride: step between kernel positions.
        out_shape: keep only this many rows/columns of the result (default: every position that fits).
    Returns:
        (result matrix, its entries row by row as CellSum).
    """
    kh, kw = kernel.shape
    if out_shape is None:
        out_shape = ((left.shape[0] - kh) // stride + 1, (left.shape[1] - kw) // stride + 1)
    ho, wo = out_shape
    result = np.zeros((ho, wo))
    cells = []
    for i in range(ho):
        for j in range(wo):
            terms = tuple(
                Term(float(left[i * stride + a, j * stride + b]), float(kernel[a, b]),
                     (i * stride + a, j * stride + b), (a, b))
                for a in range(kh) for b in range(kw)
            )
            total = math.fsum(t.left * t.right for t in terms)
            result[i, j] = total
            cells.append(CellSum((i, j), terms, total))
    return result, tuple(cells)


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


# ---------------------------------------------------------------------------------------------------------------
# Pooling


@dataclass(frozen=True, eq=False)
class PoolWindow:
    at: Pos  # the output entry
    top: int
    left: int
    values: Matrix  # the window's entries
    winner: Pos | None  # max-pool: the input cell that wins (first maximum in reading order); avg: None
    value: float  # the output entry
    maxima: tuple[Pos, ...] = ()  # max-pool: every cell holding the maximum; more than one is a tie


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


@dataclass(frozen=True, eq=False)
class CellGradient:
    """What one input cell receives in the backward pass: a share from each window that routes to it."""

    at: Pos
    sources: tuple[tuple[Pos, float], ...]  # (output entry, amount it sends here)
    value: float

    def expression(self, digits: int = 4) -> str:
        if not self.sources:
            return "0"
        parts = " + ".join(fmt(a, digits) if a >= 0 else f"({fmt(a, digits)})" for _, a in self.sources)
        return parts if len(self.sources) == 1 else f"{parts} = {fmt(self.value, digits)}"


@dataclass(frozen=True, eq=False)
class PoolBackward:
    forward: PoolForward
    grad_output: Matrix
    grad_input: Matrix
    cells: tuple[CellGradient, ...]  # one per input cell, row by row


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


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def conv_sigmoid_fc(x: Matrix, f: Matrix, w: Matrix, b: float, target: float) -> TinyNetRecord:
    """Z1 = X ⋆ f; A = σ(Z1); Z2 = Wᵀ A + b; O = σ(Z2); E = ½ (y' − O)², and every gradient back to f.

    ``w`` has the shape of A (one weight per activation); Wᵀ A is the sum of their products.

    Raises:
        ValueError: f does not fit in X, or w does not have the shape of X ⋆ f.
    """
    x, f, w = as_matrix(x, "X"), as_matrix(f, "f"), as_matrix(w, "W")
    conv = conv_forward(x, f)
    z1 = conv.output
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

    wa = " + ".join(f"{fmt(wi)}·{fmt(ai)}" for wi, ai in zip(w.ravel(), a1.ravel(), strict=True))
    forward = (
        NetStep("Z1 = X * f", f"X cross-correlated with f = {matrix_text(z1)}", z1),
        NetStep("A = sigmoid(Z1)", f"1 / (1 + e^(−Z1)) = {matrix_text(a1)}", a1),
        NetStep("Z2 = Wᵀ A + b", f"{wa} + {fmt(b)} = {fmt(z2)}", np.array([[z2]])),
        NetStep("O = sigmoid(Z2)", f"1 / (1 + e^(−{fmt(z2)})) = {fmt(o)}", np.array([[o]])),
        NetStep("E = ½ (y' − O)²", f"½ ({fmt(target)} − {fmt(o)})² = {fmt(e)}", np.array([[e]])),
    )
    backward = (
        NetStep("dE/dO = −(y' − O)", f"−({fmt(target)} − {fmt(o)}) = {fmt(grad_o)}", np.array([[grad_o]])),
        NetStep("dE/dZ2 = dE/dO · O (1 − O)", f"{fmt(grad_o)} · {fmt(o)} · {fmt(1 - o)} = {fmt(grad_z2)}",
                np.array([[grad_z2]])),
        NetStep("dE/dW = −(y' − O) O (1 − O) A", f"{fmt(grad_z2)} · A = {matrix_text(grad_w)}", grad_w),
        NetStep("dE/db = dE/dZ2", fmt(grad_z2), np.array([[grad_z2]])),
        NetStep("dE/dA1 = dE/dZ2 · W", f"{fmt(grad_z2)} · W = {matrix_text(grad_a1)}", grad_a1),
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
