"""The digit-sum challenge's figures: the trials' difference histogram and enlarged digits."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def difference_histogram(differences: np.ndarray, counts: np.ndarray, font_px: int = 14) -> go.Figure:
    """Bars of how many trials had each predicted-sum minus true-sum; the bar at 0 in another colour.

    The count axis is logarithmic and every bar carries its count, so a difference that happened in 3 of 1,000
    trials stays visible beside the bar at 0 (on a linear axis it is a line one pixel high). Differences that never
    happened get no bar.

    Args:
        differences: (k,) every difference from the smallest to the largest seen.
        counts: (k,) how many trials had each.
        font_px: text size (ui.text_px() on a page).
    """
    differences, counts = np.asarray(differences), np.asarray(counts)
    seen = counts > 0
    colours = ["#2e7d32" if d == 0 else "#5c7c8a" for d in differences[seen]]
    fig = go.Figure(go.Bar(x=differences[seen], y=counts[seen], marker_color=colours, text=counts[seen],
                           textposition="outside", cliponaxis=False,
                           hovertemplate="difference %{x}: %{y} trials<extra></extra>"))
    top = float(counts.max()) if len(counts) else 1.0
    fig.update_layout(height=340, margin={"l": 60, "r": 10, "t": 30, "b": 50}, font={"size": font_px},
                      xaxis_title="predicted sum − true sum", yaxis_title="trials (log scale)", bargap=0.15)
    fig.update_yaxes(type="log", range=[-0.1, np.log10(max(top, 1.0)) + 0.35],  # just under 1 to above the top
                     dtick=1, tickfont={"size": font_px}, title_font={"size": font_px})  # 1, 10, 100: no small 2s, 5s
    fig.update_xaxes(dtick=1 if len(differences) and np.ptp(differences) <= 30 else None,
                     tickfont={"size": font_px}, title_font={"size": font_px})
    fig.update_traces(textfont={"size": font_px})
    return fig


def upscale(image: np.ndarray, factor: int = 3) -> np.ndarray:
    """Nearest-neighbour enlargement of a small (H, W) image so each pixel stays visible."""
    arr = np.asarray(image)
    return np.kron(arr, np.ones((factor, factor), dtype=arr.dtype))
