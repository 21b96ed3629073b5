"""Plotly figures for the convolution & pooling lab: records and matrices in, figures out, no streamlit.

Every figure takes ``text_px``, the size of its smallest text (the page passes ``ui.text_px()``: at least 12 px,
larger in projector mode); cells grow with it so their numbers fit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from cnnviz.handwork.conv_math import AxisSize
from cnnviz.handwork.conv_nets import CURVES, DescentRecord
from cnnviz.numbers import fmt

Pos = tuple[int, int]

# Light ends so black numbers stay readable on every cell.
DIVERGING = [[0.0, "#7fa9d9"], [0.5, "#ffffff"], [1.0, "#e8927c"]]
WINDOW = "#1b5e20"  # outline of the window being looked at
MARK = "#c62828"  # argmax cells, cells that collect from several windows
ZERO_PAD = "#eceff1"


@dataclass(frozen=True)
class Outline:
    """A rectangle around cells ``[top, top + height) x [left, left + width)``."""

    top: int
    left: int
    height: int = 1
    width: int = 1
    color: str = WINDOW
    dash: str = "solid"
    line_width: float = 3.0


def matrix_figure(
    values: np.ndarray,
    title: str = "",
    *,
    outlines: Iterable[Outline] = (),
    marks: Iterable[Pos] = (),
    shade: Iterable[Pos] = (),
    pad: int = 0,
    digits: int = 3,
    cell_px: int = 46,
    star_marks: bool = True,
    text_px: int = 13,
) -> go.Figure:
    """An annotated heatmap of a small matrix: each cell shows its number.

    Args:
        values: (H, W) matrix.
        title: shown above.
        outlines: rectangles drawn around groups of cells (a kernel window, a pooling window).
        marks: cells drawn with a red border (and a ★ when ``star_marks``): argmax winners.
        shade: cells given a grey background and grey number (e.g. zeros a stride inserted).
        pad: width of a zero-padding border, drawn in grey.
        digits: significant digits in the cell text.
        cell_px: size of one cell in pixels (at least enough for ``text_px`` numbers of ``digits`` digits).
        text_px: size of the numbers; titles and indices are sized from it.
    """
    m = np.atleast_2d(np.asarray(values, dtype=np.float64))
    h, w = m.shape
    text_px = max(int(text_px), 12)
    marks, shade = set(marks), set(shade)
    for i in range(h):
        for j in range(w):
            if pad and (i < pad or j < pad or i >= h - pad or j >= w - pad):
                shade.add((i, j))
    text = [[fmt(m[i, j], digits) + (" ★" if star_marks and (i, j) in marks else "") for j in range(w)]
            for i in range(h)]
    longest = max(len(t) for row in text for t in row)
    cell_px = max(cell_px, int(0.62 * text_px * longest) + 10, 2 * text_px + 8)
    colour = m.copy()
    for i, j in shade:
        colour[i, j] = np.nan  # grey background from the plot_bgcolor
    finite = np.abs(m[np.isfinite(m)])
    zmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = go.Figure(go.Heatmap(
        z=colour, x=list(range(w)), y=list(range(h)), text=text, texttemplate="%{text}",
        textfont={"size": text_px, "color": "#111"}, colorscale=DIVERGING, zmin=-zmax, zmax=zmax,
        showscale=False, xgap=1, ygap=1, hovertemplate="row %{y}, col %{x}: %{text}<extra></extra>",
    ))
    for i, j in shade:
        fig.add_annotation(x=j, y=i, text=text[i][j], showarrow=False, font={"color": "#607d8b", "size": text_px})
    for o in outlines:
        fig.add_shape(type="rect", x0=o.left - 0.5, x1=o.left + o.width - 0.5, y0=o.top - 0.5,
                      y1=o.top + o.height - 0.5, line={"color": o.color, "width": o.line_width, "dash": o.dash})
    for i, j in marks:
        fig.add_shape(type="rect", x0=j - 0.45, x1=j + 0.45, y0=i - 0.45, y1=i + 0.45,
                      line={"color": MARK, "width": 2})
    top = 2 * text_px + 26 if title else text_px + 12
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 1, "yanchor": "top", "yref": "container",
               "pad": {"t": 6, "l": 4}, "font": {"size": text_px + 2}},
        width=max(160, int(0.62 * (text_px + 2) * len(title)) + 40, w * cell_px + text_px + 40),
        height=h * cell_px + top + 30, margin={"l": text_px + 18, "r": 10, "t": top, "b": 10},
        plot_bgcolor=ZERO_PAD, paper_bgcolor="rgba(0,0,0,0)", font={"size": text_px},
    )
    fig.update_xaxes(showgrid=False, zeroline=False, tickmode="array", tickvals=list(range(w)), side="top",
                     tickfont={"size": text_px, "color": "#78909c"}, range=[-0.55, w - 0.45], fixedrange=True)
    fig.update_yaxes(showgrid=False, zeroline=False, tickmode="array", tickvals=list(range(h)),
                     tickfont={"size": text_px, "color": "#78909c"}, range=[h - 0.45, -0.55], fixedrange=True)
    return fig


def window_outline(positions: Sequence[Pos], color: str = WINDOW) -> list[Outline]:
    """Outlines around the cells of a window: one rectangle when they form a block, else one per cell."""
    if not positions:
        return []
    rows = sorted({p[0] for p in positions})
    cols = sorted({p[1] for p in positions})
    block = (rows == list(range(rows[0], rows[-1] + 1)) and cols == list(range(cols[0], cols[-1] + 1))
             and len(set(positions)) == len(rows) * len(cols))
    if block:
        return [Outline(rows[0], cols[0], len(rows), len(cols), color)]
    return [Outline(i, j, 1, 1, color, line_width=2.5) for i, j in positions]


def output_size_figure(rows: AxisSize, cols: AxisSize, position: Pos = (0, 0), cell_px: int | None = None,
                       text_px: int = 12) -> go.Figure:
    """The padded input: padding grey, input blue, gaps the stride skips red, rows left over at the end orange; a
    dot at the centre of every kernel position and the window at ``position`` (kernel position row, column)
    outlined."""
    hp, wp = rows.padded_width, cols.padded_width
    text_px = max(int(text_px), 12)
    cell_px = cell_px or max(12, min(36, 640 // max(hp, wp)))
    z = np.ones((hp, wp))  # 1: input
    for i in range(hp):
        for j in range(wp):
            if not (rows.padding <= i < rows.padding + rows.width and cols.padding <= j < cols.padding + cols.width):
                z[i, j] = 0  # padding
            if i in rows.gaps or j in cols.gaps:
                z[i, j] = 2  # skipped by the stride
            if i in rows.left_over or j in cols.left_over:
                z[i, j] = 3  # left over at the end
    scale = [[0, ZERO_PAD], [0.24, ZERO_PAD], [0.25, "#bbdefb"], [0.49, "#bbdefb"], [0.5, "#ef9a9a"],
             [0.74, "#ef9a9a"], [0.75, "#ffcc80"], [1, "#ffcc80"]]
    fig = go.Figure(go.Heatmap(z=z, zmin=0, zmax=3, colorscale=scale, showscale=False, xgap=1, ygap=1,
                               hoverinfo="skip"))
    cy = [s + (rows.kernel - 1) / 2 for s in rows.starts]
    cx = [s + (cols.kernel - 1) / 2 for s in cols.starts]
    xs, ys = np.meshgrid(cx, cy)
    fig.add_trace(go.Scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", marker={"size": 6, "color": WINDOW},
                             name="kernel centres", hovertemplate="kernel centre<extra></extra>"))
    r, c = position
    r, c = min(r, rows.out - 1), min(c, cols.out - 1)
    fig.add_shape(type="rect", x0=cols.starts[c] - 0.5, x1=cols.starts[c] + cols.kernel - 0.5,
                  y0=rows.starts[r] - 0.5, y1=rows.starts[r] + rows.kernel - 0.5,
                  line={"color": WINDOW, "width": 3})
    fig.update_layout(width=wp * cell_px + 4 * text_px + 40, height=hp * cell_px + 4 * text_px + 30,
                      showlegend=False, margin={"l": 3 * text_px + 10, "r": 10, "t": 3 * text_px + 10, "b": 10},
                      plot_bgcolor="white", paper_bgcolor="rgba(0,0,0,0)", font={"size": text_px})
    fig.update_xaxes(showgrid=False, zeroline=False, side="top", range=[-0.55, wp - 0.45], fixedrange=True,
                     title={"text": "padded column", "font": {"size": text_px}}, tickfont={"size": text_px})
    fig.update_yaxes(showgrid=False, zeroline=False, range=[hp - 0.45, -0.55], fixedrange=True,
                     title={"text": "padded row", "font": {"size": text_px}}, tickfont={"size": text_px})
    return fig


def descent_range(rec: DescentRecord) -> tuple[float, float]:
    """The stretch of a the plot shows: every iterate (a diverging run's jumps too) and at least [-3, 3]."""
    pos = np.asarray(rec.positions)
    lo, hi = float(min(pos.min(), -3.0)), float(max(pos.max(), 3.0))
    margin = 0.05 * (hi - lo)
    return lo - margin, hi + margin


def _spread_labels(positions: tuple[float, ...], gap: float) -> list[str]:
    """"a3" beside a point only where it does not sit on an earlier label (iterates pile up near a minimum)."""
    placed: list[float] = []
    labels = []
    for i, p in enumerate(positions):
        free = all(abs(p - q) > gap for q in placed)
        labels.append(f"a{i}" if free else "")
        placed += [p] if free else []
    return labels


def descent_figure(rec: DescentRecord, text_px: int = 12) -> go.Figure:
    """The loss curve and the path a takes on it, one numbered point per step; the axes follow the iterates."""
    curve = CURVES[rec.curve]
    text_px = max(int(text_px), 12)
    lo, hi = descent_range(rec)
    a = np.union1d(np.linspace(lo, hi, 600), np.linspace(max(lo, -3.5), min(hi, 3.5), 200))
    values = [curve.loss(v) for v in a]
    fig = go.Figure(go.Scatter(x=a, y=values, mode="lines", name=curve.formula, line={"color": "#546e7a"}))
    fig.add_trace(go.Scatter(
        x=list(rec.positions), y=list(rec.losses), mode="lines+markers+text",
        text=_spread_labels(rec.positions, (hi - lo) / 25),
        textposition="top center", textfont={"size": text_px},
        marker={"size": 10, "color": list(range(len(rec.positions))), "colorscale": "Viridis"},
        line={"color": "#c62828", "width": 1, "dash": "dot"}, name="a after each step",
        hovertemplate="a = %{x:.6g}<br>L(a) = %{y:.6g}<extra></extra>",
    ))
    low = min(min(values), min(rec.losses))
    high = max(rec.losses) if max(rec.losses) > 12.0 else min(max(values), 12.0)
    fig.update_layout(height=380 + 4 * text_px, margin={"l": 4 * text_px + 20, "r": 10, "t": 30, "b": 40},
                      xaxis_title="a", yaxis_title="L(a)", legend={"orientation": "h", "y": -0.25},
                      font={"size": text_px},
                      xaxis={"range": [lo, hi]}, yaxis={"range": [low - 0.05 * (high - low) - 0.3,
                                                                  high + 0.08 * (high - low)]})
    return fig
