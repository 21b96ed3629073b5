"""The explorer's teaching math: each layer's forward and backward rule written out for one cell, with numbers.

Every function takes records from a Trace (which equal autograd) and recomputes one number by hand, the way a
learner would on paper; the tests check that the hand computation lands on the recorded value.

A written sum of products is added in float64 from the float32 numbers it lists (``sum_of_products``): the product
of two float32 numbers is exact in float64 and ``math.fsum`` adds without intermediate rounding, so the total
printed is the exact sum of the terms printed, even where they cancel. The network's own value (float32) can
differ in its last digits there; ``rounding_note`` says so on the page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from cnnviz.engine.trace import LayerRecord, Trace
from cnnviz.numbers import factor, fmt


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def sum_of_products(a, b, plus: float = 0.0) -> float:
    """sum_k a[k] * b[k] + plus, in float64 and correctly rounded (exact products of float32 operands, math.fsum).

    Args:
        a, b: numbers of the same shape (any float dtype; float32 ones are the network's own).
        plus: one more number to add (a bias).
    """
    products = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
    return math.fsum([*products.ravel().tolist(), float(plus)])


def products_text(pairs: Iterable[tuple[float, float]], digits: int = 4, limit: int | None = 12, times: str = " x ",
                  more: str = "more") -> str:
    """``a x b + c x d + ...``: the products of a sum written with their numbers, the first ``limit`` of them."""
    pairs = list(pairs)
    shown = pairs if limit is None else pairs[:limit]
    text = " + ".join(f"{factor(a, digits, first=k == 0)}{times}{factor(b, digits)}" for k, (a, b) in enumerate(shown))
    return text + (f" + ... ({len(pairs) - len(shown)} {more})" if len(pairs) > len(shown) else "")


def rounding_note(written: float, network: float, magnitude: float, network_dtype: str = "float32",
                  digits: int = 4) -> str:
    """Why a sum written in float64 and the network's own number differ in their printed digits ("" when they agree).

    Args:
        written: the float64 sum the page writes out.
        network: the value the network (or autograd) computed, in ``network_dtype``.
        magnitude: the sum of the terms' absolute values, which sets the size of float32's rounding errors.
    """
    if fmt(written, digits) == fmt(network, digits) or network_dtype == "float64":
        return ""
    why = f"Why the network's {fmt(network, digits)} differs from the written {fmt(written, digits)}: "
    if magnitude <= 10 * abs(written):
        return why + (f"{network_dtype} keeps about 7 significant digits, and the two are "
                      f"{fmt(abs(network - written), 2)} apart, enough to round the last digit shown differently.")
    return why + (f"the terms nearly cancel (their sizes add up to {fmt(magnitude, 3)}, their sum is "
                  f"{fmt(written, 3)}), and the network adds them in {network_dtype}, whose rounding errors (about "
                  "1e-7 of the terms' size) reach the digits shown. The written sum is computed in float64 from the "
                  "same float32 numbers: it is the exact sum of the terms listed.")


# ---------------------------------------------------------------------------------------------------------------
# Forward


@dataclass(frozen=True)
class ConvCell:
    """out[o, i, j] = sum over (c, u, v) of kernel[c, u, v] * patch[c, u, v] + bias."""

    out_channel: int
    row: int
    col: int
    kernel: np.ndarray  # (C_in, kh, kw)
    patch: np.ndarray  # (C_in, kh, kw): input under the kernel, 0 where it lies on padding
    products: np.ndarray  # (C_in, kh, kw), float64: each exact
    partials: np.ndarray  # (C_in,): each input channel's sum of products, in float64
    bias: float
    total: float  # products.sum() + bias, in float64 (sum_of_products)
    recorded: float  # the value in the recorded feature map: the network's own arithmetic (float32 in the app)
    top: int  # the kernel window's first input row (negative where it lies on padding)
    left: int  # ... and first input column

    @property
    def products_sum(self) -> float:
        """The sum of every product (all input channels), without the bias, in float64."""
        return math.fsum(self.products.ravel().tolist())

    @property
    def magnitude(self) -> float:
        """The sum of |product| and |bias|: how large float32's rounding errors of this sum can be."""
        return math.fsum([*np.abs(self.products).ravel().tolist(), abs(self.bias)])


def conv_cell(rec: LayerRecord, out_channel: int, row: int, col: int) -> ConvCell:
    """Recompute one output cell of a Conv2d record as a sum of products."""
    if rec.kind != "conv" or rec.weight is None or rec.input.ndim != 3:
        raise ValueError(f"{rec.name} is not a 2-D convolution")
    if rec.hparams.get("groups", 1) != 1:
        raise ValueError("grouped convolutions are not written out")
    (sh, sw), (ph, pw), (dh, dw) = (_pair(rec.hparams[k]) for k in ("stride", "padding", "dilation"))
    kernel = rec.weight[out_channel]  # (C_in, kh, kw)
    _, kh, kw = kernel.shape
    padded = np.pad(rec.input, ((0, 0), (ph, ph), (pw, pw)))
    r0, c0 = row * sh, col * sw
    patch = padded[:, r0:r0 + dh * (kh - 1) + 1:dh, c0:c0 + dw * (kw - 1) + 1:dw]
    products = kernel.astype(np.float64) * patch  # (C_in, kh, kw): exact for float32 operands
    bias = float(rec.bias[out_channel]) if rec.bias is not None else 0.0
    partials = np.array([sum_of_products(kernel[c], patch[c]) for c in range(kernel.shape[0])])
    return ConvCell(out_channel, row, col, kernel, patch, products, partials, bias,
                    sum_of_products(kernel, patch, bias), float(rec.output[out_channel, row, col]), r0 - ph, c0 - pw)


@dataclass(frozen=True)
class BatchNormCell:
    """y[c, i, j] = scale[c] * x[c, i, j] + shift[c] (eval mode), written in float64."""

    scale: float
    x: float
    shift: float
    total: float  # scale * x + shift in float64
    recorded: float  # the network's own output


def batchnorm_cell(rec: LayerRecord, channel: int, row: int, col: int) -> BatchNormCell:
    """One output cell of an eval-mode batch norm as scale x + shift."""
    scale, shift = float(rec.extra["scale"][channel]), float(rec.extra["shift"][channel])
    x = float(rec.input[channel, row, col])
    return BatchNormCell(scale, x, shift, sum_of_products([scale], [x], shift),
                         float(rec.output[channel, row, col]))


@dataclass(frozen=True)
class ReluSummary:
    zero_share: float  # share of units the ReLU set to 0
    dead_channels: tuple[int, ...]  # channels that are 0 everywhere for this input
    units: int


def relu_summary(rec: LayerRecord) -> ReluSummary:
    out = rec.output
    zero_share = float((out <= 0).mean())
    dead = tuple(int(c) for c in range(out.shape[0]) if out.ndim == 3 and not (out[c] > 0).any())
    return ReluSummary(zero_share, dead, int(out.size))


@dataclass(frozen=True)
class PoolWindow:
    out_row: int
    out_col: int
    top: int  # window's first input row (may be negative with padding)
    left: int
    height: int
    width: int
    arg_row: int  # the chosen (argmax) input cell
    arg_col: int
    value: float


def pool_windows(rec: LayerRecord, channel: int) -> list[PoolWindow]:
    """Each max-pool window of one channel with its argmax cell, from the recorded pool_indices."""
    if rec.kind != "maxpool" or rec.pool_indices is None:
        raise ValueError(f"{rec.name} is not a max-pool")
    (kh, kw), (sh, sw), (ph, pw) = (_pair(rec.hparams[k]) for k in ("kernel_size", "stride", "padding"))
    width_in = rec.input.shape[-1]
    idx = rec.pool_indices[channel]
    windows = []
    for i in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            flat = int(idx[i, j])
            windows.append(PoolWindow(i, j, i * sh - ph, j * sw - pw, kh, kw, flat // width_in, flat % width_in,
                                      float(rec.output[channel, i, j])))
    return windows


# ---------------------------------------------------------------------------------------------------------------
# Backward: the local rule of each layer, for one cell


@dataclass(frozen=True)
class Rule:
    """One layer's local backward rule at one cell: the formula, its terms with real numbers, and the result."""

    kind: str
    formula: str  # the rule in symbols
    worked: str  # the rule with this cell's numbers
    value: float  # the hand-computed dL/d(input) at the cell
    recorded: float  # what autograd gave (from the trace)
    terms: list[tuple[str, float, float]] = field(default_factory=list)  # (label, upstream, local) per term

    @property
    def magnitude(self) -> float:
        """The sum of the terms' |upstream x local|: how large float32's rounding errors of the value can be."""
        return math.fsum(abs(a * b) for _, a, b in self.terms) if self.terms else abs(self.value)


def loss_gradient(trace: Trace) -> np.ndarray:
    """dL/d(logits): softmax + cross-entropy gives p - onehot(target); the logit objective gives onehot."""
    onehot = np.zeros_like(trace.probs)
    onehot[trace.target] = 1.0
    return trace.probs - onehot if trace.objective == "loss" else onehot


def _fmt(v: float) -> str:
    return fmt(v, 4)


def _terms_text(terms: list[tuple[str, float, float]], limit: int = 12) -> str:
    """``a x b + c x d + ...``: the first ``limit`` products of a sum, written with their numbers."""
    return products_text([(a, b) for _, a, b in terms], limit=limit)


def _terms_sum(terms: list[tuple[str, float, float]]) -> float:
    return sum_of_products([a for _, a, _ in terms], [b for _, _, b in terms])


def backward_rule(rec: LayerRecord, cell: tuple[int, ...]) -> Rule:
    """dL/d(input) at ``cell`` (an index into rec.input) recomputed from dL/d(output) by the layer's local rule."""
    g, x = rec.grad_output, rec.input
    recorded = float(rec.grad_input[cell])
    kind = rec.kind
    if kind == "relu":
        passes = bool(x[cell] > 0)
        value = float(g[cell]) if passes else 0.0
        worked = (f"input {_fmt(float(x[cell]))} {'> 0: gradient passes' if passes else '<= 0: gradient blocked'}"
                  f" -> dL/dx = {_fmt(float(g[cell]))} x {int(passes)} = {_fmt(value)}")
        return Rule(kind, "dL/dx = dL/dy * [x > 0]", worked, value, recorded,
                    [("mask", float(g[cell]), float(passes))])
    if kind in ("dropout", "flatten"):
        value = float(g.reshape(x.shape)[cell])
        formula = "dL/dx = dL/dy (identity in eval mode)" if kind == "dropout" else "dL/dx = dL/dy, reshaped"
        return Rule(kind, formula, f"dL/dx = {_fmt(value)}", value, recorded)
    if kind in ("sigmoid", "tanh"):  # the Train a CNN page's activations: the local slope from the output y
        y, up = float(rec.output[cell]), float(g[cell])
        slope = y * (1.0 - y) if kind == "sigmoid" else 1.0 - y * y
        text = f"y (1 - y) = {_fmt(y)} x (1 - {_fmt(y)})" if kind == "sigmoid" else f"1 - y^2 = 1 - {_fmt(y)}^2"
        formula = "dL/dx = dL/dy * y (1 - y)" if kind == "sigmoid" else "dL/dx = dL/dy * (1 - y^2)"
        return Rule(kind, formula, f"slope {text} = {_fmt(slope)}; dL/dx = {_fmt(up)} x {_fmt(slope)} = "
                    f"{_fmt(up * slope)}", up * slope, recorded, [("slope", up, slope)])
    if kind not in _RULES:
        raise ValueError(f"no hand-written rule for a {kind} layer")
    return _RULES[kind](rec, cell, recorded)


def _batchnorm_rule(rec: LayerRecord, cell, recorded) -> Rule:
    c = cell[0]
    scale = float(rec.extra["scale"][c])
    up = float(rec.grad_output[cell])
    value = up * scale
    return Rule("batchnorm", "dL/dx = dL/dy * gamma / sqrt(running_var + eps)  (eval mode: a per-channel scale)",
                f"dL/dx = {_fmt(up)} x {_fmt(scale)} = {_fmt(value)}", value, recorded, [("scale", up, scale)])


def _linear_rule(rec: LayerRecord, cell, recorded) -> Rule:
    (j,) = cell
    w = rec.weight[:, j]  # (out,)
    g = rec.grad_output
    terms = [(f"g[{i}] * W[{i},{j}]", float(g[i]), float(w[i])) for i in range(len(g))]
    value = sum_of_products(g, w)
    return Rule("linear", "dL/dx = W^T g", f"dL/dx[{j}] = {_terms_text(terms)} = {_fmt(value)}", value, recorded,
                terms)


def _maxpool_rule(rec: LayerRecord, cell, recorded) -> Rule:
    c, r, col = cell
    width_in = rec.input.shape[-1]
    flat = r * width_in + col
    hits = np.argwhere(rec.pool_indices[c] == flat)
    terms = [(f"window ({i},{j})", float(rec.grad_output[c, i, j]), 1.0) for i, j in hits]
    value = math.fsum(t[1] for t in terms)
    if terms:
        worked = (f"cell ({r},{col}) is the max of {len(terms)} window(s): dL/dx = "
                  + " + ".join(_fmt(t[1]) for t in terms) + f" = {_fmt(value)}")
    else:
        worked = (f"cell ({r},{col}) is the max of no window, so no gradient reaches it: dL/dx = 0 (the cells "
                  "that won a window are the only ones that receive one)")
    return Rule("maxpool", "each window's gradient goes to its argmax cell; other cells get 0", worked, value,
                recorded, terms)


def _avgpool_rule(rec: LayerRecord, cell, recorded) -> Rule:
    c, r, col = cell
    h_in, w_in = rec.input.shape[-2:]
    h_out, w_out = rec.output.shape[-2:]
    terms = []
    for i in range(h_out):  # adaptive average pooling windows, as PyTorch defines them
        r0, r1 = (i * h_in) // h_out, -((-(i + 1) * h_in) // h_out)
        if not r0 <= r < r1:
            continue
        for j in range(w_out):
            c0, c1 = (j * w_in) // w_out, -((-(j + 1) * w_in) // w_out)
            if c0 <= col < c1:
                terms.append((f"window ({i},{j})", float(rec.grad_output[c, i, j]), 1.0 / ((r1 - r0) * (c1 - c0))))
    if "kernel_size" in rec.hparams:  # fixed-kernel AvgPool2d: recompute with its own windows
        (kh, kw), (sh, sw), (ph, pw) = (_pair(rec.hparams[k]) for k in ("kernel_size", "stride", "padding"))
        terms = [(f"window ({i},{j})", float(rec.grad_output[c, i, j]), 1.0 / (kh * kw))
                 for i in range(h_out) for j in range(w_out)
                 if i * sh - ph <= r < i * sh - ph + kh and j * sw - pw <= col < j * sw - pw + kw]
    value = _terms_sum(terms)
    worked = f"dL/dx = {_terms_text(terms, 6)} = {_fmt(value)}"
    return Rule("avgpool", "each window's gradient is split equally over its cells", worked, value, recorded, terms)


def _conv_rule(rec: LayerRecord, cell, recorded) -> Rule:
    c, r, col = cell
    (sh, sw), (ph, pw) = _pair(rec.hparams["stride"]), _pair(rec.hparams["padding"])
    w, g = rec.weight, rec.grad_output  # (O, C, kh, kw), (O, H_out, W_out)
    _, _, kh, kw = w.shape
    terms = []
    for u in range(kh):
        for v in range(kw):
            i_num, j_num = r + ph - u, col + pw - v
            if i_num % sh or j_num % sw:
                continue
            i, j = i_num // sh, j_num // sw
            if 0 <= i < g.shape[1] and 0 <= j < g.shape[2]:
                for o in range(w.shape[0]):
                    terms.append((f"g[{o},{i},{j}] * W[{o},{c},{u},{v}]", float(g[o, i, j]), float(w[o, c, u, v])))
    value = _terms_sum(terms)
    worked = (f"dL/dx[{c},{r},{col}] = sum of {len(terms)} products g x W (every output channel, every kernel "
              f"position that covered this cell) = {_terms_text(terms)} = {_fmt(value)}")
    return Rule("conv", "dX = full convolution of g with the kernel rotated 180 degrees, summed over output channels",
                worked, value, recorded, terms)


_RULES = {"batchnorm": _batchnorm_rule, "linear": _linear_rule, "maxpool": _maxpool_rule,
          "avgpool": _avgpool_rule, "conv": _conv_rule}


def conv_input_grad_full(rec: LayerRecord) -> np.ndarray:
    """dL/dX of a stride-1 conv as the textbook says: pad g by k-1, correlate with the 180-degree-rotated kernel.

    Returns (C_in, H, W); equals the recorded grad_input.
    """
    if _pair(rec.hparams["stride"]) != (1, 1) or _pair(rec.hparams.get("dilation", 1)) != (1, 1):
        raise ValueError("the full-convolution picture is shown for stride 1, dilation 1")
    w, g = rec.weight, rec.grad_output
    _, c_in, kh, kw = w.shape
    ph, pw = _pair(rec.hparams["padding"])
    g_pad = np.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
    rotated = w[:, :, ::-1, ::-1]
    full_h, full_w = g.shape[1] + kh - 1, g.shape[2] + kw - 1
    full = np.zeros((c_in, full_h, full_w))
    for u in range(kh):
        for v in range(kw):
            window = g_pad[:, u:u + full_h, v:v + full_w]  # (O, full_h, full_w)
            full += np.einsum("ohw,oc->chw", window, rotated[:, :, u, v])
    h_in, w_in = rec.input.shape[1:]
    return full[:, ph:ph + h_in, pw:pw + w_in]


def conv_weight_grad_terms(rec: LayerRecord, out_channel: int, in_channel: int, u: int, v: int) -> tuple[
        np.ndarray, np.ndarray, float]:
    """dW[o, c, u, v] = sum over output cells (i, j) of X_pad[c, i*s + u, j*s + v] * g[o, i, j].

    Returns (the input values aligned with g, g of that output channel, their summed product in float64).
    """
    (sh, sw), (ph, pw) = _pair(rec.hparams["stride"]), _pair(rec.hparams["padding"])
    g = rec.grad_output[out_channel]  # (H_out, W_out)
    padded = np.pad(rec.input[in_channel], ((ph, ph), (pw, pw)))
    h_out, w_out = g.shape
    aligned = padded[u:u + sh * (h_out - 1) + 1:sh, v:v + sw * (w_out - 1) + 1:sw]
    return aligned, g, sum_of_products(aligned, g)


# ---------------------------------------------------------------------------------------------------------------
# Architecture


@dataclass(frozen=True)
class ArchRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    receptive_field: int  # input pixels (per side) one output cell can see
    jump: int  # input pixels between neighbouring output cells


def architecture(model: nn.Module, trace: Trace) -> list[ArchRow]:
    """Per leaf layer: output shape, parameter count and receptive field, computed by the usual recurrence."""
    modules = dict(model.named_modules())
    rows = []
    rf, jump = 1, 1
    input_side = trace.input.shape[-1]
    for rec in trace.layers:
        module = modules[rec.name]
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if rec.kind in ("conv", "maxpool") or (rec.kind == "avgpool" and "kernel_size" in rec.hparams):
            k, s = _pair(rec.hparams["kernel_size"])[0], _pair(rec.hparams["stride"])[0]
            d = _pair(rec.hparams.get("dilation", 1))[0]
            rf += (d * (k - 1)) * jump
            jump *= s
        elif rec.kind == "avgpool" or rec.kind == "linear":  # global pooling / dense: sees everything
            rf = max(rf, input_side)
        rows.append(ArchRow(rec.name, rec.kind, tuple(rec.output.shape), params, min(rf, 10**6), jump))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The working the explorer writes out: softmax, global average pooling, default cells


@dataclass(frozen=True)
class SoftmaxRow:
    label: str
    logit: float
    exp: float  # e^(z - max z): the same ratios, no overflow
    prob: float  # exp / sum of exp


def softmax_rows(trace: Trace, classes: tuple[str, ...]) -> tuple[list[SoftmaxRow], float, float]:
    """p_i = e^z_i / sum_j e^z_j with the real logits, computed in float64 and shifted by max z (as torch does).

    Returns (one row per class, the shift max z, the sum of the shifted exponentials)."""
    z = np.asarray(trace.logits, dtype=np.float64)
    shift = float(z.max())
    e = np.exp(z - shift)
    total = float(e.sum())
    rows = [SoftmaxRow(classes[k], float(z[k]), float(e[k]), float(e[k] / total)) for k in range(len(z))]
    return rows, shift, total


def loss_float64(trace: Trace) -> float:
    """The cross-entropy of the trace's target recomputed in float64 from the recorded logits.

    float32 gives tiny losses (p close to 1) only 1-3 correct digits; this is the number to print beside them."""
    z = np.asarray(trace.logits, dtype=np.float64)
    shift = float(z.max())
    return float(np.log(np.exp(z - shift).sum()) + shift - z[trace.target])


@dataclass(frozen=True)
class AverageCell:
    channel: int
    values: np.ndarray  # the channel's input map
    mean: float  # what the average pool computes
    recorded: float  # the recorded output


def global_average(rec: LayerRecord, channel: int) -> AverageCell:
    """A global average pool's output for one channel written as the mean of its input map."""
    values = np.asarray(rec.input[channel], dtype=np.float64)
    return AverageCell(channel, values, float(values.mean()), float(np.asarray(rec.output).reshape(-1)[channel]))


def largest_cell(arr: np.ndarray) -> tuple[int, ...]:
    """The index of the largest |value|: a default cell where the quantity shown is not zero."""
    a = np.nan_to_num(np.abs(np.asarray(arr, dtype=np.float64)))
    return tuple(int(i) for i in np.unravel_index(int(a.argmax()), a.shape))


def weight_grad_cell(rec: LayerRecord, out_channel: int) -> tuple[int, int, int]:
    """(in_channel, u, v) of the largest |dL/dW| of one kernel: the default tap to write out."""
    c, u, v = largest_cell(rec.weight_grad[out_channel])
    return c, u, v
