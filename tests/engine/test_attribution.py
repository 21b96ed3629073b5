"""Captum wrappers against hand-written autograd in float64, and safe under concurrent sessions."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from cnnviz.engine.attribution import attribute, conv_layer_names, grad_cam, integrated_gradients, saliency
from cnnviz.engine.capture import capture
from tests.helpers import shipped_or_random


@pytest.fixture(scope="module")
def model64():
    return copy.deepcopy(shipped_or_random("mnist")).double()


@pytest.fixture(scope="module")
def x64():
    torch.manual_seed(11)
    return torch.randn(1, 1, 28, 28, dtype=torch.float64)


def test_saliency_is_abs_input_gradient_of_the_logit(model64, x64):
    result = saliency(model64, x64, 3)
    x = x64.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model64(x)[0, 3], [x])
    assert_close(torch.as_tensor(result.values), g[0].abs().amax(0))
    # the same number the explorer's "logit" capture reports
    trace = capture(model64, x64, target=3, objective="logit")
    assert_close(torch.as_tensor(result.values), torch.as_tensor(np.abs(trace.input_grad).max(0)))


def test_grad_cam_equals_the_paper_formula(model64, x64):
    layer = "head.conv3x3"
    result = grad_cam(model64, x64, 7, layer)
    acts = {}
    module = dict(model64.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, out: acts.__setitem__("a", out))
    try:
        logit = model64(x64)[0, 7]
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(logit, [acts["a"]])  # (1, K, h, w)
    weights = g.mean(dim=(2, 3), keepdim=True)  # alpha_k = spatial mean of the gradient
    cam = torch.relu((weights * acts["a"]).sum(1))  # (1, h, w)
    assert_close(torch.as_tensor(result.raw), cam.detach())
    assert result.values.shape == (28, 28)


def _gauss_legendre_ig(model, x, baseline, target, steps):
    """IG written out: sum_i w_i * dF/dx(b + a_i (x - b)) * (x - b), Gauss-Legendre nodes mapped to [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    total = torch.zeros_like(x)
    for a, w in zip(0.5 * (nodes + 1), 0.5 * weights, strict=True):
        point = (baseline + float(a) * (x - baseline)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(point)[0, target], [point])
        total += float(w) * g
    return total * (x - baseline)


def test_integrated_gradients_equals_the_quadrature_written_out(model64, x64):
    baseline = torch.full_like(x64, float(x64.min()))
    result = integrated_gradients(model64, x64, 2, steps=24, baseline=baseline)
    expected = _gauss_legendre_ig(model64, x64, baseline, 2, 24)
    assert_close(torch.as_tensor(result.raw), expected[0])
    assert_close(torch.as_tensor(result.values), expected[0].sum(0))
    # the default baseline is a black image in the model's own (normalized) pixel space
    default = integrated_gradients(model64, x64, 2, steps=24)
    assert_close(torch.as_tensor(default.raw), torch.as_tensor(result.raw))


def test_integrated_gradients_completeness_on_a_smooth_copy(model64, x64):
    """Completeness (attributions sum to F(x) - F(baseline)) holds in the limit; with ReLU kinks the quadrature
    converges slowly (a trained net on noise is off by a few % even at 1000 steps), so check it on a copy whose
    ReLUs are Softplus and max-pools average: a smooth path, where 64 Gauss-Legendre nodes are plenty."""
    smooth = copy.deepcopy(model64)
    for module in list(smooth.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(module, child_name, torch.nn.Softplus(beta=4.0))
            elif isinstance(child, torch.nn.MaxPool2d):
                setattr(module, child_name, torch.nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.MaxPool2d)) for m in smooth.modules())
    baseline = torch.full_like(x64, float(x64.min()))
    result = integrated_gradients(smooth, x64, 2, steps=64, baseline=baseline)
    with torch.no_grad():
        gap = float(smooth(x64)[0, 2] - smooth(baseline)[0, 2])
    assert float(result.raw.sum()) == pytest.approx(gap, rel=1e-3, abs=1e-4)


def test_attribute_dispatch_and_errors(model64, x64):
    assert attribute(model64, x64, 1, "grad_cam").layer == conv_layer_names(model64)[-1]
    with pytest.raises(ValueError, match="unknown method"):
        attribute(model64, x64, 1, "magic")
    with pytest.raises(ValueError, match="not a conv layer"):
        grad_cam(model64, x64, 1, "head.gap")


def test_attributions_are_safe_beside_other_sessions():
    model = shipped_or_random("mnist")
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randn(1, 1, 28, 28, generator=gen) for _ in range(4)]
    alone = [grad_cam(model, x, i, "block2.conv2").raw for i, x in enumerate(inputs)]
    failures = []

    def worker(i):
        try:
            for _ in range(15):
                assert_close(torch.as_tensor(grad_cam(model, inputs[i], i, "block2.conv2").raw),
                             torch.as_tensor(alone[i]), rtol=1e-5, atol=1e-6)
                capture(model, inputs[(i + 1) % 4])
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, failures[:2]
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())
