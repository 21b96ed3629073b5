"""The explorer's hand-written teaching math lands on the recorded (autograd) numbers, for every layer kind."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnviz.engine.capture import capture
from cnnviz.engine.layer_rules import (
    architecture,
    backward_rule,
    conv_cell,
    conv_input_grad_full,
    conv_weight_grad_terms,
    loss_gradient,
    pool_windows,
    relu_summary,
)
from tests.support import shipped_or_random, small_cnn


@pytest.fixture(scope="module", params=["mnist", "small_cnn"])
def trace(request):
    torch.manual_seed(21)
    if request.param == "mnist":
        model, x = copy.deepcopy(shipped_or_random("mnist")).double(), torch.randn(1, 1, 28, 28).double()
    else:
        model, x = small_cnn().double(), torch.randn(1, 2, 9, 9).double()
    return capture(model, x, target=1)


def cells(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(n)]


def test_conv_cell_sum_of_products_equals_the_map(trace):
    for rec in (r for r in trace.layers if r.kind == "conv"):
        for o, i, j in cells(rec.output.shape):
            cell = conv_cell(rec, o, i, j)
            assert cell.total == pytest.approx(cell.recorded, rel=1e-9, abs=1e-12), rec.name
            # and F.conv2d on the same patch agrees
            ref = F.conv2d(torch.tensor(cell.patch)[None], torch.tensor(cell.kernel)[None])
            assert float(ref) + cell.bias == pytest.approx(cell.recorded, rel=1e-9, abs=1e-12)


def test_every_backward_rule_equals_autograd(trace):
    checked = set()
    for rec in trace.layers:
        for cell in cells(rec.input.shape, n=5, seed=rec.index):
            rule = backward_rule(rec, cell)
            assert rule.value == pytest.approx(rule.recorded, rel=1e-8, abs=1e-12), (rec.name, cell, rule.worked)
        checked.add(rec.kind)
    assert {"conv", "relu", "maxpool", "avgpool"} <= checked


def test_relu_rule_blocks_negative_inputs(trace):
    rec = next(r for r in trace.layers if r.kind == "relu")
    neg = tuple(int(v) for v in np.argwhere(rec.input <= 0)[0])
    pos = tuple(int(v) for v in np.argwhere(rec.input > 0)[0])
    assert backward_rule(rec, neg).value == 0.0
    assert backward_rule(rec, pos).value == pytest.approx(float(rec.grad_output[pos]))


def test_loss_gradient_is_p_minus_onehot(trace):
    rec = trace.layers[-1]  # its grad_output is dL/dlogits
    assert_close(torch.tensor(loss_gradient(trace)), torch.tensor(rec.grad_output))


def test_full_convolution_with_rotated_kernel_equals_grad_input(trace):
    for rec in (r for r in trace.layers if r.kind == "conv" and r.hparams["stride"] == (1, 1)):
        assert_close(torch.tensor(conv_input_grad_full(rec).copy()), torch.tensor(rec.grad_input))


def test_weight_gradient_terms_sum_to_the_recorded_weight_grad(trace):
    for rec in (r for r in trace.layers if r.kind == "conv"):
        o_ch, c_in, kh, kw = rec.weight.shape
        for o, c, u, v in cells((o_ch, c_in, kh, kw), n=4):
            _, _, total = conv_weight_grad_terms(rec, o, c, u, v)
            assert total == pytest.approx(float(rec.weight_grad[o, c, u, v]), rel=1e-8, abs=1e-12)


def test_pool_windows_and_relu_summary(trace):
    for rec in (r for r in trace.layers if r.kind == "maxpool"):
        for w in pool_windows(rec, 0):
            assert rec.input[0, w.arg_row, w.arg_col] == w.value
            assert w.top <= w.arg_row < w.top + w.height and w.left <= w.arg_col < w.left + w.width
    rec = next(r for r in trace.layers if r.kind == "relu")
    summary = relu_summary(rec)
    assert summary.zero_share == pytest.approx(float((rec.output == 0).mean()))
    for c in summary.dead_channels:
        assert not rec.output[c].any()


def test_overlapping_maxpool_cell_collects_several_windows():
    # a single large value inside many 3x3 stride-1 windows wins them all and collects their summed gradient
    net = torch.nn.Sequential(torch.nn.MaxPool2d(3, stride=1), torch.nn.Flatten(), torch.nn.Linear(9, 2)).double()
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 5.0
    tr = capture(net, x, target=0)
    rule = backward_rule(tr.layers[0], (0, 2, 2))
    assert len(rule.terms) == 9
    assert rule.value == pytest.approx(rule.recorded)


def test_architecture_receptive_fields():
    model = shipped_or_random("mnist")
    tr = capture(model, torch.randn(1, 1, 28, 28))
    rows = {r.name: r for r in architecture(model, tr)}
    assert rows["block1.conv1"].receptive_field == 3
    assert rows["block1.conv2"].receptive_field == 5
    assert rows["trans1.pool"].receptive_field == 6 and rows["trans1.pool"].jump == 2
    assert rows["block2.conv2"].receptive_field == 14
    assert rows["trans2.pool"].receptive_field == 16 and rows["trans2.pool"].jump == 4
    assert rows["head.conv3x3"].receptive_field == 24
    assert sum(r.params for r in rows.values()) == sum(p.numel() for p in model.parameters())
    assert rows["head.flatten"].output_shape == (10,)


@pytest.mark.parametrize("activation", [torch.nn.Sigmoid, torch.nn.Tanh])
def test_sigmoid_and_tanh_rules_equal_autograd(activation):
    """The Train a CNN page's activations: dL/dx = dL/dy * local slope, written from the recorded output."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), activation(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    trace = capture(net.double(), torch.randn(1, 1, 4, 4, dtype=torch.float64))
    rec = trace.layers[1]
    for cell in [(0, 0, 0), (1, 1, 1), (0, 1, 0)]:
        rule = backward_rule(rec, cell)
        torch.testing.assert_close(torch.tensor(rule.value), torch.tensor(float(rec.grad_input[cell])))


def test_conv_cell_window_position_follows_stride_and_padding_per_axis():
    """The window the explorer marks on the input: rows and columns each use their own stride and padding."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, (3, 2), stride=(2, 3), padding=(1, 0)), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 5 * 4, 3))
    trace = capture(net.double(), torch.randn(1, 1, 9, 11, dtype=torch.float64))
    rec = trace.layers[0]
    for row, col in [(0, 0), (2, 3), (4, 1)]:
        cell = conv_cell(rec, 1, row, col)
        assert (cell.top, cell.left) == (row * 2 - 1, col * 3 - 0)
        x = torch.from_numpy(rec.input.copy())
        padded = F.pad(x, (0, 0, 1, 1))
        window = padded[:, cell.top + 1:cell.top + 1 + 3, cell.left:cell.left + 2]
        assert_close(torch.from_numpy(cell.patch.copy()), window)
