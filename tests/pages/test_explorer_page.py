"""The network explorer page: AppTest with injected drawings, every backprop position, and a real browser."""

from __future__ import annotations

import base64
import io
import math
import re

import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from cnnviz.engine.capture import capture, sgd_step
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.datasets import dataset_available
from cnnviz.engine.layer_rules import backward_rule, conv_cell
from cnnviz.engine.pictures import preprocess
from tests.conftest import IDLE, ROOT, open_page, wait_for_idle

EXPLORER = "app_pages/explorer.py"


def fmt(v: float) -> str:
    return f"{v:.4g}"


def drawing(shape: str) -> Image.Image:
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    d = ImageDraw.Draw(img)
    if shape == "one":
        d.line([(140, 40), (140, 240)], fill=(255, 255, 255, 255), width=20)
    elif shape == "zero":
        d.ellipse([(80, 40), (200, 240)], outline=(255, 255, 255, 255), width=20)
    elif shape == "dot":
        d.ellipse([(135, 135), (145, 145)], fill=(255, 255, 255, 255))
    return img


def canvas_value(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": url}, "backgroundFit": None}


def explorer_with(img: Image.Image | None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(EXPLORER).run()
    if img is not None:
        at.session_state["canvas"] = canvas_value(img)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def expected_trace(img: Image.Image, target=None):
    model, card = load_model("mnist")
    x = preprocess(img, card)
    return card, capture(model, x, target=target)


def test_empty_canvas_shows_a_hint_not_a_prediction():
    at = explorer_with(None)
    assert any("Draw a digit" in i.value for i in at.info)
    assert not [t for t in texts(at) if "Prediction" in t]


@pytest.mark.parametrize("shape,digit", [("one", "1"), ("zero", "0")])
def test_drawing_shows_the_backend_prediction(shape, digit):
    at = explorer_with(drawing(shape))
    card, trace = expected_trace(drawing(shape))
    shown = [t for t in texts(at) if t.startswith("### Prediction")]
    assert shown == [f"### Prediction: {card.classes[trace.pred]} ({trace.probs[trace.pred]:.1%})"]
    assert card.classes[trace.pred] == digit


def test_conv_cell_sum_printed_equals_the_feature_map():
    at = explorer_with(drawing("zero"))
    _, trace = expected_trace(drawing("zero"))
    rec = trace.layer("block1.conv1")
    cell = conv_cell(rec, 0, 14, 14)  # the page's default channel and cell
    line = next(t for t in texts(at) if "the map holds" in t)
    assert f"= **{fmt(cell.total)}**; the map holds **{fmt(float(rec.output[0, 14, 14]))}**" in line


def test_a_single_dot_is_handled():
    at = explorer_with(drawing("dot"))
    assert [t for t in texts(at) if t.startswith("### Prediction")]


@pytest.mark.slow
def test_every_backprop_slider_position_renders_with_autograd_numbers():
    at = explorer_with(drawing("zero"))
    _, trace = expected_trace(drawing("zero"))
    slider = at.select_slider(key="backprop")
    labels = list(slider.options)
    assert labels[0] == "loss" and labels[-1] == "input pixels"
    assert labels[1:-1] == [r.name for r in reversed(trace.layers)]
    positions = ["loss", *range(len(trace.layers) - 1, -1, -1), "input"]
    for position in positions:
        at.select_slider(key="backprop").set_value(position).run()
        assert not at.exception, (position, [e.value for e in at.exception])
        if isinstance(position, int):
            rec = trace.layers[position]
            line = next(t for t in texts(at) if t.startswith("Autograd says"))
            cell = tuple(int(v) for v in re.search(r"dL/dx\[([\d, ]+)\]", line).group(1).split(","))
            assert line.endswith(f"**{fmt(float(rec.grad_input[cell]))}**"), (rec.name, line)
            rule = backward_rule(rec, cell)
            worked = next(t for t in texts(at) if t.startswith("**At cell"))
            assert fmt(rule.value) in worked, (rec.name, worked)
            assert math.isclose(rule.value, rule.recorded, rel_tol=1e-4, abs_tol=1e-7)
        elif position == "input":
            assert any(t.startswith("dL/dx[0,14,14] = **") for t in texts(at))


def test_loss_position_shows_p_minus_onehot():
    at = explorer_with(drawing("one"))
    _, trace = expected_trace(drawing("one"))
    line = next(t for t in texts(at) if t.startswith("L = -log p[target]"))
    assert f"= **{fmt(trace.loss)}**" in line


def test_one_sgd_step_matches_the_backend():
    at = explorer_with(drawing("one"))
    at.number_input(key="learn_lr").set_value(0.5)
    at.button(key="learn_go").click().run()
    assert not at.exception
    model, card = load_model("mnist")
    x = preprocess(drawing("one"), card)
    step = sgd_step(model, x, int(capture(model, x).pred), 0.5)
    values = {m.label: m.value for m in at.metric}
    assert values["loss before"] == fmt(step.loss_before)
    assert values["loss after"] == fmt(step.loss_after)


def test_absurd_learning_rate_reports_divergence_or_numbers_without_traceback():
    at = explorer_with(drawing("one"))
    at.number_input(key="learn_lr").set_value(1e6)
    at.button(key="learn_go").click().run()
    assert not at.exception
    diverged = [e.value for e in at.error if "diverged" in e.value]
    metrics = {m.label: m.value for m in at.metric}
    assert diverged or all(v not in ("nan", "inf") for v in metrics.values())


def test_target_other_than_prediction_changes_the_backward_pass():
    at = explorer_with(drawing("one"))
    _, trace7 = expected_trace(drawing("one"), target=7)
    target_box = next(s for s in at.selectbox if s.label.startswith("Explain class"))
    target_box.set_value(7).run()
    assert not at.exception
    line = next(t for t in texts(at) if t.startswith("L = -log p[target]"))
    assert f"= **{fmt(trace7.loss)}**" in line


@pytest.mark.skipif(not dataset_available("mnist")[0], reason="MNIST test set not available (set CNNVIZ_DATA_DIR)")
def test_test_sample_shows_true_label():
    at = explorer_with(None)
    at.segmented_control(key="source_mnist").set_value("Test sample").run()
    assert not at.exception
    shown = [t for t in texts(at) if t.startswith("### Prediction")]
    assert shown and ("(correct)" in shown[0] or "(true:" in shown[0])


def test_missing_checkpoint_explains_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(tmp_path))
    at = explorer_with(None)
    assert any("checkpoint file is missing" in e.value for e in at.error)
    assert any("python -m cnnviz.train mnist" in i.value for i in at.info)


# ---------------------------------------------------------------------------------------------------------------
# A real browser: draw with the mouse


def draw_on_canvas(page, points):
    box = page.locator(".st-key-canvas canvas").last.bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for px, py in points[1:]:
        page.mouse.move(box["x"] + px, box["y"] + py, steps=2)
    page.mouse.up()


def stroke_one():
    return [(140, 40 + 10 * k) for k in range(21)]


def stroke_zero():
    return [(140 + 55 * math.sin(2 * math.pi * k / 48), 140 - 95 * math.cos(2 * math.pi * k / 48)) for k in range(49)]


def prediction_text(page) -> str:
    page.wait_for_selector(".st-key-prediction", timeout=30_000)
    wait_for_idle(page)
    return page.locator(".st-key-prediction").inner_text()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_draw_one_then_zero_and_walk_the_slider(page, app_url, tmp_path):
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-canvas canvas")
    draw_on_canvas(page, stroke_one())
    assert "Prediction: 1" in prediction_text(page)
    page.screenshot(path=str(tmp_path / "explorer_one.png"))
    page.locator(".st-key-canvas").get_by_role("button").last.click()  # the toolbar's clear (bin) button
    wait_for_idle(page)
    draw_on_canvas(page, stroke_zero())
    assert "Prediction: 0" in prediction_text(page)
    page.get_by_role("tab", name="Backward pass").click()
    thumb = page.locator(".st-key-backprop input[type='range']")
    thumb.focus()
    for key in ("End", "Home"):
        thumb.press(key)
        wait_for_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0
        page.screenshot(path=str(tmp_path / f"backprop_{key}.png"))
    assert page.locator(IDLE).count() == 1
