"""The step-by-step MLP page: the worked examples' numbers appear, inputs, links and the step control recompute
what torch autograd says, bad input and bad links give a message and never a traceback."""

from __future__ import annotations

import json
import random
import re
from functools import partial

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cnnviz.handwork import mlp
from cnnviz.numbers import fmt
from tests.handwork.test_mlp import (
    assert_drawing_numbers,
    assert_equation_lines,
    assert_printed,
    expected_numbers,
    random_config,
    torch_step,
    torch_train,
)
from tests.support import (
    ROOT,
    choose_option,
    number_input,
    ok,
    open_page,
    open_page_at,
    page_text,
    plotly_values,
    served,
    wait_for_idle,
)

MLP_PAGE = str(ROOT / "app_pages" / "mlp.py")
F64 = torch.float64


run = partial(open_page_at, MLP_PAGE, 60)  # run(**query): the page opened from a link, after its first run


def diagram(at: AppTest) -> str:
    """The DOT source of the network diagram."""
    return at.get("graphviz_chart")[0].proto.spec


def equation_lines(at: AppTest) -> list[str]:
    """The written lines of the three code blocks (forward, backward, update), each joined back onto one line."""
    text = "\n".join(str(c.value) for c in at.code)
    return [line for line in re.sub(r"\n +([=+]) ", r" \1 ", text).split("\n") if " = " in line]


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
    at = run()
    text = page_text(at)
    for line in RELU_LINES:
        assert line in text, line
    assert "L: 220.5" in text
    dot = diagram(at)
    for label in ("o = 24", "L = 220.5", "dL/dw1", "this path: 168", "this path: 84"):
        assert label in dot, label
    assert at.get("plotly_chart") and at.dataframe
    download = at.get("download_button")
    assert [d.proto.label for d in download] == ["Download the history as CSV"]
    assert download[0].proto.url.endswith(".csv")


def test_mlp_page_shows_the_sigmoid_worked_example():
    at = run()
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
    at = run()
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
    at = run()
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
    at = run()
    number_input(at, "learning rate").set_value(1e308)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("diverged at step 0" in e.value for e in at.error)
    assert "status: diverged" in page_text(at)
    at.text_input[0].set_value("0.1, 10, 1e308").run()
    assert not at.exception
    assert any("lr = 1e+308: diverged at step 0" in w.value for w in at.warning)


def test_mlp_page_learning_rate_list_errors_are_messages():
    at = run()
    at.text_input[0].set_value("0.1, fast").run()
    assert not at.exception
    assert any("'fast' is not a number" in e.value for e in at.error)
    assert at.get("plotly_chart")  # the loss curve above still renders


def test_mlp_page_reset_brings_the_worked_example_back():
    at = run()
    number_input(at, "w3").set_value(-7.0)
    at.run()
    assert "L: 220.5" not in page_text(at)
    at.button(key="mlp_reset_relu").click().run()
    assert number_input(at, "w3").value == 2.0
    assert "L: 220.5" in page_text(at)


def test_mlp_page_overflow_before_any_update_is_not_blamed_on_the_learning_rate():
    """Issue 12: w1 = 1e308 said "the learning rate 0.1 is too large"; 2 * 1e308 overflows in the forward pass of
    step 0, before the learning rate is used."""
    at = run()
    number_input(at, "w1").set_value(1e308)
    at.run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "forward pass of step 0 gives a = inf" in message and "before any update" in message, message
    assert "too large" not in message
    assert "status: diverged" in page_text(at)


def test_mlp_link_opens_that_view_with_torchs_numbers():
    at = run(net="sigmoid", i1="0.3", w5="-1.5", w8="2", lr="0.25", steps="12", step="5")
    assert not at.warning, [w.value for w in at.warning]
    assert at.segmented_control[0].value == "sigmoid"
    assert number_input(at, "i1").value == 0.3 and number_input(at, "w5").value == -1.5
    assert number_input(at, "learning rate").value == 0.25 and number_input(at, "training steps").value == 12
    assert at.select_slider(key="mlp_step_sigmoid").value == 5
    base = mlp.default_config("sigmoid")
    config = mlp.make_config("sigmoid", {**base.inputs, "i1": 0.3}, base.targets,
                             {**base.weights, "w5": -1.5, "w8": 2.0}, 0.25)
    reference = torch_train(config, 12)
    text = page_text(at)
    assert "Forward pass at step 5" in text and "step: 5" in text
    assert f"E_total: {fmt(reference[5][2], style='f')}" in text
    assert assert_equation_lines(equation_lines(at), expected_numbers("sigmoid", config, reference[5]), "link") >= 25
    assert_drawing_numbers(diagram(at), reference[5], "sigmoid", config, "link")


