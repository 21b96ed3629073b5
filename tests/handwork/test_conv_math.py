"""One convolution and the output-size formula as the lab shows them, recomputed with F.conv2d and autograd in
float64: every matrix, and every number the records print (read back from their text)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnviz.handwork import conv_math as cm
from cnnviz.handwork import matrices as mx
from tests.handwork.conv_oracle import close, matrices_after, printed_close, products, random_matrix, t, t4


def rng_matrix(rng: np.random.Generator, shape, integers: bool = False) -> np.ndarray:
    return random_matrix(rng, shape, 0 if integers else 1)


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




def test_output_size_tells_rows_left_over_at_the_end_from_gaps_the_stride_skips():
    # issue 12: W = 7, F = 2, P = 1, S = 3 called the last row "left over" and then listed rows 1 and 4, which are
    # gaps between windows, as never covered
    size = cm.output_size(7, 2, 1, 3)
    xp = torch.zeros(1, 1, 9, 1, requires_grad=True)
    (g,) = torch.autograd.grad(F.conv2d(xp, torch.ones(1, 1, 2, 1), stride=(3, 1)).sum(), xp)
    hit = torch.nonzero(g[0, 0, :, 0]).flatten().tolist()
    assert size.left_over == tuple(range(hit[-1] + 1, 9)) == (8,)  # after the last window: padding
    assert size.gaps == tuple(i for i in range(hit[-1]) if i not in hit) == (2, 5)  # between windows: input 1, 4
    _, text = size.coverage()
    left, gaps = text.split("The stride")
    assert "left over at the end" in left and "only padding is left over" in left and "1, 4" not in left
    assert "gaps" in gaps and "input rows/columns 1, 4" in gaps


def test_output_size_matches_pytorch_for_every_slider_combination():
    """All 3,584 slider combinations: the size, the rows no window covers (those that get no gradient in torch),
    and which of them the text calls left over at the end and which gaps between windows."""
    checked = 0
    for w, k, p, s in itertools.product(W_RANGE, K_RANGE, P_RANGE, S_RANGE):
        if k > w + 2 * p:
            with pytest.raises(ValueError):
                cm.output_size(w, k, p, s)
            continue
        checked += 1
        size = cm.output_size(w, k, p, s)
        # each padded row's gradient when every output gets 1: conv_transpose1d is conv1d's backward
        n_out = F.conv1d(torch.zeros(1, 1, w), torch.zeros(1, 1, k), stride=s, padding=p).shape[-1]
        g = F.conv_transpose1d(torch.ones(1, 1, n_out), torch.ones(1, 1, k), stride=s)[0, 0]
        g = F.pad(g, (0, w + 2 * p - g.numel()))
        assert size.uncovered_padded == tuple(torch.nonzero(g == 0).flatten().tolist()), (w, k, p, s)
        hit = torch.nonzero(g).flatten().tolist()
        after = [i for i in range(w + 2 * p) if i > hit[-1]]
        between = [i for i in range(hit[-1]) if i not in hit]
        assert list(size.left_over) == after and list(size.gaps) == between, (w, k, p, s)
        level, text = size.coverage()
        assert (level == "success") == (not after and not between), (w, k, p, s)
        if after:
            lost = [i - p for i in after if p <= i < p + w]
            assert f"the last {len(after)} row" in text
            assert (f"input rows/columns {', '.join(map(str, lost))} (counting from 0) are never covered" in text
                    if lost else "only padding is left over" in text), (w, k, p, s, text)
        if between:
            skipped = [i - p for i in between if p <= i < p + w]
            assert (f"input rows/columns {', '.join(map(str, skipped))} (counting from 0), which are never covered"
                    in text if skipped else "only padding, so every input row" in text), (w, k, p, s, text)
        assert size.formula().endswith(f"= {n_out}") and size.out == n_out
        assert size.whole == (not after) and len(after) == (w - k + 2 * p) % s
    assert checked > 3000


# ---------------------------------------------------------------------------------------------------------------
# Every printed number, read back from the text, against torch


def test_small_results_are_not_printed_as_zero():
    # issue 12: X = [[1e-5, 2e-5], [3e-5, 4e-5]], F = [[1e-5]] showed O = [[0, 0], [0, 0]] and "1e-05·1e-05 = 0"
    x, f = [[1e-5, 2e-5], [3e-5, 4e-5]], [[1e-5]]
    rec = cm.conv_forward(x, f)
    out = F.conv2d(t4(x), t4(f))[0, 0]
    (shown,) = matrices_after(rec.summary(), "O")
    assert (shown != 0).all()
    printed_close(shown, out)
    pairs, value = products(rec.cells[0].expression())
    assert pairs == [(1e-5, 1e-5)] and value != 0
    printed_close(value, out[0, 0])


def random_conv_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    while n:
        h, w, kh, kw = (int(v) for v in rng.integers(1, 9, size=2).tolist() + rng.integers(1, 6, size=2).tolist())
        stride, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        if kh > h + 2 * padding or kw > w + 2 * padding:
            continue
        n -= 1
        kind = int(rng.integers(0, 4))
        yield (random_matrix(rng, (h, w), kind), random_matrix(rng, (kh, kw), kind), stride, padding,
               random_matrix(rng, ((h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1),
                             int(rng.integers(0, 4))))


def cell_text(cell, left: torch.Tensor, right: torch.Tensor, value: torch.Tensor, skip_zeros: bool = False
              ) -> tuple[list[float], list[torch.Tensor]]:
    """A printed sum of products read back: (its numbers, what torch says each is): every factor the entry it
    names, the total torch's result; no product is lost."""
    pairs, total = products(cell.expression(skip_zeros=skip_zeros))
    terms = [tm for tm in cell.terms if not (skip_zeros and (tm.left == 0 or tm.right == 0))]
    assert len(pairs) == len(terms)
    shown, expected = [total], [value]
    for (a, b), tm in zip(pairs, terms, strict=True):
        shown += [a, b]
        expected += [left[tm.left_at], right[tm.right_at]]
    return shown, expected


