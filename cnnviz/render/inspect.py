"""Figures of the explorer's inspectors, all HTML (crisp text at any zoom, no plotly cost on the server or in the
browser): small matrices with their numbers, whole maps with a window marked (each cell's value on hover), the
probability bars and the gradient-size chart.

numpy in, HTML strings out.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cnnviz.numbers import fmt
from cnnviz.render import Html
from cnnviz.render.network import CLIP_PERCENTILE, clip_level, colorize, is_signed, ramp_css

if TYPE_CHECKING:
    from cnnviz.engine.trace import GradientCheck

MARK = "#00c000"  # the selected cell / window
CHOSEN = "#e08a00"  # max-pool's chosen cell
OUTLINE = "#e600e6"  # the input's outline over a map


def window(top: int, left: int, height: int, width: int, colour: str = MARK) -> tuple[int, int, int, int, str]:
    """A frame around cells [top, top + height) x [left, left + width) of a map (for ``map_html``)."""
    return top, left, height, width, colour


def map_html(arr: np.ndarray, title: str, font_px: int = 14, signed: bool | None = None,
             frames: Sequence[tuple[int, int, int, int, str]] = (), size_px: int = 300, vmax: float | None = None,
             outline: np.ndarray | None = None, note: str = "") -> Html:
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
        vmax: the |value| (signed) or value drawn at full colour (default: the largest); the colour bar's ends then
            read "<=" / ">=" where values go beyond it. Each cell's tooltip keeps its exact value.
        outline: an (H, W) mask whose outline is drawn over the map (``outline_svg``).
        note: a line under the colour bar (how the colours were clipped).
    """
    arr = np.asarray(arr, dtype=np.float64)
    h, w = arr.shape
    clean = np.nan_to_num(arr)
    signed = is_signed(clean) if signed is None else signed
    top = float(np.abs(clean).max() if signed else clean.max()) if clean.size else 0.0
    clipped = vmax is not None and top > vmax
    top = top if vmax is None else float(vmax)
    if signed:
        low, high, colours = -top, top, colorize(clean, True, top or 1.0)
    else:
        low, high = (float(clean.min()) if clean.size else 0.0), top
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
             ".cv-map-r{display:flex;justify-content:space-between;gap:8px}.cv-map-n{color:#555;max-width:26em}</style>")
    grid = (f'<div class="cv-map-g" style="grid-template-columns:repeat({w},{cell}px);grid-auto-rows:{cell}px;'
            f'margin-left:{gutter}px;margin-top:{px + 4}px">{cells}</div>')
    ends = (f"{'&le; ' if clipped and signed else ''}{fmt(low, 3)}", f"{'&ge; ' if clipped else ''}{fmt(high, 3)}")
    bar = (f'<div style="width:{w * cell}px;margin-left:{gutter}px"><div style="height:7px;margin-top:4px;'
           f'border-radius:2px;background:{ramp_css(signed)}"></div><div class="cv-map-r"><span>{ends[0]}</span>'
           f'<span>{ends[1]}</span></div></div>')
    lines = (outline_svg(outline, f"left:{gutter}px;top:{px + 4}px;width:{w * cell}px;height:{h * cell}px")
             if outline is not None else "")
    under = f'<div class="cv-map-n" style="margin-left:{gutter}px">{html.escape(note)}</div>' if note else ""
    return Html(f'{style}<div class="cv-map"><div class="cv-map-t">{html.escape(title)}</div>'
                f'<div class="cv-map-a">{ticks}{grid}{boxes}{lines}</div>{bar}{under}</div>')


def row_html(*parts: str, gap_px: int = 24) -> Html:
    """Figures side by side (wrapping when the page is narrow): one element for the page instead of a column each."""
    cells = "".join(f'<div style="flex:0 1 auto;min-width:0">{p}</div>' for p in parts)
    return Html(f'<div style="display:flex;flex-wrap:wrap;gap:0 {gap_px}px;align-items:flex-start">{cells}</div>')


def _runs(edges: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    flips = np.flatnonzero(np.diff(np.concatenate(([0], edges.astype(np.int8), [0]))))
    return list(zip(flips[::2].tolist(), flips[1::2].tolist(), strict=True))


def outline_path(mask: np.ndarray) -> str:
    """The SVG path (in cell units) of the cell edges between a mask's True and False cells (its outline; the
    map's own border is not drawn)."""
    m = np.pad(np.asarray(mask, dtype=bool), 1, mode="edge")
    parts = [f"M{a} {i}h{b - a}" for i, row in enumerate(m[1:, 1:-1] != m[:-1, 1:-1]) for a, b in _runs(row)]
    parts += [f"M{j} {a}v{b - a}" for j, col in enumerate((m[1:-1, 1:] != m[1:-1, :-1]).T) for a, b in _runs(col)]
    return "".join(parts)


def outline_svg(mask: np.ndarray, box_css: str, colour: str = OUTLINE) -> str:
    """A mask's outline as a thin line (1.5 screen px at any size), absolutely placed by ``box_css`` over a map: an
    SVG inside an <img> (``st.html`` removes inline SVG)."""
    h, w = np.shape(mask)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" preserveAspectRatio="none">'
           f'<path d="{outline_path(mask)}" fill="none" stroke="{colour}" stroke-width="1.5" '
           'stroke-linecap="square" vector-effect="non-scaling-stroke"/></svg>')
    src = base64.b64encode(svg.encode("ascii")).decode("ascii")
    return (f'<img class="cv-outline" alt="outline" src="data:image/svg+xml;base64,{src}" '
            f'style="position:absolute;pointer-events:none;{box_css}">')


