"""The digit-sum challenge's figures: the trials' difference histogram and enlarged digits."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def difference_histogram(differences: np.ndarray, counts: np.ndarray) -> go.Figure:
    """Bars of how many trials had each predicted-sum minus true-sum; the bar at 0 in another colour."""
    colours = ["#2e7d32" if d == 0 else "#78909c" for d in differences]
    fig = go.Figure(go.Bar(x=differences, y=counts, marker_color=colours,
                           hovertemplate="difference %{x}: %{y} trials<extra></extra>"))
    fig.update_layout(height=320, margin={"l": 40, "r": 10, "t": 20, "b": 40},
                      xaxis_title="predicted sum − true sum", yaxis_title="trials", bargap=0.1)
    fig.update_xaxes(dtick=1 if len(differences) and np.ptp(differences) <= 30 else None)
    return fig


def upscale(image: np.ndarray, factor: int = 3) -> np.ndarray:
    """Nearest-neighbour enlargement of a small (H, W) image so each pixel stays visible."""
    arr = np.asarray(image)
    return np.kron(arr, np.ones((factor, factor), dtype=arr.dtype))
