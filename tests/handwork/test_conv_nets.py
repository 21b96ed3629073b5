"""The chained convolutions, the conv + sigmoid + FC network and gradient descent, recomputed with autograd in
float64, including every number the records print."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnviz.handwork import conv_nets as nets
from cnnviz.handwork.matrices import matrix_text
from tests.handwork.conv_oracle import DT, close, matrix_of, printed_close, products, random_matrix, shares, t, t4


def rng_matrix(rng: np.random.Generator, shape, integers: bool = False) -> np.ndarray:
    if integers:
        return rng.integers(-5, 6, size=shape).astype(np.float64)
    return rng.normal(size=shape)


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
    rec = nets.two_conv_chain(image, f1, f2, pool_kernel=pk, pool_stride=ps)
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
    rec = nets.two_conv_chain(image, f1, f2, target)
    xt = t4(image, True)
    p = F.max_pool2d(F.conv2d(F.conv2d(xt, t4(f1)), t4(f2)), 2, 2)
    (gx,) = torch.autograd.grad(0.5 * ((p - t4(target)) ** 2).sum(), xt)
    close(rec.grad_image, gx[0, 0])
    with pytest.raises(ValueError, match="target"):
        nets.two_conv_chain(image, f1, f2, np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------------------------------
# conv + sigmoid + fully connected + sigmoid


@pytest.mark.parametrize("seed", range(6))
def test_conv_sigmoid_fc_matches_autograd(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 6)), int(rng.integers(1, 3))
    x, f = rng_matrix(rng, (n, n)), rng_matrix(rng, (k, k))
    w = rng.normal(size=(n - k + 1, n - k + 1))
    b, y = float(rng.normal()), float(rng.uniform())
    rec = nets.conv_sigmoid_fc(x, f, w, b, y)
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


@pytest.mark.parametrize("curve", list(nets.CURVES))
def test_gradient_descent_slopes_are_autograds_and_updates_follow_the_rule(curve):
    rec = nets.gradient_descent(curve, -2.0, 0.1, 15)
    for a, loss, slope in zip(rec.positions, rec.losses, rec.slopes, strict=True):
        at = torch.tensor(a, dtype=DT, requires_grad=True)
        value = nets.CURVES[curve].loss(at)
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
    rec = nets.gradient_descent("parabola", -2.0, lr, 40)
    assert rec.verdict.startswith(verdict)
    factor = 1 - 2 * lr
    assert math.isclose(rec.positions[5] - 1, (rec.positions[0] - 1) * factor ** 5, rel_tol=1e-9)


def test_gradient_descent_divergence_stops_before_overflow():
    rec = nets.gradient_descent("two valleys", 3.0, 1.5, 100)
    assert rec.verdict == "diverges"
    assert all(math.isfinite(v) for v in rec.positions + rec.losses)




# ---------------------------------------------------------------------------------------------------------------
# Every printed number, read back from the text, against torch


@pytest.mark.parametrize("seed", range(40))
def test_every_printed_number_of_the_chain_matches_autograd(seed):
    rng = np.random.default_rng(100 + seed)
    h = int(rng.integers(3, 9))
    k1, k2 = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    n2 = h - k1 - k2 + 2
    if n2 < 1:
        k1 = k2 = 1
        n2 = h
    pk = int(rng.integers(1, n2 + 1))
    kind = seed % 4
    image, f1, f2 = (random_matrix(rng, (h, h), kind), random_matrix(rng, (k1, k1), kind),
                     random_matrix(rng, (k2, k2), kind))
    rec = nets.two_conv_chain(image, f1, f2, pool_kernel=pk)
    xt, f1t, f2t = t4(image, True), t4(f1, True), t4(f2, True)
    c1 = F.conv2d(xt, f1t)
    c2 = F.conv2d(c1, f2t)
    p = F.max_pool2d(c2, pk, pk)
    loss = 0.5 * (p ** 2).sum()
    g_img, g_f1, g_f2, g_c1, g_c2, g_p = torch.autograd.grad(loss, (xt, f1t, f2t, c1, c2, p))
    d = {"dE/dP": g_p, "dConv2": g_c2, "dF2": g_f2, "dConv1": g_c1, "dF1": g_f1, "dImage": g_img}
    d = {k: v.detach()[0, 0] for k, v in d.items()}
    c1, c2 = c1.detach()[0, 0], c2.detach()[0, 0]
    pad2, pad1 = F.pad(d["dConv2"], (k2 - 1,) * 4), F.pad(d["dConv1"], (k1 - 1,) * 4)
    factors = {"dF2": (c1, d["dConv2"]), "dConv1": (pad2, torch.rot90(t(f2), 2)), "dF1": (t(image), d["dConv1"]),
               "dImage": (pad1, torch.rot90(t(f1), 2))}
    shown, expected = [float(rec.loss_line().split("**")[1])], [loss.detach()]
    _, idx = F.max_pool2d(c2[None, None], pk, pk, return_indices=True)
    for step in rec.steps:
        shown += list(matrix_of(matrix_text(step.result)).ravel())
        expected += list(d[step.result_name].ravel())
        for line in step.lines().splitlines():
            if line == "- every other cell: 0 (it won no window)":
                continue
            at = tuple(int(v) for v in line.split("[", 1)[1].split("]")[0].split(", "))
            text = line.split("] = ", 1)[1]
            if step.cells:
                pairs, total = products(text)
                cell = next(c for c in step.cells if c.at == at)
                terms = [tm for tm in cell.terms if tm.left != 0 and tm.right != 0]
                left, right = factors[step.result_name]
                for (a, b), tm in zip(pairs, terms, strict=True):
                    shown += [a, b]
                    expected += [left[tm.left_at], right[tm.right_at]]
            else:  # the pool step: the shares from the windows this cell wins, in torch's choice of winners
                parts, total = shares(text.split("  (from")[0])
                windows = [w for w in np.ndindex(tuple(idx.shape[2:]))
                           if divmod(int(idx[0, 0][w]), c2.shape[1]) == at]
                assert len(parts) == len(windows)
                shown += parts
                expected += [d["dE/dP"][w] for w in windows]
            shown.append(total)
            expected.append(d[step.result_name][at])
    scale = 1e3 * max(np.abs(image).max(), 1e-30) ** 2 * max(np.abs(f1).max(), 1e-30) ** 2 * max(
        np.abs(f2).max(), 1e-30) ** 2
    printed_close(shown, torch.stack([torch.as_tensor(e, dtype=DT) for e in expected]), scale)


@pytest.mark.parametrize("seed", range(40))
def test_every_printed_number_of_the_tiny_network_matches_autograd(seed):
    rng = np.random.default_rng(200 + seed)
    n, k = int(rng.integers(1, 6)), 1
    k = int(rng.integers(1, n + 1))
    x, f = random_matrix(rng, (n, n), seed % 4), random_matrix(rng, (k, k), (seed + 1) % 4)
    w = random_matrix(rng, (n - k + 1, n - k + 1), (seed + 2) % 4)
    b, y = float(rng.normal() * (1e-6 if seed % 5 == 0 else 1)), float(rng.uniform())
    rec = nets.conv_sigmoid_fc(x, f, w, b, y)
    ft, wt = t4(f, True), t(w).requires_grad_(True)
    bt = torch.tensor(b, dtype=DT, requires_grad=True)
    z1 = F.conv2d(t4(x), ft)[0, 0]
    a1 = torch.sigmoid(z1)
    z2 = (wt.flatten() @ a1.flatten()) + bt
    o = torch.sigmoid(z2)
    e = 0.5 * (y - o) ** 2
    g_o, g_z2, g_w, g_b, g_a1, g_z1, g_f = torch.autograd.grad(e, (o, z2, wt, bt, a1, z1, ft))
    values = [z1, a1, z2, o, e, g_o, g_z2, g_w, g_b, g_a1, g_z1, g_f[0, 0]]
    shown, expected = [], []
    for step, value in zip(rec.forward_steps + rec.backward_steps, values, strict=True):
        result = step.detail.rsplit("= ", 1)[-1]
        shown += list(matrix_of(result).ravel()) if result.startswith("[") else [float(result)]
        expected += list(value.detach().reshape(-1))
    pairs, _ = products(rec.forward_steps[2].detail.rsplit(" + ", 1)[0] + " = 0")  # Wᵀ A, factor by factor
    for (wi, ai), we, ae in zip(pairs, w.ravel(), a1.detach().ravel(), strict=True):
        shown += [wi, ai]
        expected += [torch.tensor(we, dtype=DT), ae]
    printed_close(shown, torch.stack([torch.as_tensor(v, dtype=DT) for v in expected]), 1e-3)


@pytest.mark.parametrize("curve", list(nets.CURVES))
@pytest.mark.parametrize("lr", [0.0, 0.05, 0.4, 0.8, 1.0, 1.1, 1.5])
def test_every_number_in_the_descent_table_matches_autograd(curve, lr):
    rec = nets.gradient_descent(curve, -2.0 if curve == "parabola" else 2.9, lr, 50)
    shown, expected = [], []
    for n, row in enumerate(rec.table()):
        at = torch.tensor(float(row["a"]), dtype=DT, requires_grad=True)
        value = nets.CURVES[curve].loss(at)
        (slope,) = torch.autograd.grad(value, at)
        a_true = torch.tensor(rec.positions[n], dtype=DT, requires_grad=True)
        (slope_true,) = torch.autograd.grad(nets.CURVES[curve].loss(a_true), a_true)
        shown += [float(row["a"]), float(row["L(a)"]), float(row["slope L'(a)"])]
        expected += [a_true.detach(), nets.CURVES[curve].loss(a_true).detach(), slope_true]
        if row["next a = a − lr·slope"]:
            left, nxt = row["next a = a − lr·slope"].split(" = ")
            a, rest = left.split(" − ")
            lr_shown, slope_shown = rest.split("·")
            shown += [float(a), float(lr_shown), float(slope_shown.strip("()")), float(nxt)]
            expected += [a_true.detach(), torch.tensor(lr, dtype=DT), slope_true,
                         (a_true - lr * slope_true).detach()]
        assert abs(float(slope) - float(row["slope L'(a)"])) <= 1e-4 * max(1.0, abs(float(slope))) * 10
    printed_close(shown, torch.stack([torch.as_tensor(v, dtype=DT) for v in expected]), 1.0)
