"""Figures of the explorer's inspectors, all HTML (crisp text at any zoom, no plotly cost on the server or in the
browser): small matrices with their numbers, whole maps with a window marked (each cell's value on hover), the
probability bars and the gradient-size chart.

numpy in, HTML strings out.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cnnviz.numbers import fmt
from cnnviz.render import Html
from cnnviz.render.network import colorize, is_signed, ramp_css

if TYPE_CHECKING:
    from cnnviz.engine.trace import GradientCheck

MARK = "#00c000"  # the selected cell / window
CHOSEN = "#e08a00"  # max-pool's chosen cell


def window(top: int, left: int, height: int, width: int, colour: str = MARK) -> tuple[int, int, int, int, str]:
    """A frame around cells [top, top + height) x [left, left + width) of a map (for ``map_html``)."""
    return top, left, height, width, colour


def map_html(arr: np.ndarray, title: str, font_px: int = 14, signed: bool | None = None,
             frames: Sequence[tuple[int, int, int, int, str]] = (), size_px: int = 300) -> Html:
    """A whole feature map as a grid of coloured cells, each cell's value in its tooltip (hover), with frames drawn
    on it (a kernel window, a selected cell), its rows and columns numbered every 5, and its colour bar.

    HTML, not plotly: the browser lays out a few hundred divs in a few milliseconds, where a plotly heatmap costs
    the server ~8 ms to build and the browser ~100 ms to draw on every update.

    Args:
        arr: (H, W) values.
        title: the caption above the map.
        font_px: text size (at least 12).
        signed: blue-white-red centred on 0 (default: whether any value is negative); else purple-yellow, min to max.
        frames: (top, left, height, width, colour) cell rectangles to outline (``window`` makes them).
        size_px: about how wide the map is drawn (cells are 4 to 18 px).
    """
    arr = np.asarray(arr, dtype=np.float64)
    h, w = arr.shape
    clean = np.nan_to_num(arr)
    signed = is_signed(clean) if signed is None else signed
    if signed:
        vmax = float(np.abs(clean).max()) if clean.size else 0.0
        low, high, colours = -vmax, vmax, colorize(clean, True, vmax or 1.0)
    else:
        low, high = (float(clean.min()), float(clean.max())) if clean.size else (0.0, 0.0)
        colours = colorize(clean, False, high)
    px = max(12, int(font_px))
    cell = int(min(18, max(4, size_px // max(h, w, 1))))
    hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours.reshape(-1, 3).tolist()]
    cells = "".join(f'<i style="background:{c}" title="({k // w}, {k % w}) {fmt(v, 4)}"></i>'
                    for k, (c, v) in enumerate(zip(hexes, arr.ravel().tolist(), strict=True)))
    gutter = 2.4 * px  # room for the row numbers, in px
    ticks = "".join(f'<span style="left:{gutter + j * cell}px;top:0">{j}</span>' for j in range(0, w, 5))
    ticks += "".join(f'<span style="left:0;top:{px + 4 + i * cell}px;width:{gutter - 4}px;text-align:right">{i}'
                     "</span>" for i in range(0, h, 5))
    boxes = "".join(f'<b style="left:{gutter + left * cell - 2}px;top:{px + 4 + top * cell - 2}px;'
                    f'width:{fw * cell}px;height:{fh * cell}px;border:2px solid {colour}"></b>'
                    for top, left, fh, fw, colour in frames)
    style = (f"<style>.cv-map{{font-family:sans-serif;font-size:{px}px;color:#333;margin:2px 0 10px}}"
             ".cv-map-t{font-weight:600;margin-bottom:2px}"
             ".cv-map-a{position:relative;display:inline-block}"
             ".cv-map-a>span{position:absolute;color:#777;line-height:1}"
             ".cv-map-a>b{position:absolute;box-sizing:content-box;pointer-events:none}"
             ".cv-map-g{display:grid}.cv-map-g>i{display:block}"
             ".cv-map-r{display:flex;justify-content:space-between;gap:8px}</style>")
    grid = (f'<div class="cv-map-g" style="grid-template-columns:repeat({w},{cell}px);grid-auto-rows:{cell}px;'
            f'margin-left:{gutter}px;margin-top:{px + 4}px">{cells}</div>')
    bar = (f'<div style="width:{w * cell}px;margin-left:{gutter}px"><div style="height:7px;margin-top:4px;'
           f'border-radius:2px;background:{ramp_css(signed)}"></div><div class="cv-map-r"><span>{fmt(low, 3)}</span>'
           f'<span>{fmt(high, 3)}</span></div></div>')
    return Html(f'{style}<div class="cv-map"><div class="cv-map-t">{html.escape(title)}</div>'
                f'<div class="cv-map-a">{ticks}{grid}{boxes}</div>{bar}</div>')


def row_html(*parts: str, gap_px: int = 24) -> Html:
    """Figures side by side (wrapping when the page is narrow): one element for the page instead of a column each."""
    cells = "".join(f'<div style="flex:0 1 auto;min-width:0">{p}</div>' for p in parts)
    return Html(f'<div style="display:flex;flex-wrap:wrap;gap:0 {gap_px}px;align-items:flex-start">{cells}</div>')


def norms_html(labels: Sequence[str], norms: Sequence[float], current: int | None, font_px: int = 13) -> Html:
    """The gradient's size at each position of the backprop slider, in the slider's order (loss first): one bar
    per position on a log scale (a decade per tick), its value written beside it; the current position in orange."""
    px = max(12, int(font_px))
    finite = [float(v) for v in norms if np.isfinite(v) and v > 0]
    lo = int(np.floor(np.log10(min(finite)))) if finite else -8
    hi = max(int(np.ceil(np.log10(max(finite)))) if finite else 1, lo + 1)
    rows = []
    for k, (label, v) in enumerate(zip(labels, norms, strict=True)):
        v = float(v)
        share = (np.log10(v) - lo) / (hi - lo) * 100 if np.isfinite(v) and v > 0 else 0.0
        colour = CHOSEN if k == current else "#3b6fb6"
        weight = "font-weight:600;" if k == current else ""
        rows.append(f'<div class="cv-n-row" style="{weight}"><span class="cv-n-lab">{html.escape(label)}</span>'
                    f'<span class="cv-n-track"><span style="width:{max(share, 0.5):.1f}%;background:{colour}">'
                    f'</span></span><span class="cv-n-val">{fmt(v, 3)}</span></div>')
    decades = "".join(f"<span>1e{e}</span>" for e in range(lo, hi + 1))
    style = (f"<style>.cv-n{{font-family:sans-serif;font-size:{px}px;color:#222}}"
             f".cv-n-row{{display:flex;align-items:center;gap:6px;height:{px + 9}px}}"
             ".cv-n-lab{width:9.5em;text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}"
             ".cv-n-track{flex:1;height:70%;background:#f1f1f1;position:relative}"
             ".cv-n-track>span{display:block;height:100%}"
             ".cv-n-val{width:5.5em;white-space:nowrap}"
             ".cv-n-axis{display:flex;justify-content:space-between;margin:2px 5.5em 0 10em;color:#555}</style>")
    return Html(f'{style}<div class="cv-n">{"".join(rows)}<div class="cv-n-axis">{decades}</div>'
                f'<div style="text-align:center;color:#555">||gradient||, log scale (a decade per step)</div></div>')


def matrix_html(arr: np.ndarray, title: str, font_px: int = 14, signed: bool | None = None, row0: int = 0,
                col0: int = 0, marks: dict[tuple[int, int], str] | None = None, digits: int = 3,
                window: tuple[int, int, int, int] | None = None, grid: tuple[int, int, int] | None = None) -> Html:
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
    return Html(f'{style}<table class="cv-mat"><caption>{title}</caption><tr><th></th>{head}</tr>'
                f'{"".join(rows)}</table>')


def bars_html(values: Sequence[float], labels: Sequence[str], highlight: int | None = None, font_px: int = 13,
              as_percent: bool = True) -> Html:
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
    return Html(f'<div style="font-family:sans-serif;font-size:{px}px">{"".join(rows)}</div>')


def gradient_check_text(check: GradientCheck) -> str:
    """The finite-difference check as the page writes it (markdown): autograd against the central difference and,
    where the one-sided slopes differ (a kink: a ReLU input at exactly 0, a max-pool tie), that the objective has
    no derivative at this point, with both slopes."""
    line = (f"autograd {fmt(check.autograd, 8)} vs finite difference {fmt(check.finite_difference, 8)} "
            f"(relative error {check.relative_error:.1e}, eps {check.eps:g}, float64)")
    if not check.kink:
        return line
    left, right = check.left_slope, check.right_slope
    agrees = [name for name, slope in (("left", left), ("right", right))
              if abs(check.autograd - slope) <= 1e-4 * max(abs(slope), abs(check.autograd), 1e-12)]
    which = (f"autograd's number is the {agrees[0]} slope" if len(agrees) == 1 else
             "autograd's number is neither slope (several kinks meet here)" if not agrees else "")
    return (f"{line}\n\n**No derivative here:** the objective has a kink at this point (within eps of it: somewhere "
            "downstream a ReLU's input is 0 or a max-pool window has a tie), so its slope depends on the side: "
            f"**{fmt(left, 6)}** to the left, **{fmt(right, 6)}** to the right. The central difference is their mean; "
            f"autograd follows PyTorch's convention (ReLU'(0) = 0, a tie goes to the window's first cell)"
            f"{': ' + which if which else ''}. The relative error measures that gap, not a fault of autograd.")
