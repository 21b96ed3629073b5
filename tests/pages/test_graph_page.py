"""The computational-graph and step-by-step MLP pages: the worked examples' numbers appear, inputs and sliders
recompute what torch autograd says, bad input gives a message and never a traceback."""

from __future__ import annotations

import re

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cnnviz.handwork import graph
from tests.conftest import ROOT, open_page, wait_for_idle

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
def test_graph_page_shows_the_worked_example():
    at = run(GRAPH_PAGE)
    assert at.title[0].value == "Computational graph"
    text = page_text(at)
    for line in ("q = x + y = -2 + 5 = 3", "f = q * z = 3 * (-4) = -12", "df/dq = z = -4", "df/dz = q = 3",
                 "df/dx = df/dq * dq/dx = -4 * 1 = -4", "df/dy = df/dq * dq/dy = -4 * 1 = -4",
                 "f = -12  ·  df/dx = -4, df/dy = -4, df/dz = 3"):
        assert line in text, line
    dot = graphviz_sources(at)[0]
    assert "df/dx = -4" in dot and "df/dq = -4" in dot and ">-12<" in dot


def test_graph_page_recomputes_what_torch_says_when_inputs_change():
    at = run(GRAPH_PAGE)
    number_input(at, "x").set_value(3.5)
    number_input(at, "z").set_value(-0.25)
    at.run()
    assert not at.exception
    x, y, z = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (3.5, 5.0, -0.25))
    f = (x + y) * z
    f.backward()
    expected = (f"f = {graph.fmt(f.item())}  ·  df/dx = {graph.fmt(x.grad.item())}, "
                f"df/dy = {graph.fmt(y.grad.item())}, df/dz = {graph.fmt(z.grad.item())}")
    assert expected in page_text(at)


def test_graph_page_step_slider_walks_forward_then_backward():
    at = run(GRAPH_PAGE)
    at.slider[0].set_value(0).run()
    assert not at.exception
    assert at.code[0].value == "x = -2   (input)"
    assert "Forward pass: node 1 of 5" in page_text(at)
    assert ">?<" in graphviz_sources(at)[0]  # f is not computed yet
    at.slider[0].set_value(4).run()
    assert at.code[0].value == "f = q * z = 3 * (-4) = -12"
    at.button(key="graph_next").click().run()  # the first backward step
    assert not at.exception
    assert at.slider[0].value == 5 and at.code[0].value == "df/df = 1"
    at.button(key="graph_prev").click().run()
    assert at.slider[0].value == 4


def test_graph_page_own_expression_gets_a_field_per_variable_and_torch_numbers():
    at = run(GRAPH_PAGE)
    at.text_input[0].set_value("sigmoid(w*x + b)").run()
    assert not at.exception
    assert [n.label for n in at.number_input] == ["w", "x", "b"]
    number_input(at, "w").set_value(1.5)
    at.run()
    w, x, b = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (1.5, -2.0, 0.1))
    f = torch.sigmoid(w * x + b)
    f.backward()
    text = page_text(at)
    assert (f"f = {graph.fmt(f.item())}  ·  df/dw = {graph.fmt(w.grad.item())}, df/dx = {graph.fmt(x.grad.item())}, "
            f"df/db = {graph.fmt(b.grad.item())}") in text
    assert "f * (1 - f)" in text  # the sigmoid's local gradient, written out


@pytest.mark.parametrize("bad", ["__import__('os')", "x.real", "lambda: 1", "9**9**9", "x" * 10_000,
                                 "(" * 3000 + "x" + ")" * 3000, "x +", "", "2 + 3"])
def test_graph_page_rejects_bad_expressions_with_a_message(bad):
    at = run(GRAPH_PAGE)
    at.text_input[0].set_value(bad).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and at.error[0].value
    assert at.title[0].value == "Computational graph"
    assert not at.get("graphviz_chart")


def test_graph_page_division_by_zero_warns_about_inf_and_a_shared_variable_is_explained():
    at = run(GRAPH_PAGE)
    at.text_input[0].set_value("x / (y - 5)").run()
    assert not at.exception
    assert any("inf" in w.value for w in at.warning)
    assert "-inf" in page_text(at)
    at.text_input[0].set_value("x*y + x").run()
    assert not at.exception and not at.warning
    assert "x is used more than once" in at.info[0].value
    assert "df/dx = df/dq * dq/dx + 1 = 1 * 5 + 1 = 6" in page_text(at)


def test_graph_page_example_and_reset_buttons():
    at = run(GRAPH_PAGE)
    at.button(key="graph_example_(a*b + c)**2").click().run()
    assert at.text_input[0].value == "(a*b + c)**2"
    assert [n.label for n in at.number_input] == ["a", "b", "c"]
    at.text_input[0].set_value("(x + y) * z * 2").run()
    number_input(at, "x").set_value(7.0)
    at.run()
    at.button[0].click().run()  # "Reset to the worked example"
    assert at.text_input[0].value == graph.DEFAULT_EXPRESSION
    assert number_input(at, "x").value == -2.0
    assert "f = -12  ·  df/dx = -4, df/dy = -4, df/dz = 3" in page_text(at)


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
def test_graph_page_in_browser(page, app_url):
    open_page(page, app_url)  # the app's own navigation first, then the deep link
    open_page(page, f"{app_url}/graph")
    wait_for_text(page, "df/dx = df/dq * dq/dx = -4 * 1 = -4")
    field = page.get_by_label("Expression", exact=True)
    field.fill("x*y + x")
    field.press("Enter")
    wait_for_idle(page)
    wait_for_text(page, "x is used more than once")
    page.locator(".st-key-graph_prev button").first.click()
    wait_for_idle(page)
    wait_for_text(page, "Backward pass: node 3 of 4")
    assert_no_exception(page)
    assert page.locator("[data-testid='stGraphVizChart'] svg").count() == 1


