"""render.py: the figures carry exactly the numbers they are given (the page's hover values and printed cells)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz.render import network as render


def test_heatmap_carries_the_values_and_a_symmetric_scale_when_signed():
    arr = np.array([[-2.0, 0.5], [1.0, 3.0]])
    fig = render.heatmap(arr, "t", cell=(1, 0))
    trace = fig.data[0]
    np.testing.assert_array_equal(np.asarray(trace.z), arr)
    assert (trace.zmin, trace.zmax, trace.zmid) == (-3.0, 3.0, 0.0)
    assert fig.layout.yaxis.autorange == "reversed"  # row 0 at the top, like the matrix
    (shape,) = fig.layout.shapes
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (-0.5, 0.5, 0.5, 1.5)  # the outlined cell is (row 1, col 0)
    assert fig.layout.xaxis.dtick == 1 and fig.layout.title.text == "t"


def test_heatmap_unsigned_uses_the_sequential_scale_and_no_forced_range():
    fig = render.heatmap(np.arange(6.0).reshape(2, 3))
    assert fig.data[0].zmin is None and fig.data[0].zmid is None
    assert fig.layout.shapes == ()


def test_small_matrix_prints_every_cell():
    fig = render.small_matrix(np.array([[1.23456, -2.0]]), "k")
    trace = fig.data[0]
    assert trace.texttemplate == "%{z:.3g}" and trace.showscale is False and trace.textfont.size == 13
    np.testing.assert_array_equal(np.asarray(trace.z), [[1.23456, -2.0]])


def test_pool_and_route_figures_mark_each_windows_argmax():
    import torch

    from cnnviz.engine.capture import capture
    from cnnviz.engine.layer_rules import pool_windows

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    rec = capture(net, torch.randn(1, 1, 4, 4)).layers[0]
    x = np.asarray(rec.input[0])
    windows = pool_windows(rec, 0)
    fig = render.pool_figure(x, windows)
    assert len(fig.layout.shapes) == len(windows)
    marks = fig.data[1]
    for w, r, c in zip(windows, marks.y, marks.x, strict=True):
        assert x[r, c] == x[w.top:w.top + w.height, w.left:w.left + w.width].max()
    route = render.route_figure(np.zeros((4, 4)), windows)
    assert list(route.data[1].x) == list(marks.x)


@pytest.mark.parametrize("signed", [True, False])
def test_colorize_ends_of_the_scale(signed):
    arr = np.array([[-1.0, 0.0, 1.0]]) if signed else np.array([[0.0, 0.5, 1.0]])
    rgb = render.colorize(arr, signed)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    table = render._DIVERGING if signed else render._VIRIDIS
    np.testing.assert_array_equal(rgb[0, 0], table[0])
    np.testing.assert_array_equal(rgb[0, 2], table[-1])


def test_colour_lookup_equals_interpolation_between_the_scale_entries_within_a_level_and_a_half():
    values = np.random.default_rng(0).uniform(-0.2, 1.2, 50_000)  # outside [0, 1] is clipped
    for table in (render._VIRIDIS, render._DIVERGING):
        exact = np.clip(values, 0, 1) * (len(table) - 1)
        lo = np.floor(exact).astype(int)
        hi = np.minimum(lo + 1, len(table) - 1)
        want = table[lo] + (table[hi] - table[lo]) * (exact - lo)[:, None]
        got = render._lut(values, table).astype(np.float64)
        # < 1 from rounding down to uint8, <= 0.39 from the 1024-level quantization: half a level of the steepest
        # stretch (79 colour units over 1/10 of the diverging scale is 0.77 per level)
        assert np.abs(got - want).max() < 1.4


def test_prob_bars_grad_norms_and_training_curve_carry_their_numbers():
    probs = np.array([0.1, 0.7, 0.2])
    fig = render.prob_bars(probs, ["a", "b", "c"], pred=1, target=2)
    np.testing.assert_array_equal(np.asarray(fig.data[0].y), probs)
    assert list(fig.data[0].marker.color) == ["#9bb0c9", "#d94f3d", "#9bb0c9"]
    assert fig.layout.annotations[0].x == "c" and fig.layout.annotations[0].y == 0.2
    assert render.prob_bars(probs, ["a", "b", "c"], pred=1, target=1).layout.annotations == ()
    norms = render.grad_norms(["x", "y"], [0.0, 2.5], current=0)
    assert list(norms.data[0].y) == [1e-30, 2.5] and norms.layout.yaxis.type == "log"
    curve = render.training_curve([{"epoch": 1, "train_accuracy": 90.0, "test_accuracy": 95.0},
                                   {"epoch": 2, "train_accuracy": 97.0, "test_accuracy": 98.5}])
    assert [list(t.y) for t in curve.data] == [[90.0, 97.0], [95.0, 98.5]]
