"""Property tests of the explorer's numbers: random test samples, targets, objectives and layers on both models.

The backend is checked on hundreds of random test images against the model run in float64 with autograd; the page
is opened from random links through AppTest and every number it prints at the loss and at the chosen layer is read
back and compared with float64 torch (float32 numbers printed to 4 significant digits: a relative tolerance of 1e-3).
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.pictures import preprocess
from tests.support import ROOT

MODELS = [m for m in ("mnist", "cifar10") if dataset_available(m)[0]]
pytestmark = pytest.mark.skipif(not MODELS, reason="no test set available (set CNNVIZ_DATA_DIR)")
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?"


def float64_pass(model, x: torch.Tensor, target: int, objective: str):
    """The model in float64: logits, loss, and d objective / d input, by autograd."""
    net = copy.deepcopy(model).double().eval()
    x64 = x.double().clone().requires_grad_(True)
    logits = net(x64)
    loss = F.cross_entropy(logits, torch.tensor([target]))
    obj = loss if objective == "loss" else logits[0, target]
    (grad,) = torch.autograd.grad(obj, [x64])
    return logits.detach()[0], float(loss.detach()), grad[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_capture_matches_float64_autograd_on_random_test_images(name):
    """capture() run in float64 on the shipped weights equals autograd's logits, loss and input gradient exactly
    (float64 tolerances), for random test images, targets and objectives. (In float32, a pixel whose path crosses a
    ReLU or max-pool kink within rounding can route its gradient differently; the page test below reads the
    page's float32 numbers against float64 at 4 digits.)"""
    model, card = load_model(name)
    model64 = copy.deepcopy(model).double().eval()
    ds = dataset(name, "test")
    rng = np.random.default_rng(12)
    for _ in range(100):
        index = int(rng.integers(len(ds)))
        image, _ = ds[index]
        x = preprocess(image, card, dataset_sample=True).double()
        target, objective = int(rng.integers(len(card.classes))), str(rng.choice(["loss", "logit"]))
        trace = capture(model64, x, target=target, objective=objective)
        logits, loss, grad = float64_pass(model, x, target, objective)
        torch.testing.assert_close(torch.from_numpy(trace.logits.copy()), logits)
        assert trace.loss == pytest.approx(loss, rel=1e-12, abs=1e-15), (index, target)
        torch.testing.assert_close(torch.from_numpy(trace.input_grad.copy()), grad)


def numbers_in(text: str) -> list[float]:
    return [float(v) for v in re.findall(NUMBER, text)]


def close(shown: float, true: float) -> bool:
    return abs(shown - true) <= 1e-3 * abs(true) + 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_page_numbers_from_random_links_equal_float64_torch(name):
    model, card = load_model(name)
    ds = dataset(name, "test")
    rng = np.random.default_rng(7 if name == "mnist" else 8)
    trace0 = capture(model, torch.zeros((1, *card.input_shape)))
    names = [r.name for r in trace0.layers]
    for _ in range(8):
        index, target = int(rng.integers(len(ds))), int(rng.integers(len(card.classes)))
        objective = str(rng.choice(["loss", "logit"]))
        layer = str(rng.choice(names))
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
        for k, v in {"model": name, "sample": str(index), "target": str(target), "objective": objective,
                     "view": "backward", "layer": "loss"}.items():
            at.query_params[k] = v
        at.switch_page("app_pages/explorer.py").run()
        assert not at.exception, [e.value for e in at.exception]
        image, _ = ds[index]
        x = preprocess(image, card, dataset_sample=True)
        logits, loss, _ = float64_pass(model, x, target, objective)
        probs = torch.softmax(logits, 0)
        texts = [m.value for m in at.markdown]
        shown = next(t for t in texts if t.startswith("### Prediction"))
        pred = int(logits.argmax())
        assert shown.startswith(f"### Prediction: {card.classes[pred]} (")
        assert abs(float(re.search(r"\(([\d.]+)%\)", shown).group(1)) - 100 * float(probs[pred])) <= 0.051
        table = at.table[0].value
        for k in range(len(card.classes)):
            assert close(float(table["logit z"][k]), float(logits[k])), (index, k)
            assert close(float(table["p"][k]), float(probs[k])), (index, k)
        if objective == "loss":
            line = next(t for t in texts if t.startswith("**Loss** L = -log p[target]"))
            assert close(numbers_in(line.split("= **")[1])[0], loss), line
        # the chosen layer: the rule's worked numbers and autograd's number, against float64 torch
        at.session_state["backprop"] = len(names) - names.index(layer)  # a click on the layer in the view
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        line = next(t.value for t in at.markdown if t.value.startswith("Autograd says"))
        cell = tuple(int(v) for v in re.search(r"dL/dx\[([\d, ]+)\]", line).group(1).split(","))
        g64 = layer_input_grad64(model, x, target, objective, layer)
        assert close(numbers_in(line.split("**")[1])[0], float(g64[cell])) or abs(float(g64[cell])) < 1e-7 * max(
            1.0, float(g64.abs().max())), (layer, cell, line, float(g64[cell]))


def layer_input_grad64(model, x: torch.Tensor, target: int, objective: str, layer: str) -> torch.Tensor:
    """d objective / d (the input of ``layer``) in float64, by a hook on a float64 copy."""
    net = copy.deepcopy(model).double().eval()
    module = dict(net.named_modules())[layer]
    seen = {}

    def hook(mod, args):
        inp = args[0]
        inp.retain_grad()
        seen["x"] = inp

    handle = module.register_forward_pre_hook(hook)
    try:
        x64 = x.double().clone().requires_grad_(True)
        logits = net(x64)
        obj = F.cross_entropy(logits, torch.tensor([target])) if objective == "loss" else logits[0, target]
        obj.backward()
    finally:
        handle.remove()
    return seen["x"].grad[0]
