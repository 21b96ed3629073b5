"""'Your model' in the explorer: each network trained or uploaded in a session answers with its own numbers on every
view (the caches are keyed on the network, not on the name "yours"), and the dataset pickers and Learn use its card's
dataset."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from cnnviz import ui
from cnnviz.canvas import canvas_value
from cnnviz.engine.builder import PRESETS, CustomNet
from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model, load_uploaded_pair, to_bytes
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.examples import examples_of_model
from cnnviz.engine.learn import heldout_batch, heldout_score, learn_step
from cnnviz.engine.models import new_card
from cnnviz.engine.pictures import preprocess
from tests.support import EXPLORER, ROOT, drawing, open_view, texts, view_data

needs_mnist = pytest.mark.skipif(not dataset_available("mnist")[0], reason="MNIST test set not available")


def network(preset: str, seed: int):
    """A network built from blocks with seeded random weights, round-tripped through its checkpoint files as the
    Train page's result and an upload both are."""
    torch.manual_seed(seed)
    net = CustomNet(PRESETS[preset]).eval()
    card = new_card("mnist", load_model("mnist")[0])
    card.param_count = sum(p.numel() for p in net.parameters())
    return load_uploaded_pair(*to_bytes(net, card))


class FinishedJob:
    """A training job that has ended with ``loaded`` as its result (what ui.session_model reads of a real job)."""

    def __init__(self, loaded, finished_at: float | None = None):
        self.loaded, self.finished_at = loaded, finished_at if finished_at is not None else time.time()

    def result(self):
        return self.loaded


def prediction(at: AppTest) -> str:
    return next(t for t in texts(at) if t.startswith("### Prediction"))


def expected_prediction(loaded, img) -> str:
    model, card = loaded
    trace = capture(model, preprocess(img, card))
    return f"### Prediction: {card.classes[trace.pred]} ({trace.probs[trace.pred]:.1%})"


def which(at: AppTest) -> str:
    """The caption that names the network "Your model" is."""
    return next(c.value for c in at.caption if c.value.startswith("Your model: "))


def strip_names(at: AppTest) -> list[str]:
    """The layers the forward view's network view was given."""
    return [c["name"] for c in view_data(at)["payload"]["columns"]]


def explorer_on_yours(job) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(EXPLORER).run()
    at.session_state["_cnnviz_training_job"] = job
    at.session_state["canvas"] = canvas_value(drawing("one"))
    at.run()
    at.selectbox(key="model_name").set_value("yours").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_second_training_replaces_the_first_on_every_view():
    """Train A, explore it; train B (another architecture), come back with the same drawing: every number is B's."""
    a = network("Tiny: two convolutions", seed=1)
    b = network("Deep plain sigmoid (no batch norm)", seed=2)
    assert expected_prediction(a, drawing("one")) != expected_prediction(b, drawing("one")), "pick other seeds"
    at = explorer_on_yours(FinishedJob(a))
    assert prediction(at) == expected_prediction(a, drawing("one"))
    assert strip_names(at) == [r.name for r in capture(a[0], preprocess(drawing("one"), a[1])).layers]
    at.session_state["_cnnviz_training_job"] = FinishedJob(b)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert prediction(at) == expected_prediction(b, drawing("one"))
    trace_b = capture(b[0], preprocess(drawing("one"), b[1]))
    assert strip_names(at) == [r.name for r in trace_b.layers]
    assert re.fullmatch(rf"Your model: {b[1].param_count:,} parameters, trained here at \d\d:\d\d\.", which(at))
    open_view(at, "backward")  # the backward view and its softmax line are B's too
    assert strip_names(at) == ["loss"] + [r.name for r in reversed(trace_b.layers)] + ["input pixels"]


def test_the_network_that_arrived_last_is_your_model():
    """An upload after a training wins over it, and a training that ends after an upload wins over that."""
    a = network("Tiny: two convolutions", seed=1)
    b = network("Tiny: two convolutions", seed=3)
    c = network("Tiny: two convolutions", seed=4)
    assert len({expected_prediction(n, drawing("one")) for n in (a, b, c)}) == 3, "pick other seeds"
    at = explorer_on_yours(FinishedJob(a, finished_at=time.time() - 60))
    assert prediction(at) == expected_prediction(a, drawing("one"))
    # what ui.add_uploaded_model keeps for an upload (the browser test uploads real files)
    at.session_state["_cnnviz_your_models"] = {**at.session_state["_cnnviz_your_models"], "uploaded": ui.YourModel(
        *b, ui.model_identity(*b), "uploaded b.safetensors at 20:16", time.time())}
    at.run()
    assert prediction(at) == expected_prediction(b, drawing("one"))
    assert which(at) == f"Your model: {b[1].param_count:,} parameters, uploaded b.safetensors at 20:16."
    at.session_state["_cnnviz_training_job"] = FinishedJob(c)  # ends after the upload
    at.run()
    assert prediction(at) == expected_prediction(c, drawing("one"))