def test_mlp_url_is_written_as_the_view_changes():
    at = run()
    assert at.query_params["net"] == "relu" and at.query_params["w1"] == "2" and at.query_params["step"] == "0"
    number_input(at, "w3").set_value(-0.5).run()
    assert at.query_params["w3"] == "-0.5"
    at.select_slider(key="mlp_step_relu").set_value(3).run()
    assert at.query_params["step"] == "3"
    at.segmented_control[0].set_value("sigmoid").run()
    assert at.query_params["net"] == "sigmoid" and at.query_params["i2"] == "0.1" and "x" not in at.query_params
    assert at.query_params["w8"] == "0.55"  # the link offered is the address bar's (tests/browser checks the field)


@pytest.mark.parametrize("param,value,why", [
    ("net", "cnn", "network"), ("w1", "abc", "not a number"), ("w1", "1e999", "finite"), ("x", "nan", "finite"),
    ("lr", "-1", ">= 0"), ("steps", "0", "1 to 500"), ("steps", "9" * 30, "1 to 500"), ("step", "999", "0 to 99"),
    ("step", "2.5", "whole number"),
])
def test_mlp_bad_link_values_give_a_message_and_the_default(param, value, why):
    at = run(**{param: value})
    warnings = " ".join(w.value for w in at.warning)
    assert f"= {value!r}"[:40] in warnings and why in warnings and "default" in warnings, warnings
    text = page_text(at)
    assert "L: 220.5" in text and "step: 0" in text  # the worked example at step 0
    assert "dL/dw1 = da/dw1 * dL/da + db/dw1 * dL/db = 2*84 + 2*42 = 252" in text


def test_mlp_saturated_sigmoid_link_writes_lines_that_are_true():
    """Issue 12: "(1 - 1.000000)*..." read as 0 beside a non-zero result; every line now gives its result."""
    weights = {f"w{i}": "10" for i in range(1, 9)}
    at = run(net="sigmoid", i1="1", i2="1", step="0", **weights)
    lines = equation_lines(at)
    assert not [line for line in lines if "(1 - 1.000000)" in line]
    config = mlp.make_config("sigmoid", {"i1": 1, "i2": 1}, {"t1": 0.01, "t2": 0.99},
                             {f"w{i}": 10.0 for i in range(1, 9)}, 0.5)
    assert assert_equation_lines(lines, expected_numbers("sigmoid", config, torch_train(config, 1)[0]), "page") >= 25


def test_mlp_relu_worked_example_dies_at_step_1_says_so_there_and_offers_a_rate_that_learns():
    """Issue 21, item 5: the note is at the dying step (not before), later steps say they repeat it, and the
    button's learning rate learns."""
    at = run()
    assert not at.warning, "nothing has died at step 0"
    at.select_slider(key="mlp_step_relu").set_value(1).run()
    note = next(w.value for w in at.warning if "dying-ReLU" in w.value)
    assert "moved w1 from 2 to -23.2 (`2 - 0.1*252`)" in note and "repeats step 1" in note
    at.select_slider(key="mlp_step_relu").set_value(50).run()
    assert at.warning[0].value.startswith("Step 50 repeats step 1. **The dying-ReLU problem.**")
    button = at.button(key="mlp_try_lr_relu")
    assert button.label == "Try learning rate 0.003"
    ok(button.click().run())
    assert number_input(at, "learning rate").value == 0.003 and at.query_params["lr"] == "0.003"
    assert at.session_state["mlp_step_relu"] == 0 and not at.warning and not at.info
    assert len(at.select_slider(key="mlp_step_relu").options) == 100
    reference = torch_train(mlp.make_config("relu", {"x": 2}, {"y": 3}, mlp.default_config("relu").weights, 0.003),
                            100)
    assert f"L at step 99: {fmt(reference[-1][2])}" in page_text(at)


def test_mlp_relu_worked_example_play_stops_at_the_dying_step():
    at = run()
    ok(at.button(key="mlp_step_relu__play").click().run())
    for _ in range(4):  # each run while playing is a tick of the walk's timer
        ok(at.run())
    assert at.session_state["mlp_step_relu"] == 1 and not at.session_state["mlp_step_relu__playing"]
    assert any("dying-ReLU" in w.value for w in at.warning)
    ok(at.button(key="mlp_step_relu__play").click().run())  # Play again at the dying step: it goes on
    assert at.session_state["mlp_step_relu"] == 2 and at.session_state["mlp_step_relu__playing"]


