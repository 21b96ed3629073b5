"""Small matrices by hand: reading them as typed, writing them as text, and sums of products entry by entry.

The building blocks of the convolution & pooling lab (:mod:`conv_math`, :mod:`pooling`, :mod:`conv_nets`). Every
entry a page shows is a :class:`CellSum`: the products that make it up, each factor with its position, and their
total, so the page can print ``1·2 + 3·0 + ... = 14``. Plain numpy loops on purpose: they are meant to be read.
Numbers are written with :func:`cnnviz.numbers.fmt`, so a small non-zero result never prints as 0.

No torch, no streamlit here.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnviz.numbers import factor, fmt

Matrix = np.ndarray  # 2-D float64
Pos = tuple[int, int]

MAX_TEXT_CHARS = 4000
LARGEST = 1e6  # typed numbers are kept between -LARGEST and LARGEST


class MatrixError(ValueError):
    """A matrix typed by the learner cannot be used. The message says what to fix."""


# ---------------------------------------------------------------------------------------------------------------
# Matrices as text


def matrix_text(m: np.ndarray, digits: int = 6) -> str:
    """``[[0, 494], [460, 0]]``: a matrix on one line, the way it is typed."""
    arr = np.atleast_2d(np.asarray(m, dtype=np.float64))
    return "[" + ", ".join("[" + ", ".join(fmt(v, digits) for v in row) + "]" for row in arr) + "]"


def matrix_rows_text(m: np.ndarray, digits: int = 6) -> str:
    """One row per line, entries separated by spaces: the format of the page's text boxes."""
    arr = np.atleast_2d(np.asarray(m, dtype=np.float64))
    return "\n".join(" ".join(fmt(v, digits) for v in row) for row in arr)


def link_text(text: str) -> str:
    """A text box's matrix for a link: rows joined by ``;``, entries by ``,`` (``1,2;3,4``), as typed."""
    rows = [" ".join(line.split()) for line in str(text).strip().splitlines() if line.strip()]
    return ";".join(",".join(row.replace(",", " ").split()) for row in rows)


def box_text(link: str, name: str = "matrix", max_shape: tuple[int, int] = (8, 8)) -> str:
    """A link's matrix back into the text box's format, after checking it (raises MatrixError with the reason)."""
    parse_matrix(link, name, max_shape)
    if link.strip().startswith("["):
        return link.strip()
    return "\n".join(" ".join(tok for tok in re.split(r"[,\s]+", row) if tok)
                     for row in link.split(";") if row.strip(" ,"))


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
    rows = _list_rows(text, name) if text.startswith("[") else _typed_rows(text)
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
    if np.abs(values).max() > LARGEST:
        raise MatrixError(f"{name}: keep the numbers between -1,000,000 and 1,000,000.")
    if values.shape[0] > max_shape[0] or values.shape[1] > max_shape[1]:
        raise MatrixError(
            f"{name} is {values.shape[0]}x{values.shape[1]}; the largest allowed here is "
            f"{max_shape[0]}x{max_shape[1]}."
        )
    return values


def _list_rows(text: str, name: str) -> list[list[object]]:
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
    return rows


def _typed_rows(text: str) -> list[list[object]]:
    lines = [line.strip() for line in re.split(r"[\n;]", text)]
    return [[tok for tok in re.split(r"[,\s]+", line) if tok] for line in lines if line.strip(" ,")]


# ---------------------------------------------------------------------------------------------------------------
# Sums of products


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

    def expression(self, skip_zeros: bool = False, digits: int = 6) -> str:
        """``1·2 + 3·(-1) = -1``; with ``skip_zeros`` the products with a zero factor are left out."""
        terms = [t for t in self.terms if not (skip_zeros and (t.left == 0 or t.right == 0))]
        if not terms:
            return f"0 = {fmt(self.value, digits)}"
        body = " + ".join(f"{factor(t.left, digits)}·{factor(t.right, digits)}" for t in terms)
        return f"{body} = {fmt(self.value, digits)}"

    def line(self, name: str, skip_zeros: bool = False) -> str:
        """``O[0, 1] = 1·2 + ... = 14``: the entry named, as its sum of products."""
        return f"{name}[{self.at[0]}, {self.at[1]}] = {self.expression(skip_zeros)}"

    @property
    def left_positions(self) -> tuple[Pos, ...]:
        return tuple(t.left_at for t in self.terms)


def cell_lines(cells: Sequence[CellSum], name: str, skip_zeros: bool = False) -> str:
    """Every entry as its sum of products, one markdown bullet each."""
    return "\n".join(f"- {c.line(name, skip_zeros)}" for c in cells)


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


def entry_label(k: int, shape: Pos) -> str:
    """The k-th entry of a matrix, row by row, as its (row, column) counted from 0: ``(1, 0)``."""
    i, j = divmod(int(k), shape[1])
    return f"({i}, {j})"
