"""A trace's maps packed for the browser's network view (cnnviz/components/network_view.py), once per input.

Every column (a layer's output in forward order, or the gradient at each backward slider position) is quantised to
uint8 on its own scale: value = lo + q * (hi - lo) / 255, so a decoded value is within half a step of the float it
came from. All columns' bytes are concatenated, deflated (zlib) and base64-encoded into one string the browser
inflates with DecompressionStream("deflate"). Small vectors (logits) also travel as exact floats. No streamlit.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cnnviz.engine.trace import Trace
from cnnviz.numbers import fmt
from cnnviz.render.network import _DIVERGING, _VIRIDIS, _interpolate
from cnnviz.render.overview import Column, column_scale, finite, shared_scale

LEVELS = 255  # q runs 0..255: 255 steps between lo and hi
EXACT_UP_TO = 64  # columns with at most this many values also carry them as floats (the logits, a GAP's output)


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


def pack(columns: Sequence[Column], pass_name: str, key: str, classes: Sequence[str] | None = None) -> dict:
    """The view's payload: JSON-ready, with every column's maps in one deflated base64 string.

    Args:
        columns: the columns in the order the view shows them (``forward_columns`` or ``backward_columns``).
        pass_name: "forward" or "backward".
        key: a digest of everything the maps depend on; the browser keeps payloads by it.
        classes: the class names, for a last column with one value per class.
    Returns:
        {"key", "pass", "columns": [{"name", "kind", "shape", "lo", "hi", "signed", "range" (lo and hi written),
        "norm", "offset", "size", "exact", "exact_text"}], "shared": [lo, hi], "shared_range", "classes",
        "maps": base64(zlib(uint8 bytes)), "bytes": uint8 bytes before deflate}.
    """
    meta, blobs, offset = [], [], 0
    for col in columns:
        quant = quantise(col.values, col.signed)
        exact = finite(col.values).reshape(-1).tolist() if quant.q.size <= EXACT_UP_TO else None
        meta.append({"name": col.name, "kind": col.kind, "shape": [int(s) for s in col.values.shape],
                     "lo": quant.lo, "hi": quant.hi, "signed": col.signed,
                     "range": [fmt(quant.lo, 2), fmt(quant.hi, 2)],
                     "norm": _norm(col.values), "offset": offset, "size": int(quant.q.size),
                     "exact": exact, "exact_text": [fmt(v, 3) for v in exact] if exact is not None else None})
        blobs.append(quant.q.tobytes())
        offset += quant.q.size
    raw = b"".join(blobs)
    shared = shared_scale(columns)
    return {"key": key, "pass": pass_name, "columns": meta, "shared": [shared.low, shared.high],
            "shared_range": [fmt(shared.low, 2), fmt(shared.high, 2)],
            "classes": list(classes) if classes is not None else None,
            "maps": base64.b64encode(zlib.compress(raw, 1)).decode("ascii"), "bytes": len(raw)}


def unpack(payload: dict) -> list[np.ndarray]:
    """The payload's columns as float64 arrays of their shapes (what the browser decodes; for tests and tools)."""
    raw = zlib.decompress(base64.b64decode(payload["maps"]))
    out = []
    for col in payload["columns"]:
        q = np.frombuffer(raw, np.uint8, col["size"], col["offset"])
        out.append(Quantised(q, col["lo"], col["hi"]).decode().reshape(col["shape"]))
    return out
