"""The "Train a CNN" page (issue 16): AppTest for the builder, messages, live training, pause/resume/stop and the
queue between two sessions (learnable stand-in data, so no download); one real browser on real MNIST."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from cnnviz.devserver import start_server, stop_server
from cnnviz.engine import datasets
from cnnviz.training import jobs as tj
from tests.support import choose_option, open_page, open_page_at, switch_to, wait_for_idle
from tests.training.test_training import fake_source

PAGE = "app_pages/train.py"
TINY = "Tiny: two convolutions"
STATUS = re.compile(r"\*\*(\w+)\*\* · step (\d+) of (\d+) · epoch \d+ · held-out accuracy (\d+\.\d)%")


@pytest.fixture
def stand_in(monkeypatch):
    """MNIST 'available', a fresh server registry with a limit of one whose trainings learn stand-in data."""
    monkeypatch.setattr(datasets, "dataset_available", lambda name, data_dir=None: (name == "mnist", ""))
    registry = tj.JobRegistry(limit=1, data=fake_source)
    monkeypatch.setattr(tj, "JOBS", registry)
    yield registry
    registry.stop_all()


def new_app() -> AppTest:
    return open_page_at(PAGE, 60)


def status(at: AppTest) -> str:
    texts = [m.value for m in at.markdown if "· step" in m.value]
    return texts[0] if texts else ""


def wait_status(at: AppTest, predicate, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, at.exception
        text = status(at)
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"status never satisfied the wait: {text!r}"
        time.sleep(0.3)


def step_of(text: str) -> int:
    m = re.search(r"step (\d+) of", text)
    return int(m.group(1)) if m else -1


def start(at: AppTest, steps: int) -> None:
    at.selectbox(key="train_preset").set_value(TINY).run()
    at.number_input(key="train_steps").set_value(steps).run()
    at.number_input(key="train_lr").set_value(0.01).run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_without_data_the_page_says_how_and_trains_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path))
    at = new_app()
    assert any("MNIST" in i.value and "CNNVIZ_DATA_DIR" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "train_start"]


def test_builder_table_follows_the_blocks_and_bad_builds_get_a_message(stand_in):
    at = new_app()
    assert any("18202 parameters" in m.value for m in at.markdown), "the shipped preset is the default"
    at.selectbox(key="train_preset").set_value(TINY).run()
    table = at.dataframe[0].value
    assert list(table["layer"]) == ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "flatten",
                                    "fc"]
    assert list(table["output shape"])[-3:] == ["16 x 7 x 7", "784", "10"]
    assert int(table["parameters"].sum()) == 9146 and list(table["receptive field (px)"])[:5] == [3, 3, 3, 4, 8]
    at.text_area(key="train_blocks").set_value("conv 8\n" + "maxpool\n" * 6).run()
    assert any("below 1x1" in e.value for e in at.error)
    assert at.button(key="train_start").disabled
    at.text_area(key="train_blocks").set_value("conv 8\nsoftmax 3").run()
    assert any("unknown kind 'softmax'" in e.value for e in at.error)
    at.text_area(key="train_blocks").set_value("conv 8\nmaxpool").run()
    assert not at.error and not at.button(key="train_start").disabled


@pytest.mark.slow
def test_train_watch_pause_resume_and_take_it_home(stand_in):
    at = new_app()
    start(at, 3000)
    assert "starting" in status(at) and any("process of its own" in i.value for i in at.info), status(at)
    # the data folder the page checked travels with the job (the fork server's environment may be older)
    assert at.session_state["_cnnviz_training_job"].data_dir == str(datasets.default_data_dir())
    text = wait_status(at, lambda t: "training" in t and step_of(t) > 15)
    at.button(key="train_pause").click().run()
    paused = wait_status(at, lambda t: "paused" in t)
    time.sleep(1.0)
    at.run()
    assert step_of(status(at)) == step_of(paused), "no step while paused"
    assert at.button(key="train_start").disabled, "one training per session"
    at.button(key="train_resume").click().run()
    wait_status(at, lambda t: "training" in t and step_of(t) > step_of(paused) + 5)
    charts = at.get("plotly_chart")
    assert len(charts) >= 4, "loss, held-out accuracy, learning rate, gradient norms"
    assert len(at.get("image")) >= 2, "first-layer filters and the fixed digit's feature maps"
    at.button(key="train_stop").click().run()
    text = wait_status(at, lambda t: "stopped" in t)
    m = STATUS.search(text)
    assert m, f"the status shows state, step and 'accuracy NN.N%': {text!r}"
    assert float(m.group(4)) > 50, "the stand-in data is learnable"
    at.run()
    assert any("Your model scores" in s.value for s in at.success)
    assert len(at.get("download_button")) == 2, "the weights and the card"
    job = at.session_state["_cnnviz_training_job"]
    model, card = job.result()
    assert card.name == "mnist" and not model.training
    assert not at.button(key="train_start").disabled, "a new training may start"


@pytest.mark.slow
def test_two_sessions_with_a_limit_of_one_queue(stand_in):
    first, second = new_app(), new_app()
    start(first, 3000)
    wait_status(first, lambda t: "training" in t)
    start(second, 30)
    text = wait_status(second, lambda t: "waiting" in t)
    assert step_of(text) == 0
    assert any("number 1 in the queue" in i.value for i in second.info)
    first.button(key="train_stop").click().run()
    wait_status(second, lambda t: "finished" in t)
    assert "stopped" in status(first.run())


# ---------------------------------------------------------------------------------------------------------------
# A real browser on real MNIST: build, train the tiny preset's 300 steps, see status and curves, pause and resume
# in the middle


@pytest.mark.browser
@pytest.mark.slow
def test_browser_build_train_pause_resume(browser):
    from tests.support import require_browser

    require_browser()
    if not datasets.dataset_available("mnist")[0]:
        pytest.skip("needs MNIST in $CNNVIZ_DATA_DIR (CI sets it)")
    server = start_server(env={"CNNVIZ_TRAINING_LIMIT": "1"})
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        open_page(page, f"{server.url}/train", timeout=180_000)
        page.get_by_text("Total:").first.wait_for()
        choose_option(page, "train_preset", TINY)  # again if a rerun closed the list (the machine is busy: the
        wait_for_idle(page)                        # fork server imports torch as the page opens)
        # The preset's steps (waits: once a widget was seen holding its minimum for a moment while a rerun drew it).
        expect(page.locator(".st-key-train_steps input")).to_have_value("300")
        page.locator(".st-key-train_start button").click()
        status_box = page.locator(".st-key-train_status")
        status_box.get_by_text(re.compile(r"training")).wait_for(timeout=120_000)  # after "starting" (its process)
        page.wait_for_function("""() => {
            const m = document.querySelector('.st-key-train_status')?.innerText.match(/step (\\d+)/);
            return m && +m[1] >= 100; }""", timeout=300_000)
        page.locator(".st-key-train_pause button").click()
        status_box.get_by_text("paused").wait_for()
        held = int(re.search(r"step (\d+)", status_box.inner_text()).group(1))
        assert 100 <= held < 300, held
        page.wait_for_timeout(2500)
        assert int(re.search(r"step (\d+)", status_box.inner_text()).group(1)) == held
        assert page.locator("[data-testid='stPlotlyChart']").count() >= 4
        page.locator(".st-key-train_resume button").click()
        status_box.get_by_text("finished").wait_for(timeout=600_000)
        text = status_box.inner_text()
        m = re.search(r"step (\d+) of (\d+).*accuracy (\d+\.\d)%", text, re.S)
        assert m and m.group(1) == m.group(2) == "300", text
        assert float(m.group(3)) >= 95.0, text  # all 10,000 test images; the benchmark's run of these settings: 98.3%
        page.get_by_text("Your model scores").wait_for()
    finally:
        context.close()
        stop_server(server)



# ---------------------------------------------------------------------------------------------------------------
# Issue 21: the builder survives a visit to another page, a link holds the network and its settings, and "Open it in
# the Network explorer" lands on Your model

def app_on_train() -> AppTest:
    return switch_to("app_pages/train.py", 60)


def total_parameters(at: AppTest) -> int:
    return int(at.dataframe[0].value["parameters"].sum())


def test_the_builder_survives_a_visit_to_another_page(stand_in):
    at = app_on_train()
    at.selectbox(key="train_preset").set_value(TINY).run()
    at.text_area(key="train_blocks").set_value("conv 8\nmaxpool\nconv 12\nmaxpool").run()
    at.number_input(key="train_lr").set_value(0.02).run()
    at.radio(key="train_schedule").set_value("constant").run()
    edited = total_parameters(at)
    assert edited != 18202
    at.switch_page("app_pages/home.py").run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_preset").value == TINY
    assert at.text_area(key="train_blocks").value == "conv 8\nmaxpool\nconv 12\nmaxpool"
    assert at.number_input(key="train_lr").value == 0.02 and at.radio(key="train_schedule").value == "constant"
    assert total_parameters(at) == edited, "the network that would be trained is the one the learner built"


def open_train_link(**query: str) -> AppTest:
    return open_page_at(PAGE, 60, **query)


def test_train_link_opens_that_network_and_the_url_follows(stand_in):
    at = open_train_link(preset="tiny", blocks="c8_p_c16_t4_d0.1_p", act="tanh", bn="0", head="gap", opt="sgd",
                         lr="0.03", schedule="constant", batch="32", steps="450", augment="1", seed="7")
    assert not at.warning, [w.value for w in at.warning]
    assert at.selectbox(key="train_preset").value == TINY
    assert at.text_area(key="train_blocks").value == "conv 8\nmaxpool\nconv 16\nconv1x1 4\ndropout 0.1\nmaxpool"
    assert (at.selectbox(key="train_activation").value, at.checkbox(key="train_bn").value,
            at.radio(key="train_head").value) == ("tanh", False, "gap")
    assert (at.selectbox(key="train_optimizer").value, at.number_input(key="train_lr").value,
            at.radio(key="train_schedule").value, at.selectbox(key="train_batch").value) == \
        ("sgd", 0.03, "constant", 32)
    assert (at.number_input(key="train_steps").value, at.checkbox(key="train_augment").value,
            at.number_input(key="train_seed").value) == (450, True, 7)
    # conv 8 (80) + conv 16 (1,168) + conv1x1 4 (68) + the 1x1 classifier (50), no batch norm
    assert total_parameters(at) == 80 + 1168 + 68 + 50
    at.text_area(key="train_blocks").set_value("conv 8\nmaxpool\nconv 16").run()
    assert at.query_params["blocks"] == "c8_p_c16"
    at.number_input(key="train_steps").set_value(600).run()
    assert at.query_params["steps"] == "600" and at.query_params["opt"] == "sgd"
    at.selectbox(key="train_preset").set_value("Deep plain sigmoid (no batch norm)").run()
    assert at.query_params["preset"] == "deep-sigmoid" and at.query_params["act"] == "sigmoid"
    assert at.query_params["blocks"] == "c8_c8_c8_c8_c8_p_c8_c8_c8_c8_c8_p" and at.query_params["bn"] == "0"


@pytest.mark.parametrize("query,why", [
    ({"blocks": "c8_q_p"}, "part 2 'q' does not start with c (conv)"),
    ({"blocks": "c8_cx"}, "part 2 'cx': write c and a channel count"),
    ({"blocks": "c8_" * 200}, "at most 400"),
    ({"lr": "fast"}, "not a number"), ({"lr": "50"}, "1e-05 to 10"), ({"lr": "nan"}, "1e-05 to 10"),
    ({"steps": "1.5"}, "whole number"), ({"steps": "999999"}, "1 to 20000"),
    ({"batch": "100"}, "16, 32, 64, 128, 256, 512"), ({"bn": "yes"}, "1 (on) or 0 (off)"),
    ({"act": "gelu"}, "relu, sigmoid, tanh"), ({"preset": "huge"}, "shipped, tiny, deep-sigmoid"),
])
def test_train_bad_link_values_give_a_message_and_the_default(stand_in, query, why):
    at = open_train_link(**query)
    warnings = " ".join(w.value for w in at.warning)
    assert why in warnings and "default" in warnings, warnings
    assert any("18202 parameters" in m.value for m in at.markdown), "the default network"
    assert not at.button(key="train_start").disabled


def test_blocks_code_round_trips_every_preset():
    from cnnviz.engine.builder import PRESETS, blocks_code, parse_blocks_code

    for cfg in PRESETS.values():
        assert parse_blocks_code(blocks_code(cfg.blocks)) == cfg.blocks


@pytest.mark.slow
def test_open_the_explorer_after_training_lands_on_your_model(stand_in):
    at = app_on_train()
    at.session_state["model_name"] = "mnist"  # the explorer was on MNIST before (and a link had said so)
    start(at, 30)
    wait_status(at, lambda t: "finished" in t)
    at.run()
    at.button(key="train_open_explorer").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Network explorer"
    assert at.selectbox(key="model_name").value == "yours" and at.query_params["model"] == "yours"
