"""Every sum of products the explorer writes out is added in float64 from the float32 numbers it lists.

The page prints a sum's terms and its total; a learner who adds the printed terms must land on the printed total.
Each total here is read back from the text the page prints and compared with the exact (math.fsum) float64 sum of
the float32 operands, within one unit of its last printed digit, and the float64 sums are compared with torch in
float64 (F.conv2d, autograd). The network's own float32 value may differ where the sum cancels: the note says so.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import CheckpointError, load_model
from cnnviz.engine.layer_rules import (
    backward_rule,
    batchnorm_cell,
    conv_cell,
    conv_weight_grad_terms,
    products_text,
    rounding_note,
)
from cnnviz.numbers import digits_for_sum, fmt
from tests.support import digit_input, small_cnn

NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?"


def last_digit_unit(text: str) -> float:
    """One unit of the last digit a number is printed with: "-3.093e-06" -> 1e-09, "0.25" -> 0.01, "12" -> 1."""
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


def assert_within_last_digit(printed: str, exact: float, what=None) -> None:
    unit = last_digit_unit(printed)
    assert abs(float(printed) - exact) <= unit * (1 + 1e-9), (printed, exact, unit, what)


def parse_products(text: str, times: str) -> list[tuple[float, float]]:
    """``a·b + (c)·d + ...`` (as products_text writes it, without a "... more" tail) -> [(a, b), (c, d), ...]."""
    pairs = []
    for term in text.split(" + "):
        a, b = term.split(times)
        pairs.append((float(a.strip("()")), float(b.strip("()"))))
    return pairs


def exact_sum(a, b, plus: float = 0.0) -> float:
    """The float64 sum of products of float32 operands, written independently of the code under test."""
    return math.fsum([float(x) * float(y) for x, y in zip(np.ravel(a), np.ravel(b), strict=True)] + [plus])


def mnist_init():
    try:
        return load_model("mnist", "init")
    except CheckpointError as exc:
        pytest.skip(str(exc))


def test_sample(index: int, card) -> torch.Tensor:
    """A picture of the MNIST test set, as the explorer reads it (the test is skipped where the set is missing)."""
    from cnnviz.engine.datasets import dataset, dataset_available
    from cnnviz.engine.pictures import preprocess

    ok, message = dataset_available("mnist")
    if not ok:
        pytest.skip(message)
    image, _ = dataset("mnist", "test")[index]
    return preprocess(image, card, dataset_sample=True)


test_sample.__test__ = False  # a helper, not a test





def most_cancelling_cells(rec, n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """The ``n`` output cells of a conv record whose sums cancel most (sum of |products| / |sum|), and ``n`` random
    ones: where a learner who looks for trouble will look."""
    stride, padding = rec.hparams["stride"], rec.hparams["padding"]
    x = torch.from_numpy(rec.input.astype(np.float64))[None]
    w = torch.from_numpy(rec.weight.astype(np.float64))
    cols = F.unfold(x, w.shape[-2:], padding=padding, stride=stride)[0]  # (C_in * kh * kw, H_out * W_out)
    products = w.reshape(w.shape[0], -1, 1) * cols  # (O, C_in * kh * kw, L)
    ratio = products.abs().sum(1) / (products.sum(1) + torch.from_numpy(rec.bias.astype(np.float64))[:, None]).abs()
    _, h_out, w_out = rec.output.shape
    worst = ratio.reshape(-1).argsort(descending=True)[:n].tolist()
    rng = np.random.default_rng(seed)
    flat = worst + rng.integers(0, ratio.numel(), n).tolist()
    return [(k // (h_out * w_out), (k // w_out) % h_out, k % w_out) for k in flat]


def test_the_reported_cell_prints_the_float64_sum_of_its_products():
    """MNIST, weights at init, test sample #6839, block2.conv1, channel 15, cell (5, 8): the page printed float32's
    -3.081e-06 where the float64 sum of the products it lists was -3.093e-06 (the layer's float32 input, and so
    the digits, vary a little with the CPU and thread count). The printed total is the exact sum of the products;
    the network's float32 value stays as it is, and a note says why the two differ where they do."""
    model, card = mnist_init()
    rec = capture(model, test_sample(6839, card)).layer("block2.conv1")
    cell = conv_cell(rec, 15, 5, 8)
    assert cell.magnitude > 1e4 * abs(cell.total), "the cell where the sum cancels"
    assert_within_last_digit(fmt(cell.total, 4), exact_sum(cell.kernel, cell.patch, cell.bias))
    assert fmt(cell.total, 3) in ("-3.09e-06", "-3.1e-06", "-3.11e-06")
    assert_sum_line_adds_up(cell)
    note = rounding_note(cell.total, cell.recorded, cell.magnitude, str(rec.output.dtype))
    if fmt(cell.recorded, 4) != fmt(cell.total, 4):
        assert "nearly cancel" in note and fmt(cell.recorded, 4) in note and fmt(cell.total, 4) in note
    else:
        assert note == ""


