"""Reading the conv lab's printed numbers back, and comparing them with float64 torch.

Every number the lab prints has 6 significant digits (cnnviz.numbers.fmt), so a printed number is compared with
torch to a relative 1e-5; a printed 0 must be an exact 0 (up to float rounding of the whole matrix), never a small
non-zero result.
"""

from __future__ import annotations

import ast
import re

import numpy as np
import torch
from torch.testing import assert_close

DT = torch.float64
NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"


def t(m) -> torch.Tensor:
    return torch.as_tensor(np.asarray(m), dtype=DT)


def t4(m, grad: bool = False) -> torch.Tensor:
    return t(m)[None, None].clone().requires_grad_(grad)  # (1, 1, H, W)


def close(actual, expected) -> None:
    assert_close(t(actual), torch.as_tensor(expected, dtype=DT).detach().reshape(np.shape(actual)))


def printed_close(printed, expected, scale: float | None = None) -> None:
    """Printed numbers (6 significant digits) against torch's: relative 1e-5, and a printed 0 only for a result
    that is 0 up to rounding (1e-12 of the largest entry)."""
    expected = torch.as_tensor(expected, dtype=DT).detach()
    printed = t(printed).reshape(expected.shape)
    big = float(expected.abs().max()) if expected.numel() else 0.0
    atol = 1e-12 * (scale if scale is not None else big)
    assert_close(printed, expected, rtol=1e-5, atol=atol)


def matrix_of(text: str) -> np.ndarray:
    """``[[1, 2], [3, 4]]`` as printed, back into numbers."""
    return np.array(ast.literal_eval(text), dtype=np.float64)


def matrices_after(text: str, name: str) -> list[np.ndarray]:
    """Every ``<name> = [[...]]`` in a text, as matrices."""
    return [matrix_of(m) for m in re.findall(re.escape(name) + r" = (\[\[.*?\]\])", text)]


def products(expression: str) -> tuple[list[tuple[float, float]], float]:
    """``1·2 + 3·(-1) = -1`` -> ([(1, 2), (3, -1)], -1)."""
    body, value = expression.rsplit(" = ", 1)
    pairs = []
    if body != "0":
        for term in body.split(" + "):
            left, right = term.split("·")
            pairs.append((float(left.strip("()")), float(right.strip("()"))))
    return pairs, float(value)


def shares(expression: str) -> tuple[list[float], float]:
    """``1 + (-2) = -1`` (or a lone ``3``) -> ([1, -2], -1)."""
    if " = " in expression:
        body, value = expression.rsplit(" = ", 1)
        return [float(p.strip("()")) for p in body.split(" + ")], float(value)
    single = float(expression.strip("()"))
    return [single], single


def random_matrix(rng: np.random.Generator, shape, kind: int) -> np.ndarray:
    """Integers, normals, tiny numbers (1e-5 scale) or a mix with exact zeros and ties."""
    if kind == 0:
        return rng.integers(-5, 6, size=shape).astype(np.float64)
    if kind == 1:
        return rng.normal(size=shape)
    if kind == 2:
        return rng.normal(size=shape) * 1e-5
    return np.round(rng.normal(size=shape) * 2) / 2 * (rng.random(size=shape) > 0.3)
