"""The input step's figures: colours clipped at the percentile the figure states (numpy on the real attribution, and
float64 autograd), the picture's outline exactly on its ink, exact hover values, and the gradient-size chart's ticks."""

from __future__ import annotations

import base64
import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from app_pages.explorer_views.attributions import FADE, outline_note, overlay_figure
from cnnviz.engine import examples
from cnnviz.engine.attribution import attribute, black_baseline
from cnnviz.engine.capture import capture
from cnnviz.engine.datasets import load_arrays
from cnnviz.engine.pictures import normalize, unnormalize
from cnnviz.numbers import fmt
from cnnviz.render import inspect as figs
from cnnviz.render import network as render
from tests.support import shipped_with_test_set

METHODS = ("saliency", "integrated_gradients", "grad_cam")


def teaching_input(name: str):
    """The model, its card and the explorer's default test sample (the page opens on it), normalised as the page
    feeds it (``examples.testset_inputs``, for one image)."""
    model, card = shipped_with_test_set(name)
    k = examples.load_examples(name).default.index
    images, _ = load_arrays(name, "test")
    return model, card, normalize(images[k:k + 1], card)


@pytest.fixture(scope="module")
def mnist():
    model, card, x = teaching_input("mnist")
    trace = capture(model, x)
    results = {m: attribute(model, x, trace.target, m, None, objective="logit", card=card) for m in METHODS}
    return model, card, x, trace, results


def _objective64(net, x64, target):
    return net(x64)[0, target]


def float64_attribution(model, x, target, method, layer, card, steps=32) -> np.ndarray:
    """The attribution written out again with torch autograd in float64 (the page's map is float32)."""
    net = copy.deepcopy(model).double().eval()
    x64 = x.detach().double()
    if method == "saliency":
        xi = x64.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_objective64(net, xi, target), [xi])
        return g[0].abs().amax(0).numpy()
    if method == "integrated_gradients":  # Gauss-Legendre on [0, 1], as Captum's default
        base = black_baseline(x64, card)[0]
        nodes, weights = (torch.as_tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(steps))
        alphas = ((nodes + 1) / 2).view(-1, 1, 1, 1)
        path = (base + alphas * (x64 - base)).requires_grad_(True)  # (steps, C, H, W): the points, one batch
        (g,) = torch.autograd.grad(net(path)[:, target].sum(), [path])
        total = (weights.view(-1, 1, 1, 1) / 2 * g).sum(0)  # (C, H, W)
        return ((x64 - base)[0] * total).sum(0).numpy()
    acts = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        obj = _objective64(net, x64, target)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(obj, [acts["a"]])
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True))  # (1, 1, h, w)
    return F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0].detach().numpy()


@pytest.mark.parametrize("method", METHODS)
def test_the_overlay_states_numpys_99th_percentile_of_the_real_attribution(mnist, method):
    _, card, x, _, results = mnist
    values = results[method].values
    magnitudes = np.abs(values.astype(np.float64))
    expected, largest = float(np.percentile(magnitudes, 99)), float(magnitudes.max())
    level, clipped, note = figs.colour_limit(values)
    assert_close(level, expected, rtol=1e-12, atol=0.0)
    assert clipped == (expected < largest)
    if clipped:
        assert f"colours saturate at the 99th percentile of |value| = {fmt(expected, 3)} " in note
        assert f"(largest |value| {fmt(largest, 3)})" in note
    pixels = unnormalize(x[0].numpy(), card)
    mask, _ = outline_note(pixels)
    html = overlay_figure(pixels, values, 0.8, bool((values < 0).any()), mask, "t", "line")
    assert html.count(note) == 1 and "the picture is faded to 20%" in html
    ends = re.findall(r"<span>([^<]*)</span><span>([^<]*)</span></div>", html)
    assert ends[-1][1] == f"{'&ge; ' if clipped else ''}{fmt(expected, 3)}"
    thumb = overlay_figure(pixels, values, 0.8, bool((values < 0).any()), mask, "trained", min_px=200)  # sanity check
    assert "width:min(100%,224px)" in thumb and (f"&ge; {fmt(expected, 3)}</span>" in thumb) == clipped
    assert ("colours saturate at the 99th percentile of |value|</div>" in thumb) == clipped


