"""The network view's receptive fields: for cells of every layer, the input pixels and earlier cells the payload
outlines are exactly those with a nonzero derivative (autograd, float64) in a copy of the network whose weights are
all ones, max-pools summing their windows and activations and batch norm left out (the Jacobian's support)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz.engine.capture import capture, is_leaf
from cnnviz.engine.checkpoints import load_model
from cnnviz.render.network_data import backward_columns, forward_columns, geometry, pack, receptive_field


class WindowSum(nn.Module):
    """A max-pool's window, summed: the same cells feed each output, and each with a derivative of 1."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        assert not pool.ceil_mode
        self.k, self.s, self.p, self.d = pool.kernel_size, pool.stride, pool.padding, pool.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (self.k, self.k) if isinstance(self.k, int) else self.k
        ones = torch.ones(x.shape[1], 1, *k, dtype=x.dtype)
        return F.conv2d(x, ones, stride=self.s, padding=self.p, dilation=self.d, groups=x.shape[1])


def support_twin(model: nn.Module) -> nn.Module:
    """``model`` in float64 with every path positive: a derivative is nonzero exactly where the cell depends."""
    twin = copy.deepcopy(model).double().eval().requires_grad_(False)
    for name, module in list(twin.named_modules()):
        if not name or not is_leaf(module):
            continue
        parent, _, leaf = name.rpartition(".")
        owner = twin.get_submodule(parent) if parent else twin
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()
        elif isinstance(module, nn.MaxPool2d):
            setattr(owner, leaf, WindowSum(module))
        elif not isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
            setattr(owner, leaf, nn.Identity())  # ReLU, batch norm, dropout: cell to cell
    return twin


def activations(twin: nn.Module, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The twin's input and every leaf's output, in forward order (space 0, 1, ...), each keeping its gradient."""
    outs, handles = [], []
    try:
        for _, module in twin.named_modules():
            if is_leaf(module) and module is not twin:
                handles.append(module.register_forward_hook(lambda m, i, o: outs.append(o)))
        x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)  # (1, C, H, W)
        twin(x)
    finally:
        for h in handles:
            h.remove()
    return [x, *outs]


def cells(grid: list[int], rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Two corners on the first and last channel (where padding clips the field) and a random cell."""
    c, h, w = grid
    return sorted({(0, 0, 0), (c - 1, h - 1, w - 1), tuple(int(rng.integers(n)) for n in grid)})


def assert_fields_match_autograd(model: nn.Module, shape: tuple[int, ...], payload: dict) -> int:
    """Every (space, cell, earlier space): the payload's rectangle equals the nonzero derivatives. Returns how many
    pairs had a field (None is allowed only where the chain is not a plain sequence of known layers)."""
    twin = support_twin(model)
    acts = activations(twin, shape)
    geo = geometry(payload)
    grids = geo["grids"]
    assert len(grids) == len(acts)
    rng = np.random.default_rng(0)
    checked = 0
    for s in range(1, len(acts)):
        if grids[s] is None:
            continue
        assert list(acts[s].shape[1:]) in (grids[s], [int(np.prod(grids[s]))]), s
        picks = cells(grids[s], rng)
        one_hot = torch.zeros(len(picks), acts[s].numel(), dtype=torch.float64)  # (cells, values of space s)
        one_hot[range(len(picks)), [int(np.ravel_multi_index(cell, grids[s])) for cell in picks]] = 1.0
        grads = torch.autograd.grad(acts[s], acts[:s], one_hot.reshape(len(picks), *acts[s].shape),
                                    retain_graph=True, allow_unused=True, is_grads_batched=True)
        for k, cell in enumerate(picks):
            for t in range(s):
                field = receptive_field(geo, s, cell, t)
                if field is None:
                    continue
                g = grads[t]
                got = (g[k] != 0).reshape(grids[t]).numpy() if g is not None else np.zeros(grids[t], bool)
                want = np.zeros(grids[t], bool)
                (c0, c1), (y0, y1), (x0, x1) = field
                want[c0:c1 + 1, y0:y1 + 1, x0:x1 + 1] = True
                np.testing.assert_array_equal(got, want, err_msg=f"space {s} cell {cell} -> space {t}: {field}")
                checked += 1
    return checked


@pytest.mark.slow  # float64 convolutions' backward takes torch's slow path: 10-40 s on a busy machine
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_shipped_networks_fields_are_the_jacobians_support(name):
    model, card = load_model(name)
    torch.manual_seed(0)
    trace = capture(model, torch.randn(1, *card.input_shape))
    payload = pack(forward_columns(trace), "forward", "k", card.classes, trace=trace)
    layers = len(trace.layers)
    checked = assert_fields_match_autograd(model, card.input_shape, payload)
    assert checked >= 2 * layers * (layers + 1) // 2  # every earlier space of every space has its field
    # e.g. MNIST's block1.conv2 (two 3x3 convolutions) at (10, 10) sees 5x5 input pixels around it
    if name == "mnist":
        geo = geometry(payload)
        assert receptive_field(geo, 4, (0, 10, 10), 0) == [(0, 0), (8, 12), (8, 12)]
        assert receptive_field(geo, layers, (3, 0, 0), 0) == [(0, 0), (0, 27), (0, 27)]  # the logits: all


def test_strides_groups_padding_and_adaptive_pools_are_exact():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),  # (4, 9, 9) from 17x17
        nn.Conv2d(4, 6, (3, 1), padding=(2, 0), groups=2), nn.BatchNorm2d(6),  # (6, 11, 9): padding wider than 1
        nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2, stride=1),  # (6, 6, 5), (6, 5, 4)
        nn.AdaptiveAvgPool2d((3, 3)), nn.Tanh(),  # windows of uneven size
        nn.Flatten(), nn.Linear(54, 5),
    ).eval()
    trace = capture(model, torch.randn(1, 2, 17, 17))
    payload = pack(forward_columns(trace), "forward", "k", trace=trace)
    assert assert_fields_match_autograd(model, (2, 17, 17), payload) > 150
    geo = geometry(payload)
    assert geo["grids"][-2] == [6, 3, 3]  # the flattened vector keeps its cells' places


