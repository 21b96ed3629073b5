"""A trace's maps packed for the browser's network view (cnnviz/components/network_view.py), once per input.

Each column (a layer's output in forward order, or the gradient at each backward slider position) is quantised to
uint8 on its own scale (value = lo + q * (hi - lo) / 255), all deflated into one base64 string; small vectors also
travel as floats. Given the trace, the payload adds the input picture and every cell's receptive field. No streamlit.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cnnviz.engine.trace import Trace
from cnnviz.numbers import fmt
from cnnviz.render.network import _DIVERGING, _VIRIDIS, _interpolate

LEVELS = 255  # q runs 0..255: 255 steps between lo and hi
EXACT_UP_TO = 64  # columns with at most this many values also carry them as floats (the logits, a GAP's output)


@dataclass(frozen=True)
class Column:
    """One column of the network view: its label, its tensor (C, H, W) or (K,), and what kind of layer made it."""

    name: str
    kind: str
    values: np.ndarray
    signed: bool


@dataclass(frozen=True)
class Scale:
    """The colour scale of one column: the limits its colours span."""

    signed: bool
    low: float
    high: float


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 with NaN and infinities replaced (0, and the largest float32), copying only if needed."""
    arr = np.asarray(values, dtype=np.float32)
    return arr if np.isfinite(arr).all() else np.nan_to_num(arr)


def column_scale(values: np.ndarray, signed: bool, shared: Scale | None = None) -> Scale:
    """The per-layer scale of ``values``, or the shared scale of every column when one is given."""
    if shared is not None:
        return shared
    arr = finite(values)
    if not arr.size:
        return Scale(signed, 0.0, 0.0)
    if signed:
        vmax = float(np.abs(arr).max())
        return Scale(True, -vmax, vmax)
    return Scale(False, float(arr.min()), float(arr.max()))


def shared_scale(columns: Sequence[Column]) -> Scale:
    """One scale for every layer, so vanishing and exploding values show as faint or saturated columns."""
    vmax = max((float(np.abs(finite(c.values)).max()) for c in columns if c.values.size), default=0.0)
    return Scale(True, -vmax, vmax)



def forward_columns(trace: Trace, kind_names: Mapping[str, str] | None = None) -> list[Column]:
    """Each layer's output, in forward order (the forward view's steps), its kind named by ``kind_names``."""
    names = kind_names or {}
    return [Column(r.name, names.get(r.kind, r.kind), r.output, bool((r.output < 0).any())) for r in trace.layers]


def backward_columns(trace: Trace) -> list[Column]:
    """The gradient at each backward slider position (app_pages/explorer_views/backward.py ``positions``): dL/dlogits
    at the loss, then dL/d(input) each layer passes on, from the last layer to the first, then dL/d(pixels).

    Their norms are the backward view's "size of the gradient at each step" (``norm_rows``)."""
    layers = trace.layers
    cols = [Column("loss", "dL/dlogits", layers[-1].grad_output, True)]
    cols += [Column(r.name, "dL/d input", r.grad_input, True) for r in reversed(layers)]
    return [*cols, Column("input pixels", "dL/d pixels", trace.input_grad, True)]


@dataclass(frozen=True)
class Quantised:
    """One column as bytes: ``q`` (uint8, the column's values in C order) and its scale."""

    q: np.ndarray
    lo: float
    hi: float

    def decode(self) -> np.ndarray:
        return self.lo + self.q.astype(np.float64) * ((self.hi - self.lo) / LEVELS)


def quantise(values: np.ndarray, signed: bool) -> Quantised:
    """``values`` as uint8 on their own range: [-max|v|, max|v|] for signed columns (0 stays at the middle of the
    colour scale), [min, max] otherwise. NaN counts as 0 and infinities as float32's extremes."""
    scale = column_scale(values, signed)
    arr = finite(values).reshape(-1)
    lo, hi = scale.low, scale.high
    span = hi - lo
    if not span > 0 or not np.isfinite(span):
        return Quantised(np.zeros(arr.shape, np.uint8), lo, lo)
    level = (arr.astype(np.float64) - lo) * (LEVELS / span)
    return Quantised(np.rint(np.clip(level, 0, LEVELS)).astype(np.uint8), lo, hi)  # (C*H*W,)


def _norm(values: np.ndarray) -> float:
    """The Euclidean norm in float64, without BLAS (whose threads cost more than the sum on a busy server)."""
    flat = finite(values).reshape(-1).astype(np.float64)
    return math.sqrt(float(np.einsum("i,i->", flat, flat)))


