"""Plotly figures for the convolution & pooling lab and the digit-sum challenge. numpy in, figures out, no streamlit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from cnnviz.handwork.conv_math import CURVES, AxisSize, DescentRecord, fmt

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
        cell_px: size of one cell in pixels.
    """
    m = np.atleast_2d(np.asarray(values, dtype=np.float64))
    h, w = m.shape
    marks, shade = set(marks), set(shade)
    for i in range(h):
        for j in range(w):
            if pad and (i < pad or j < pad or i >= h - pad or j >= w - pad):
                shade.add((i, j))
    text = [[fmt(m[i, j], digits) + (" ★" if star_marks and (i, j) in marks else "") for j in range(w)]
            for i in range(h)]
    colour = m.copy()
    for i, j in shade:
        colour[i, j] = np.nan  # grey background from the plot_bgcolor
    finite = np.abs(m[np.isfinite(m)])
    zmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = go.Figure(go.Heatmap(
        z=colour, x=list(range(w)), y=list(range(h)), text=text, texttemplate="%{text}",
        textfont={"size": 13 if cell_px >= 40 else 10, "color": "#111"}, colorscale=DIVERGING, zmin=-zmax, zmax=zmax,
        showscale=False, xgap=1, ygap=1, hovertemplate="row %{y}, col %{x}: %{text}<extra></extra>",
    ))
    for i, j in shade:
        fig.add_annotation(x=j, y=i, text=text[i][j], showarrow=False, font={"color": "#78909c", "size": 12})
    for o in outlines:
        fig.add_shape(type="rect", x0=o.left - 0.5, x1=o.left + o.width - 0.5, y0=o.top - 0.5,
                      y1=o.top + o.height - 0.5, line={"color": o.color, "width": o.line_width, "dash": o.dash})
    for i, j in marks:
        fig.add_shape(type="rect", x0=j - 0.45, x1=j + 0.45, y0=i - 0.45, y1=i + 0.45,
                      line={"color": MARK, "width": 2})
    top = 52 if title else 24
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "y": 1, "yanchor": "top", "yref": "container",
               "pad": {"t": 6, "l": 4}, "font": {"size": 14}},
        width=max(160, w * cell_px + 40),
        height=h * cell_px + top + 30, margin={"l": 30, "r": 10, "t": top, "b": 10},
        plot_bgcolor=ZERO_PAD, paper_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_xaxes(showgrid=False, zeroline=False, tickmode="array", tickvals=list(range(w)), side="top",
                     tickfont={"size": 10, "color": "#90a4ae"}, range=[-0.55, w - 0.45], fixedrange=True)
    fig.update_yaxes(showgrid=False, zeroline=False, tickmode="array", tickvals=list(range(h)),
                     tickfont={"size": 10, "color": "#90a4ae"}, range=[h - 0.45, -0.55], fixedrange=True)
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


def output_size_figure(rows: AxisSize, cols: AxisSize, position: Pos = (0, 0), cell_px: int | None = None
                       ) -> go.Figure:
    """The padded input: padding grey, input blue, never-covered cells red; a dot at the centre of every kernel
    position and the window at ``position`` (row index, column index of the kernel position) outlined."""
    hp, wp = rows.padded_width, cols.padded_width
    cell_px = cell_px or max(12, min(36, 640 // max(hp, wp)))
    z = np.ones((hp, wp))  # 1: input
    for i in range(hp):
        for j in range(wp):
            if not (rows.padding <= i < rows.padding + rows.width and cols.padding <= j < cols.padding + cols.width):
                z[i, j] = 0  # padding
            if i in rows.uncovered_padded or j in cols.uncovered_padded:
                z[i, j] = 2  # never covered
    scale = [[0, ZERO_PAD], [0.33, ZERO_PAD], [0.34, "#bbdefb"], [0.66, "#bbdefb"], [0.67, "#ef9a9a"], [1, "#ef9a9a"]]
    fig = go.Figure(go.Heatmap(z=z, zmin=0, zmax=2, colorscale=scale, showscale=False, xgap=1, ygap=1,
                               hoverinfo="skip"))
    cy = [s + (rows.kernel - 1) / 2 for s in rows.starts]
    cx = [s + (cols.kernel - 1) / 2 for s in cols.starts]
    xs, ys = np.meshgrid(cx, cy)
    fig.add_trace(go.Scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", marker={"size": 5, "color": WINDOW},
                             name="kernel centres", hovertemplate="kernel centre<extra></extra>"))
    r, c = position
    r, c = min(r, rows.out - 1), min(c, cols.out - 1)
    fig.add_shape(type="rect", x0=cols.starts[c] - 0.5, x1=cols.starts[c] + cols.kernel - 0.5,
                  y0=rows.starts[r] - 0.5, y1=rows.starts[r] + rows.kernel - 0.5,
                  line={"color": WINDOW, "width": 3})
    fig.update_layout(width=wp * cell_px + 60, height=hp * cell_px + 50, showlegend=False,
                      margin={"l": 30, "r": 10, "t": 30, "b": 10}, plot_bgcolor="white",
                      paper_bgcolor="rgba(0,0,0,0)")
    fig.update_xaxes(showgrid=False, zeroline=False, side="top", range=[-0.55, wp - 0.45], fixedrange=True,
                     title={"text": "padded column", "font": {"size": 11}})
    fig.update_yaxes(showgrid=False, zeroline=False, range=[hp - 0.45, -0.55], fixedrange=True,
                     title={"text": "padded row", "font": {"size": 11}})
    return fig


def descent_figure(rec: DescentRecord) -> go.Figure:
    """The loss curve and the path a takes on it, one numbered point per step."""
    curve = CURVES[rec.curve]
    pos = np.asarray(rec.positions)
    lo, hi = float(min(pos.min(), -3.0)), float(max(pos.max(), 3.0))
    lo, hi = max(lo, -6.0), min(hi, 6.0)  # a diverging path leaves the picture; the table keeps the numbers
    a = np.linspace(lo, hi, 400)
    fig = go.Figure(go.Scatter(x=a, y=[curve.loss(v) for v in a], mode="lines", name=curve.formula,
                               line={"color": "#546e7a"}))
    shown = [(i, p, loss) for i, (p, loss) in enumerate(zip(rec.positions, rec.losses, strict=False))
             if lo <= p <= hi]
    fig.add_trace(go.Scatter(
        x=[p for _, p, _ in shown], y=[loss for _, _, loss in shown], mode="lines+markers+text",
        text=[f"a{i}" if i < 12 else "" for i, _, _ in shown], textposition="top center",
        marker={"size": 9, "color": [i for i, _, _ in shown], "colorscale": "Viridis"},
        line={"color": "#c62828", "width": 1, "dash": "dot"}, name="a after each step",
        hovertemplate="a = %{x:.4g}<br>L(a) = %{y:.4g}<extra></extra>",
    ))
    ymax = max(curve.loss(lo), curve.loss(hi))
    fig.update_layout(height=380, margin={"l": 40, "r": 10, "t": 30, "b": 40}, xaxis_title="a",
                      yaxis_title="L(a)", legend={"orientation": "h", "y": -0.2},
                      yaxis={"range": [min(curve.loss(v) for v in a) - 0.3, min(ymax, 12.0)]})
    return fig
