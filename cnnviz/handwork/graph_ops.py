"""The operators of the computational graph, each defined once, the way micrograd's ``Value`` does it.

An :class:`Operator` holds everything about one operation side by side: its arity, how its value is computed, its
local gradients, the rule written with names (the same text, numbers put in, is the rule with numbers), how torch's
backward turns the incoming gradient into each operand's share, its torch spelling and the symbol drawn in its
circle. Every number follows PyTorch's float64 CPU kernels and backward formulas (``derivatives.yaml``), IEEE
inf/nan included: ``relu``, ``max`` and ``min`` pass the gradient through a nan input, ``0 * inf`` is nan, a
division is a division (never a product with a reciprocal), a constant exponent takes torch's fast paths.

Templates: ``{a}``/``{b}`` are the operands and ``{y}`` the result, wrapped in parentheses when negative or
compound; ``{A}``/``{B}`` are the same without parentheses (inside a function call, or first in a sum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

NAN, INF = math.nan, math.inf


# ------------------------------------------------------------------------------------------- IEEE float64 arithmetic
def div(a: float, b: float) -> float:
    """a / b as IEEE (and torch) divide: x/0 is +-inf, 0/0 is nan, never an exception."""
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def power(a: float, b: float) -> float:
    """C's pow, what torch uses for a tensor exponent: (-2.5)**2.5 is nan, overflow is +-inf, 0**-1 is inf."""
    odd = b.is_integer() and b % 2 == 1
    try:
        return math.pow(a, b)
    except OverflowError:
        return -INF if a < 0 and odd else INF
    except ValueError:  # 0 to a negative power, or a negative number to a fractional one
        return (-INF if odd and math.copysign(1.0, a) < 0 else INF) if a == 0 else NAN


def power_scalar(a: float, e: float) -> float:
    """torch's ``tensor ** number``, with its fast paths (Pow.cpp, PowKernel.cpp): x**2 is x*x, x**0.5 is sqrt(x)."""
    if e == 0:
        return 1.0
    if e == 1:
        return a
    with np.errstate(all="ignore"):
        if e == 0.5:
            return float(np.sqrt(np.float64(a)))
        if e == -0.5:
            return div(1.0, float(np.sqrt(np.float64(a))))
    if e == -1:
        return div(1.0, a)
    if e == 2:
        return a * a
    if e == 3:
        return a * a * a
    if e == -2:
        return div(1.0, a * a)
    return power(a, e)


def exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return INF


def log(a: float) -> float:
    if math.isnan(a) or a < 0:
        return NAN
    return -INF if a == 0 else math.log(a)


def sigmoid(z: np.ndarray | float) -> np.ndarray | np.float64:
    """1 / (1 + exp(-z)) in float64, elementwise, as torch's CPU kernel writes it; exp overflow gives exactly 0.

    The one sigmoid of the hand-worked pages (the graph, the MLPs, the small conv nets).
    """
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def one_minus_square(y: float) -> float:
    """1 - y*y rounded once, as torch's tanh_backward kernel computes it: its CPU build contracts the product and
    the difference into one fused multiply-add (AVX2/AVX512; ``ATEN_CPU_CAPABILITY=default`` rounds twice). The
    extra rounding's ulp survives where two paths cancel.
    """
    if math.isnan(y):
        return NAN
    return float(1 - Fraction(y) ** 2)  # exact, then rounded once (int / int division rounds correctly)


def maximum(a: float, b: float) -> float:
    return NAN if math.isnan(a) or math.isnan(b) else max(a, b)  # torch.maximum propagates nan


def minimum(a: float, b: float) -> float:
    return NAN if math.isnan(a) or math.isnan(b) else min(a, b)


def _pow(a: float, b: float, scalar: bool) -> float:
    return power_scalar(a, b) if scalar else power(a, b)


# ------------------------------------------------------------------------------------------------------ operators
Values = tuple[float, float, float]  # (a, b, y); b is 0 for a unary operator