def palette(signed: bool) -> list[int]:
    """The colour scale as 256 RGB triples, flat: entry q colours level q of a column's (or the shared) range."""
    return _interpolate(np.linspace(0.0, 1.0, 256), _DIVERGING if signed else _VIRIDIS).reshape(-1).tolist()


# ------------------------------------------------------------------------------------------------ receptive fields
# A "space" is where one tensor's cells live: space 0 the input picture, space m + 1 layer m's output. A cell of space
# s reads, along each axis (channels, rows, columns), a run of indices of space t < s; the runs compose layer by layer.

ELEMENTWISE = frozenset({"relu", "batchnorm", "dropout", "sigmoid", "tanh", "leakyrelu", "gelu", "elu", "silu",
                         "identity"})
Grid = tuple[int, int, int]  # (channels, rows, columns): a map's shape, or a vector of K values as (K, 1, 1)


@dataclass(frozen=True)
class Axis:
    """Output index i reads input indices lo[i]..hi[i] along one axis. ``affine`` = (jump, pad, extent) when that is
    lo = max(0, i * jump - pad), hi = min(n_in - 1, i * jump - pad + extent - 1): three numbers instead of two lists."""

    lo: np.ndarray
    hi: np.ndarray
    affine: tuple[int, int, int] | None

    def chains(self) -> bool:
        """Runs that never shrink back and leave no gap: the cells of a run of outputs read one run of inputs."""
        return bool((np.diff(self.lo) >= 0).all() and (np.diff(self.hi) >= 0).all()
                    and (self.lo[1:] <= self.hi[:-1] + 1).all())

    def then(self, inner: Axis) -> Axis:
        """This axis followed by ``inner`` (the layer before): the runs this one reads, read in turn."""
        aff = None
        if self.affine and inner.affine:
            (j2, p2, e2), (j1, p1, e1) = self.affine, inner.affine
            aff = (j2 * j1, p2 * j1 + p1, (e2 - 1) * j1 + e1)
        return Axis(inner.lo[self.lo], inner.hi[self.hi], aff)

    def encode(self, n_in: int) -> list:
        """[jump, pad, extent] when that reproduces every run exactly, else [lo list, hi list]."""
        if self.affine:
            jump, pad, extent = self.affine
            start = np.arange(len(self.lo)) * jump - pad
            if (np.maximum(start, 0) == self.lo).all() and (np.minimum(start + extent - 1, n_in - 1) == self.hi).all():
                return [int(jump), int(pad), int(extent)]
        return [self.lo.tolist(), self.hi.tolist()]


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _same(n: int) -> Axis:
    return Axis(np.arange(n), np.arange(n), (1, 0, 1))


def _whole(n_out: int, n_in: int) -> Axis:
    return Axis(np.zeros(n_out, np.int64), np.full(n_out, n_in - 1), (0, 0, n_in))


def _window(n_out: int, n_in: int, k: int, s: int, p: int, d: int) -> Axis | None:
    """A sliding window (convolution, pooling): output i reads i*s - p + d*t, t < k, inside the input (zero
    padding outside, which no cell depends on). None when a dilated window's inside cells are not one run."""
    taps = np.arange(n_out)[:, None] * s - p + d * np.arange(k)[None, :]  # (n_out, k)
    inside = (taps >= 0) & (taps < n_in)
    if not inside.any(1).all() or (d > 1 and (inside.sum(1) > 1).any()):
        return None
    lo = np.where(inside, taps, n_in).min(1)
    hi = np.where(inside, taps, -1).max(1)
    return Axis(lo, hi, (s, p, d * (k - 1) + 1))


def _adaptive(n_out: int, n_in: int) -> Axis:
    """Adaptive pooling's windows: floor(i * n_in / n_out) to ceil((i + 1) * n_in / n_out) - 1."""
    i = np.arange(n_out)
    lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out) - 1
    s = n_in // n_out
    return Axis(lo, hi, (s, 0, s) if n_in % n_out == 0 else None)


