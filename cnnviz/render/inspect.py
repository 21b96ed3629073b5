"""Figures of the explorer's inspectors: small matrices with their numbers (HTML tables: crisp text, no plotly
cost), whole maps with a window marked (plotly, where hovering for values pays), the gradient-size chart.

numpy in, HTML strings or plotly figures out; every plotly figure is one dict validated once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from cnnviz.numbers import fmt
from cnnviz.render.network import DIVERGING_SCALE, SEQUENTIAL_SCALE, colorize, is_signed

MARK = "#00c000"  # the selected cell / window
CHOSEN = "#e08a00"  # max-pool's chosen cell


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
    """A plotly rectangle around cells [top, top + height) x [left, left + width) of a map."""
    return {"type": "rect", "x0": left - 0.5, "x1": left + width - 0.5, "y0": top - 0.5, "y1": top + height - 0.5,
            "line": {"color": colour, "width": 3, "dash": dash}}


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


def matrix_html(arr: np.ndarray, title: str, font_px: int = 14, signed: bool | None = None, row0: int = 0,
                col0: int = 0, marks: dict[tuple[int, int], str] | None = None, digits: int = 3,
                window: tuple[int, int, int, int] | None = None, grid: tuple[int, int, int] | None = None) -> str:
    """A small matrix as an HTML table: every number in its coloured cell, rows and columns numbered.

    Args:
        arr: (H, W) values.
        title: the caption above the table.
        font_px: text size (at least 12).
        signed: blue-white-red centred on 0 (default: whether any value is negative).
        row0, col0: the index of the first row/column (a crop of a bigger map keeps its real indices).
        marks: cells (in the table's own 0-based coordinates) to outline, with their colour.
        digits: significant digits of each number.
        window: (top, left, height, width) cells, in table coordinates, framed in green.
        grid: (first row, first column, step): lines between pooling windows, in table coordinates.
    """
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float64))
    h, w = arr.shape
    signed = is_signed(arr) if signed is None else signed
    vmax = float(np.abs(arr).max()) if signed else float(arr.max())
    colours = colorize(arr, signed, vmax or 1.0)
    marks = marks or {}
    px = max(12, int(font_px))
    head = "".join(f"<th>{col0 + j}</th>" for j in range(w))
    rows = []
    for i in range(h):
        cells = []
        for j in range(w):
            r, g, b = (int(v) for v in colours[i, j])
            ink = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
            border = f"outline:3px solid {marks[(i, j)]};outline-offset:-3px;" if (i, j) in marks else ""
            if window and window[0] <= i < window[0] + window[2] and window[1] <= j < window[1] + window[3]:
                border += "box-shadow:inset 0 0 0 2px #00a000;"
            if grid and (i - grid[0]) % grid[2] == 0:
                border += "border-top:2px solid #444;"
            if grid and (j - grid[1]) % grid[2] == 0:
                border += "border-left:2px solid #444;"
            cells.append(f'<td style="background:rgb({r},{g},{b});color:{ink};{border}">{fmt(arr[i, j], digits)}</td>')
        rows.append(f"<tr><th>{row0 + i}</th>{''.join(cells)}</tr>")
    style = (f"<style>.cv-mat{{border-collapse:collapse;font-family:sans-serif;font-size:{px}px;margin:2px 0 10px}}"
             ".cv-mat td{padding:3px 5px;text-align:right;min-width:2.6em;border:1px solid #fff}"
             f".cv-mat th{{color:#777;font-weight:400;font-size:{px - 1}px;padding:0 4px}}"
             f".cv-mat caption{{text-align:left;font-weight:600;color:#333;padding-bottom:3px}}</style>")
    return (f'{style}<table class="cv-mat"><caption>{title}</caption><tr><th></th>{head}</tr>{"".join(rows)}'
            "</table>")


def bars_html(values: Sequence[float], labels: Sequence[str], highlight: int | None = None, font_px: int = 13,
              as_percent: bool = True) -> str:
    """Labelled horizontal bars (probabilities): one row per class, its value written beside its bar."""
    px = max(12, int(font_px))
    vmax = max((abs(float(v)) for v in values), default=1.0) or 1.0
    rows = []
    for k, (v, label) in enumerate(zip(values, labels, strict=True)):
        colour = "#d94f3d" if k == highlight else "#9bb0c9"
        text = f"{float(v):.1%}" if as_percent else fmt(float(v), 3)
        rows.append(f'<div style="display:flex;align-items:center;gap:6px;height:{px + 8}px">'
                    f'<span style="width:7.5em;text-align:right;overflow:hidden;white-space:nowrap">{label}</span>'
                    f'<span style="display:inline-block;height:{px - 1}px;width:{abs(float(v)) / vmax * 55:.1f}%;'
                    f'min-width:1px;background:{colour}"></span><span>{text}</span></div>')
    return f'<div style="font-family:sans-serif;font-size:{px}px">{"".join(rows)}</div>'