def assert_sum_line_adds_up(cell) -> None:
    """"Sum over all input channels = S, plus bias b = T": S and b are written with the digits ``digits_for_sum``
    gives, so that a learner who adds them lands on T (within one unit of its last digit), even where they cancel."""
    d = digits_for_sum(cell.total, (cell.products_sum, cell.bias))
    printed_sum, printed_bias, printed_total = fmt(cell.products_sum, d), fmt(cell.bias, d), fmt(cell.total, 4)
    assert_within_last_digit(printed_total, math.fsum([float(printed_sum), float(printed_bias)]),
                             (printed_sum, printed_bias))
    assert_within_last_digit(fmt(cell.products_sum, 4), exact_sum(cell.kernel, cell.patch))


def test_conv_cells_print_their_exact_sum_on_every_conv_layer_of_the_mnist_init_model():
    """Property over cells (the most cancelling and random ones) of each conv layer: every printed partial sum and
    total is within one unit of its last digit of the float64 sum of the printed products, whose operands are the
    record's float32 numbers; the float64 totals equal F.conv2d in float64."""
    model, card = mnist_init()
    trace = capture(model, digit_input(card))
    convs = [r for r in trace.layers if r.kind == "conv"]
    assert len(convs) >= 6
    for rec in convs:
        assert rec.weight.dtype == np.float32
        x, w, b = (torch.from_numpy(a.astype(np.float64)) for a in (rec.input, rec.weight, rec.bias))
        ref = F.conv2d(x[None], w, b, stride=rec.hparams["stride"], padding=rec.hparams["padding"])[0]
        for o, i, j in most_cancelling_cells(rec, 30, seed=rec.index):
            cell = conv_cell(rec, o, i, j)
            for c in range(cell.kernel.shape[0]):
                text = products_text(zip(cell.kernel[c].ravel(), cell.patch[c].ravel(), strict=True), limit=None,
                                     times="·")
                printed = parse_products(text, "·")
                operands = list(zip(cell.kernel[c].ravel(), cell.patch[c].ravel(), strict=True))
                assert len(printed) == len(operands)
                for (pa, pb), (a, b) in zip(printed, operands, strict=True):  # the printed terms are the operands
                    assert (fmt(pa, 4), fmt(pb, 4)) == (fmt(a, 4), fmt(b, 4))
                assert_within_last_digit(fmt(cell.partials[c], 4), exact_sum(cell.kernel[c], cell.patch[c]),
                                         (rec.name, o, i, j, c))
            assert_sum_line_adds_up(cell)
            assert_within_last_digit(fmt(cell.total, 4), exact_sum(cell.kernel, cell.patch, cell.bias),
                                     (rec.name, o, i, j))
            assert_close(torch.tensor(cell.total, dtype=torch.float64), ref[o, i, j], rtol=1e-9,
                         atol=1e-13 * cell.magnitude)