@pytest.mark.parametrize("method", METHODS)
def test_the_stated_clip_agrees_with_float64_autograd(mnist, method):
    model, card, x, trace, results = mnist
    result = results[method]
    exact = float64_attribution(model, x, trace.target, method, result.layer, card)
    assert_close(torch.as_tensor(result.values, dtype=torch.float64), torch.as_tensor(exact), rtol=1e-4, atol=1e-6)
    level, _, _ = figs.colour_limit(result.values)
    assert_close(level, float(np.percentile(np.abs(exact), 99)), rtol=1e-4, atol=1e-7)


def test_dl_dpixel_map_states_its_clip_keeps_exact_hover_values_and_outlines_the_ink(mnist):
    model, card, x, trace, _ = mnist
    per_pixel = trace.input_grad[0] / card.std[0]  # what the page draws
    net = copy.deepcopy(model).double().eval()
    xi = x.detach().double().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xi), torch.tensor([trace.target])), [xi])
    exact = g[0, 0].numpy() / card.std[0]
    assert_close(torch.as_tensor(per_pixel, dtype=torch.float64), torch.as_tensor(exact), rtol=1e-4, atol=1e-6)
    level, clipped, note = figs.colour_limit(per_pixel)
    assert_close(level, float(np.percentile(np.abs(exact), 99)), rtol=1e-4, atol=1e-7)
    assert clipped and f"= {fmt(float(np.percentile(np.abs(per_pixel.astype(np.float64)), 99)), 3)} " in note
    pixels = unnormalize(x[0].numpy(), card)
    mask, line = outline_note(pixels)
    np.testing.assert_array_equal(mask, pixels[0] > 0.5)
    assert line == "magenta line: the outline of the ink (pixel value above 0.5)"
    html = figs.map_html(per_pixel, "t", signed=True, size_px=320, vmax=level, outline=mask, note=note)
    cells = re.findall(r'<i style="background:(#[0-9a-f]{6})" title="\((\d+), (\d+)\) ([^"]+)"></i>', html)
    assert [v for *_, v in cells] == [fmt(v, 4) for v in per_pixel.ravel().tolist()]  # hover: exact values
    rgb = render.colorize(per_pixel, True, level).reshape(-1, 3)
    assert [c for c, *_ in cells] == ["#" + bytes(int(v) for v in c).hex() for c in rgb]
    top = np.unravel_index(np.abs(per_pixel).argmax(), per_pixel.shape)  # beyond the clip: the scale's end
    end = render._DIVERGING[-1 if per_pixel[top] > 0 else 0]
    assert cells[top[0] * 28 + top[1]][0] == "#" + bytes(int(v) for v in end).hex()
    assert re.search(r"repeat\(28,(\d+)px\)", html).group(1) == "11"  # 308 px wide
    assert f"<span>&le; {fmt(-level, 3)}</span><span>&ge; {fmt(level, 3)}</span>" in html
    assert figs.outline_path(mask) in svg_of(html)


def svg_of(html: str) -> str:
    return base64.b64decode(re.search(r'data:image/svg\+xml;base64,([^"]+)"', html).group(1)).decode()


def test_the_outline_runs_exactly_along_the_cell_edges_between_ink_and_paper():
    rng = np.random.default_rng(3)
    mask = rng.random((9, 11)) > 0.6
    mask[0, :4] = True  # ink at the border: the map's own edge is not an outline
    drawn = set()
    for x0, y0, kind, length in re.findall(r"M(\d+) (\d+)([hv])(\d+)", figs.outline_path(mask)):
        for s in range(int(length)):
            x, y = int(x0) + (s if kind == "h" else 0), int(y0) + (s if kind == "v" else 0)
            drawn.add((kind, x, y))
    padded = np.pad(mask, 1, mode="edge")
    want = {("h", j, i) for i in range(10) for j in range(11) if padded[i, j + 1] != padded[i + 1, j + 1]}
    want |= {("v", j, i) for i in range(9) for j in range(12) if padded[i + 1, j] != padded[i + 1, j + 1]}
    assert drawn == want and ("h", 0, 0) not in drawn and ("v", 0, 0) not in drawn