@needs_mnist
def test_your_model_with_a_test_sample_mistakes_and_learn():
    """The pickers read the card's dataset (they crashed on the name "yours"); Mistakes lists this network's own
    mistakes; Learn shows held-out accuracy from the card's dataset."""
    a = network("Tiny: two convolutions", seed=1)
    at = explorer_on_yours(FinishedJob(a))
    at.radio(key="source_yours").set_value("Test sample").run()
    assert not at.exception, [e.value for e in at.exception]
    ex = examples_of_model(*a)
    assert at.number_input(key="sample_yours_index").value == ex.hard[0].index  # starts on one it finds hard
    image, label = dataset("mnist", "test")[ex.hard[0].index]
    x = preprocess(image, a[1], dataset_sample=True)
    trace = capture(a[0], x)
    assert prediction(at).startswith(f"### Prediction: {a[1].classes[trace.pred]} ({trace.probs[trace.pred]:.1%})")

    at.radio(key="source_yours").set_value("Mistakes").run()
    assert not at.exception, [e.value for e in at.exception]
    box = next(s for s in at.selectbox if s.key.startswith("mistake_yours"))
    assert len(box.options) == len(ex.mistakes) > 0  # an untrained network gets most test images wrong
    first = ex.mistakes[0]
    image, label = dataset("mnist", "test")[first.index]
    probs = capture(a[0], preprocess(image, a[1], dataset_sample=True)).probs
    assert int(np.argmax(probs)) == first.pred != int(label) == first.true

    open_view(at, "learn")
    at.button(key="learn_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    batch = heldout_batch("mnist")
    hx = batch.normalized(a[1])
    x = preprocess(image, a[1], dataset_sample=True)
    step = learn_step(a[0], x, int(label), at.number_input(key="learn_lr").value, hx, batch.labels,
                      heldout_score(a[0], hx, batch.labels))
    shown = {m.label: m.value for m in at.metric}
    assert shown["held-out accuracy"] == f"{step.heldout_after.accuracy:.1%}"


def test_a_new_drawing_opens_the_conv_inspector_on_its_own_largest_cell():
    """A pick lasts while the learner stays on the input; a new drawing starts on its own default cell (the old
    channel and cell landed on blank background: nine patch values of -0.424 and a sum that means nothing)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(EXPLORER).run()
    at.session_state["canvas"] = canvas_value(drawing("zero"))
    at.run()
    at.slider(key="fwd_conv_ch").set_value(9).run()
    at.slider(key="fwd_conv_row").set_value(0).run()
    at.slider(key="fwd_conv_col").set_value(27).run()
    at.run()
    assert (at.slider(key="fwd_conv_ch").value, at.slider(key="fwd_conv_row").value,
            at.slider(key="fwd_conv_col").value) == (9, 0, 27), "the learner's pick lasts on the same input"
    at.session_state["canvas"] = canvas_value(drawing("one"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    model, card = load_model("mnist")
    rec = capture(model, preprocess(drawing("one"), card)).layer("block1.conv1")
    o = int(np.abs(rec.output).reshape(rec.output.shape[0], -1).max(1).argmax())
    row, col = np.unravel_index(int(np.abs(rec.output[o]).argmax()), rec.output[o].shape)
    assert (at.slider(key="fwd_conv_ch").value, at.slider(key="fwd_conv_row").value,
            at.slider(key="fwd_conv_col").value) == (o, row, col)
    assert abs(rec.output[o, row, col]) == np.abs(rec.output).max()


def test_switching_the_model_keeps_the_class_the_learner_explains():
    a = network("Tiny: two convolutions", seed=1)
    at = explorer_on_yours(FinishedJob(a))
    at.selectbox(key="model_name").set_value("mnist").run()
    at.selectbox(key="target").set_value(7).run()
    at.selectbox(key="model_name").set_value("yours").run()
    assert at.selectbox(key="target").value == 7
    open_view(at, "backward")
    assert "(target: 7)" in " ".join(texts(at))
    at.selectbox(key="model_name").set_value("mnist").run()
    assert at.selectbox(key="target").value == 7


@needs_mnist
def test_a_confident_mistake_is_not_called_a_tiny_gradient():
    """On a Mistakes pick the target is the true class and its loss is large: the caption says so, and does not say
    that the gradient is tiny everywhere."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(EXPLORER).run()
    at.radio(key="source_mnist").set_value("Mistakes").run()
    assert not at.exception, [e.value for e in at.exception]
    from cnnviz.engine.examples import load_examples

    worst = load_examples("mnist", "final").mistakes[0]
    assert worst.confidence > 0.99, "the list starts with a confident mistake"
    captions = " ".join(c.value for c in at.caption)
    assert "tiny everywhere" not in captions
    image, label = dataset("mnist", "test")[worst.index]
    model, card = load_model("mnist")
    trace = capture(model, preprocess(image, card, dataset_sample=True), target=int(label))
    assert f"Sure, and wrong: the true class {label} (p = " in captions
    assert f"so the loss for {label} is {__import__('cnnviz.numbers', fromlist=['fmt']).fmt(trace.loss, 3)}" \
        in captions


@needs_mnist
@pytest.mark.parametrize("accuracy,learned", [(10.1, False), (98.3, True)])
def test_the_train_page_does_not_congratulate_a_network_at_chance(accuracy, learned):
    """A deep sigmoid network at 10.1% got a green success box: at chance level the page says it has not learned."""
    model, card = network("Deep plain sigmoid (no batch norm)", seed=2)
    card.test_accuracy = accuracy
    at = AppTest.from_file(str(ROOT / "app_pages" / "train.py"), default_timeout=120)
    at.session_state["_cnnviz_your_model"] = (model, card)  # this session's earlier result (ui.session_model)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    said = [(box.value, kind) for kind, boxes in (("success", at.success), ("warning", at.warning)) for box in boxes
            if "Your model scores" in box.value]
    assert len(said) == 1, said
    text, kind = said[0]
    assert f"**{accuracy:.2f}%**" in text
    assert kind == ("success" if learned else "warning"), said
    assert ("has not learned" in text) == (not learned)