@pytest.mark.parametrize("picture,target", [("drawn ring", 3), ("test sample 6839", 1)])
def test_weight_gradient_sums_are_float64_and_equal_autograd_in_float64(picture, target):
    """dL/dW[o, c, u, v] = sum over output cells of X x g, for the most cancelling and random taps of each conv
    layer's kernels: the printed total is within one unit of its last digit of the exact sum, and equals torch's
    float64 autograd of the same convolution with the same float32 X and g."""
    model, card = mnist_init()
    x = digit_input(card) if picture == "drawn ring" else test_sample(6839, card)
    trace = capture(model, x, target=target)
    for rec in (r for r in trace.layers if r.kind == "conv"):
        x = torch.from_numpy(rec.input.astype(np.float64))[None]
        w = torch.from_numpy(rec.weight.astype(np.float64)).requires_grad_(True)
        g = torch.from_numpy(rec.grad_output.astype(np.float64))[None]
        stride, padding = rec.hparams["stride"], rec.hparams["padding"]
        (dw,) = torch.autograd.grad(F.conv2d(x, w, stride=stride, padding=padding), [w], grad_outputs=g)
        (sizes,) = torch.autograd.grad(F.conv2d(x.abs(), w, stride=stride, padding=padding), [w],
                                       grad_outputs=g.abs())  # sum of |X x g|: the most cancelling taps
        o_ch, c_in, kh, kw = rec.weight.shape
        rng = np.random.default_rng(rec.index)
        cancelling = (sizes / dw.abs()).nan_to_num(0.0).flatten().argsort(descending=True)[:100]
        taps = {tuple(int(v) for v in np.unravel_index(int(k), dw.shape)) for k in cancelling}
        taps |= {tuple(int(rng.integers(0, s)) for s in (o_ch, c_in, kh, kw)) for _ in range(60)}
        for o, c, u, v in taps:
            aligned, g_o, total = conv_weight_grad_terms(rec, o, c, u, v)
            assert_within_last_digit(fmt(total, 4), exact_sum(aligned, g_o), (rec.name, o, c, u, v))
            assert_close(torch.tensor(total, dtype=torch.float64), dw[o, c, u, v], rtol=1e-9,
                         atol=1e-13 * float(np.abs(aligned.astype(np.float64) * g_o).sum()))


def rule_total(worked: str) -> str:
    return re.findall(NUMBER, worked.rsplit(" = ", 1)[1])[0]


def test_backward_rules_print_their_exact_sum_and_equal_autograd_in_float64():
    """The conv and linear rules dL/dx = sum of g x W, on every unit of the linear layers and the most cancelling
    cells of the conv layers: the printed terms are the rule's operands, the printed total is within one unit of its
    last digit of their exact sum, and the value equals torch's float64 autograd from the same float32 g."""
    torch.manual_seed(3)
    cases = [(small_cnn().float(), torch.randn(1, 2, 9, 9))]
    try:
        cifar, _ = load_model("cifar10")
        cases.append((cifar, torch.randn(1, 3, 32, 32)))
    except CheckpointError:
        pass
    model, card = mnist_init()
    cases.append((model, digit_input(card)))
    kinds = set()
    for model, x in cases:
        trace = capture(model, x, target=1)
        for rec in (r for r in trace.layers if r.kind in ("conv", "linear")):
            kinds.add(rec.kind)
            xin = torch.from_numpy(rec.input.astype(np.float64))[None].requires_grad_(True)
            w = torch.from_numpy(rec.weight.astype(np.float64))
            out = (F.linear(xin, w) if rec.kind == "linear" else
                   F.conv2d(xin, w, stride=rec.hparams["stride"], padding=rec.hparams["padding"]))
            (dx,) = torch.autograd.grad(out, [xin], grad_outputs=torch.from_numpy(
                rec.grad_output.astype(np.float64))[None])
            dx = dx[0]
            if rec.kind == "linear":
                cells = [(j,) for j in range(rec.input.shape[0])]
            else:
                rng = np.random.default_rng(rec.index)
                cells = [tuple(int(v) for v in np.unravel_index(int(k), dx.shape))
                         for k in np.argsort(np.abs(rec.grad_input.astype(np.float64) - dx.numpy()).ravel())[-20:]]
                cells += [tuple(int(rng.integers(0, s)) for s in dx.shape) for _ in range(20)]
            for cell in cells:
                rule = backward_rule(rec, cell)
                printed = rule_total(rule.worked)
                listed = rule.worked.split(" = ")[-2].split(" + ... (")[0]
                for (pa, pb), (_, a, b) in zip(parse_products(listed, " x "), rule.terms, strict=False):
                    assert (fmt(pa, 4), fmt(pb, 4)) == (fmt(a, 4), fmt(b, 4))
                terms = [(a, b) for _, a, b in rule.terms]
                assert_within_last_digit(printed, exact_sum(*zip(*terms, strict=True)), (rec.name, cell))
                assert_close(torch.tensor(rule.value, dtype=torch.float64), dx[cell], rtol=1e-9,
                             atol=1e-13 * rule.magnitude)
    assert kinds == {"conv", "linear"}


