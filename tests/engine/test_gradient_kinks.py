"""The explorer's gradient check at a kink: where a ReLU's input is exactly 0 or a max-pool window has a tie the
objective has no derivative (its one-sided slopes differ); the check computes both slopes and the page says so.
Where the objective is smooth, it says nothing of the kind."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from cnnviz.engine.capture import gradient_check
from cnnviz.engine.checkpoints import CheckpointError, load_model
from cnnviz.numbers import fmt
from cnnviz.render.inspect import gradient_check_text
from tests.support import digit_input

NO_DERIVATIVE = "No derivative here"


def relu_at_zero() -> nn.Module:
    """logit 0 = 2 relu(x): a kink at x = 0, slope 0 to the left and 2 to the right."""
    net = nn.Sequential(OrderedDict([("fc1", nn.Linear(1, 1)), ("relu", nn.ReLU()), ("fc2", nn.Linear(1, 2))]))
    with torch.no_grad():
        net.fc1.weight.fill_(1.0)
        net.fc1.bias.zero_()
        net.fc2.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        net.fc2.bias.zero_()
    return net.eval()


def pool_tie() -> tuple[nn.Module, torch.Tensor]:
    """One 2x2 max-pool window holding a tie (two cells of 1.0), then logit 0 = 3 max."""
    net = nn.Sequential(OrderedDict([("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
                                     ("fc", nn.Linear(1, 2))]))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[3.0], [1.0]]))
        net.fc.bias.zero_()
    return net.eval(), torch.tensor([[[[1.0, 1.0], [0.0, -1.0]]]])


def float64_one_sided_slopes(model: nn.Module, x: torch.Tensor, index: tuple[int, ...], h: float = 1e-3):
    """The objective's slope to the left and to the right of x[index], by float64 torch."""
    net = copy.deepcopy(model).double()

    def f(step: float) -> float:
        y = x.double().clone()
        y[(0, *index)] += step
        with torch.no_grad():
            return float(net(y)[0, 0])

    return (f(0.0) - f(-h)) / h, (f(h) - f(0.0)) / h


def test_relu_input_at_zero_is_a_kink_with_both_slopes_written():
    net, x = relu_at_zero(), torch.zeros(1, 1)
    check = gradient_check(net, x, 0, "input", (0,), objective="logit")
    assert check.kink
    left, right = float64_one_sided_slopes(net, x, (0,))
    assert_close(torch.tensor([check.left_slope, check.right_slope], dtype=torch.float64),
                 torch.tensor([left, right], dtype=torch.float64), rtol=1e-6, atol=1e-9)
    assert (left, right) == pytest.approx((0.0, 2.0), abs=1e-9)
    assert check.autograd == 0.0 and check.relative_error > 0.5  # ReLU'(0) = 0 vs the mean of the slopes, 1
    text = gradient_check_text(check)
    assert NO_DERIVATIVE in text
    assert f"**{fmt(check.left_slope, 6)}** to the left, **{fmt(check.right_slope, 6)}** to the right" in text
    assert "**0** to the left, **2** to the right" in text and "autograd's number is the left slope" in text


@pytest.mark.parametrize("index,side", [((0, 0, 0), "right"), ((0, 0, 1), "left")])
def test_max_pool_tie_is_a_kink_and_autograd_takes_the_first_cell(index, side):
    """Raising either tied cell makes it the max (slope 3); lowering it hands the max to the other (slope 0).
    PyTorch gives the tie to the first cell in reading order: its gradient is the right slope, the other's the left."""
    net, x = pool_tie()
    check = gradient_check(net, x, 0, "input", index, objective="logit")
    assert check.kink
    left, right = float64_one_sided_slopes(net, x, index)
    assert_close(torch.tensor([check.left_slope, check.right_slope], dtype=torch.float64),
                 torch.tensor([left, right], dtype=torch.float64), rtol=1e-6, atol=1e-9)
    assert (left, right) == pytest.approx((0.0, 3.0), abs=1e-9)
    text = gradient_check_text(check)
    assert NO_DERIVATIVE in text and f"autograd's number is the {side} slope" in text
    # the untied cells of the same window are smooth points (slope 0 both sides): no kink there
    smooth = gradient_check(net, x, 0, "input", (0, 1, 1), objective="logit")
    assert not smooth.kink and NO_DERIVATIVE not in gradient_check_text(smooth)


def test_a_smooth_network_is_never_called_a_kink():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(1, 1, 8, 8)
    for param, index in [("input", (0, 3, 4)), ("input", (0, 0, 0)), ("0.weight", (1, 0, 2, 2)), ("6.bias", (2,))]:
        for objective in ("loss", "logit"):
            check = gradient_check(net, x, 1, param, index, objective=objective)
            assert not check.kink, (param, index, objective, check)
            assert check.relative_error < 1e-5
            assert NO_DERIVATIVE not in gradient_check_text(check)
            assert check.left_slope == pytest.approx(check.right_slope, rel=1e-4, abs=1e-9)


def test_shipped_mnist_model_away_from_ties_is_smooth():
    """The real network at a random (tie-free) input: smooth at every point checked, no kink message."""
    try:
        model, _ = load_model("mnist")
    except CheckpointError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(5)
    x = torch.randn(1, 1, 28, 28)
    for param, index in [("input", (0, 14, 13)), ("block1.conv1.weight", (3, 0, 1, 2)), ("block2.conv2.bias", (5,))]:
        check = gradient_check(model, x, 4, param, index)
        assert not check.kink and check.relative_error < 1e-4, (param, check)
        assert NO_DERIVATIVE not in gradient_check_text(check)


def test_shipped_mnist_model_on_a_drawing_explains_its_large_errors():
    """A drawing's flat background and saturated strokes make max-pool ties: the check's large relative errors on
    such pixels all come with the kink message and two different one-sided slopes."""
    try:
        model, card = load_model("mnist")
    except CheckpointError as exc:
        pytest.skip(str(exc))
    x = digit_input(card)
    large = 0
    for row, col in [(2, 2), (14, 3), (6, 14), (14, 14), (10, 10), (24, 24)]:  # background, stroke, in between
        check = gradient_check(model, x, 0, "input", (0, row, col))
        if check.relative_error > 0.05:
            large += 1
            assert check.kink, (row, col, check)
            assert NO_DERIVATIVE in gradient_check_text(check)
            assert abs(check.left_slope - check.right_slope) > 1e-3 * max(abs(check.left_slope),
                                                                         abs(check.right_slope))
    assert large > 0, "the drawing has kinks to explain"
