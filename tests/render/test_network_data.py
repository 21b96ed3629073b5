"""The network view's payload: every map decodes to the trace's floats within one quantisation step, in the views'
order and shapes, with the backward view's gradient norms, and small enough to send once per input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.pictures import preprocess
from cnnviz.render.network_data import (
    LEVELS,
    backward_columns,
    forward_columns,
    pack,
    quantise,
    unpack,
)
from tests.support import model_picture


@pytest.fixture(scope="module", params=["mnist", "cifar10"])
def traced(request):
    model, card = load_model(request.param)
    torch.manual_seed(0)
    x = torch.randn(1, *model_input_shape(request.param))  # (1, C, H, W)
    return request.param, card, capture(model, x)


def model_input_shape(name: str) -> tuple[int, int, int]:
    return (1, 28, 28) if name == "mnist" else (3, 32, 32)


def assert_within_one_step(decoded: np.ndarray, values: np.ndarray, meta: dict) -> None:
    step = (meta["hi"] - meta["lo"]) / LEVELS
    assert decoded.shape == values.shape, meta["name"]
    err = np.abs(decoded - values.astype(np.float64)).max() if values.size else 0.0
    assert err <= step / 2 + 1e-12 * max(1.0, abs(meta["hi"])), (meta["name"], err, step)


def test_forward_maps_decode_to_each_layer_output(traced):
    _, card, trace = traced
    payload = pack(forward_columns(trace), "forward", "k", card.classes)
    assert [c["name"] for c in payload["columns"]] == [r.name for r in trace.layers]
    for meta, decoded, rec in zip(payload["columns"], unpack(payload), trace.layers, strict=True):
        assert meta["shape"] == list(rec.output.shape)
        assert_within_one_step(decoded, rec.output, meta)
        signed = bool((rec.output < 0).any())
        assert meta["signed"] == signed
        if signed:  # symmetric about 0, so 0 sits in the middle of the diverging colours
            assert meta["lo"] == -meta["hi"] == -float(np.abs(rec.output).max())
        else:
            assert (meta["lo"], meta["hi"]) == (float(rec.output.min()), float(rec.output.max()))
    last = payload["columns"][-1]  # the logits travel exactly too
    np.testing.assert_array_equal(np.array(last["exact"], np.float32), trace.layers[-1].output.reshape(-1))


def test_backward_columns_follow_the_slider_with_its_norms(traced):
    _, _, trace = traced
    payload = pack(backward_columns(trace), "backward", "k")
    layers = trace.layers
    expected = [layers[-1].grad_output, *(r.grad_input for r in reversed(layers)), trace.input_grad]
    names = ["loss", *(r.name for r in reversed(layers)), "input pixels"]
    assert [c["name"] for c in payload["columns"]] == names  # one column per backward slider position
    for meta, decoded, values in zip(payload["columns"], unpack(payload), expected, strict=True):
        assert_within_one_step(decoded, values, meta)
        norm = torch.linalg.vector_norm(torch.tensor(np.array(values), dtype=torch.float64)).item()
        torch.testing.assert_close(meta["norm"], norm, rtol=1e-12, atol=0.0)


def test_quantisation_keeps_zero_constant_maps_and_bad_numbers():
    q = quantise(np.zeros((2, 3, 3), np.float32), signed=False)
    assert q.lo == q.hi == 0.0 and not q.q.any()
    np.testing.assert_array_equal(q.decode(), 0.0)
    values = np.array([np.nan, -1.0, 0.5, 2.0], np.float32)
    dq = quantise(values, signed=True)
    assert (dq.lo, dq.hi) == (-2.0, 2.0)
    np.testing.assert_allclose(dq.decode(), [0.0, -1.0, 0.5, 2.0], atol=2.0 / LEVELS)



@pytest.mark.parametrize("name,limit", [("mnist", 160_000), ("cifar10", 450_000)])
def test_payload_is_sent_once_and_is_small(name, limit):
    """The whole forward pass's maps as JSON: under the old overview strip's PNGs for MNIST (about 200 KB)."""
    model, card = load_model(name)
    trace = capture(model, preprocess(model_picture(name), card))
    payload = pack(forward_columns(trace), "forward", "k", card.classes)
    size = len(json.dumps(payload))
    assert payload["bytes"] == sum(r.output.size for r in trace.layers)
    assert size < limit, size
    print(f"{name}: {payload['bytes']} uint8 values, {size} bytes of JSON")