def colour_limit(values: np.ndarray, percentile: float = CLIP_PERCENTILE) -> tuple[float, bool, str]:
    """A map's colour limit (``network.clip_level``), whether any |value| goes beyond it, and the sentence that says
    so on the figure."""
    level = clip_level(values, percentile)
    largest = float(np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64))).max()) if np.size(values) else 0.0
    if level < largest:
        return level, True, (f"colours saturate at the {percentile:g}th percentile of |value| = {fmt(level, 3)} "
                             f"(largest |value| {fmt(largest, 3)})")
    return level, False, f"colours span the largest |value|, {fmt(largest, 3)}"


def overlay_html(rgb: np.ndarray, title: str, font_px: int = 14, outline: np.ndarray | None = None,
                 signed: bool = False, vmax: float = 1.0, clipped: bool = False, note: str = "",
                 min_px: int = 300) -> Html:
    """A picture with a heat map blended over it (``network.overlay``'s output), scaled up by the browser without
    smoothing to a whole multiple of its size of at least ``min_px`` (less only where the column is narrower), the
    outline of ``outline`` over it, its colour bar (0 or -vmax to vmax; "<=" / ">=" when ``clipped``) and ``note``.
    """
    w = np.shape(rgb)[1]
    width = w * max(1, -(-int(min_px) // w))
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    src = base64.b64encode(buf.getvalue()).decode("ascii")
    lines = outline_svg(outline, "left:0;top:0;width:100%;height:100%") if outline is not None else ""
    low = f"{'&le; ' if clipped else ''}{fmt(-vmax, 3)}" if signed else "0"
    px = max(12, int(font_px))
    return Html(f'<div class="cv-ov" style="font-family:sans-serif;font-size:{px}px;color:#333;margin:2px 0 10px;'
                f'width:min(100%,{width}px)"><div style="font-weight:600;margin-bottom:3px">{html.escape(title)}</div>'
                f'<div style="position:relative"><img alt="{html.escape(title)}" src="data:image/png;base64,{src}" '
                f'style="display:block;width:100%;image-rendering:pixelated">{lines}</div>'
                f'<div style="height:7px;margin-top:4px;border-radius:2px;background:{ramp_css(signed)}"></div>'
                f'<div style="display:flex;justify-content:space-between"><span>{low}</span>'
                f'<span>{"&ge; " if clipped else ""}{fmt(vmax, 3)}</span></div>'
                f'{f"<div style=color:#555>{html.escape(note)}</div>" if note else ""}</div>')


def _tick_rules(labels: Sequence[str], px: int) -> str:
    """Container queries that show every k-th decade label, the smallest k whose labels do not touch at the axis's
    width: a label is about 0.65 em a character, and labels keep half an em apart."""
    n = len(labels) - 1
    room = (0.65 * max(len(t) for t in labels) + 0.5) * px  # px a label needs, centred on its tick
    need = [math.inf] + [n * room / k for k in range(1, n + 1)]  # need[k]: the axis width step k needs
    return "".join(f"@container (width >= {need[k]:.1f}px){'' if k == 1 else f' and (width < {need[k - 1]:.1f}px)'}"
                   f"{{.cv-n-ticks>i.k{k}{{display:block}}}}" for k in range(1, n + 1))


def norms_html(labels: Sequence[str], norms: Sequence[float], current: int | None, font_px: int = 13) -> Html:
    """The gradient's size at each position of the backprop slider, in the slider's order (loss first): one bar
    per position on a log scale, its value written beside it; the current position in orange. A tick marks each
    decade; the browser labels every k-th one, k chosen by the axis's width (CSS container queries), so labels never
    collide at any window size or text size."""
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
    n = hi - lo
    texts = [f"1e{e}" for e in range(lo, hi + 1)]
    marks = "".join(f'<b style="left:{j / n * 100:.2f}%"></b>' for j in range(n + 1))
    ticks = "".join(f'<i class="{" ".join(f"k{k}" for k in range(n + 1) if (j % k if k else j) == 0)}" '
                    f'style="left:{j / n * 100:.2f}%"><span>{t}</span></i>' for j, t in enumerate(texts))
    # one grid for all rows (rows are display:contents): the label column is as wide as the longest label, down to
    # 3 em on a narrow page, and the bars take the rest (at least 4 em)
    style = (f"<style>.cv-n{{font-family:sans-serif;font-size:{px}px;color:#222;display:grid;column-gap:6px;"
             f"grid-template-columns:minmax(3em,max-content) minmax(4em,1fr) max-content;"
             f"grid-template-rows:repeat({len(rows)},{px + 9}px) {px + 10}px auto;align-items:center}}"
             ".cv-n-row{display:contents}"
             ".cv-n-lab{text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}"
             ".cv-n-track{height:70%;background:#f1f1f1;position:relative}"
             ".cv-n-track>span{display:block;height:100%}"
             ".cv-n-val{white-space:nowrap}"
             ".cv-n-ticks{align-self:stretch;position:relative;container-type:inline-size;color:#555}"
             ".cv-n-ticks>b{position:absolute;top:0;height:4px;border-left:1px solid #888}"
             ".cv-n-ticks>i{position:absolute;top:5px;transform:translateX(-50%);font-style:normal;"
             "white-space:nowrap;line-height:1;display:none}.cv-n-ticks>i.k0{display:block}"
             ".cv-n-cap{grid-column:1/-1;text-align:center;color:#555}"
             f"{_tick_rules(texts, px)}</style>")
    axis = (f'<div class="cv-n-row"><span class="cv-n-lab"></span><span class="cv-n-ticks">{marks}{ticks}</span>'
            '<span class="cv-n-val"></span></div>')
    return Html(f'{style}<div class="cv-n">{"".join(rows)}{axis}'
                '<div class="cv-n-cap">||gradient||, log scale: one tick per factor of 10</div></div>')


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