def test_backward_columns_name_the_space_their_cells_live_in():
    """dL/d(input of layer r) lives where layer r - 1's output does; its forward receptive field is that one's."""
    model, _ = load_model("mnist")
    trace = capture(model, torch.zeros(1, 1, 28, 28))
    forward = pack(forward_columns(trace), "forward", "f", trace=trace)
    backward = pack(backward_columns(trace), "backward", "b", trace=trace)
    spaces = [c["space"] for c in backward["columns"]]
    layers = len(trace.layers)
    assert spaces == [layers, *range(layers - 1, -1, -1), 0]  # loss, the layers from the last, the pixels
    assert [c["space"] for c in forward["columns"]] == list(range(1, layers + 1))
    assert backward["geometry"] == forward["geometry"]
    assert backward["input"]["shape"] == [1, 28, 28]


def test_a_branch_stops_the_fields_and_no_trace_sends_none():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.relu, self.conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1)
            self.flatten, self.fc = nn.Flatten(), nn.Linear(64, 3)

        def forward(self, x):
            return self.fc(self.flatten(x + self.conv2(self.relu(self.conv1(x)))))

    trace = capture(Residual().eval(), torch.randn(1, 1, 8, 8))
    payload = pack(forward_columns(trace), "forward", "k", trace=trace)
    geo = geometry(payload)
    assert receptive_field(geo, 3, (0, 4, 4), 0) == [(0, 0), (2, 6), (2, 6)]  # conv2 still: 5x5
    assert receptive_field(geo, 5, (0, 0, 0), 0) is None  # the fc reads x + conv2: not drawn rather than wrong
    plain = pack(forward_columns(trace), "forward", "k")
    assert plain["input"] is None and plain["geometry"] is None and plain["columns"][0]["space"] is None
