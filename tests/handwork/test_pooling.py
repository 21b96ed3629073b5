"""Pooling and ReLU as the lab shows them, recomputed with F.max_pool2d, F.avg_pool2d, F.relu and autograd (float64),
including every number the records print."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnviz.handwork import pooling as pl
from tests.handwork.conv_oracle import DT, close, matrices_after, matrix_of, printed_close, random_matrix, shares, t, t4

# ---------------------------------------------------------------------------------------------------------------
# Pooling

POOL_CASES = [(h, w, k, s) for h in (2, 4, 5, 7) for w in (3, 5, 8) for k in (1, 2, 3) for s in (1, 2, 3)
              if k <= h and k <= w]


@pytest.mark.parametrize("h,w,k,s", POOL_CASES)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_forward_backward_match_autograd_including_overlaps(h, w, k, s, mode):
    rng = np.random.default_rng(h * 100 + w * 10 + k + s)
    x = rng.integers(-3, 4, size=(h, w)).astype(np.float64)  # small integers: many ties
    fwd = pl.pool(x, k, s, mode)
    xt = t4(x, True)
    op = F.max_pool2d if mode == "max" else F.avg_pool2d
    out = op(xt, k, s)
    close(fwd.output, out[0, 0])
    g = rng.normal(size=fwd.output.shape)
    bwd = pl.pool_backward(fwd, g)
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
    fwd = pl.pool(x, 3, 1, "max")
    bwd = pl.pool_backward(fwd, g)
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
    fwd = pl.pool(x, 2, 2, "max")
    xt = t4(x, True)
    (gx,) = torch.autograd.grad(F.max_pool2d(xt, 2, 2).sum(), xt)
    (winner,) = [w.winner for w in fwd.windows]
    assert gx[0, 0][winner] == 1 and float(gx.sum()) == 1


# ---------------------------------------------------------------------------------------------------------------
# ReLU


def test_relu_example_from_the_lesson():
    x = np.array([[-478.0, 494.0], [460.0, -477.0]])
    rec = pl.relu(x)
    close(rec.output, F.relu(t(x)))
    assert pl.matrix_text(rec.output) == "[[0, 494], [460, 0]]"
    xt = t(x).requires_grad_(True)
    g = np.array([[2.0, -3.0], [5.0, 7.0]])
    rec = pl.relu(x, g)
    (gx,) = torch.autograd.grad(F.relu(xt), xt, t(g))
    close(rec.grad_input, gx)
    close(rec.mask, (gx != 0).to(DT))


def test_relu_gradient_at_exactly_zero_is_zero_as_in_pytorch():
    x = np.array([[0.0, 1.0], [-1.0, 0.0]])
    xt = t(x).requires_grad_(True)
    (gx,) = torch.autograd.grad(F.relu(xt).sum(), xt)
    close(pl.relu(x).grad_input, gx)




# ---------------------------------------------------------------------------------------------------------------
# Every printed number, read back from the text, against torch


def random_pool_cases(n: int, seed: int):
    """Random matrices and windows, down to a single window (a 1x1 output) and 1x1 windows."""
    rng = np.random.default_rng(seed)
    while n:
        h, w = (int(v) for v in rng.integers(1, 9, size=2))
        k, s = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        if k > min(h, w):
            continue
        n -= 1
        yield random_matrix(rng, (h, w), int(rng.integers(0, 4))), k, s, rng


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("seed", range(5))
def test_every_printed_number_of_300_random_poolings_matches_torch(mode, seed):
    op = F.max_pool2d if mode == "max" else F.avg_pool2d
    outputs = set()
    for x, k, s, rng in random_pool_cases(30, seed):
        fwd = pl.pool(x, k, s, mode)
        xt = t4(x, True)
        out = op(xt, k, s)
        g = random_matrix(rng, tuple(out.shape[2:]), int(rng.integers(0, 4)))
        (gx,) = torch.autograd.grad(out, xt, t4(g))
        out, gx = out.detach()[0, 0], gx[0, 0]
        outputs.add(tuple(out.shape))
        bwd = pl.pool_backward(fwd, g)
        (o_shown,), (x_shown,) = matrices_after(bwd.summary(), "output"), matrices_after(bwd.summary(), "dE/dX")
        shown, expected = [*o_shown.ravel(), *x_shown.ravel()], [*out.ravel(), *gx.ravel()]
        _, idx = F.max_pool2d(t4(x), k, s, return_indices=True)
        for win, index in zip(fwd.windows, idx.flatten().tolist(), strict=True):
            text = win.describe()
            assert text.startswith(f"Window ({win.at[0]}, {win.at[1]}) = ")
            shown += [*matrix_of(text.split(" = ", 1)[1].split(":")[0]).ravel(), float(text.split(" is ")[1]
                                                                                       .split(" at ")[0].rstrip("."))]
            expected += [*t(x)[win.top:win.top + k, win.left:win.left + k].ravel(), out[win.at]]
            if mode == "max":  # the winner named is PyTorch's choice, ties included
                assert text.endswith(f"at X[{index // x.shape[1]}, {index % x.shape[1]}].")
                tie = win.tie()
                assert (tie is not None) == (int((t(win.values) == out[win.at]).sum()) > 1)
                if tie:
                    assert tie.endswith(f"picks the first, X[{index // x.shape[1]}, {index % x.shape[1]}].")
        lines = pl.route_lines(bwd.cells, "dE/dX", max_pool=mode == "max").splitlines()
        for line in lines:
            if not line.startswith("- dE/dX["):
                assert line == "- every other cell: 0 (it won no window)"
                continue
            at = tuple(int(v) for v in line[len("- dE/dX["):line.index("]")].split(", "))
            parts, total = shares(line.split("] = ", 1)[1].split("  (from")[0])
            windows = [tuple(int(v) for v in w.split(", ")) for w in re.findall(r"\((\d+, \d+)\)",
                                                                               line.split("(from window")[1])]
            for i, j in windows:  # each window named holds this cell, and (max) torch routes it here
                assert i * s <= at[0] < i * s + k and j * s <= at[1] < j * s + k
                assert mode == "avg" or divmod(int(idx[0, 0, i, j]), x.shape[1]) == at
            sent = [g[w] * (1.0 if mode == "max" else 1.0 / (k * k)) for w in windows]
            assert len(parts) == len(sent)
            shown += [*parts, total]
            expected += [*sent, gx[at]]
        receivers = {tuple(int(v) for v in ln[len("- dE/dX["):ln.index("]")].split(", "))
                     for ln in lines if ln.startswith("- dE/dX[")}
        assert all(gx[p] == 0 for p in np.ndindex(x.shape) if p not in receivers)  # "every other cell: 0"
        scale = 16 * (np.abs(x).max() + np.abs(g).max())
        printed_close(shown, torch.stack([torch.as_tensor(e, dtype=DT) for e in expected]), scale)
    assert (1, 1) in outputs  # single-window cases were drawn


def test_relu_of_tiny_numbers_is_not_printed_as_zero():
    # issue 12: [[1e-10, -1e-10], [1, 2]] showed ReLU = [[0, 0], ...] beside the mask [[1, 0], ...]
    x = [[1e-10, -1e-10], [1.0, 2.0]]
    forward, backward = pl.relu(x).lines()
    (relu_shown,) = matrices_after(forward, "ReLU([[1e-10, -1e-10], [1, 2]])")
    printed_close(relu_shown, F.relu(t(x)))
    assert relu_shown[0, 0] == 1e-10
    xt = t(x).requires_grad_(True)
    (gx,) = torch.autograd.grad(F.relu(xt).sum(), xt)
    (mask,) = [matrix_of(backward.split("the mask ")[1].split(" gives")[0])]
    close(mask, (gx != 0).to(DT))
    (gx_shown,) = matrices_after(backward, "dE/dX")
    printed_close(gx_shown, gx)


@pytest.mark.parametrize("seed", range(4))
def test_relu_text_of_random_matrices_matches_torch(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        shape = tuple(int(v) for v in rng.integers(1, 9, size=2))
        x, g = random_matrix(rng, shape, int(rng.integers(0, 4))), random_matrix(rng, shape, int(rng.integers(0, 4)))
        forward, backward = pl.relu(x, g).lines()
        xt = t(x).requires_grad_(True)
        y = F.relu(xt)
        (gx,) = torch.autograd.grad(y, xt, t(g))
        printed_close(matrix_of(forward.split(" = ", 1)[1]), y)
        printed_close(matrix_of(forward[len("ReLU("):forward.index(") = ")]), t(x))
        printed_close(matrices_after(backward, "dE/dX")[0], gx)
        printed_close(matrices_after(backward, "dE/dY")[0], t(g))
