"""The network overview: every layer of one pass side by side, as HTML (real text that stays legible at any zoom,
each layer's channels as one small PNG at native resolution, scaled up by the browser without smoothing).

Records in, an HTML string out; no streamlit. ``overview_html`` is pure and deterministic, so callers cache it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cnnviz.numbers import fmt
from cnnviz.render import Html
from cnnviz.render.network import _DIVERGING, _VIRIDIS, _interpolate, ramp_css

MAX_ROWS = 8  # tiles per column of a layer before another column of tiles is added


@dataclass(frozen=True)
class Column:
    """One layer of the strip: its label, its tensor (C, H, W) or (K,), and what kind of layer made it."""

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
    """The per-layer scale of ``values``, or the shared scale of the whole strip when one is given."""
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


def _grid(c: int) -> tuple[int, int]:
    cols = max(1, math.ceil(c / MAX_ROWS))
    return cols, math.ceil(c / cols)


_LEVELS = 255  # palette entries per scale; entry 255 is the white gap between tiles


def _palette(signed: bool) -> list[int]:
    table = _DIVERGING if signed else _VIRIDIS
    colours = _interpolate(np.linspace(0.0, 1.0, _LEVELS), table)  # (255, 3) uint8
    return [*colours.reshape(-1).tolist(), 255, 255, 255]


_PALETTES = {True: _palette(True), False: _palette(False)}


def tiles_png(maps: np.ndarray, scale: Scale) -> tuple[bytes, int, int]:
    """Every channel of (C, H, W) as one palette PNG at native resolution, 1 px white gaps, channels row by row.

    A palette image (one byte per pixel, 255 colour levels) is about a third of the size of an RGB one and
    quicker to encode; the page sends one per layer. Returns (PNG bytes, tiles per row, rows)."""
    maps = finite(maps)
    c, h, w = maps.shape
    cols, rows = _grid(c)
    if scale.signed:
        vmax = max(abs(scale.low), abs(scale.high)) or 1.0
        level = 0.5 + maps * np.float32(0.5 / vmax)
    else:
        level = (maps - np.float32(scale.low)) * np.float32(1.0 / ((scale.high - scale.low) or 1.0))
    index = np.rint(np.clip(level, 0.0, 1.0) * (_LEVELS - 1)).astype(np.uint8)  # (C, H, W)
    # every tile with its 1 px gap right and below, in one array: (rows, cols, H + 1, W + 1) -> one picture
    tiles = np.full((rows * cols, h + 1, w + 1), _LEVELS, dtype=np.uint8)
    tiles[:c, :h, :w] = index
    canvas = tiles.reshape(rows, cols, h + 1, w + 1).transpose(0, 2, 1, 3).reshape(rows * (h + 1), cols * (w + 1))
    canvas = np.ascontiguousarray(canvas[:-1, :-1])  # no gap after the last row and column
    image = Image.fromarray(canvas, mode="P")
    image.putpalette(_PALETTES[scale.signed])
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), cols, rows


def _tile_px(h: int) -> int:
    return 20 if h >= 14 else 16 if h >= 7 else 12


def _column_html(index: int, col: Column, scale: Scale, classes: Sequence[str] | None, probs: np.ndarray | None,
                 label_px: int) -> str:
    shape = "×".join(map(str, col.values.shape))
    head = (f'<div class="cv-name">{index}. {html.escape(col.name)}</div>'
            f'<div class="cv-kind">{html.escape(col.kind)} · {shape}</div>')
    values = np.asarray(col.values)
    if values.ndim == 3 and values.shape[1] * values.shape[2] > 1:
        png, cols, rows = tiles_png(values, scale)
        c, h, _ = values.shape
        px = _tile_px(h) * (3 if c == 1 else 1)  # a single map (the input) at a readable size
        width, height = cols * (px + 1), rows * (px + 1)
        first = [str(r * cols) for r in range(rows)]
        step = 1 if px >= 16 else 2
        labels = "".join(f'<div style="height:{(px + 1) * step}px">{first[r]}</div>'
                         for r in range(0, rows, step))
        body = (f'<div class="cv-body"><div class="cv-rows" title="first channel of each row">{labels}</div>'
                f'<img alt="{html.escape(col.name)}: {c} channels" title="{c} channels, {cols} per row, '
                f'row by row" width="{width}" height="{height}" src="data:image/png;base64,'
                f'{base64.b64encode(png).decode()}"></div>')
    else:
        flat = values.reshape(-1)
        names = list(classes) if classes is not None and len(classes) == len(flat) else [str(k) for k in
                                                                                           range(len(flat))]
        vmax = float(np.abs(np.nan_to_num(flat)).max()) or 1.0
        rows_html = []
        for k, v in enumerate(flat[:64]):
            share = abs(float(v)) / vmax * 100
            colour = "#c0392b" if v < 0 else "#2e6fb0"
            p = f" · p {fmt(float(probs[k]), 2)}" if probs is not None and len(probs) == len(flat) else ""
            rows_html.append(f'<div class="cv-vec"><span class="cv-vlab">{html.escape(names[k])}</span>'
                             f'<span class="cv-vbar" style="width:{share:.0f}%;background:{colour}"></span>'
                             f'<span class="cv-vval">{fmt(float(v), 3)}{p}</span></div>')
        if len(flat) > 64:
            rows_html.append(f'<div class="cv-kind">... {len(flat) - 64} more</div>')
        body = f'<div class="cv-vecs">{"".join(rows_html)}</div>'
    bar = (f'<div class="cv-bar" style="background:{ramp_css(scale.signed)}"></div>'
           f'<div class="cv-range"><span>{fmt(scale.low, 2)}</span><span>{fmt(scale.high, 2)}</span></div>')
    return f'<div class="cv-col" data-layer="{index}">{head}{body}{bar}</div>'


_STYLE = """<style>
.cv-strip {display:flex; flex-wrap:wrap; gap:10px 8px; align-items:flex-start; font-family:sans-serif;
  font-size:%(px)dpx; color:#222;}
.cv-col {border:2px solid #e3e3e3; border-radius:6px; padding:4px 5px; min-width:76px; background:#fff;}
.cv-name {font-weight:600; white-space:nowrap; font-size:%(px)dpx;}
.cv-kind {color:#555; white-space:nowrap; font-size:%(px)dpx;}
.cv-body {display:flex; gap:3px; margin-top:3px;}
.cv-rows {color:#777; text-align:right; font-size:%(small)dpx; line-height:1;}
.cv-body img {image-rendering:pixelated; image-rendering:crisp-edges;}
.cv-bar {height:7px; margin-top:4px; border-radius:2px;}
.cv-range {display:flex; justify-content:space-between; gap:6px; color:#444; font-size:%(px)dpx;}
.cv-vecs {margin-top:3px; min-width:170px;}
.cv-vec {display:flex; align-items:center; gap:4px; height:%(row)dpx;}
.cv-vlab {width:5.2em; overflow:hidden; text-overflow:ellipsis; white-space:nowrap;}
.cv-vbar {display:inline-block; height:9px; min-width:1px; max-width:5em;}
.cv-vval {white-space:nowrap; color:#333;}
.cv-legend {font-family:sans-serif; font-size:%(px)dpx; margin-bottom:6px; color:#333;}
</style>"""


def overview_html(columns: Sequence[Column], shared: bool = False, classes: Sequence[str] | None = None,
                  probs: np.ndarray | None = None, label_px: int = 13, legend: str = "") -> Html:
    """Every column of a pass as one wrapping strip (``current_css`` frames one of them).

    Args:
        columns: the layers in the order they are shown (forward order, or the backprop slider's order).
        shared: one colour scale for every column instead of one per column.
        classes, probs: labels (and probabilities) for the last, vector-shaped column.
        label_px: text size (at least 12; larger in projector mode).
        legend: a line of text above the strip.
    """
    label_px = max(12, int(label_px))
    scale = shared_scale(columns) if shared else None
    parts = []
    for i, col in enumerate(columns):
        s = column_scale(col.values, col.signed, scale)
        parts.append(_column_html(i + 1, col, s, classes, probs if i == len(columns) - 1 else None, label_px))
    style = _STYLE % {"px": label_px, "small": max(12, label_px - 1), "row": label_px + 5}
    head = f'<div class="cv-legend">{html.escape(legend)}</div>' if legend else ""
    return Html(f'{style}{head}<div class="cv-strip">{"".join(parts)}</div>')


def current_css(scope: str, current: int) -> Html:
    """A style that frames column ``current`` (0-based) of the strip inside the element with CSS class ``scope``,
    in orange: a few bytes to send when the inspected layer or the slider moves, instead of the whole strip."""
    return Html(f'<style>.{scope} .cv-col[data-layer="{int(current) + 1}"] {{border-color:#e08a00; '
                "box-shadow:0 0 0 2px #ffd180;}</style>")