def _groups(c_out: int, c_in: int, groups: int) -> Axis:
    per_in, per_out = c_in // groups, c_out // groups
    lo = (np.arange(c_out) // per_out) * per_in
    return Axis(lo, lo + per_in - 1, (0, 0, c_in) if groups == 1 else None)


def _padding(hp: dict, k: tuple[int, int], d: tuple[int, int]) -> tuple[int, int]:
    pad = hp.get("padding", 0)
    if pad == "valid":
        return 0, 0
    if pad == "same":
        return d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2
    return _pair(pad)


def _relation(kind: str, hp: dict, grid: Grid, out_shape: tuple[int, ...]) -> tuple[Grid, tuple[Axis, ...]] | None:
    """A layer's output grid and, per axis, the input runs each output index reads (None: not known here)."""
    c, h, w = grid
    if len(out_shape) == 1:
        k = out_shape[0]
        if (kind == "flatten" or kind in ELEMENTWISE) and k == c * h * w:  # a vector keeps its cells' places
            return grid, (_same(c), _same(h), _same(w))
        if kind == "linear":
            return (k, 1, 1), (_whole(k, c), _whole(1, h), _whole(1, w))
        return None
    if len(out_shape) != 3:
        return None
    co, ho, wo = out_shape
    if kind in ELEMENTWISE:
        axes = (_same(c), _same(h), _same(w)) if out_shape == grid else None
    elif kind == "conv" or (kind in ("maxpool", "avgpool") and "kernel_size" in hp):
        ks, st = _pair(hp["kernel_size"]), _pair(hp.get("stride") or hp["kernel_size"])
        dl = _pair(hp.get("dilation", 1))
        pd = _padding(hp, ks, dl)
        chans = _groups(co, c, int(hp.get("groups", 1))) if kind == "conv" else (_same(c) if co == c else None)
        axes = (chans, _window(ho, h, ks[0], st[0], pd[0], dl[0]), _window(wo, w, ks[1], st[1], pd[1], dl[1]))
    elif kind == "avgpool" and co == c:  # adaptive
        axes = (_same(c), _adaptive(ho, h), _adaptive(wo, w))
    else:
        return None
    return (out_shape, axes) if axes and all(a is not None for a in axes) else None


Layout = tuple[tuple[int, ...], tuple[tuple[str, tuple, tuple[int, ...], tuple[int, ...]], ...]]


def _fields(layout: Layout) -> tuple[list, list]:
    """Per space: its grid, and per earlier space its three encoded axes (None where the chain is not known)."""
    input_shape, layers = layout
    grids: list[Grid | None] = [tuple(input_shape) if len(input_shape) == 3 else None]
    rels: list[tuple[Axis, ...] | None] = []
    for kind, hp, _, out_shape in layers:
        rel = _relation(kind, dict(hp), grids[-1], out_shape) if grids[-1] is not None else None
        grids.append(rel[0] if rel else None)
        rels.append(rel[1] if rel else None)
    fields: list[list | None] = [[]]
    for s in range(1, len(grids)):
        row: list = []
        axes = rels[s - 1]
        for t in range(s - 1, -1, -1):  # from the layer just before back to the picture
            if axes is None:
                row.append(None)
                continue
            row.append([a.encode(n) for a, n in zip(axes, grids[t], strict=True)])
            inner = rels[t - 1] if t > 0 else None
            axes = tuple(a.then(b) for a, b in zip(axes, inner, strict=True)) \
                if inner is not None and all(b.chains() for b in inner) else None
        fields.append(row[::-1])  # indexed by the earlier space t
    return [list(g) if g else None for g in grids], fields


@lru_cache(maxsize=16)
def _geometry(layout: Layout) -> str:
    grids, fields = _fields(layout)
    text = json.dumps({"grids": grids, "fields": fields}, separators=(",", ":"))
    return base64.b64encode(zlib.compress(text.encode("ascii"), 9)).decode("ascii")


def _layout(trace: Trace) -> Layout:
    """The layers' kinds, settings and shapes, up to the first layer that does not read the one before (a branch):
    the geometry depends on these alone, so it is worked out once per network."""
    layers, before = [], trace.input
    for rec in trace.layers:
        if rec.input.shape != before.shape or not np.array_equal(rec.input, before):
            break
        hp = tuple(sorted((k, v) for k, v in rec.hparams.items() if isinstance(v, (int, float, str, tuple))))
        layers.append((rec.kind, hp, tuple(rec.input.shape), tuple(rec.output.shape)))
        before = rec.output
    return tuple(trace.input.shape), tuple(layers)


def _spaces(columns: Sequence[Column], pass_name: str, trace: Trace) -> list[int] | None:
    """Each column's space: forward column i is layer i's output; backward, the loss is the logits' and "dL/d
    input" of layer r is layer r's input (layer r - 1's output), the pixels the picture's."""
    names = [r.name for r in trace.layers]
    count = len(names)
    if pass_name == "forward" and [c.name for c in columns] == names:
        return list(range(1, count + 1))
    if pass_name == "backward" and [c.name for c in columns] == ["loss", *names[::-1], "input pixels"]:
        return [count, *range(count - 1, -1, -1), 0]
    return None


def geometry(payload: dict) -> dict | None:
    """The payload's {"grids", "fields"} (it travels deflated: a few hundred bytes instead of 12-15 KB of JSON)."""
    if not payload.get("geometry"):
        return None
    return json.loads(zlib.decompress(base64.b64decode(payload["geometry"])))


def receptive_field(geo: dict | None, space: int, cell: tuple[int, int, int],
                    earlier: int) -> list[tuple[int, int]] | None:
    """The cells of space ``earlier`` that ``cell`` (channel, row, column) of ``space`` depends on: the first and
    last index along each axis, decoded from ``geometry(payload)`` as the browser does; None where not known."""
    if geo is None:
        return None
    grids, fields = geo["grids"], geo["fields"]
    spans = fields[space][earlier] if space < len(fields) and fields[space] else None
    if spans is None:
        return None
    out = []
    for spec, i, n in zip(spans, cell, grids[earlier], strict=True):
        if isinstance(spec[0], list):
            out.append((spec[0][i], spec[1][i]))
        else:
            jump, pad, extent = spec
            out.append((max(0, i * jump - pad), min(n - 1, i * jump - pad + extent - 1)))
    return out


def pack(columns: Sequence[Column], pass_name: str, key: str, classes: Sequence[str] | None = None,
         trace: Trace | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> dict:
    """The view's payload: JSON-ready, with every column's maps in one deflated base64 string.

    Args:
        columns: the columns in the order the view shows them (``forward_columns`` or ``backward_columns``).
        pass_name: "forward" or "backward".
        key: a digest of everything the maps depend on; the browser keeps payloads by it.
        classes: the class names, for a last column with one value per class.
        trace: the trace the columns came from: adds the input picture and the receptive fields.
        mean, std: the normalisation, to draw the picture in its own colours (else stretched to its range).
    Returns:
        {"key", "pass", "columns": [{"name", "kind", "shape", "lo", "hi", "signed", "range" (lo and hi written),
        "norm", "offset", "size", "exact", "exact_text", "space"}], "shared": [lo, hi], "shared_range", "classes",
        "input": {"shape", "lo", "hi", "offset", "size", "mean", "std"} or None, "geometry": base64(zlib(JSON
        {"grids", "fields"})) or None (``receptive_field`` reads it), "maps": base64(zlib(uint8 bytes)), "bytes":
        uint8 bytes before deflate}.
    """
    meta, blobs, offset = [], [], 0
    spaces = _spaces(columns, pass_name, trace) if trace is not None else None
    for i, col in enumerate(columns):
        quant = quantise(col.values, col.signed)
        exact = finite(col.values).reshape(-1).tolist() if quant.q.size <= EXACT_UP_TO else None
        meta.append({"name": col.name, "kind": col.kind, "shape": [int(s) for s in col.values.shape],
                     "lo": quant.lo, "hi": quant.hi, "signed": col.signed,
                     "range": [fmt(quant.lo, 2), fmt(quant.hi, 2)],
                     "norm": _norm(col.values), "offset": offset, "size": int(quant.q.size),
                     "exact": exact, "exact_text": [fmt(v, 3) for v in exact] if exact is not None else None,
                     "space": spaces[i] if spaces else None})
        blobs.append(quant.q.tobytes())
        offset += quant.q.size
    picture, geo = None, None
    if trace is not None:
        quant = quantise(trace.input, signed=False)  # (C, H, W): the normalised picture, stretched to its range
        picture = {"shape": [int(s) for s in trace.input.shape], "lo": quant.lo, "hi": quant.hi, "offset": offset,
                   "size": int(quant.q.size), "mean": list(mean) if mean else None, "std": list(std) if std else None}
        blobs.append(quant.q.tobytes())
        if spaces:
            geo = _geometry(_layout(trace))
    raw = b"".join(blobs)
    shared = shared_scale(columns)
    return {"key": key, "pass": pass_name, "columns": meta, "shared": [shared.low, shared.high],
            "shared_range": [fmt(shared.low, 2), fmt(shared.high, 2)],
            "classes": list(classes) if classes is not None else None, "input": picture,
            "geometry": geo,
            "maps": base64.b64encode(zlib.compress(raw, 1)).decode("ascii"), "bytes": len(raw)}


def unpack(payload: dict) -> list[np.ndarray]:
    """The payload's columns as float64 arrays of their shapes (what the browser decodes; for tests and tools)."""
    raw = zlib.decompress(base64.b64decode(payload["maps"]))
    out = []
    for col in payload["columns"]:
        q = np.frombuffer(raw, np.uint8, col["size"], col["offset"])
        out.append(Quantised(q, col["lo"], col["hi"]).decode().reshape(col["shape"]))
    return out
