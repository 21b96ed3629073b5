"""Plotly figures for the backprop-by-hand pages: numbers and records in, figures out, no streamlit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from cnnviz.handwork.mlp import LRRun

_LINE = "#3b6fb6"
_MARK = "#d94f3d"
_PALETTE = ("#3b6fb6", "#e08a00", "#2e9e5b", "#8e44ad", "#d94f3d", "#17a2b8", "#6c757d", "#b8860b", "#c2185b",
            "#00897b", "#5d4037", "#283593")


def _layout(fig: go.Figure, title: str, y_title: str, log_y: bool, height: int, legend: dict,
            font_px: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": font_px + 2}}, font={"size": font_px},
        height=height, margin={"l": 60, "r": 20, "t": 60, "b": 50}, template="plotly_white",
        xaxis_title="training step", yaxis_title=y_title, hovermode="closest", legend=legend,
    )
    # explicit sizes: Streamlit's chart theme would otherwise set ticks and legend to 12 px
    fig.update_xaxes(tickfont={"size": font_px}, title_font={"size": font_px})
    fig.update_yaxes(tickfont={"size": font_px}, title_font={"size": font_px})
    fig.update_layout(legend_font={"size": font_px}, hoverlabel_font={"size": font_px})
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def loss_curve_figure(losses: Sequence[float], current_step: int, loss_name: str = "loss",
                      diverged_at: int | None = None, log_y: bool = False, height: int = 320,
                      font_px: int = 14) -> go.Figure:
    """The loss at every step, with ``current_step`` marked; a diverged run ends with an x at its last finite step.

    Args:
        losses: (n_steps,) loss per step; non-finite entries are left out of the line.
        current_step: the step the slider shows.
        loss_name: y-axis title, e.g. "L" or "E_total".
        diverged_at: first step with inf/nan, or None.
        log_y: logarithmic y axis.
        font_px: text size (ui.text_px() on a page).
    """
    y = np.asarray(losses, dtype=np.float64)  # (n_steps,)
    steps = np.arange(len(y))
    finite = np.isfinite(y)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps[finite], y=y[finite], mode="lines+markers" if len(y) <= 40 else "lines",
                             name=loss_name, line={"color": _LINE, "width": 2},
                             hovertemplate=f"step %{{x}}<br>{loss_name} = %{{y:.6g}}<extra></extra>"))
    if 0 <= current_step < len(y) and finite[current_step]:
        fig.add_vline(x=current_step, line={"color": _MARK, "width": 1, "dash": "dot"})
        fig.add_trace(go.Scatter(x=[current_step], y=[y[current_step]], mode="markers", name=f"step {current_step}",
                                 marker={"color": _MARK, "size": 12, "line": {"color": "white", "width": 2}},
                                 hovertemplate=f"step %{{x}}<br>{loss_name} = %{{y:.6g}}<extra>current</extra>"))
    if diverged_at is not None and finite.any():
        last = int(steps[finite][-1])
        fig.add_trace(go.Scatter(x=[last], y=[y[last]], mode="markers+text", name="diverged",
                                 marker={"symbol": "x", "size": 12, "color": _MARK},
                                 text=[f"diverged at step {diverged_at}"], textposition="top left",
                                 hoverinfo="skip"))
    legend = {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0}
    return _layout(fig, f"{loss_name} over training", loss_name, log_y, height, legend, font_px)


def lr_comparison_figure(runs: Sequence[LRRun], loss_name: str = "loss", log_y: bool = False,
                         height: int = 380, font_px: int = 14) -> go.Figure:
    """One loss curve per learning rate. A diverged run is drawn up to its last finite loss and ends with an x;
    its legend entry says "diverged at step k"."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        color = _PALETTE[i % len(_PALETTE)]
        y = np.asarray(run.losses, dtype=np.float64)  # (n_finite_steps,)
        label = f"lr = {run.learning_rate:g}"
        if run.diverged_at is not None:
            label += f" (diverged at step {run.diverged_at})"
        elif run.stuck_at is not None:
            label += f" (stuck from step {run.stuck_at})"
        fig.add_trace(go.Scatter(x=np.arange(len(y)), y=y, mode="lines", name=label, line={"color": color, "width": 2},
                                 hovertemplate=f"{label}<br>step %{{x}}: %{{y:.6g}}<extra></extra>"))
        if run.diverged_at is not None:
            x_end = max(len(y) - 1, 0)
            y_end = y[-1] if len(y) else math.nan
            fig.add_trace(go.Scatter(x=[x_end], y=[y_end], mode="markers", showlegend=False,
                                     marker={"symbol": "x", "size": 12, "color": color},
                                     hovertemplate=f"{label}<extra></extra>"))
    legend = {"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.02}
    return _layout(fig, "Loss curves for several learning rates", loss_name, log_y, height, legend, font_px)