@dataclass(frozen=True)
class Operator:
    """One operation: value, local gradients and torch's backward, with the text a student writes for each.

    ``value(a, b, scalar)``: the result; ``scalar`` says the second operand is a literal number (for ``**``, torch
    then takes ``tensor ** number``). ``local(a, b, y, scalar)``: d result / d operand, per operand.
    ``backward(g, a, b, y, scalar)``: each operand's share of the gradient, computed as torch computes it from the
    incoming gradient ``g``. ``gated(a, b, y, scalar)``: per operand, True where torch writes an exact 0 without
    multiplying (``where``/``masked_fill``), so ``nan * 0`` does not arise. ``rules(scalar, b)``: the local rule
    per operand as a template. ``divides``: per operand, True where torch divides g by the second operand.
    """

    key: str  # "+", "-", "*", "/", "**", "neg", "exp", "log", "sigmoid", "tanh", "relu", "max", "min"
    arity: int
    symbol: str  # drawn in the operation's circle
    torch: str  # "torch.exp", or the Python operator " + " between the operands
    written: str  # the operation as a template: "{A} + {b}"
    value: Callable[[float, float, bool], float]
    local: Callable[[float, float, float, bool], tuple[float, ...]]
    backward: Callable[[float, float, float, float, bool], tuple[float, ...]]
    rules: Callable[[bool, float], tuple[str, ...]]
    gated: Callable[[float, float, float, bool], tuple[bool, ...]] = lambda a, b, y, s: (False, False)
    divides: tuple[bool, ...] = (False, False)

    @property
    def is_function(self) -> bool:
        return self.torch.startswith("torch.")


def _fixed(*templates: str) -> Callable[[bool, float], tuple[str, ...]]:
    return lambda scalar, b: templates


# max/min (derivatives.yaml): where(a == b, g / 2, g), then 0 where the operand loses; nan compares false: g passes
def _share(g: float, wins_or_nan: bool, tie: bool) -> float:
    return g / 2 if tie else g if wins_or_nan else 0.0


def _pow_base_local(a: float, b: float, y: float, scalar: bool) -> float:
    return 0.0 if b == 0 else b * _pow(a, b - 1.0, scalar)


def _pow_exponent_local(a: float, b: float, y: float, scalar: bool) -> float:
    return 0.0 if (a == 0 and b >= 0) else y * log(a)


def _pow_rules(scalar: bool, b: float) -> tuple[str, ...]:
    base = ("0" if b == 0 else "{b} * {a}**({b} - 1)") if scalar else "(0 if {B} == 0 else {b} * {a}**({b} - 1))"
    return base, "(0 if {A} == 0 and {B} >= 0 else {y} * log({A}))"


