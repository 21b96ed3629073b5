"""The network explorer page in AppTest: injected drawings and links; every number it prints against the backend
(which equals autograd: tests/engine), every backprop position, the views, the URL state and bad links."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cnnviz import ui
from cnnviz.canvas import canvas_value
from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.layer_rules import backward_rule, conv_cell
from cnnviz.engine.learn import heldout_batch, learn_step
from cnnviz.engine.pictures import preprocess
from cnnviz.numbers import fmt
from cnnviz.render.network_data import unpack
from tests.support import EXPLORER, ROOT, drawing, open_view, texts, view_data

HAVE_MNIST = dataset_available("mnist")[0]
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="MNIST test set not available (set CNNVIZ_DATA_DIR)")


def explorer_with(img: Image.Image | None, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.switch_page(EXPLORER).run()
    if img is not None:
        at.session_state["canvas"] = canvas_value(img)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def expected_trace(img: Image.Image, target=None, objective="loss"):
    model, card = load_model("mnist")
    x = preprocess(img, card)
    return card, capture(model, x, target=target, objective=objective)


@needs_mnist
def test_until_the_learner_draws_a_hard_test_sample_is_shown():
    at = explorer_with(None)
    shown = [t for t in texts(at) if t.startswith("### Prediction")]
    assert shown, "the page opens on a test sample, not on an empty page"
    p = float(re.search(r"\(([\d.]+)%\)", shown[0]).group(1))
    assert p < 99.0, shown[0]
    assert any("Until you draw" in c.value for c in at.caption)


@pytest.mark.parametrize("shape,digit", [("one", "1"), ("zero", "0")])
def test_drawing_shows_the_backend_prediction(shape, digit):
    at = explorer_with(drawing(shape))
    card, trace = expected_trace(drawing(shape))
    shown = [t for t in texts(at) if t.startswith("### Prediction")]
    assert shown == [f"### Prediction: {card.classes[trace.pred]} ({trace.probs[trace.pred]:.1%})"]
    assert card.classes[trace.pred] == digit


def test_network_view_gets_every_layer_with_its_range():
    at = explorer_with(drawing("zero"))
    _, trace = expected_trace(drawing("zero"))
    data = view_data(at)
    payload = data["payload"]  # the maps, sent until the browser says it has them
    assert [c["name"] for c in payload["columns"]] == [r.name for r in trace.layers]
    assert data["selected"] == 0 and data["title"] == "Forward pass"  # the first convolution, expanded
    decoded = dict(zip((c["name"] for c in payload["columns"]), unpack(payload), strict=True))
    rec = trace.layer("block1.relu1")  # per-layer scale: its colour bar runs from its min to its max
    col = next(c for c in payload["columns"] if c["name"] == "block1.relu1")
    assert col["range"] == [fmt(float(rec.output.min()), 2), fmt(float(rec.output.max()), 2)]
    assert np.abs(decoded["block1.relu1"] - rec.output).max() <= (col["hi"] - col["lo"]) / 255
    assert not data["shared_scale"]
    at.toggle(key="shared_scale").set_value(True).run()
    shared = view_data(at)
    vmax = max(float(np.abs(r.output).max()) for r in trace.layers)
    assert shared["shared_scale"] and shared["payload"]["shared_range"] == [fmt(-vmax, 2), fmt(vmax, 2)]


def test_conv_cell_sum_printed_equals_the_feature_map():
    at = explorer_with(drawing("zero"))
    _, trace = expected_trace(drawing("zero"))
    rec = trace.layer("block1.conv1")
    o, row, col = (at.slider(key=k).value for k in ("fwd_conv_ch", "fwd_conv_row", "fwd_conv_col"))
    assert rec.output[o, row, col] != 0, "the default cell shows a non-zero result"
    cell = conv_cell(rec, o, row, col)
    line = next(t for t in texts(at) if "the map holds" in t)
    assert f"= **{fmt(cell.total, 4)}**; the map holds **{fmt(float(rec.output[o, row, col]), 4)}**" in line
    assert math.isclose(cell.total, float(rec.output[o, row, col]), rel_tol=1e-5, abs_tol=1e-6)
    card = load_model("mnist")[1]  # the first layer: its input's normalisation, numbers as numbers (not tuples)
    note = next(c.value for c in at.caption if "normalised* pixels" in c.value)
    (m,), (sd,) = card.mean, card.std
    assert f"mean {fmt(m, 4)} and std {fmt(sd, 4)}" in note and f"a black pixel is {fmt(-m / sd, 4)}," in note


def test_a_click_in_the_network_view_opens_that_layer_channel_and_cell():
    """The view's click (or Play step) sets the layer and the picked cell (context.follow_view; the browser test
    clicks for real): the inspector, the URL and the view's frame follow."""
    at = explorer_with(drawing("one"))
    _, trace = expected_trace(drawing("one"))
    assert at.query_params["layer"] == "block1.conv1"
    at.session_state["fwd_layer"] = 4  # block1.bn2
    at.session_state["_fwd_view_pick"] = {"layer": 4, "channel": 7, "row": 3, "col": 25}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.startswith("#### 5. block1.bn2") for t in texts(at))
    assert (at.slider(key="fwd_bn_ch").value, at.slider(key="fwd_bn_row").value,
            at.slider(key="fwd_bn_col").value) == (7, 3, 25)
    rec = trace.layer("block1.bn2")
    line = next(t for t in texts(at) if t.startswith("Channel 7 at (3,25)"))
    assert f"{fmt(float(rec.output[7, 3, 25]), 4)})" in line
    assert at.query_params["layer"] == "block1.bn2"
    data = view_data(at)
    assert (data["selected"], data["channel"], data["cell"]) == (4, 7, [3, 25])
    at.session_state["fwd_layer"] = 2  # another layer, no pick: its inspector's default channel, framed in the view
    at.run()
    assert view_data(at)["channel"] == at.slider(key="fwd_relu_ch").value


