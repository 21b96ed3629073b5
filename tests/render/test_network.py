"""render: the figures and HTML carry exactly the numbers they are given (hover values, printed cells, ranges)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cnnviz.numbers import fmt
from cnnviz.render import inspect as figs
from cnnviz.render import network as render
from cnnviz.render.network_data import Column, Scale, column_scale, shared_scale


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


def test_norms_html_writes_each_norm_on_a_log_scale_and_marks_the_current_position():
    html = figs.norms_html(["loss", "y", "z"], [0.0, 2.5, 2.5e-3], current=1)
    assert re.findall(r'<span class="cv-n-lab">([^<]+)</span>', html) == ["loss", "y", "z"]
    assert re.findall(r'<span class="cv-n-val">([^<]+)</span>', html) == ["0", "2.5", "0.0025"]
    widths = [float(w) for w in re.findall(r'<span style="width:([\d.]+)%;background:', html)]
    # decades 1e-3 .. 1e1: log10(2.5) + 3 of 4 decades, log10(2.5e-3) + 3 of 4; a zero norm gets a sliver
    assert widths == pytest.approx([0.5, (np.log10(2.5) + 3) / 4 * 100, (np.log10(2.5e-3) + 3) / 4 * 100], abs=0.06)
    assert html.count(figs.CHOSEN) == 1 and re.findall(r"<span>1e(-?\d+)</span>", html) == ["-3", "-2", "-1", "0", "1"]


def test_map_html_has_every_cell_with_its_value_and_colour_and_the_frames():
    arr = np.array([[-2.0, 0.5, 1.0], [0.0, 1e-9, 2.0]])
    html = figs.map_html(arr, "t", frames=[figs.window(0, 1, 2, 2)])
    cells = re.findall(r'<i style="background:(#[0-9a-f]{6})" title="\((\d+), (\d+)\) ([^"]+)"></i>', html)
    assert [(int(r), int(c), v) for _, r, c, v in cells] == [(i, j, fmt(arr[i, j], 4)) for i in range(2)
                                                             for j in range(3)]
    rgb = render.colorize(arr, True, 2.0).reshape(-1, 3)
    hexes = [bytes(int(v) for v in c).hex() for c in rgb]
    assert [h for h, *_ in cells] == ["#" + h for h in hexes]
    assert hexes[0] == bytes(int(v) for v in render._DIVERGING[0]).hex()  # -2 is the scale's end: the darkest blue
    cell = int(re.search(r"repeat\(3,(\d+)px\)", html).group(1))
    frame = re.search(r'<b style="left:[^;]+;top:[^;]+;width:(\d+)px;height:(\d+)px;border:2px solid ([^"]+)', html)
    assert (int(frame.group(1)), int(frame.group(2)), frame.group(3)) == (2 * cell, 2 * cell, figs.MARK)
    assert re.findall(r'<div class="cv-map-r"><span>([^<]+)</span><span>([^<]+)</span>', html) == [("-2", "2")]
    unsigned = figs.map_html(np.array([[1.0, 3.0]]), "u")
    assert re.findall(r'<div class="cv-map-r"><span>([^<]+)</span><span>([^<]+)</span>', unsigned) == [("1", "3")]


def test_training_curve_carries_its_numbers():
    curve = render.training_curve([{"epoch": 1, "train_accuracy": 90.0, "test_accuracy": 95.0},
                                   {"epoch": 2, "train_accuracy": 97.0, "test_accuracy": 98.5}])
    assert [list(t.y) for t in curve.data] == [[90.0, 97.0], [95.0, 98.5]]
    assert render.training_curve([]) is None


def test_matrix_html_prints_every_cell_with_its_index_and_marks():
    arr = np.array([[1.23456, -2.0], [0.0, 1e-10]])
    html = figs.matrix_html(arr, "k", row0=5, col0=7, marks={(1, 1): "#ff0000"}, digits=3)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells == ["1.23", "-2", "0", "1e-10"]  # a tiny non-zero number is never printed as 0
    assert re.findall(r"<th>(\d+)</th>", html) == ["7", "8", "5", "6"]
    assert html.count("outline:3px solid #ff0000") == 1


def test_bars_html_writes_each_probability():
    html = figs.bars_html([0.1, 0.7, 0.2], ["a", "b", "c"], highlight=1)
    assert re.findall(r"<span>([\d.]+%)</span>", html) == ["10.0%", "70.0%", "20.0%"]
    assert html.count("#d94f3d") == 1


def test_column_scales_are_per_layer_or_shared():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4, 4)), rng.uniform(0, 5, size=(2, 6, 6))
    vmax_a = float(np.abs(a.astype(np.float32)).max())  # the view's values are float32
    assert column_scale(a, True) == Scale(True, -vmax_a, vmax_a)  # signed: 0 in the middle
    assert column_scale(b, False) == Scale(False, float(np.float32(b.min())), float(np.float32(b.max())))
    top = max(vmax_a, float(b.astype(np.float32).max()))
    shared = shared_scale([Column("a", "conv", a, True), Column("b", "relu", b, False)])
    assert shared == Scale(True, -float(np.float32(top)), float(np.float32(top)))
    assert column_scale(b, False, shared) == shared
    assert column_scale(np.array([np.nan, np.inf, -1.0]), True).high == float(np.finfo(np.float32).max)


def test_overlay_blends_by_strength():
    pic = np.zeros((1, 4, 4))
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    out = render.overlay(pic, heat, opacity=1.0, signed=False)
    assert out.shape == (4, 4, 3) and out[0, 0].tolist() == [0, 0, 0] and out[1, 2].tolist() != [0, 0, 0]