OPERATORS: dict[str, Operator] = {op.key: op for op in (
    Operator("+", 2, "+", " + ", "{A} + {b}", lambda a, b, s: a + b,
             local=lambda a, b, y, s: (1.0, 1.0), backward=lambda g, a, b, y, s: (g, g), rules=_fixed("1", "1")),
    Operator("-", 2, "−", " - ", "{A} - {b}", lambda a, b, s: a - b,
             local=lambda a, b, y, s: (1.0, -1.0), backward=lambda g, a, b, y, s: (g, -g), rules=_fixed("1", "-1")),
    Operator("*", 2, "×", " * ", "{A} * {b}", lambda a, b, s: a * b,
             local=lambda a, b, y, s: (b, a), backward=lambda g, a, b, y, s: (g * b, g * a),
             rules=_fixed("{b}", "{a}")),
    Operator("/", 2, "÷", " / ", "{A} / {b}", lambda a, b, s: div(a, b),
             local=lambda a, b, y, s: (div(1.0, b), -div(div(a, b), b)),
             backward=lambda g, a, b, y, s: (div(g, b), -g * div(div(a, b), b)),
             rules=_fixed("1/{b}", "-({A}/{b})/{b}"), divides=(True, False)),
    Operator("**", 2, "**", " ** ", "{a}**{b}", _pow,
             local=lambda a, b, y, s: (_pow_base_local(a, b, y, s), _pow_exponent_local(a, b, y, s)),
             backward=lambda g, a, b, y, s: (0.0 if b == 0 else g * _pow_base_local(a, b, y, s),
                                             g * _pow_exponent_local(a, b, y, s)),
             rules=_pow_rules, gated=lambda a, b, y, s: (b == 0, False)),
    Operator("neg", 1, "−", "-", "-{a}", lambda a, b, s: -a,
             local=lambda a, b, y, s: (-1.0,), backward=lambda g, a, b, y, s: (-g,), rules=_fixed("-1")),
    Operator("exp", 1, "exp", "torch.exp", "exp({A})", lambda a, b, s: exp(a),
             local=lambda a, b, y, s: (y,), backward=lambda g, a, b, y, s: (g * y,), rules=_fixed("exp({A})")),
    Operator("log", 1, "log", "torch.log", "log({A})", lambda a, b, s: log(a),
             local=lambda a, b, y, s: (div(1.0, a),), backward=lambda g, a, b, y, s: (div(g, a),),
             rules=_fixed("1/{a}"), divides=(True,)),
    Operator("sigmoid", 1, "σ", "torch.sigmoid", "sigmoid({A})", lambda a, b, s: float(sigmoid(a)),
             local=lambda a, b, y, s: ((1.0 - y) * y,), backward=lambda g, a, b, y, s: ((g * (1.0 - y)) * y,),
             rules=_fixed("{y} * (1 - {y})")),
    Operator("tanh", 1, "tanh", "torch.tanh", "tanh({A})", lambda a, b, s: math.tanh(a),
             local=lambda a, b, y, s: (one_minus_square(y),),
             backward=lambda g, a, b, y, s: (g * one_minus_square(y),),
             rules=_fixed("1 - {y}**2")),
    # relu: threshold_backward(g, result, 0) = 0 where result <= 0, else g (a nan input passes g through)
    Operator("relu", 1, "relu", "torch.relu", "relu({A})", lambda a, b, s: maximum(a, 0.0),
             local=lambda a, b, y, s: (0.0 if y <= 0 else 1.0,), backward=lambda g, a, b, y, s: (0.0 if y <= 0 else g,),
             rules=_fixed("(0 if {A} <= 0 else 1)"), gated=lambda a, b, y, s: (y <= 0,)),
    Operator("max", 2, "max", "torch.maximum", "max({A}, {B})", lambda a, b, s: maximum(a, b),
             local=lambda a, b, y, s: (_share(1.0, not a < b, a == b), _share(1.0, not a > b, a == b)),
             backward=lambda g, a, b, y, s: (_share(g, not a < b, a == b), _share(g, not a > b, a == b)),
             rules=_fixed("(0 if {A} < {B} else 1/2 if {A} == {B} else 1)",
                          "(0 if {B} < {A} else 1/2 if {A} == {B} else 1)"),
             gated=lambda a, b, y, s: (a < b, a > b)),
    Operator("min", 2, "min", "torch.minimum", "min({A}, {B})", lambda a, b, s: minimum(a, b),
             local=lambda a, b, y, s: (_share(1.0, not a > b, a == b), _share(1.0, not a < b, a == b)),
             backward=lambda g, a, b, y, s: (_share(g, not a > b, a == b), _share(g, not a < b, a == b)),
             rules=_fixed("(0 if {A} > {B} else 1/2 if {A} == {B} else 1)",
                          "(0 if {B} > {A} else 1/2 if {A} == {B} else 1)"),
             gated=lambda a, b, y, s: (a > b, a < b)),
)}
FUNCTIONS: dict[str, int] = {op.key: op.arity for op in OPERATORS.values() if op.is_function and op.key != "neg"}