def test_a_colour_pictures_outline_is_at_otsus_threshold():
    rng = np.random.default_rng(5)
    pixels = np.clip(rng.normal(0.3, 0.08, (3, 32, 32)), 0, 1)  # a dark ground with a brighter, bluish object
    pixels[:, 8:20, 10:26] = np.clip(rng.normal([[[0.6]], [[0.65]], [[0.9]]], 0.08, (3, 12, 16)), 0, 1)
    mask, threshold = render.ink_mask(pixels)
    luma = np.pad(0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2], 1, mode="edge")
    brightness = np.array([[luma[i:i + 3, j:j + 3].mean() for j in range(32)] for i in range(32)])  # 3x3 means
    b = brightness.ravel()

    def between(t):  # between-class variance, from the pixels themselves
        lo, hi = b[b <= t], b[b > t]
        return 0.0 if not lo.size or not hi.size else lo.size * hi.size * (lo.mean() - hi.mean()) ** 2

    # the 64-bin histogram's choice: among its bin edges, the split with the largest between-class variance
    assert between(threshold) >= max(between(t) for t in np.linspace(0, 1, 65)[1:]) * (1 - 1e-9)
    np.testing.assert_array_equal(mask, brightness > threshold)
    assert 0.0 < threshold < 1.0 and mask[9:19, 11:25].all() and not mask[:7].any() and not mask[21:].any()
    assert "brightness above" in outline_note(pixels)[1]


def test_overlay_figure_is_a_whole_multiple_of_the_picture_of_at_least_300_px():
    for side, width in ((28, 308), (32, 320)):
        rgb = np.zeros((side, side, 3), dtype=np.uint8)
        html = figs.overlay_html(rgb, "t", outline=np.eye(side, dtype=bool), vmax=2.0)
        assert f"width:min(100%,{width}px)" in html and "image-rendering:pixelated" in html
        assert "<span>0</span><span>2</span>" in html and svg_of(html).count("<path") == 1


def test_overlay_defaults_are_unchanged_and_fade_moves_the_picture_to_the_scales_zero_colour():
    rng = np.random.default_rng(0)
    pic, heat = rng.random((1, 6, 6)), rng.normal(size=(6, 6))
    np.testing.assert_array_equal(render.overlay(pic, heat, 0.5), render.overlay(pic, heat, 0.5, fade=0.0))
    signed = render.overlay(pic, heat, opacity=0.0, signed=True, fade=1.0)
    assert (signed == render._DIVERGING[5].astype(np.uint8)).all()  # white: zero on the diverging scale
    unsigned = render.overlay(pic, np.abs(heat), opacity=0.0, signed=False, fade=FADE)
    want = np.rint(255 * ((1 - FADE) * pic[0][..., None] + FADE * render._VIRIDIS[0] / 255))
    np.testing.assert_array_equal(unsigned, want.astype(np.uint8))


def test_clip_level_of_a_mostly_zero_map_falls_back_to_its_largest_value():
    sparse = np.zeros((28, 28))
    sparse[3, 4] = -2.0
    assert render.clip_level(sparse) == 2.0 and render.clip_level(np.zeros((2, 2))) == 0.0
    level, clipped, note = figs.colour_limit(sparse)
    assert (level, clipped, note) == (2.0, False, "colours span the largest |value|, 2")


@pytest.mark.parametrize("font_px", [13, 18])
def test_norms_ticks_every_kth_decade_with_one_rule_per_width(font_px):
    norms = [3e-7, 2.0, 40.0, 0.01]
    html = figs.norms_html(["loss", "a", "b", "input"], norms, 1, font_px)
    labels = re.findall(r'<i class="([^"]*)" style="left:([\d.]+)%"><span>1e(-?\d+)</span></i>', html)
    assert [int(e) for *_, e in labels] == list(range(-7, 3))
    n = len(labels) - 1
    for j, (classes, left, _) in enumerate(labels):
        assert float(left) == pytest.approx(j / n * 100, abs=0.01)
        assert set(classes.split()) == {f"k{k}" for k in range(1, n + 1) if j % k == 0} | ({"k0"} if j == 0 else set())
    rules = re.findall(r"@container \(width >= ([\d.]+)px\)(?: and \(width < ([\d.]+)px\))?\{\.cv-n-ticks>i\.k(\d+)",
                       html)
    assert [int(k) for *_, k in rules] == list(range(1, n + 1))
    lows = [float(a) for a, *_ in rules]
    assert [float(b) for _, b, _ in rules[1:]] == lows[:-1]  # the widths partition: one step at a time
    room = (0.65 * len("1e-7") + 0.5) * font_px
    for k, low in enumerate(lows, start=1):  # at its narrowest, a step's labels are a label's room apart
        assert low * k / n == pytest.approx(room, rel=1e-3)
