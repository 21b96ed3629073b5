"""Absurd numbers typed into every hand-worked page (issue 8): huge, tiny, inf/nan text, overflowing learning
rates, thousands of nested parentheses. Each gives a message or a 'diverged' note in the page, never a traceback,
and the page keeps working once the number is sensible again."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.support import ROOT
from tests.support import open_page_at as run

GRAPH = str(ROOT / "app_pages" / "graph.py")
MLP = str(ROOT / "app_pages" / "mlp.py")
LAB = str(ROOT / "app_pages" / "conv_lab.py")


def shown(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "success", "info", "warning", "error", "code"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(parts)


def alive(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert at.title, "the page stopped before its title"


# ------------------------------------------------------------------------------------------------ graph page
def test_graph_thousands_of_nested_parentheses_are_refused_with_a_message():
    at = run(GRAPH)
    at.text_input[0].set_value("(" * 3000 + "x" + ")" * 3000).run()
    alive(at)
    assert at.error and "limit" in at.error[0].value
    at.text_input[0].set_value("(x + y) * z").run()
    alive(at)
    assert not at.error and at.get("graphviz_chart")


@pytest.mark.parametrize("value", [1e308, -1e308, 1e-308, 5e-324])
def test_graph_extreme_variable_values(value):
    at = run(GRAPH)
    at.text_input[0].set_value("exp(x) * y * y + log(z * z)").run()
    alive(at)
    for box in at.number_input:
        box.set_value(value)
    at.run()
    alive(at)
    assert at.get("graphviz_chart"), "the graph still draws"
    text = shown(at)
    if abs(value) > 1:  # exp(1e308) and y*y overflow: the page says so instead of showing a blank
        assert "inf" in text
        assert at.warning


@pytest.mark.parametrize("value", ["1e308", "-1e308", "1e-308", "5e-324", "0", "-0"])
def test_graph_extreme_values_from_a_link_show_what_torch_gives(value):
    import torch

    from cnnviz.numbers import fmt

    text = "exp(x) * y * y + log(z * z) + max(x, y) / z"
    at = AppTest.from_file(GRAPH, default_timeout=120)
    at.query_params.update({"expr": text, "x": value, "y": value, "z": value})
    at.run()
    alive(at)
    at.button(key="graph_show_result").click().run()
    alive(at)
    x, y, z = (torch.tensor(float(value), dtype=torch.float64, requires_grad=True) for _ in range(3))
    f = torch.exp(x) * y * y + torch.log(z * z) + torch.maximum(x, y) / z
    f.backward()
    grads = ", ".join(f"df/d{n} = {fmt(v.grad.item())}" for n, v in zip("xyz", (x, y, z), strict=True))
    assert at.success[0].value == f"f = {fmt(f.item())}  ·  {grads}"


# ------------------------------------------------------------------------------------------------ MLP page
@pytest.mark.parametrize("preset", ["relu", "sigmoid"])
@pytest.mark.parametrize("lr", [1e6, 1e300, 1.7976931348623157e308])
def test_mlp_overflowing_learning_rate_is_reported_as_divergence(preset, lr):
    at = run(MLP)
    at.segmented_control[0].set_value(preset).run()
    alive(at)
    box = next(n for n in at.number_input if n.label == "learning rate")
    box.set_value(lr).run()
    alive(at)
    assert "diverge" in shown(at).lower()


@pytest.mark.parametrize("value", [1e300, -1e300, 1e-300])
def test_mlp_extreme_weights_and_inputs(value):
    at = run(MLP)
    for box in at.number_input:
        if box.label not in ("learning rate", "training steps"):
            box.set_value(value)
    at.run()
    alive(at)
    text = shown(at)
    if abs(value) > 1:  # w1 * x = +-1e600: the forward pass of step 0 overflows, before the learning rate is used
        message = " ".join(e.value for e in at.error)
        assert "forward pass of step 0" in message and "before any update" in message, message
        assert "too large" not in message and "status: diverged" in text
    else:  # 1e-300 * 1e-300 underflows to 0: every number is finite and the page says nothing is wrong
        assert not at.error and "status: finite" in text, text[:500]
        assert "L: 0" in text  # o = 0 and y = 1e-300: (o - y)^2 / 2 underflows to 0, as in torch


# ------------------------------------------------------------------------------------------------ conv lab
@pytest.mark.parametrize("bad,words", [
    ("nan 1\n2 3", "nan"),
    ("inf 1\n2 3", "inf"),
    ("1e999 1\n2 3", "inf"),
    ("(" * 3000, ""),
    ("[" * 3000 + "]" * 3000, ""),
    ("1 2\n3", ""),
    ("1 " * 5000, ""),
])
def test_conv_lab_bad_matrices_get_a_message_and_other_sections_keep_working(bad, words):
    at = run(LAB)
    box = next(t for t in at.text_area if t.key == "fwd_x")
    box.set_value(bad).run()
    alive(at)
    assert at.error, "no message for a bad matrix"
    message = at.error[0].value
    assert "Input X" in message
    assert words.lower() in message.lower()
    assert len(at.error) == 1, [e.value for e in at.error]
    # the pooling section still works with its own matrix
    at.radio(key="cl_section").set_value("5 · Pooling").run()
    alive(at)
    assert any(t.key == "pool_x" for t in at.text_area) and not at.error


def test_conv_lab_huge_finite_numbers_overflow_visibly_not_as_a_traceback():
    at = run(LAB)
    next(t for t in at.text_area if t.key == "fwd_x").set_value("1e300 1e300 1e300\n1e300 1e300 1e300\n1 1 1").run()
    next(t for t in at.text_area if t.key == "fwd_f").set_value("1e300 1e300\n1e300 1e300").run()
    alive(at)
    text = shown(at).lower()
    assert "inf" in text or at.error or at.warning


@pytest.mark.parametrize("lr", [1.5])
def test_conv_lab_gradient_descent_divergence_is_named(lr):
    at = run(LAB)
    at.radio(key="cl_section").set_value("8 · Gradient descent").run()
    next(s for s in at.slider if s.key == "gd_lr").set_value(lr).run()
    next(s for s in at.slider if s.key == "gd_steps").set_value(50).run()
    alive(at)
    assert "diverg" in shown(at).lower()