def test_a_single_dot_is_handled():
    at = explorer_with(drawing("dot"))
    assert [t for t in texts(at) if t.startswith("### Prediction")]


@pytest.mark.slow
def test_every_backprop_slider_position_renders_with_autograd_numbers():
    at = open_view(explorer_with(drawing("zero")), "backward")
    _, trace = expected_trace(drawing("zero"))
    n = len(trace.layers)
    assert len(view_data(at)["payload"]["columns"]) == n + 2
    for s in range(n + 2):
        at.session_state["backprop"] = s  # what a click or Play step in the view sets (context.follow_view)
        at.run()
        assert not at.exception, (s, [e.value for e in at.exception])
        if s == 0:
            assert any(t.startswith("**Loss** L = -log p[target]") for t in texts(at))
        elif s == n + 1:
            assert any(t.startswith("dL/dx[") for t in texts(at))
        else:
            rec = trace.layers[n - s]
            line = next(t for t in texts(at) if t.startswith("Autograd says"))
            cell = tuple(int(v) for v in re.search(r"dL/dx\[([\d, ]+)\]", line).group(1).split(","))
            assert line.endswith(f"**{fmt(float(rec.grad_input[cell]), 4)}**"), (rec.name, line)
            rule = backward_rule(rec, cell)
            worked = next(t for t in texts(at) if t.startswith("**At cell"))
            assert fmt(rule.value, 4) in worked, (rec.name, worked)
            assert math.isclose(rule.value, rule.recorded, rel_tol=1e-4, abs_tol=1e-7)
            if rec.kind in ("conv", "maxpool", "relu"):
                assert rec.grad_input[cell] != 0 or not np.any(rec.grad_input), "default cell: the largest |grad|"


def test_backward_view_runs_from_the_loss_to_the_pixels():
    at = open_view(explorer_with(drawing("zero")), "backward")
    _, trace = expected_trace(drawing("zero"))
    data = view_data(at)
    payload = data["payload"]
    assert [c["name"] for c in payload["columns"]] == ["loss"] + [r.name for r in reversed(trace.layers)] + [
        "input pixels"]
    assert data["selected"] == 0 and data["title"] == "Backward pass"  # it starts at the loss
    shown = [trace.layers[-1].grad_output] + [r.grad_input for r in reversed(trace.layers)] + [trace.input_grad]
    # within half a quantisation step of this process's gradients (the page's run may differ in the last float32
    # bits: another thread count sums in another order)
    for col, decoded, grad in zip(payload["columns"], unpack(payload), shown, strict=True):
        assert col["lo"] == -col["hi"]  # signed: 0 at the middle of the scale
        assert math.isclose(col["hi"], float(np.abs(grad).max()), rel_tol=1e-5), col["name"]
        assert np.abs(decoded - grad).max() <= (col["hi"] - col["lo"]) / 255 / 2 + 1e-5 * col["hi"], col["name"]


