"""Every matrix the convolution & pooling lab shows, recomputed with PyTorch (float64) and autograd."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnviz.handwork import conv_math as cm

DT = torch.float64


def t(m) -> torch.Tensor:
    return torch.as_tensor(np.asarray(m), dtype=DT)


def t4(m, grad: bool = False) -> torch.Tensor:
    return t(m)[None, None].clone().requires_grad_(grad)  # (1, 1, H, W)


def close(actual, expected) -> None:
    assert_close(t(actual), torch.as_tensor(expected, dtype=DT).detach().reshape(np.shape(actual)))


def rng_matrix(rng: np.random.Generator, shape, integers: bool = False) -> np.ndarray:
    if integers:
        return rng.integers(-5, 6, size=shape).astype(np.float64)
    return rng.normal(size=shape)


def conv_cases(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        h, w = rng.integers(1, 9, size=2)
        kh, kw = rng.integers(1, 6, size=2)
        stride, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        if kh > h + 2 * padding or kw > w + 2 * padding:
            continue
        cases.append((rng_matrix(rng, (h, w), len(cases) % 2 == 0), rng_matrix(rng, (kh, kw)), stride, padding,
                      rng))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Convolution


@pytest.mark.parametrize("case", range(60))
def test_conv_forward_and_backward_match_autograd(case):
    x, f, stride, padding, rng = conv_cases()[case]
    fwd = cm.conv_forward(x, f, stride, padding)
    xt, ft = t4(x, True), t4(f, True)
    out = F.conv2d(xt, ft, stride=stride, padding=padding)  # (1, 1, H_out, W_out)
    close(fwd.output, out[0, 0])
    close(fwd.x_padded, F.pad(t4(x), (padding,) * 4)[0, 0])
    # every printed sum of products adds up to its entry, and its factors are the padded input and the filter
    for cell in fwd.cells:
        assert math.isclose(sum(tm.left * tm.right for tm in cell.terms), fwd.output[cell.at], abs_tol=1e-9)
        for tm in cell.terms:
            assert tm.left == fwd.x_padded[tm.left_at] and tm.right == f[tm.right_at]

    g = rng.normal(size=fwd.output.shape)
    bwd = cm.conv_backward(fwd, g)
    gx, gf = torch.autograd.grad(out, (xt, ft), t4(g))
    close(bwd.grad_filter, gf[0, 0])
    close(bwd.grad_input, gx[0, 0])
    # the full convolution's pieces: the rotated filter, and the padded+dilated dE/dO
    close(bwd.f_rot180, torch.rot90(t(f), 2))
    assert bwd.grad_output_dilated[::stride, ::stride].tolist() == g.tolist()
    # the uncut full-convolution result is the gradient for the padded input too
    xpt = t4(fwd.x_padded, True)
    outp = F.conv2d(xpt, t4(f), stride=stride)
    (gxp,) = torch.autograd.grad(outp, xpt, t4(g))
    close(bwd.grad_input_padded, gxp[0, 0])
    for cell in bwd.grad_filter_cells:
        assert math.isclose(sum(tm.left * tm.right for tm in cell.terms), bwd.grad_filter[cell.at], abs_tol=1e-9)
    for cell in bwd.grad_input_cells:
        assert math.isclose(sum(tm.left * tm.right for tm in cell.terms), bwd.grad_input[cell.at], abs_tol=1e-9)
        for tm in cell.terms:
            assert tm.left == bwd.grad_output_full[tm.left_at] and tm.right == bwd.f_rot180[tm.right_at]


def test_conv_backward_default_upstream_all_ones_and_from_a_loss():
    x = np.arange(9.0).reshape(3, 3)
    f = np.array([[1.0, 2.0], [0.0, -1.0]])
    fwd = cm.conv_forward(x, f)
    xt, ft = t4(x, True), t4(f, True)
    for loss_of, grad in ((lambda o: o.sum(), np.ones((2, 2))),
                          (lambda o: 0.5 * (o ** 2).sum(), cm.squared_error_grad(fwd.output, 0.0)[1])):
        out = F.conv2d(xt, ft)
        bwd = cm.conv_backward(fwd, grad)
        gx, gf = torch.autograd.grad(loss_of(out), (xt, ft))
        close(bwd.grad_input, gx[0, 0])
        close(bwd.grad_filter, gf[0, 0])


def test_conv_backward_rejects_wrong_gradient_shape():
    fwd = cm.conv_forward(np.ones((3, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        cm.conv_backward(fwd, np.ones((3, 3)))


def test_conv_refuses_a_filter_larger_than_the_padded_input():
    with pytest.raises(ValueError, match="larger than the padded input"):
        cm.conv_forward(np.ones((2, 2)), np.ones((3, 3)))
    cm.conv_forward(np.ones((2, 2)), np.ones((3, 3)), padding=1)  # fits once padded


def test_cell_expression_prints_the_products():
    fwd = cm.conv_forward([[1, 2], [3, 4]], [[1, -1], [0, 2]])
    (cell,) = fwd.cells
    assert cell.expression() == "1·1 + 2·(-1) + 3·0 + 4·2 = 7"
    assert cell.expression(skip_zeros=True) == "1·1 + 2·(-1) + 4·2 = 7"
    assert float(F.conv2d(t4([[1, 2], [3, 4]]), t4([[1, -1], [0, 2]]))) == cell.value


# ---------------------------------------------------------------------------------------------------------------
# Output size

W_RANGE, K_RANGE, P_RANGE, S_RANGE = range(1, 33), range(1, 8), range(0, 4), range(1, 5)  # the page's sliders


def test_output_size_matches_pytorch_for_every_slider_combination():
    checked = 0
    for w, k, p, s in itertools.product(W_RANGE, K_RANGE, P_RANGE, S_RANGE):
        if k > w + 2 * p:
            with pytest.raises(ValueError):
                cm.output_size(w, k, p, s)
            continue
        size = cm.output_size(w, k, p, s)
        shape = F.conv2d(torch.zeros(1, 1, w, 1), torch.zeros(1, 1, k, 1), stride=(s, 1), padding=(p, 0)).shape
        assert size.out == shape[2], (w, k, p, s)
        # never-covered cells: exactly those of the padded input that get no gradient from any output
        xp = torch.zeros(1, 1, w + 2 * p, 1, requires_grad=True)
        (g,) = torch.autograd.grad(F.conv2d(xp, torch.ones(1, 1, k, 1), stride=(s, 1)).sum(), xp)
        assert size.uncovered_padded == tuple(torch.nonzero(g[0, 0, :, 0] == 0).flatten().tolist()), (w, k, p, s)
        covered = g[0, 0, :, 0] != 0
        trailing = len(covered) - 1 - int(torch.nonzero(covered).max())  # rows after the last kernel position
        assert trailing == (w - k + 2 * p) % s and size.whole == (trailing == 0), (w, k, p, s)
        checked += 1
    assert checked > 3000


def test_output_size_26_by_26_by_32_max_pooled_2x2_stride_2_gives_13_by_13_by_32():
    size = cm.output_size(26, 2, 0, 2)
    assert F.max_pool2d(torch.zeros(1, 32, 26, 26), 2, 2).shape == (1, 32, size.out, size.out)
    assert size.whole and size.formula().endswith(f"= {size.out}")


def test_output_size_names_the_rows_never_covered():
    size = cm.output_size(7, 2, 0, 2)  # (7 - 2) / 2 = 2.5 -> 3 positions at 0, 2, 4; row 6 is left out
    assert not size.whole
    shape = F.conv2d(torch.zeros(1, 1, 7, 7), torch.zeros(1, 1, 2, 2), stride=2).shape
    assert size.out == shape[-1]
    assert size.uncovered_input == (6,)
    assert "floor" in size.formula()


# ---------------------------------------------------------------------------------------------------------------
# Pooling

POOL_CASES = [(h, w, k, s) for h in (2, 4, 5, 7) for w in (3, 5, 8) for k in (1, 2, 3) for s in (1, 2, 3)
              if k <= h and k <= w]


@pytest.mark.parametrize("h,w,k,s", POOL_CASES)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_forward_backward_match_autograd_including_overlaps(h, w, k, s, mode):
    rng = np.random.default_rng(h * 100 + w * 10 + k + s)
    x = rng.integers(-3, 4, size=(h, w)).astype(np.float64)  # small integers: many ties
    fwd = cm.pool(x, k, s, mode)
    xt = t4(x, True)
    op = F.max_pool2d if mode == "max" else F.avg_pool2d
    out = op(xt, k, s)
    close(fwd.output, out[0, 0])
    g = rng.normal(size=fwd.output.shape)
    bwd = cm.pool_backward(fwd, g)
    (gx,) = torch.autograd.grad(out, xt, t4(g))
    close(bwd.grad_input, gx[0, 0])
    for cell in bwd.cells:
        assert math.isclose(sum(a for _, a in cell.sources), bwd.grad_input[cell.at], abs_tol=1e-12)
    if mode == "max":
        _, idx = F.max_pool2d(t4(x), k, s, return_indices=True)
        winners = [(int(i) // w, int(i) % w) for i in idx.flatten()]
        assert [win.winner for win in fwd.windows] == winners  # ties: PyTorch's choice
        for win in fwd.windows:  # every cell holding the maximum is listed, the winner first
            assert win.winner == win.maxima[0] and all(x[p] == win.value for p in win.maxima)
            assert len(win.maxima) == int((t(win.values) == float(out.detach()[0, 0][win.at])).sum())


def test_overlapping_max_pool_cell_winning_several_windows_collects_the_sum():
    x = np.array([[1, 3, 2, 2], [4, 9, 1, 0], [2, 0, 5, 6], [1, 7, 3, 3]], dtype=np.float64)
    g = np.array([[1.0, 2.0], [3.0, 4.0]])
    fwd = cm.pool(x, 3, 1, "max")
    bwd = cm.pool_backward(fwd, g)
    xt = t4(x, True)
    (gx,) = torch.autograd.grad(F.max_pool2d(xt, 3, 1), xt, t4(g))
    close(bwd.grad_input, gx[0, 0])
    assert bwd.grad_input[1, 1] == gx[0, 0, 1, 1] == g.sum()  # the 9 wins all four windows
    assert len(bwd.cells[1 * 4 + 1].sources) == 4
    # max_unpool2d places each value once and so loses the sum: the reason the lab does not use it
    _, idx = F.max_pool2d(t4(x), 3, 1, return_indices=True)
    unpooled = F.max_unpool2d(t4(g), idx, 3, 1, output_size=(4, 4))
    assert float(unpooled[0, 0, 1, 1]) != float(gx[0, 0, 1, 1])


def test_max_pool_tie_goes_to_pytorchs_choice():
    x = np.array([[5.0, 5.0], [5.0, 5.0]])
    fwd = cm.pool(x, 2, 2, "max")
    xt = t4(x, True)
    (gx,) = torch.autograd.grad(F.max_pool2d(xt, 2, 2).sum(), xt)
    (winner,) = [w.winner for w in fwd.windows]
    assert gx[0, 0][winner] == 1 and float(gx.sum()) == 1


# ---------------------------------------------------------------------------------------------------------------
# ReLU


def test_relu_example_from_the_lesson():
    x = np.array([[-478.0, 494.0], [460.0, -477.0]])
    rec = cm.relu(x)
    close(rec.output, F.relu(t(x)))
    assert cm.matrix_text(rec.output) == "[[0, 494], [460, 0]]"
    xt = t(x).requires_grad_(True)
    g = np.array([[2.0, -3.0], [5.0, 7.0]])
    rec = cm.relu(x, g)
    (gx,) = torch.autograd.grad(F.relu(xt), xt, t(g))
    close(rec.grad_input, gx)
    close(rec.mask, (gx != 0).to(DT))


def test_relu_gradient_at_exactly_zero_is_zero_as_in_pytorch():
    x = np.array([[0.0, 1.0], [-1.0, 0.0]])
    xt = t(x).requires_grad_(True)
    (gx,) = torch.autograd.grad(F.relu(xt).sum(), xt)
    close(cm.relu(x).grad_input, gx)


# ---------------------------------------------------------------------------------------------------------------
# Two convolutions chained


@pytest.mark.parametrize("seed", range(8))
def test_two_conv_chain_every_step_matches_autograd(seed):
    rng = np.random.default_rng(seed)
    h = int(rng.integers(5, 9))
    k1, k2 = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    pk = int(rng.integers(1, 4))
    ps = int(rng.integers(1, 3))
    if h - k1 - k2 + 2 < pk:
        pk = 1
    image, f1, f2 = rng_matrix(rng, (h, h), True), rng_matrix(rng, (k1, k1)), rng_matrix(rng, (k2, k2))
    rec = cm.two_conv_chain(image, f1, f2, pool_kernel=pk, pool_stride=ps)
    xt, f1t, f2t = t4(image, True), t4(f1, True), t4(f2, True)
    c1 = F.conv2d(xt, f1t)
    c1.retain_grad()
    c2 = F.conv2d(c1, f2t)
    c2.retain_grad()
    p = F.max_pool2d(c2, pk, ps)
    loss = 0.5 * ((p - t4(rec.target)) ** 2).sum()
    loss.backward()
    close(rec.conv1.output, c1[0, 0])
    close(rec.conv2.output, c2[0, 0])
    close(rec.pooled.output, p[0, 0])
    assert math.isclose(rec.loss, float(loss.detach()), rel_tol=1e-12)
    close(rec.grad_conv2, c2.grad[0, 0])
    close(rec.grad_f2, f2t.grad[0, 0])
    close(rec.grad_conv1, c1.grad[0, 0])
    close(rec.grad_f1, f1t.grad[0, 0])
    close(rec.grad_image, xt.grad[0, 0])
    by_name = {s.result_name: s.result for s in rec.steps}
    for name, expected in (("dConv2", c2.grad), ("dF2", f2t.grad), ("dConv1", c1.grad), ("dF1", f1t.grad),
                           ("dImage", xt.grad)):
        close(by_name[name], expected[0, 0])


def test_two_conv_chain_with_a_target():
    rng = np.random.default_rng(5)
    image, f1, f2 = rng_matrix(rng, (6, 6), True), rng_matrix(rng, (2, 2)), rng_matrix(rng, (2, 2))
    target = rng.normal(size=(2, 2))
    rec = cm.two_conv_chain(image, f1, f2, target)
    xt = t4(image, True)
    p = F.max_pool2d(F.conv2d(F.conv2d(xt, t4(f1)), t4(f2)), 2, 2)
    (gx,) = torch.autograd.grad(0.5 * ((p - t4(target)) ** 2).sum(), xt)
    close(rec.grad_image, gx[0, 0])
    with pytest.raises(ValueError, match="target"):
        cm.two_conv_chain(image, f1, f2, np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------------------------------
# conv + sigmoid + fully connected + sigmoid


@pytest.mark.parametrize("seed", range(6))
def test_conv_sigmoid_fc_matches_autograd(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 6)), int(rng.integers(1, 3))
    x, f = rng_matrix(rng, (n, n)), rng_matrix(rng, (k, k))
    w = rng.normal(size=(n - k + 1, n - k + 1))
    b, y = float(rng.normal()), float(rng.uniform())
    rec = cm.conv_sigmoid_fc(x, f, w, b, y)
    xt, ft, wt, bt = t4(x), t4(f, True), t(w).requires_grad_(True), torch.tensor(b, dtype=DT, requires_grad=True)
    z1 = F.conv2d(xt, ft)[0, 0]
    z1.retain_grad()
    a1 = torch.sigmoid(z1)
    a1.retain_grad()
    z2 = (wt.flatten() @ a1.flatten()) + bt
    o = torch.sigmoid(z2)
    e = 0.5 * (y - o) ** 2
    e.backward()
    close(rec.z1, z1)
    close(rec.a1, a1)
    assert math.isclose(rec.o, float(o.detach()), rel_tol=1e-12)
    assert math.isclose(rec.e, float(e.detach()), rel_tol=1e-10, abs_tol=1e-15)
    close(rec.grad_w, wt.grad)
    assert math.isclose(rec.grad_b, float(bt.grad), rel_tol=1e-10, abs_tol=1e-15)
    close(rec.grad_a1, a1.grad)
    close(rec.grad_z1, z1.grad)
    close(rec.grad_f, ft.grad[0, 0])
    assert [s.label.split(" =")[0] for s in rec.forward_steps] == ["Z1", "A", "Z2", "O", "E"]


# ---------------------------------------------------------------------------------------------------------------
# Gradient descent on a curve


@pytest.mark.parametrize("curve", list(cm.CURVES))
def test_gradient_descent_slopes_are_autograds_and_updates_follow_the_rule(curve):
    rec = cm.gradient_descent(curve, -2.0, 0.1, 15)
    for a, loss, slope in zip(rec.positions, rec.losses, rec.slopes, strict=True):
        at = torch.tensor(a, dtype=DT, requires_grad=True)
        value = cm.CURVES[curve].loss(at)
        (g,) = torch.autograd.grad(value, at)
        assert math.isclose(slope, float(g), rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(loss, float(value.detach()), rel_tol=1e-12)
    for i in range(len(rec.positions) - 1):
        assert math.isclose(rec.positions[i + 1], rec.positions[i] - 0.1 * rec.slopes[i], rel_tol=1e-12)
    assert len(rec.positions) == 16


@pytest.mark.parametrize("lr,verdict", [(0.1, "converges"), (0.8, "oscillates and converges"),
                                        (1.0, "oscillates without settling"), (1.1, "diverges")])
def test_gradient_descent_verdicts_on_the_parabola(lr, verdict):
    # L = (a - 1)^2 + 0.5: each step multiplies the distance to 1 by (1 - 2 lr)
    rec = cm.gradient_descent("parabola", -2.0, lr, 40)
    assert rec.verdict.startswith(verdict)
    factor = 1 - 2 * lr
    assert math.isclose(rec.positions[5] - 1, (rec.positions[0] - 1) * factor ** 5, rel_tol=1e-9)


def test_gradient_descent_divergence_stops_before_overflow():
    rec = cm.gradient_descent("two valleys", 3.0, 1.5, 100)
    assert rec.verdict == "diverges"
    assert all(math.isfinite(v) for v in rec.positions + rec.losses)


# ---------------------------------------------------------------------------------------------------------------
# Matrix text


@pytest.mark.parametrize("text", ["1 2\n3 4", "1, 2; 3, 4", "[[1, 2], [3, 4]]", " 1   2 \n\n 3 4 \n"])
def test_parse_matrix_accepts_the_usual_ways_of_typing(text):
    assert cm.parse_matrix(text).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("text,message", [
    ("", "empty"), ("1 2\n3", "same number"), ("1 x\n3 4", "not a number"), ("[[1, 2], [3, 'a']]", "not a number"),
    ("[[1, 2]", "list of rows"), ("1 nan", "finite"), ("1 inf", "finite"), ("1e300", "between"),
    ("\n".join(["1 2 3"] * 9), "largest"), ("[[True]]", "not a number"), ("[[1, 2], 3]", "row"),
])
def test_parse_matrix_explains_bad_input(text, message):
    with pytest.raises(cm.MatrixError, match=message):
        cm.parse_matrix(text, "X")


def test_matrix_text_round_trips():
    m = np.array([[-478.0, 0.5], [1e-3, 3.0]])
    assert cm.parse_matrix(cm.matrix_text(m)).tolist() == m.tolist()
    assert cm.parse_matrix(cm.matrix_rows_text(m)).tolist() == m.tolist()
