"""Figures of the explorer's inspectors: small matrices with their numbers, maps with a window marked.

numpy in, plotly figures out; every figure is one dict validated once (plotly's update_* calls are slow).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from cnnviz.render.network import DIVERGING_SCALE, SEQUENTIAL_SCALE, is_signed

MARK = "#00c000"  # the selected cell / window
CHOSEN = "#e08a00"  # max-pool's chosen cell


def _rect(top: float, left: float, height: float, width: float, colour: str, dash: str = "solid") -> dict:
    return {"type": "rect", "x0": left - 0.5, "x1": left + width - 0.5, "y0": top - 0.5, "y1": top + height - 0.5,
            "line": {"color": colour, "width": 3, "dash": dash}}


def matrix_figure(arr: np.ndarray, title: str, font_px: int = 14, signed: bool | None = None,
                  row0: int = 0, col0: int = 0, shapes: Sequence[dict] = (), digits: int = 3,
                  cell_px: int = 44, showscale: bool = True) -> go.Figure:
    """A small matrix with every number in its cell and a colour bar; rows and columns labelled by their index
    (``row0``/``col0`` offset the labels of a crop)."""
    arr = np.asarray(arr, dtype=np.float64)
    h, w = arr.shape
    signed = is_signed(arr) if signed is None else signed
    vmax = float(np.abs(arr).max()) or 1.0
    trace = {"type": "heatmap", "z": arr, "x": list(range(col0, col0 + w)), "y": list(range(row0, row0 + h)),
             "colorscale": DIVERGING_SCALE if signed else SEQUENTIAL_SCALE, "showscale": showscale,
             "texttemplate": f"%{{z:.{digits}g}}", "textfont": {"size": font_px},
             "hovertemplate": "row %{y}, col %{x}<br>%{z:.6g}<extra></extra>",
             "colorbar": {"thickness": 10, "tickfont": {"size": font_px - 1}}}
    if signed:
        trace.update(zmin=-vmax, zmax=vmax, zmid=0.0)
    side = max(w, h)
    size = min(560, max(220, cell_px * side + 90))
    layout = {"height": size, "margin": {"l": 10, "r": 10, "t": 44, "b": 10},
              "title": {"text": title, "font": {"size": font_px + 1}, "y": 0.98},
              "font": {"size": font_px},
              "xaxis": {"side": "top", "dtick": 1, "showgrid": False, "zeroline": False, "constrain": "domain"},
              "yaxis": {"autorange": "reversed", "dtick": 1, "showgrid": False, "zeroline": False,
                        "scaleanchor": "x", "constrain": "domain"},
              "shapes": [_shift(s, row0, col0) for s in shapes]}
    return go.Figure({"data": [trace], "layout": layout})


def _shift(shape: dict, row0: int, col0: int) -> dict:
    s = dict(shape)
    for k in ("x0", "x1"):
        s[k] = s[k] + col0
    for k in ("y0", "y1"):
        s[k] = s[k] + row0
    return s


def map_figure(arr: np.ndarray, title: str, font_px: int = 14, signed: bool | None = None,
               shapes: Sequence[dict] = (), height: int = 340) -> go.Figure:
    """A whole feature map (hover for values) with shapes drawn on it (a kernel window, a selected cell)."""
    arr = np.asarray(arr, dtype=np.float64)
    signed = is_signed(arr) if signed is None else signed
    trace = {"type": "heatmap", "z": arr, "colorscale": DIVERGING_SCALE if signed else SEQUENTIAL_SCALE,
             "hovertemplate": "row %{y}, col %{x}<br>%{z:.4g}<extra></extra>",
             "colorbar": {"thickness": 10, "tickfont": {"size": font_px - 1}}}
    if signed:
        vmax = float(np.abs(arr).max()) or 1.0
        trace.update(zmin=-vmax, zmax=vmax, zmid=0.0)
    layout = {"height": height, "margin": {"l": 10, "r": 10, "t": 44, "b": 10}, "font": {"size": font_px},
              "title": {"text": title, "font": {"size": font_px + 1}, "y": 0.98},
              "xaxis": {"side": "top", "showgrid": False, "zeroline": False, "constrain": "domain"},
              "yaxis": {"autorange": "reversed", "showgrid": False, "zeroline": False, "scaleanchor": "x",
                        "constrain": "domain"},
              "shapes": list(shapes)}
    return go.Figure({"data": [trace], "layout": layout})


def window(top: int, left: int, height: int, width: int, colour: str = MARK, dash: str = "solid") -> dict:
    """A rectangle around cells [top, top + height) x [left, left + width) of a map."""
    return _rect(top, left, height, width, colour, dash)


def grid_lines(top: int, left: int, rows: int, cols: int, step: int, colour: str = "#555555") -> list[dict]:
    """Thin lines between the pooling windows of a crop (every ``step`` cells, from (top, left))."""
    lines = []
    for k in range(rows // step + 1):
        y = top + k * step - 0.5
        lines.append({"type": "line", "x0": left - 0.5, "x1": left + cols - 0.5, "y0": y, "y1": y,
                      "line": {"color": colour, "width": 1}})
    for k in range(cols // step + 1):
        x = left + k * step - 0.5
        lines.append({"type": "line", "x0": x, "x1": x, "y0": top - 0.5, "y1": top + rows - 0.5,
                      "line": {"color": colour, "width": 1}})
    return lines


def norms_figure(labels: Sequence[str], norms: Sequence[float], current: int | None, font_px: int = 13,
                 height: int = 420) -> go.Figure:
    """The gradient's size at each position of the backprop slider, in the slider's order (loss first),
    every position labelled, a log axis with a tick per decade."""
    values = [max(float(v), 1e-30) if np.isfinite(v) else None for v in norms]
    colours = ["#e08a00" if i == current else "#3b6fb6" for i in range(len(values))]
    finite = [v for v in values if v]
    lo = int(np.floor(np.log10(min(finite)))) if finite else -8
    hi = int(np.ceil(np.log10(max(finite)))) if finite else 1
    hi = max(hi, lo + 1)
    bar = {"type": "bar", "y": list(labels), "x": values, "orientation": "h", "marker": {"color": colours},
           "hovertemplate": "%{y}: %{x:.3g}<extra></extra>"}
    layout = {"height": max(height, 18 * len(values) + 80), "margin": {"l": 10, "r": 10, "t": 30, "b": 40},
              "font": {"size": font_px}, "bargap": 0.15,
              "yaxis": {"autorange": "reversed", "tickfont": {"size": font_px}, "automargin": True, "dtick": 1},
              "xaxis": {"type": "log", "range": [lo, hi], "dtick": 1, "exponentformat": "power",
                        "title": {"text": "||gradient|| (log scale)"}, "tickfont": {"size": font_px}}}
    return go.Figure({"data": [bar], "layout": layout})