def test_a_click_in_the_backward_view_opens_that_step_channel_and_cell():
    """The backward view's click (context.follow_view) sets the position and the step's channel and cell; the
    rule, autograd's number, the URL and the view's frame follow."""
    at = open_view(explorer_with(drawing("one")), "backward")
    _, trace = expected_trace(drawing("one"))
    names = [r.name for r in trace.layers]
    s = len(names) - names.index("block2.conv1")
    at.session_state["backprop"] = s
    at.session_state["_bw_view_pick"] = {"layer": s, "channel": 5, "row": 2, "col": 9}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["layer"] == "block2.conv1"
    rec = trace.layer("block2.conv1")
    line = next(t for t in texts(at) if t.startswith("Autograd says"))
    assert line == f"Autograd says dL/dx[5, 2, 9] = **{fmt(float(rec.grad_input[5, 2, 9]), 4)}**"
    data = view_data(at)
    assert (data["selected"], data["channel"], data["cell"]) == (s, 5, [2, 9])
    at.session_state["backprop"] = len(names) + 1  # the pixels, no pick: the default cell, framed in the view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    data = view_data(at)
    assert data["selected"] == len(names) + 1 and data["channel"] == 0
    assert tuple(data["cell"]) == (at.slider(key="bw_in_row").value, at.slider(key="bw_in_col").value)


def test_loss_position_shows_softmax_and_p_minus_onehot():
    at = open_view(explorer_with(drawing("one")), "backward")
    _, trace = expected_trace(drawing("one"))
    line = next(t for t in texts(at) if t.startswith("**Loss** L = -log p[target]"))
    assert f"= **{fmt(trace.loss, 4)}**" in line
    assert "-log 1 =" not in line, "p must not be printed rounded to 1"
    if trace.probs[trace.target] > 0.999:
        assert f"-log 1 - {fmt(1 - float(trace.probs[trace.target]), 3)} =" in line
    table = at.table[0].value
    np.testing.assert_allclose(table["p"].astype(float), trace.probs, rtol=1e-3, atol=1e-9)


def test_target_other_than_prediction_changes_the_backward_pass():
    at = open_view(explorer_with(drawing("one")), "backward")
    _, trace7 = expected_trace(drawing("one"), target=7)
    at.selectbox(key="target").set_value(7).run()
    assert not at.exception
    line = next(t for t in texts(at) if t.startswith("**Loss** L = -log p[target]"))
    assert f"= **{fmt(trace7.loss, 4)}**" in line


def test_one_sgd_step_matches_the_backend():
    at = open_view(explorer_with(drawing("one")), "learn")
    at.number_input(key="learn_lr").set_value(0.5)
    at.button(key="learn_go").click().run()
    assert not at.exception
    model, card = load_model("mnist")
    x = preprocess(drawing("one"), card)
    batch = heldout_batch("mnist") if HAVE_MNIST else None
    hx, hy = (batch.normalized(card), batch.labels) if batch is not None else (None, None)
    step = learn_step(model, x, int(capture(model, x).pred), 0.5, hx, hy)
    values = {m.label: m.value for m in at.metric}
    assert values["loss before"] == fmt(step.loss_before, 4)
    assert values["loss after"] == fmt(step.loss_after, 4)
    if batch is not None:
        assert values["held-out accuracy"] == f"{step.heldout_after.accuracy:.1%}"
    layer_table = at.table[-1].value
    assert list(layer_table["change / size"]) == [f"{c.relative:.3%}" + (" (large)" if c.large else "")
                                                 for c in step.layers]


def test_a_saved_step_is_not_shown_for_other_weights():
    """Issue 12.1: the step was keyed on the input and target only, so other weights showed the old step."""
    at = open_view(explorer_with(drawing("one")), "learn")
    at.button(key="learn_go").click().run()
    before = {m.label: m.value for m in at.metric}["loss before"]
    at.selectbox(key="stage_mnist").set_value("epoch1").run()
    assert not at.exception
    assert not at.metric or {m.label: m.value for m in at.metric}.get("loss before") != before
    assert any("changed since the last step" in i.value for i in at.info)


def test_absurd_learning_rate_reports_divergence_or_numbers_without_traceback():
    at = open_view(explorer_with(drawing("one")), "learn")
    at.number_input(key="learn_lr").set_value(1e6)
    at.button(key="learn_go").click().run()
    assert not at.exception
    diverged = [e.value for e in at.error if "diverged" in e.value]
    metrics = {m.label: m.value for m in at.metric}
    assert diverged or all(v not in ("nan", "inf") for v in metrics.values())


@needs_mnist
def test_test_sample_shows_true_label():
    at = explorer_with(None)
    at.radio(key="source_mnist").set_value("Test sample").run()
    assert not at.exception
    shown = [t for t in texts(at) if t.startswith("### Prediction")]
    assert shown and ("(correct)" in shown[0] or "(true:" in shown[0])


