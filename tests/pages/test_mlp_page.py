"""The computational-graph and step-by-step MLP pages: the worked examples' numbers appear, inputs and sliders
recompute what torch autograd says, bad input gives a message and never a traceback."""

from __future__ import annotations

import re

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cnnviz.handwork import mlp
from cnnviz.numbers import fmt
from tests.conftest import ROOT, open_page, wait_for_idle
from tests.handwork.test_mlp import torch_step, torch_train

GRAPH_PAGE = str(ROOT / "app_pages" / "graph.py")
MLP_PAGE = str(ROOT / "app_pages" / "mlp.py")
F64 = torch.float64


def page_text(at: AppTest) -> str:
    parts = []
    for kind in ("title", "markdown", "code", "caption", "success", "info", "warning", "error", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return re.sub(r"\n +([=+]) ", r" \1 ", "\n".join(parts))  # equations broken over lines, joined again


def run(path: str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def number_input(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


def graphviz_sources(at: AppTest) -> list[str]:
    return [e.proto.spec for e in at.get("graphviz_chart")]


# ------------------------------------------------------------------------------------------ computational graph














# --------------------------------------------------------------------------------------------- step-by-step MLP
RELU_LINES = (
    "o = w4 * c + w5 * e = 4*4 + 1*8 = 24", "L = 1/2 (o - y)^2 = 1/2 (24 - 3)^2 = 220.5",
    "dL/do = o - y = 24 - 3 = 21", "dL/dc = dL/do * w4 = 21*4 = 84", "dL/de = dL/do * w5 = 21*1 = 21",
    "dL/da = dL/dc * ReLU'(w2 * a) * w2 = 84*1*1 = 84", "dL/db = dL/de * ReLU'(w3 * b) * w3 = 21*1*2 = 42",
    "dL/dw5 = dL/do * e = 21*8 = 168", "dL/dw4 = dL/do * c = 21*4 = 84",
    "dL/dw3 = dL/de * ReLU'(w3 * b) * b = 21*1*4 = 84", "dL/dw2 = dL/dc * ReLU'(w2 * a) * a = 84*1*4 = 336",
    "dL/dw1 = da/dw1 * dL/da + db/dw1 * dL/db = 2*84 + 2*42 = 252   (w1 is shared: its two paths add)",
    "new w1 = w1 - lr * dL/dw1 = 2 - 0.1*252 = -23.2", "new w2 = w2 - lr * dL/dw2 = 1 - 0.1*336 = -32.6",
    "new w3 = w3 - lr * dL/dw3 = 2 - 0.1*84 = -6.4", "new w4 = w4 - lr * dL/dw4 = 4 - 0.1*84 = -4.4",
    "new w5 = w5 - lr * dL/dw5 = 1 - 0.1*168 = -15.8",
)


def test_mlp_page_shows_the_relu_worked_example():
    at = run(MLP_PAGE)
    text = page_text(at)
    for line in RELU_LINES:
        assert line in text, line
    assert "L: 220.5" in text
    dot = graphviz_sources(at)[0]
    for label in ("o = 24", "L = 220.5", "dL/dw1", "this path: 168", "this path: 84"):
        assert label in dot, label
    assert at.get("plotly_chart") and at.dataframe
    download = at.get("download_button")
    assert [d.proto.label for d in download] == ["Download the history as CSV"]
    assert download[0].proto.url.endswith(".csv")


def test_mlp_page_shows_the_sigmoid_worked_example():
    at = run(MLP_PAGE)
    at.segmented_control[0].set_value("sigmoid").run()
    assert not at.exception
    text = page_text(at)
    assert "E_total: 0.242520" in text
    assert "= 0.242520" in text
    assert "dE/dw5 = (a_o1 - t1) * a_o1 * (1 - a_o1) * a_h1 = (0.606478 - 0.01)*0.606478*(1 - 0.606478)*0.506875 = " \
        in text
    assert "dE/da_h1 = (a_o1 - t1) * a_o1 * (1 - a_o1) * w5 + (a_o2 - t2) * a_o2 * (1 - a_o2) * w7 = " in text
    assert "dE/dw1 = dE/da_h1 * a_h1 * (1 - a_h1) * i1 = " in text
    assert [n.label for n in at.number_input][:4] == ["i1", "i2", "t1", "t2"]


def test_mlp_page_numbers_follow_edited_weights_like_torch():
    at = run(MLP_PAGE)
    number_input(at, "w1").set_value(0.5)
    number_input(at, "x").set_value(1.5)
    number_input(at, "w4").set_value(-2.0)
    at.run()
    assert not at.exception
    weights = {"w1": 0.5, "w2": 1.0, "w3": 2.0, "w4": -2.0, "w5": 1.0}
    values, loss, grads = torch_step("relu", {"x": 1.5}, {"y": 3.0}, weights)
    text = page_text(at)
    assert f"L: {fmt(loss)}" in text
    assert f"o = w4 * c + w5 * e = -2*{fmt(values['c'])} + 1*{fmt(values['e'])} = {fmt(values['o'])}" \
        in text
    for name in ("w1", "w2", "w3", "w4", "w5"):
        new = weights[name] - 0.1 * grads[name]
        assert f"new {name} = {name} - lr * dL/d{name} = " in text
        assert f"= {fmt(new)}" in text, name


def test_mlp_page_step_slider_shows_what_torch_computes_at_that_step():
    at = run(MLP_PAGE)
    at.segmented_control[0].set_value("sigmoid").run()
    at.select_slider(key="mlp_step_sigmoid").set_value(7).run()
    assert not at.exception
    reference = torch_train(mlp.default_config("sigmoid"), 8)
    _weights, values, loss, grads, new = reference[7]
    text = page_text(at)
    assert "step: 7" in text and f"E_total: {fmt(loss, style='f')}" in text
    assert f"= {fmt(values['a_o1'], style='f')}" in text
    assert f"= {fmt(grads['w5'], style='f')}" in text and f"= {fmt(new['w8'], style='f')}" in text
    assert "Forward pass at step 7" in text


def test_mlp_page_absurd_learning_rate_shows_diverged_and_no_exception():
    at = run(MLP_PAGE)
    number_input(at, "learning rate").set_value(1e308)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("diverged at step 0" in e.value for e in at.error)
    assert "status: diverged" in page_text(at)
    at.text_input[0].set_value("0.1, 10, 1e308").run()
    assert not at.exception
    assert any("lr = 1e+308: diverged at step 0" in w.value for w in at.warning)


def test_mlp_page_learning_rate_list_errors_are_messages():
    at = run(MLP_PAGE)
    at.text_input[0].set_value("0.1, fast").run()
    assert not at.exception
    assert any("'fast' is not a number" in e.value for e in at.error)
    assert at.get("plotly_chart")  # the loss curve above still renders


def test_mlp_page_reset_brings_the_worked_example_back():
    at = run(MLP_PAGE)
    number_input(at, "w3").set_value(-7.0)
    at.run()
    assert "L: 220.5" not in page_text(at)
    at.button(key="mlp_reset_relu").click().run()
    assert number_input(at, "w3").value == 2.0
    assert "L: 220.5" in page_text(at)


# ------------------------------------------------------------------------------------------------------ browser
def wait_for_text(page, text: str, timeout: float = 30_000) -> None:
    """Wait until the page shows ``text``: widgets paint a moment after the script run has finished."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=timeout)
    except PlaywrightTimeout as exc:
        raise AssertionError(f"{text!r} never appeared:\n{page.inner_text('body')[:3000]}") from exc


def assert_no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:3000]




@pytest.mark.browser
@pytest.mark.slow
def test_mlp_page_in_browser(page, app_url):
    open_page(page, app_url)
    open_page(page, f"{app_url}/mlp")
    wait_for_text(page, "= 2*84 + 2*42")
    page.get_by_text("2-2-2 sigmoid network (worked example 2)").click()
    wait_for_idle(page)
    wait_for_text(page, "0.242520")
    page.locator("[data-testid='stSlider'] input[type='range']").first.focus()
    page.keyboard.press("ArrowRight")
    wait_for_idle(page)
    wait_for_text(page, "Forward pass at step 1")
    assert_no_exception(page)
    assert page.locator("[data-testid='stGraphVizChart'] svg").count() == 1