def test_mlp_relu_learning_rate_comparison_shows_the_lesson():
    """Issue 15: six identical flat curves at 4.5; now the rates differ, 0.001 is offered, too large is marked."""
    at = run()
    rates = at.text_input(key="mlp_rates_relu").value
    assert "0.001" in [r.strip() for r in rates.split(",")]
    table = at.dataframe[-1].value
    statuses = list(table["status"])
    assert "finite" in statuses and any(s.startswith("stuck from step 1") for s in statuses), statuses
    assert len(set(table["final L"])) >= 3
    chart = next(c for c in at.get("plotly_chart") if "lr_chart" in c.proto.id or "Loss curves" in c.proto.spec)
    traces = [tuple(plotly_values(t["y"])[:10]) for t in json.loads(chart.proto.spec)["data"]
              if t.get("showlegend", True)]
    assert len(set(traces)) == len(traces) >= 5, "no two learning rates give the same curve"


def test_mlp_sigmoid_diagram_names_each_weight_on_its_own_edge():
    """Issue 15: the crossing edges' labels were ambiguous; each weight is now a box on its edge, named with the
    units it joins."""
    at = run(net="sigmoid")
    source = diagram(at)
    for weight, src, dst in (("w1", "i1", "h1"), ("w2", "i2", "h1"), ("w3", "i1", "h2"), ("w4", "i2", "h2"),
                             ("w5", "h1", "o1"), ("w6", "h2", "o1"), ("w7", "h1", "o2"), ("w8", "h2", "o2")):
        assert f"{weight}: {src} → {dst}" in source
        assert f"{src} -> wt_{weight} " in source and f"wt_{weight} -> {dst};" in source
    assert "label=\"w" not in source, "no weight label floating on a crossing edge"


@pytest.mark.parametrize("projector,least", [(False, 12), (True, 16)])
def test_mlp_diagram_text_size(projector, least):
    at = AppTest.from_file(MLP_PAGE, default_timeout=60)
    at.session_state["projector"] = projector
    at.run()
    sizes = [float(v) for v in re.findall(r"(?:fontsize|point-size)=\"?([\d.]+)", diagram(at))]
    assert sizes and min(sizes) >= least, sizes
    # Top to bottom on a projector: left to right it is wider than a 1280-pixel screen's column and is scaled down
    # (the browser test below measures the text as shown)
    assert f"rankdir={'TB' if projector else 'LR'};" in diagram(at)


@pytest.mark.slow
def test_property_random_links_show_torchs_numbers_on_the_page():
    """Random networks opened as links: every written line on the page (its printed result and the value of the
    numbers written into it), the metrics and every number of the drawing equal float64 autograd."""
    rng = random.Random(2024)
    checked = 0
    for trial in range(40):
        preset = ("relu", "sigmoid")[trial % 2]
        config = random_config(preset, rng)
        steps = rng.randint(1, 5)
        reference = torch_train(config, steps)
        step = rng.randrange(len(reference))  # a diverged run stops early: its steps are all there are
        query = {"net": preset, "lr": mlp.link_text(config.learning_rate), "steps": str(steps), "step": str(step),
                 **{k: mlp.link_text(v) for k, v in {**config.inputs, **config.targets, **config.weights}.items()}}
        at = run(**query)
        assert not [w for w in at.warning if "link" in w.value], [w.value for w in at.warning]
        k = step
        where = f"trial {trial}: ?{'&'.join(f'{a}={b}' for a, b in query.items())}"
        checked += assert_equation_lines(equation_lines(at), expected_numbers(preset, config, reference[k]), where)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["step"] == str(k)
        loss_name = mlp.PRESETS[preset].loss_name
        assert_printed(metrics[loss_name], reference[k][2], f"{where}: the loss metric")
        assert_drawing_numbers(diagram(at), reference[k], preset, config, where)
    assert checked > 40 * 20


# ------------------------------------------------------------------------------------------------------ browser
DIAGRAM_TEXT_PX = """() => Math.min(...[...document.querySelectorAll('[data-testid=stGraphVizChart] svg')]
  .flatMap(svg => {
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    return [...svg.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize) * scale);
}))"""


@pytest.fixture(scope="module")
def mlp_url():
    """A server started for these tests: the first thing it serves is a deep link with parameters."""
    yield from served()


def shows(page, text: str, timeout: float = 60_000) -> None:
    """Wait until the main area shows ``text`` (widgets paint a moment after the run ends); no traceback."""
    main = page.locator("[data-testid='stMainBlockContainer']")
    try:
        main.get_by_text(text, exact=False).first.wait_for(timeout=timeout)
    except Exception as exc:
        raise AssertionError(f"{text!r} never appeared:\n{main.inner_text()[:3000]}") from exc
    assert page.locator("[data-testid='stException']").count() == 0, main.inner_text()[:3000]