def test_batchnorm_cell_is_written_in_float64():
    """y = scale x + shift, every cell of each batch norm of the MNIST init model, against float64 torch."""
    model, card = mnist_init()
    trace = capture(model, digit_input(card))
    for rec in (r for r in trace.layers if r.kind == "batchnorm"):
        module = dict(model.named_modules())[rec.name]
        ref = F.batch_norm(torch.from_numpy(rec.input.astype(np.float64))[None], module.running_mean.double(),
                           module.running_var.double(), module.weight.double(), module.bias.double(), False, 0.0,
                           module.eps)[0]
        rng = np.random.default_rng(rec.index)
        for c, i, j in (tuple(int(rng.integers(0, s)) for s in rec.output.shape) for _ in range(50)):
            cell = batchnorm_cell(rec, c, i, j)
            exact = math.fsum([float(rec.extra["scale"][c]) * float(rec.input[c, i, j]),
                               float(rec.extra["shift"][c])])
            assert_within_last_digit(fmt(cell.total, 4), exact, (rec.name, c, i, j))
            assert_close(torch.tensor(cell.total, dtype=torch.float64), ref[c, i, j], rtol=1e-6, atol=1e-6)


def test_rounding_note_only_where_the_printed_digits_differ():
    assert rounding_note(1.23456, 1.23457, 1.3) == ""  # the same 4 digits: nothing to explain
    assert rounding_note(1.5e-6, 1.7e-6, 1.0, "float64") == ""
    cancel = rounding_note(-3.093e-06, -3.081e-06, 0.52)
    assert "nearly cancel" in cancel and "-3.081e-06" in cancel and "-3.093e-06" in cancel
    last = rounding_note(0.12341, 0.12362, 0.12341)  # no cancellation: only the last digit's rounding
    assert "nearly cancel" not in last and "7 significant digits" in last


def test_terms_written_with_digits_for_sum_add_up_to_the_printed_total():
    """Random pairs that cancel by 0 to 12 decades: the two terms written with ``digits_for_sum`` digits add up to
    the total printed with 4, within one unit of its last digit."""
    rng = np.random.default_rng(4)
    for _ in range(2000):
        a = float(rng.uniform(-1, 1) * 10.0 ** rng.integers(-8, 8))
        b = -a * (1 + float(rng.uniform(-1, 1)) * 10.0 ** -float(rng.integers(0, 13)))
        total = math.fsum([a, b])
        if total == 0:
            continue
        d = digits_for_sum(total, (a, b))
        assert_within_last_digit(fmt(total, 4), math.fsum([float(fmt(a, d)), float(fmt(b, d))]), (a, b, d))