@pytest.mark.parametrize("seed", range(10))
def test_every_printed_number_of_300_random_convolutions_matches_torch(seed):
    for x, f, stride, padding, g in random_conv_cases(30, seed):
        fwd = cm.conv_forward(x, f, stride, padding)
        xt, ft = t4(x, True), t4(f, True)
        out = F.conv2d(xt, ft, stride=stride, padding=padding)  # (1, 1, H_out, W_out)
        gx, gf = torch.autograd.grad(out, (xt, ft), t4(g))
        out, gx, gf = out.detach()[0, 0], gx[0, 0], gf[0, 0]
        xpad = F.pad(t4(x), (padding,) * 4)[0, 0]
        bwd = cm.conv_backward(fwd, g)
        (o_shown,), (f_shown,), (x_shown,) = (matrices_after(fwd.summary(), "O"),
                                              matrices_after(bwd.summary(), "dE/dF"),
                                              matrices_after(bwd.summary(), "dE/dX"))
        assert fwd.summary().endswith(f"= {out.shape[1]}. O = {mx.matrix_text(o_shown)}")
        shown, expected = [*o_shown.ravel(), *f_shown.ravel(), *x_shown.ravel()], [*out.ravel(), *gf.ravel(),
                                                                                   *gx.ravel()]
        full, frot = t(bwd.grad_output_full), torch.rot90(t(f), 2)
        for cells, left, right, result, skip in ((fwd.cells, xpad, t(f), out, False),
                                                 (bwd.grad_filter_cells, xpad, t(g), gf, False),
                                                 (bwd.grad_input_cells, full, frot, gx, True)):
            for cell in cells:
                more, wanted = cell_text(cell, left, right, result[cell.at], skip)
                shown += more
                expected += wanted
        mx_, mf, mg = np.abs(x).max(), np.abs(f).max(), np.abs(g).max()
        scale = 64 * (mx_ * mf + mx_ * mg + mf * mg)  # the largest a sum of products here can be
        printed_close(shown, torch.stack([torch.as_tensor(e, dtype=torch.float64) for e in expected]), scale)


def test_inserted_zeros_are_exactly_the_cells_that_are_not_entries_of_the_gradient():
    fwd = cm.conv_forward(np.ones((5, 5)), np.ones((2, 3)), stride=2, padding=1)
    g = np.arange(1.0, fwd.output.size + 1).reshape(fwd.output.shape)  # no zero entry
    bwd = cm.conv_backward(fwd, g)
    zeros = bwd.inserted_zeros
    real = sorted(set(np.ndindex(bwd.grad_output_full.shape)) - zeros)
    assert [bwd.grad_output_full[p] for p in real] == g.ravel().tolist()  # in reading order
    assert all(bwd.grad_output_full[p] == 0 for p in zeros)
    # the full convolution over them is autograd's gradient for the padded input
    xp = t4(fwd.x_padded, True)
    (gxp,) = torch.autograd.grad(F.conv2d(xp, t4(fwd.f), stride=2), xp, t4(g))
    close(F.conv2d(t4(bwd.grad_output_full), t4(bwd.f_rot180))[0, 0], gxp[0, 0])


def test_notes_name_the_stride_and_the_padding():
    fwd = cm.conv_forward(np.ones((4, 4)), np.ones((2, 2)), stride=3, padding=1)
    bwd = cm.conv_backward(fwd, np.ones(fwd.output.shape))
    assert "3 apart" in bwd.stride_note() and "2 zeros between" in bwd.stride_note()
    assert f"({fwd.x_padded.shape[0]}x{fwd.x_padded.shape[1]})" in bwd.padding_note()
    plain = cm.conv_backward(cm.conv_forward(np.ones((3, 3)), np.ones((2, 2))), np.ones((2, 2)))
    assert plain.stride_note() is None and plain.padding_note() is None


def test_kernel_position_k_is_the_kth_entry_in_reading_order():
    fwd = cm.conv_forward(np.arange(16.0).reshape(4, 4), np.ones((2, 2)), stride=2)
    for k in range(fwd.output.size):
        cell, top_left = fwd.window(k)
        assert cell.at == divmod(k, fwd.output.shape[1]) and top_left == (cell.at[0] * 2, cell.at[1] * 2)
        assert mx.entry_label(k, fwd.output.shape) == f"({cell.at[0]}, {cell.at[1]})"