@needs_mnist
def test_a_link_opens_that_sample_view_and_layer():
    at = explorer_with(None, {"model": "mnist", "sample": "1234", "view": "backward", "layer": "block2.conv1",
                              "target": "3", "objective": "logit"})
    assert at.radio(key="source_mnist").value == "Test sample"
    assert at.number_input(key="sample_mnist_index").value == 1234
    assert at.segmented_control(key="view").value == "backward"
    data = view_data(at)
    assert data["payload"]["columns"][data["selected"]]["name"] == "block2.conv1"
    model, card = load_model("mnist")
    image, _ = dataset("mnist", "test")[1234]
    trace = capture(model, preprocess(image, card, dataset_sample=True), target=3, objective="logit")
    rec = trace.layer("block2.conv1")
    line = next(t for t in texts(at) if t.startswith("Autograd says"))
    cell = tuple(int(v) for v in re.search(r"dL/dx\[([\d, ]+)\]", line).group(1).split(","))
    assert line.endswith(f"**{fmt(float(rec.grad_input[cell]), 4)}**")
    assert at.query_params["sample"] == "1234" and at.query_params["layer"] == "block2.conv1"


@needs_mnist
@pytest.mark.parametrize("params,word", [
    ({"model": "resnet"}, "model"), ({"view": "sideways"}, "view"), ({"target": "99"}, "target"),
    ({"sample": "999999"}, "sample"), ({"layer": "block9.conv9"}, "layer"), ({"objective": "1e308"}, "objective"),
])
def test_bad_link_values_give_a_message_and_the_default(params, word):
    at = explorer_with(None, params)
    assert any(word in w.value and "cannot be used" in w.value for w in at.warning), [w.value for w in at.warning]
    at.session_state["canvas"] = canvas_value(drawing("one"))
    at.run()
    assert not at.exception
    assert [t for t in texts(at) if t.startswith("### Prediction")]


def test_redrawing_keeps_the_view_and_the_backprop_position():
    at = open_view(explorer_with(drawing("one")), "backward")
    at.session_state["backprop"] = 5
    at.run()
    at.session_state["canvas"] = canvas_value(drawing("zero"))
    at.run()
    assert not at.exception
    assert at.segmented_control(key="view").value == "backward"
    assert at.session_state["backprop"] == 5 and view_data(at)["selected"] == 5


def test_missing_checkpoint_explains_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(EXPLORER).run()
    assert not at.exception
    assert any("checkpoint file is missing" in e.value for e in at.error)
    assert any("python -m cnnviz.train mnist" in i.value for i in at.info)


def test_your_model_from_an_uploaded_pair_runs_every_view_and_backprop_position():
    """A network built from blocks (sigmoid, no batch norm) explored as "Your model": every view and every slider
    position renders, and the printed rule at each layer equals autograd's number."""
    from cnnviz.engine.builder import PRESETS, CustomNet
    from cnnviz.engine.checkpoints import load_uploaded_pair, to_bytes
    from cnnviz.engine.models import new_card

    torch_model = CustomNet(PRESETS["Deep plain sigmoid (no batch norm)"]).eval()
    card = new_card("mnist", load_model("mnist")[0])
    card.param_count = sum(p.numel() for p in torch_model.parameters())
    model, card = load_uploaded_pair(*to_bytes(torch_model, card))
    at = explorer_with(drawing("one"))
    at.session_state["_cnnviz_your_models"] = {"uploaded": ui.YourModel(model, card, ui.model_identity(model, card),
                                                                        "uploaded by a test at 20:16", 0.0)}
    at.run()
    at.selectbox(key="model_name").set_value("yours").run()
    assert not at.exception, [e.value for e in at.exception]
    x = preprocess(drawing("one"), card)
    trace = capture(model, x)
    shown = [t for t in texts(at) if t.startswith("### Prediction")]
    assert shown == [f"### Prediction: {card.classes[trace.pred]} ({trace.probs[trace.pred]:.1%})"]
    for view in ("architecture", "card", "learn", "forward"):
        open_view(at, view)
    open_view(at, "backward")
    for s in range(len(trace.layers) + 2):
        at.session_state["backprop"] = s
        at.run()
        assert not at.exception, (s, [e.value for e in at.exception])
        if 0 < s <= len(trace.layers):
            rec = trace.layers[len(trace.layers) - s]
            line = next(t for t in texts(at) if t.startswith("Autograd says"))
            cell = tuple(int(v) for v in re.search(r"dL/dx\[([\d, ]+)\]", line).group(1).split(","))
            assert line.endswith(f"**{fmt(float(rec.grad_input[cell]), 4)}**"), (rec.name, line)
