"""The convolution & pooling lab as a learner and a teacher use it: AppTest, links with parameters, a real browser.

Expected numbers are recomputed here with float64 PyTorch (or taken from the issues' examples), never copied from
the app; the page's text is read back number by number.
"""

from __future__ import annotations

import itertools
import json
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from tests.handwork.conv_oracle import (
    DT,
    matrices_after,
    matrix_of,
    printed_close,
    products,
    random_matrix,
    shares,
    t,
    t4,
)
from tests.support import ROOT, choose_option, no_exception, open_page, open_page_at, rerun, served, wait_for_idle

LAB = str(ROOT / "app_pages" / "conv_lab.py")


def lab(**params) -> AppTest:
    """The lab opened from a link with these query parameters."""
    return open_page_at(LAB, **params)


def lab_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def link(rows) -> str:
    return ";".join(",".join(repr(float(v)) for v in row) for row in rows)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


# ---------------------------------------------------------------------------------------------------------------
# The sections, as before


def test_lab_opens_on_the_convolution_and_every_section_runs():
    at = lab()
    assert at.title[0].value == "Convolution & pooling lab"
    assert at.radio(key="cl_section").value == "1 · Convolution forward"
    expected = F.conv2d(t4([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), t4([[1, 0], [2, -1]]))[0, 0]
    (shown,) = matrices_after(lab_text(at), "O")
    printed_close(shown, expected)
    codes = ["forward", "backward", "chain", "size", "pooling", "relu", "network", "descent"]
    for label, code in zip(at.radio(key="cl_section").options, codes, strict=True):
        at.radio(key="cl_section").set_value(label)  # AppTest sets a radio by its shown label
        rerun(at)
        assert not at.error and not at.warning and at.query_params["section"] == code
        assert label.split(" · ")[1].split()[0].lower() in at.subheader[0].value.lower(), label


def test_relu_and_output_size_examples():
    body = lab_text(lab(section="relu"))
    relu = F.relu(torch.tensor([[-478.0, 494.0], [460.0, -477.0]]))
    assert f"ReLU([[-478, 494], [460, -477]]) = {relu.int().tolist()}".replace("], [", "], [") in body
    shape = F.max_pool2d(torch.zeros(1, 32, 26, 26), 2, 2).shape  # (1, 32, 13, 13)
    assert f"26×26×32 → {shape[2]}×{shape[3]}×{shape[1]}" in lab_text(lab(section="size"))


def test_editing_the_convolution_matches_conv2d_and_goes_into_the_link():
    at = lab()
    x = [[1, 2, 0, 1], [0, 1, 3, 1], [2, 2, 1, 0], [1, 0, 1, 2]]
    at.text_area(key="fwd_x").set_value("\n".join(" ".join(map(str, r)) for r in x))
    at.text_area(key="fwd_f").set_value("[[1, -1], [0, 2]]")
    at.slider(key="fwd_stride").set_value(2)
    at.slider(key="fwd_pad").set_value(1)
    rerun(at)
    expected = F.conv2d(t4(x), t4([[1, -1], [0, 2]]), stride=2, padding=1)[0, 0]
    printed_close(matrices_after(lab_text(at), "O")[0], expected)
    at.select_slider(key="fwd_pos").set_value(expected.numel() - 1)  # the last kernel position, counted from 0
    rerun(at)
    (line,) = [m.value for m in at.markdown if m.value.startswith("**O[")]
    assert line.startswith(f"**O[{expected.shape[0] - 1}, {expected.shape[1] - 1}]**")
    printed_close(products(line.split("** = ")[1])[1], expected[-1, -1])
    assert at.query_params["stride"] == "2" and at.query_params["pad"] == "1"
    assert at.query_params["pos"] == str(expected.numel() - 1)
    assert matrix_of(str(at.query_params["x"]).replace(";", "], [").join(["[[", "]]"])).tolist() == x


def test_entry_sliders_count_from_zero_like_matrix_indices():
    at = lab(section="backward")
    for key, shape in (("bwd_f_pos", (2, 2)), ("bwd_x_pos", (3, 3))):
        options = at.select_slider(key=key).options
        assert options == [f"({i}, {j})" for i, j in itertools.product(range(shape[0]), range(shape[1]))]


def test_convolution_backward_with_a_typed_gradient_matches_autograd():
    g = [[1, -2], [3, 0.5]]
    at = lab(section="backward", grad="typed", g=link(g))
    x = t4([[1, 2, 3], [4, 5, 6], [7, 8, 9]], True)
    f = t4([[1, 0], [2, -1]], True)
    gx, gf = torch.autograd.grad(F.conv2d(x, f), (x, f), t4(g))
    body = lab_text(at)
    printed_close(matrices_after(body, "dE/dF")[-1], gf[0, 0])
    printed_close(matrices_after(body, "dE/dX")[-1], gx[0, 0])


def test_wrong_shape_gradient_gives_a_warning():
    at = lab(section="backward", grad="typed")
    at.text_area(key="bwd_g_text").set_value("1 2 3")
    rerun(at)
    assert any("must have the output's shape, 2x2" in w.value for w in at.warning)


@pytest.mark.parametrize("text,message", [
    ("1 2\n3", "same number of entries"), ("1 two\n3 4", "not a number"), ("", "empty"),
    ("[[1, 2], [3, 4]", "list of rows"), ("1 nan", "finite"),
])
def test_bad_matrix_text_gives_a_message_not_a_traceback(text, message):
    at = lab()
    at.text_area(key="fwd_x").set_value(text)
    rerun(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_filter_larger_than_the_input_is_explained():
    at = lab(f="1,1,1,1;1,1,1,1;1,1,1,1;1,1,1,1")
    assert any("larger than the padded input" in e.value for e in at.error)
    at.slider(key="fwd_pad").set_value(1)  # padding makes it fit
    rerun(at)
    assert not at.error
    expected = F.conv2d(t4([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), torch.ones(1, 1, 4, 4, dtype=DT), padding=1)
    printed_close(matrices_after(lab_text(at), "O")[0], expected[0, 0])


def test_overlapping_max_pool_routes_the_sum_like_autograd():
    at = lab(section="pooling", k=3, s=1)
    x = t4([[1.0, 3, 2, 2], [4, 9, 1, 0], [2, 0, 5, 6], [1, 7, 3, 3]], True)
    out = F.max_pool2d(x, 3, 1)
    g = torch.arange(1.0, out.numel() + 1, dtype=DT).reshape(out.shape)  # the page's default: 1, 2, 3, ...
    (gx,) = torch.autograd.grad(out, x, g)
    body = lab_text(at)
    printed_close(matrices_after(body, "dE/dX")[-1], gx[0, 0])
    assert "won several windows" in body
    assert any("overlap" in i.value for i in at.info)


def test_max_pool_tie_is_explained():
    at = lab(section="pooling")
    _, idx = F.max_pool2d(t4([[1, 3, 2, 2], [4, 9, 1, 0], [2, 0, 5, 6], [1, 7, 3, 3]]), 2, 2, return_indices=True)
    winner = int(idx[0, 0, 0, 1])  # window (0, 1) holds [[2, 2], [1, 0]]: PyTorch picks one of the two 2s
    assert f"picks the first, X[{winner // 4}, {winner % 4}]" in lab_text(at)


def test_two_layer_chain_last_step_matches_autograd_and_keeps_the_other_layers_on_screen():
    at = lab(section="chain")
    options = at.select_slider(key="ch_step").options
    at.select_slider(key="ch_step").set_value(len(options) - 1)
    rerun(at)
    image = t4([[1, 0, 2, 1, 0, 3], [0, 1, 3, 2, 1, 0], [2, 1, 0, 1, 2, 1], [1, 3, 1, 0, 1, 2], [0, 2, 1, 3, 0, 1],
                [1, 0, 2, 1, 2, 0]], True)
    c1 = F.conv2d(image, t4([[1, 0], [-1, 2]]))
    c2 = F.conv2d(c1, t4([[0, 1], [1, -1]]))
    p = F.max_pool2d(c2, 2, 2)
    (g,) = torch.autograd.grad(0.5 * (p ** 2).sum(), image)
    printed_close(matrices_after(lab_text(at), "dImage")[-1], g[0, 0])
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    # the forward maps and the gradients found before this step are still drawn
    for name in ("image", "Conv1 = image ⋆ F1", "Conv2 = Conv1 ⋆ F2", "P = maxpool(Conv2)", "dConv1", "dF1"):
        assert name in titles, titles
    conv2 = next(f for f in figures(at) if f["layout"]["title"]["text"].startswith("Conv2"))
    printed_close(np.array([[float(v.split()[0]) for v in row] for row in conv2["data"][0]["text"]]), c2[0, 0])


# ---------------------------------------------------------------------------------------------------------------
# Issue 12: the output size, small numbers


def test_output_one_wide_does_not_crash():
    # issue 12: W = 2 with the default F = 2, S = 2 gave "This app has encountered an error" (slider min == max)
    at = lab(section="size", w=2)
    out = F.conv2d(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), stride=2).shape[-1]
    assert f"2×2×32 → {out}×{out}×32" in lab_text(at)
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.slow
def test_every_slider_combination_with_a_one_wide_output_shows_the_page():
    at = lab(section="size")
    seen = 0
    for w, k, p, s in itertools.product(range(1, 33), range(1, 8), range(0, 4), range(1, 5)):
        if k > w + 2 * p or (w - k + 2 * p) // s + 1 != 1:
            continue
        for key, value in (("os_w", w), ("os_f", k), ("os_p", p), ("os_s", s)):
            at.slider(key=key).set_value(value)
        rerun(at)
        assert f"{w}×{w}×32 → 1×1×32" in lab_text(at) and not at.error, (w, k, p, s)
        seen += 1
    assert seen == 189


def test_output_size_tells_rows_left_over_from_gaps_skipped_by_the_stride():
    # issue 12: W = 7, F = 2, P = 1, S = 3 said "left over" for the last row, then listed rows 1 and 4 (gaps)
    at = lab(section="size", w=7, k=2, p=1, s=3)
    (warning,) = [w.value for w in at.warning]
    xp = torch.zeros(1, 1, 9, 1, requires_grad=True)
    (g,) = torch.autograd.grad(F.conv2d(xp, torch.ones(1, 1, 2, 1), stride=(3, 1)).sum(), xp)
    hit = torch.nonzero(g[0, 0, :, 0]).flatten().tolist()
    gaps = [i - 1 for i in range(hit[-1]) if i not in hit and 1 <= i < 8]  # input rows between windows
    left_over, skipped = warning.split("The stride")
    assert "left over at the end" in left_over and "only padding" in left_over
    assert "gaps" in skipped and f"input rows/columns {', '.join(map(str, gaps))} (counting from 0)" in skipped
    at = lab(section="size", w=7, k=2, p=0, s=2)
    (warning,) = [w.value for w in at.warning]
    assert "left over at the end" in warning and "rows/columns 6 (counting from 0) are never covered" in warning


def test_small_results_are_printed_not_rounded_to_zero():
    # issue 12: X = [[1e-5, 2e-5], [3e-5, 4e-5]], F = [[1e-5]] showed O = [[0, 0], [0, 0]] and "1e-05·1e-05 = 0"
    x, f = [[1e-5, 2e-5], [3e-5, 4e-5]], [[1e-5]]
    body = lab_text(lab(x="1e-5,2e-5;3e-5,4e-5", f="1e-5"))
    expected = F.conv2d(t4(x), t4(f))[0, 0]
    (shown,) = matrices_after(body, "O")
    assert (shown != 0).all()
    printed_close(shown, expected)
    assert f"1e-05·1e-05 = {float(expected[0, 0]):g}" in body
    # ReLU with [[1e-10, -1e-10], [1, 2]] showed ReLU = [[0, 0], ...] beside the mask [[1, 0], ...]
    body = lab_text(lab(section="relu", x="1e-10,-1e-10;1,2"))
    relu = F.relu(t([[1e-10, -1e-10], [1, 2]]))
    printed_close(matrix_of(body.split("ReLU([[1e-10, -1e-10], [1, 2]]) = ")[1].split("\n")[0]), relu)


# ---------------------------------------------------------------------------------------------------------------
# Issue 12: random matrices through the page, every number read back and compared with torch


def random_case(rng: np.random.Generator, section: str) -> tuple[dict, np.ndarray, np.ndarray, int, int, np.ndarray]:
    while True:
        h, w = (int(v) for v in rng.integers(1, 9, size=2))
        k, s = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        p = int(rng.integers(0, 3)) if section != "pooling" else 0
        if k <= min(h, w) + 2 * p:
            break
    kind = int(rng.integers(0, 4))
    x, f = random_matrix(rng, (h, w), kind), random_matrix(rng, (k, k), kind)
    n = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    g = random_matrix(rng, n, int(rng.integers(0, 4)))
    params = {"section": section, "x": link(x), "f": link(f), "stride": s, "pad": p, "k": k, "s": s,
              "grad": "typed", "g": link(g), "mode": ["max", "avg"][int(rng.integers(0, 2))],
              "pos": int(rng.integers(0, n[0] * n[1]))}
    return params, x, f, s, p, g


@pytest.mark.parametrize("seed", range(12))
def test_random_convolutions_through_the_page_match_torch(seed):
    rng = np.random.default_rng(seed)
    params, x, f, s, p, g = random_case(rng, "forward")
    at = lab(**{k: params[k] for k in ("section", "x", "f", "stride", "pad", "pos")})
    assert not at.warning and not at.error
    out = F.conv2d(t4(x), t4(f), stride=s, padding=p)[0, 0]
    scale = 64 * np.abs(x).max() * np.abs(f).max()
    printed_close(matrices_after(lab_text(at), "O")[0], out, scale)
    (line,) = [m.value for m in at.markdown if m.value.startswith("**O[")]
    i, j = divmod(params["pos"], out.shape[1])
    assert line.startswith(f"**O[{i}, {j}]** = ")
    pairs, total = products(line.split("** = ")[1])
    xpad = F.pad(t4(x), (p,) * 4)[0, 0]
    window = xpad[i * s:i * s + f.shape[0], j * s:j * s + f.shape[1]]
    printed_close([v for pair in pairs for v in pair] + [total],
                  torch.cat([torch.stack([window.ravel(), t(f).ravel()], 1).ravel(), out[i, j].reshape(1)]), scale)
    expander = next(m.value for m in at.markdown if m.value.startswith("- O["))
    printed_close([products(ln.split("] = ")[1])[1] for ln in expander.splitlines()], out.ravel(), scale)

    params, x, f, s, p, g = random_case(rng, "backward")
    at = lab(**{k: params[k] for k in ("section", "x", "f", "stride", "pad", "grad", "g")})
    xt, ft = t4(x, True), t4(f, True)
    gx, gf = torch.autograd.grad(F.conv2d(xt, ft, stride=s, padding=p), (xt, ft), t4(g))
    body = lab_text(at)
    scale = 64 * (np.abs(x).max() + np.abs(f).max()) * np.abs(g).max()
    printed_close(matrices_after(body, "dE/dO")[0], t(g), scale)
    printed_close(matrices_after(body, "dE/dF")[-1], gf[0, 0], scale)
    printed_close(matrices_after(body, "dE/dX")[-1], gx[0, 0], scale)
    for name, grad in (("dE/dF", gf[0, 0]), ("dE/dX", gx[0, 0])):
        (line,) = [m.value for m in at.markdown if m.value.startswith(f"**{name}[")]
        printed_close(products(line.split("** = ")[1])[1], grad[0, 0], scale)


@pytest.mark.parametrize("seed", range(12))
def test_random_poolings_through_the_page_match_torch(seed):
    rng = np.random.default_rng(100 + seed)
    params, x, _, s, _, _ = random_case(rng, "pooling")
    k, mode = params["k"], params["mode"]
    n = F.max_pool2d(t4(x), k, s).shape[2:]
    g = random_matrix(rng, tuple(n), int(rng.integers(0, 4)))
    at = lab(section="pooling", x=link(x), k=k, s=s, mode=mode, grad="typed", g=link(g), pos=params["pos"] % n.numel())
    assert not at.warning and not at.error
    xt = t4(x, True)
    out = (F.max_pool2d if mode == "max" else F.avg_pool2d)(xt, k, s)
    (gx,) = torch.autograd.grad(out, xt, t4(g))
    body = lab_text(at)
    scale = 16 * (np.abs(x).max() + np.abs(g).max())
    printed_close(matrices_after(body, "output")[-1], out[0, 0], scale)
    printed_close(matrices_after(body, "dE/dX")[-1], gx[0, 0], scale)
    routes = [ln for m in at.markdown for ln in m.value.splitlines() if ln.startswith("- dE/dX[")]
    for line in routes:
        at_ = tuple(int(v) for v in line[len("- dE/dX["):line.index("]")].split(", "))
        printed_close(shares(line.split("] = ")[1].split("  (from")[0])[1], gx[0, 0][at_], scale)
    assert len(routes) == int((gx != 0).sum()) + sum(1 for c in np.ndindex(x.shape)
                                                     if gx[0, 0][c] == 0 and _receives(c, x.shape, n, k, s, mode, xt))


def _receives(cell, shape, n, k, s, mode, xt) -> bool:
    """A cell some window routes gradient to, though the amounts cancel (or are 0)."""
    if mode == "avg":
        return any(i * s <= cell[0] < i * s + k and j * s <= cell[1] < j * s + k for i in range(n[0])
                   for j in range(n[1]))
    _, idx = F.max_pool2d(xt.detach(), k, s, return_indices=True)
    return cell[0] * shape[1] + cell[1] in idx.flatten().tolist()


@pytest.mark.parametrize("seed", range(6))
def test_random_relu_chain_and_network_through_the_page_match_torch(seed):
    rng = np.random.default_rng(200 + seed)
    x = random_matrix(rng, tuple(int(v) for v in rng.integers(1, 9, size=2)), seed % 4)
    body = lab_text(lab(section="relu", x=link(x)))
    printed_close(matrix_of(body.split("ReLU([[")[1].split(") = ")[1].split("\n")[0]), F.relu(t(x)))

    image, f1, f2 = random_matrix(rng, (6, 6), seed % 4), random_matrix(rng, (2, 2), 1), random_matrix(rng, (2, 2), 1)
    at = lab(section="chain", image=link(image), f1=link(f1), f2=link(f2), step=6)
    xt = t4(image, True)
    p = F.max_pool2d(F.conv2d(F.conv2d(xt, t4(f1)), t4(f2)), 2, 2)
    loss = 0.5 * (p ** 2).sum()
    (g,) = torch.autograd.grad(loss, xt)
    body = lab_text(at)
    scale = 1e3 * (np.abs(image).max() * np.abs(f1).max() * np.abs(f2).max()) ** 2
    printed_close(matrices_after(body, "dImage")[-1], g[0, 0], scale)
    printed_close(float(body.split("(P − T)² = **")[1].split("**")[0]), loss.detach(), scale)

    xn, fn, wn = random_matrix(rng, (3, 3), 1), random_matrix(rng, (2, 2), 1), random_matrix(rng, (2, 2), 1)
    at = lab(section="network", x=link(xn), f=link(fn), w=link(wn), b=0.25, y=0.75)
    ft = t4(fn, True)
    o = torch.sigmoid((t(wn).flatten() @ torch.sigmoid(F.conv2d(t4(xn), ft)[0, 0]).flatten()) + 0.25)
    e = 0.5 * (0.75 - o) ** 2
    (gf,) = torch.autograd.grad(e, ft)
    body = lab_text(at)
    printed_close(float(body.split("**E = ½ (y' − O)²**: ")[1].split("\n")[0].split(" = ")[-1]), e.detach(), 1e-3)
    printed_close(matrices_after(body, "X cross-correlated with dE/dZ1")[0], gf[0, 0], 1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Issue 15: links, Play, the descent plot, text sizes


def test_a_link_opens_the_view_it_names():
    x = [[2.0, -1.0, 0.5], [1.0, 3.0, -2.0], [0.0, 1.0, 1.0], [4.0, -3.0, 2.0]]
    at = lab(section="pooling", x=link(x), mode="avg", k=2, s=1, pos=4)
    assert at.radio(key="cl_section").value == "5 · Pooling" and at.radio(key="pool_mode").value == "avg"
    assert at.slider(key="pool_k").value == 2 and at.slider(key="pool_s").value == 1
    out = F.avg_pool2d(t4(x), 2, 1)[0, 0]
    assert at.select_slider(key="pool_pos").value == 4  # entry 4 of a 3x2 output: (2, 0), counted from 0
    printed_close(matrices_after(lab_text(at), "output")[-1], out)
    assert any(m.value.startswith("Window (2, 0) = ") and f"its mean is {float(out[2, 0]):g}" in m.value
               for m in at.markdown)
    at = lab(section="descent", curve="two valleys", a0=1.5, lr=0.3, steps=7)
    assert at.selectbox(key="gd_curve").value == "two valleys" and at.slider(key="gd_steps").value == 7
    assert at.slider(key="gd_lr").value == 0.3 and at.slider(key="gd_start").value == 1.5


def test_changing_the_section_drops_the_other_sections_parameters():
    at = lab(section="size", w=9)
    at.radio(key="cl_section").set_value("6 · ReLU")
    rerun(at)
    assert at.query_params["section"] == "relu" and "w" not in at.query_params and "x" in at.query_params


@pytest.mark.parametrize("params,what", [
    ({"section": "nowhere"}, "section"), ({"x": "1,2;3"}, "Input X"), ({"x": "1e999,1"}, "Input X"),
    ({"x": "9e99"}, "Input X"), ({"stride": "99"}, "Stride S"), ({"stride": "two"}, "Stride S"),
    ({"pos": "999"}, "kernel position"), ({"pos": "-1"}, "kernel position"),
    ({"section": "size", "w": "1e400"}, "Input width W"), ({"section": "size", "pos": "40"}, "kernel position"),
    ({"section": "chain", "step": "7"}, "step"), ({"section": "pooling", "mode": "median"}, "pooling"),
    ({"section": "descent", "lr": "1e308"}, "learning rate"), ({"section": "descent", "a0": "nan"}, "start a₀"),
    ({"section": "network", "b": "inf"}, "bias b"), ({"section": "backward", "grad": "typed", "g": "[[1, 2]"},
                                                      "dE/dO"),
])
def test_a_bad_link_value_gives_a_message_and_the_default(params, what):
    at = lab(**params)
    warnings = [w.value for w in at.warning]
    assert any(f"The link's {what} = " in w and "Showing the default instead." in w for w in warnings), warnings
    default = lab(section=params.get("section", "forward")) if params.get("section") != "nowhere" else lab()
    assert lab_text(at) == lab_text(default)  # the view is the default one
    assert at.title and not at.exception


def test_the_descent_plot_follows_diverging_iterates():
    # issue 15: the axis was fixed at +-6, so every divergent jump fell off the chart and only a0 was shown
    at = lab(section="descent", lr=1.5, steps=30, curve="two valleys", a0=2.0)
    assert any("Diverges" in e.value for e in at.error)
    (fig,) = figures(at)
    path = next(tr for tr in fig["data"] if tr.get("name") == "a after each step")
    rows = at.dataframe[0].value
    positions = [float(v) for v in rows["a"]]
    assert len(path["x"]) == len(positions) >= 3
    lo, hi = fig["layout"]["xaxis"]["range"]
    ylo, yhi = fig["layout"]["yaxis"]["range"]
    losses = [float(v) for v in rows["L(a)"]]
    assert all(lo <= a <= hi for a in positions) and all(ylo <= v <= yhi for v in losses)
    assert max(abs(a) for a in positions) > 6  # the jumps that used to fall off the chart


@pytest.mark.parametrize("projector,least", [(False, 12), (True, 16)])
def test_figure_text_is_at_least_12_px_and_16_in_projector_mode(projector, least):
    sizes = []
    for section in ("forward", "backward", "chain", "size", "pooling", "relu", "network", "descent"):
        at = AppTest.from_file(LAB, default_timeout=120)
        at.session_state["projector"] = projector
        at.query_params["section"] = section
        rerun(at)
        for fig in figures(at):
            sizes += [tr["textfont"]["size"] for tr in fig["data"] if "textfont" in tr]
            sizes += [a["font"]["size"] for a in fig["layout"].get("annotations", [])]
            for axis in ("xaxis", "yaxis"):
                sizes.append(fig["layout"].get(axis, {}).get("tickfont", {}).get("size",
                                                                                   fig["layout"]["font"]["size"]))
    assert sizes and min(sizes) >= least, sorted(sizes)[:5]


# ---------------------------------------------------------------------------------------------------------------
# A real browser on a freshly started server


def main_text(page) -> str:
    return page.inner_text("[data-testid='stMainBlockContainer']")


@pytest.fixture
def fresh_server(browser):
    """A server no browser has visited: the link is the first thing it serves (``browser`` skips without one)."""
    yield from served()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_links_open_their_view_on_a_fresh_server(page, fresh_server):
    x = [[1.0, 3.0, 2.0], [4.0, 9.0, 1.0], [2.0, 0.0, 5.0]]
    open_page(page, f"{fresh_server}/conv_lab?section=pooling&x={link(x)}&k=2&s=1&mode=max&pos=3")
    no_exception(page)
    body = main_text(page)
    out = F.max_pool2d(t4(x), 2, 1)
    assert "Window (1, 1) = [[9, 1], [0, 5]]" in body and f"its maximum is {int(out[0, 0, 1, 1])}" in body
    printed_close(matrices_after(body, "output")[-1], out[0, 0])
    assert "section=pooling" in page.url and "pos=3" in page.url
    # moving the window writes the address bar
    wait_for_idle(page)
    page.locator(".st-key-pool_pos__prev button").first.click()
    wait_for_idle(page)
    page.wait_for_function("() => location.search.includes('pos=2')")
    assert "Window (1, 0)" in main_text(page)
    # bad values: a message and the default, never a traceback
    open_page(page, f"{fresh_server}/conv_lab?section=size&w=1e400&pos=99&s=0")
    no_exception(page)
    body = main_text(page)
    assert body.count("Showing the default instead.") == 3, body[:1500]
    assert "26×26×32 → 13×13×32" in body
    open_page(page, f"{fresh_server}/conv_lab?section=forward&x=1,2;3&stride=9")
    no_exception(page)
    body = main_text(page)
    assert "The link's Input X" in body and "The link's Stride S" in body
    printed_close(matrices_after(body, "O")[0], F.conv2d(t4([[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
                                                          t4([[1, 0], [2, -1]]))[0, 0])


@pytest.mark.browser
@pytest.mark.slow
def test_browser_play_walks_the_chain_to_the_last_step_by_itself(page, fresh_server):
    open_page(page, f"{fresh_server}/conv_lab?section=chain")
    no_exception(page)
    choose_option(page, "ch_step__speed", "fast")
    wait_for_idle(page)
    page.locator(".st-key-ch_step__play button").click()
    deadline = time.monotonic() + 60
    while "step=6" not in page.url and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert "step=6" in page.url, page.url
    page.wait_for_selector(".st-key-ch_step__play button:has-text('Play')", timeout=20_000)  # stopped at the end
    wait_for_idle(page)
    body = main_text(page)
    assert "Step 6. Into the image" in body and "Forward pass" in body
    image = t4([[1, 0, 2, 1, 0, 3], [0, 1, 3, 2, 1, 0], [2, 1, 0, 1, 2, 1], [1, 3, 1, 0, 1, 2], [0, 2, 1, 3, 0, 1],
                [1, 0, 2, 1, 2, 0]], True)
    p = F.max_pool2d(F.conv2d(F.conv2d(image, t4([[1, 0], [-1, 2]])), t4([[0, 1], [1, -1]])), 2, 2)
    (g,) = torch.autograd.grad(0.5 * (p ** 2).sum(), image)
    printed_close(matrices_after(body, "dImage")[-1], g[0, 0])
    no_exception(page)
    # Stopped for good: two seconds later (a timer tick already in flight may still land) it is idle, still at the
    # last step, and the button offers Play, not Pause.
    page.wait_for_timeout(2_000)
    wait_for_idle(page)
    assert re.search(r"step=6", page.url)
    assert page.locator(".st-key-ch_step__play button:has-text('Play')").count() == 1
    assert page.locator(".st-key-ch_step__play button:has-text('Pause')").count() == 0