@pytest.mark.browser
@pytest.mark.slow
def test_browser_link_opens_that_view_first_on_a_fresh_server(browser, mlp_url):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    try:
        open_page(page, f"{mlp_url}/mlp?net=sigmoid&i1=0.3&w5=-1.5&lr=0.25&steps=12&step=5")
        shows(page, "Forward pass at step 5")
        base = mlp.default_config("sigmoid")
        config = mlp.make_config("sigmoid", {**base.inputs, "i1": 0.3}, base.targets, {**base.weights, "w5": -1.5},
                                 0.25)
        reference = torch_train(config, 12)
        shows(page, "E_total = 1/2 (t1 - a_o1)^2 + 1/2 (t2 - a_o2)^2")
        body = page.locator("[data-testid='stMainBlockContainer']").inner_text()
        assert fmt(reference[5][2], style="f") in body and fmt(reference[5][4]["w5"], style="f") in body
        assert page.locator(".st-key-mlp_sigmoid_i1 input").input_value() == "0.3"
        assert "w5=-1.5" in page.url and "step=5" in page.url and "net=sigmoid" in page.url
        page.locator("[data-testid='stGraphVizChart'] svg").first.wait_for()
        assert page.evaluate(DIAGRAM_TEXT_PX) >= 12, "diagram text below 12 px at 1280x720"
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_bad_link_values_give_messages_and_the_worked_example(page, mlp_url):
    open_page(page, f"{mlp_url}/mlp?net=cnn&w1=abc&step=999")
    shows(page, "The link's network = 'cnn' cannot be used")
    shows(page, "The link's w1 = 'abc' cannot be used")
    shows(page, "The link's training step = '999' cannot be used")
    shows(page, "= 2*84 + 2*42 = 252")
    assert "net=relu" in page.url and "w1=2" in page.url and "step=0" in page.url


def play(page, url: str) -> None:
    """Open ``url`` at step 0 and press Play at the fast speed."""
    open_page(page, url)
    shows(page, "Forward pass at step 0")
    choose_option(page, "mlp_step_relu__speed", "fast")
    wait_for_idle(page)
    page.get_by_role("button", name="Play").click()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_play_reaches_the_last_step_by_itself(page, mlp_url):
    play(page, f"{mlp_url}/mlp?net=relu&lr=0.003&steps=4&step=0")
    shows(page, "Forward pass at step 3", timeout=90_000)
    page.get_by_role("button", name="Play").wait_for(timeout=30_000)  # it stopped by itself, ready to play again
    assert "step=3" in page.url
    shows(page, "L at step 3")


@pytest.mark.browser
@pytest.mark.slow
def test_browser_play_stops_where_the_worked_example_dies_and_its_button_revives_it(page, mlp_url):
    """Issue 21, item 5, at a projector's 1280x720."""
    page.set_viewport_size({"width": 1280, "height": 720})
    play(page, f"{mlp_url}/mlp?net=relu&step=0")
    shows(page, "The dying-ReLU problem", timeout=90_000)
    page.get_by_role("button", name="Play").wait_for(timeout=30_000)  # it stopped by itself at step 1
    assert "step=1" in page.url
    shows(page, "Forward pass at step 1")
    page.get_by_role("button", name="Try learning rate 0.003").click()
    page.wait_for_function("() => { const q = new URLSearchParams(location.search); "
                           "return q.get('lr') === '0.003' && q.get('step') === '0'; }")
    wait_for_idle(page)
    shows(page, "Forward pass at step 0")
    assert page.locator(".st-key-mlp_relu_lr input").input_value() == "0.003"
    assert page.get_by_text("The dying-ReLU problem").count() == 0


DIAGRAM_TEXT_PX = """() => {  // the diagram's text size as shown: its CSS size times the drawing's scale on screen
    const svg = document.querySelector('[data-testid=stGraphVizChart] svg');
    const text = svg.querySelector('text');
    return parseFloat(getComputedStyle(text).fontSize) * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_browser_projector_mode_keeps_the_diagram_text_large_at_1280(page, mlp_url):
    """A projector's 1280x720: both networks' diagrams show their text at 16 px or more in projector mode (drawn
    left to right, the ReLU network's was scaled down to 13.8 px, hardly larger than without projector mode)."""
    page.set_viewport_size({"width": 1280, "height": 720})
    for net in ("relu", "sigmoid"):
        open_page(page, f"{mlp_url}/mlp?net={net}&step=0")
        shows(page, "Forward pass at step 0")
        page.get_by_text("Projector mode").click()
        wait_for_idle(page)
        chart = page.locator("[data-testid='stGraphVizChart']")
        chart.scroll_into_view_if_needed()
        page.wait_for_selector("[data-testid='stGraphVizChart'] svg text")
        for _ in range(20):  # the new drawing is laid out a moment after the run
            px = page.evaluate(DIAGRAM_TEXT_PX)
            if px >= 16:
                break
            page.wait_for_timeout(500)
        assert px >= 16, f"{net}: diagram text {px:.1f} px in projector mode at 1280"
        box = chart.bounding_box()  # projector mode folds the sidebar away (issue 21): the whole width is the page's
        assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, "it fits on the screen"
