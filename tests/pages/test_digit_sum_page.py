"""The digit-sum challenge as a learner uses it: AppTest and a real browser.

Expected numbers are recomputed here with PyTorch from the same fake test set and random model, never copied from
the app.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from cnnviz.canvas import canvas_value
from cnnviz.devserver import start_server, stop_server
from cnnviz.engine import digit_sum as ds
from cnnviz.engine.checkpoints import load_path, save
from cnnviz.engine.models import build_model, new_card
from cnnviz.engine.pictures import normalize, preprocess
from tests.support import (
    no_exception,
    open_page,
    open_page_at,
    plotly_values,
    require_browser,
    rerun,
    switch_to,
    wait_for_idle,
)

DIGIT_SUM = "app_pages/digit_sum.py"


# ---------------------------------------------------------------------------------------------------------------
# Digit-sum challenge: fixtures write a tiny MNIST and a random model, so nothing depends on runs/ or downloads


def write_fake_mnist(root: Path, per_class: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's raw idx files (torchvision layout) holding blobby fake digits; returns (images, labels)."""
    rng = np.random.default_rng(seed)
    n = per_class * 10
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 4:24, 6:22] = rng.integers(0, 256, size=(n, 20, 16), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels.astype(np.int64)


@pytest.fixture
def fake_world(tmp_path, monkeypatch):
    """A random MNIST model saved as the shipped checkpoint, a fake test set, and the env pointing at both."""
    data_dir, ckpt_dir = tmp_path / "data", tmp_path / "ckpt"
    images, labels = write_fake_mnist(data_dir)
    torch.manual_seed(0)
    model = build_model("mnist")
    card = new_card("mnist", model)
    card.test_accuracy, card.train_accuracy, card.epochs = 97.25, 99.5, 3
    card.history = [{"epoch": e, "train_accuracy": 90.0 + e, "test_accuracy": 91.0 + e} for e in (1, 2, 3)]
    save(model, card, ckpt_dir / "mnist.safetensors")
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(ckpt_dir))
    loaded, loaded_card = load_path(ckpt_dir / "mnist.safetensors")
    return loaded, loaded_card, torch.from_numpy(images)[:, None], labels, data_dir, ckpt_dir


def metrics(at: AppTest) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in at.metric:
        out.setdefault(m.label, m.value)  # the first of each (the "ten test digits" tab)
    return out


def predicted_sum(model, card, images, idx) -> int:
    with torch.no_grad():
        return int(model(normalize(images[torch.as_tensor(idx)], card)).argmax(1).sum())


def test_digit_sum_sums_match_the_model_on_fixed_seeds(fake_world):
    model, card, images, labels, _, _ = fake_world
    at = switch_to(DIGIT_SUM)
    assert at.title[0].value == "Digit-sum challenge"
    m = metrics(at)
    idx = ds.draw_indices(labels, "one of each", 0)
    assert m["True sum"] == str(int(labels[idx].sum())) == "45"
    assert m["Predicted sum"] == str(predicted_sum(model, card, images, idx))
    assert m["Difference"] == f"{int(m['Predicted sum']) - 45:+d}"
    # the card's numbers, which (unlike the sum) do measure fitting
    assert m["Test accuracy"] == "97.25%" and m["Training accuracy"] == "99.50%"
    assert m["Gap (train − test)"] == "+2.25 points"

    at.button(key="ds_new").click()
    rerun(at)
    assert at.number_input(key="ds_seed").value == 1
    idx = ds.draw_indices(labels, "one of each", 1)
    assert metrics(at)["Predicted sum"] == str(predicted_sum(model, card, images, idx))

    at.radio(key="ds_mode").set_value("random")
    rerun(at)
    idx = ds.draw_indices(labels, "random", 1)
    m = metrics(at)
    assert m["True sum"] == str(int(labels[idx].sum()))
    assert m["Predicted sum"] == str(predicted_sum(model, card, images, idx))


def test_digit_sum_page_says_what_the_sum_does_not_measure(fake_world):
    at = switch_to(DIGIT_SUM)
    note = " ".join(i.value for i in at.info)
    assert "**not** a sign of over- or under-fitting" in note
    assert "test images" in note and "gap" in note


def test_digit_sum_trials(fake_world):
    model, card, images, labels, _, _ = fake_world
    at = switch_to(DIGIT_SUM)
    assert "Sums agree" not in metrics(at)
    at.button(key="ds_run").click()
    rerun(at)
    m = metrics(at)
    with torch.no_grad():
        accuracy = 100 * float((model(normalize(images, card)).argmax(1).numpy() == labels).mean())
    assert m["Accuracy on these digits"] == f"{accuracy:.2f}%"
    assert {"Sums agree", "All ten right", "Sums agree, a digit wrong"} <= set(m)
    agree, right, cancel = (float(m[k].rstrip("%")) for k in ("Sums agree", "All ten right",
                                                                "Sums agree, a digit wrong"))
    assert agree == pytest.approx(right + cancel, abs=0.11)
    assert "ds_run" not in [b.key for b in at.button]  # the run button goes once the trials have run


def drawn_one(size: int = 140) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(size // 2, 20), (size // 2, size - 20)], fill=(255, 255, 255, 255), width=10)
    return img


def test_digit_sum_draw_your_own_without_data(fake_world, tmp_path, monkeypatch):
    model, card, *_ = fake_world
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path / "no-data-here"))
    at = switch_to(DIGIT_SUM)
    info = " ".join(i.value for i in at.info)
    assert "CNNVIZ_DATA_DIR" in info and "draw your own ten digits" in info
    assert [s.value for s in at.subheader if "Draw your own" in s.value]
    assert "Nothing is drawn yet" in info
    img = drawn_one()
    at.session_state["ds_canvas_1"] = canvas_value(img)
    rerun(at)
    with torch.no_grad():
        pred = int(model(preprocess(img, card)).argmax())
    m = metrics(at)
    assert m["True sum"] == "1" and m["Predicted sum"] == str(pred)
    assert any("Not drawn yet: 0, 2, 3" in c.value for c in at.caption)


def test_digit_sum_without_a_checkpoint_says_how_to_get_one(fake_world, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(tmp_path / "empty"))
    at = switch_to(DIGIT_SUM)
    assert any("cannot be loaded" in e.value for e in at.error)
    assert any("python -m cnnviz.train mnist" in i.value for i in at.info)
    assert not at.metric


def test_digit_sum_without_data_or_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path / "none"))
    at = switch_to(DIGIT_SUM)
    assert any("cannot be loaded" in e.value for e in at.error)


def test_digit_sum_without_data_says_so_once(fake_world, tmp_path, monkeypatch):
    """Issue 15: the no-data message said "set CNNVIZ_DATA_DIR" twice in one box."""
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path / "no-data-here"))
    at = switch_to(DIGIT_SUM)
    info = " ".join(i.value for i in at.info).lower()
    assert info.count("cnnviz_data_dir") == 1 and info.count("is not in") == 1, info


def test_digit_sum_link_opens_that_set_and_the_url_follows(fake_world):
    model, card, images, labels, _, _ = fake_world
    at = open_page_at(DIGIT_SUM, seed="5", mode="random")
    assert not at.warning, [w.value for w in at.warning]
    assert at.number_input(key="ds_seed").value == 5 and at.radio(key="ds_mode").value == "random"
    idx = ds.draw_indices(labels, "random", 5)
    m = metrics(at)
    assert m["True sum"] == str(int(labels[idx].sum()))
    assert m["Predicted sum"] == str(predicted_sum(model, card, images, idx))
    assert any(f"test #{idx[0]}" in c.value for c in at.caption)
    at.button(key="ds_new").click()
    rerun(at)
    assert at.query_params["seed"] == "6" and at.query_params["mode"] == "random"
    at.radio(key="ds_mode").set_value("one of each")
    rerun(at)
    assert at.query_params["mode"] == "one-of-each" and at.query_params["seed"] == "6"  # the link's (the address bar's)


@pytest.mark.parametrize("query,why", [
    ({"seed": "-3"}, "0 to 1,000,000"), ({"seed": "abc"}, "whole number"), ({"seed": "9" * 40}, "0 to 1,000,000"),
    ({"seed": "1.5"}, "whole number"), ({"mode": "all"}, "one-of-each or random"),
])
def test_digit_sum_bad_link_values_give_a_message_and_the_default(fake_world, query, why):
    model, card, images, labels, _, _ = fake_world
    at = open_page_at(DIGIT_SUM, **query)
    warnings = " ".join(w.value for w in at.warning)
    assert why in warnings and "default" in warnings, warnings
    assert at.number_input(key="ds_seed").value == 0 and at.radio(key="ds_mode").value == "one of each"
    idx = ds.draw_indices(labels, "one of each", 0)
    assert metrics(at)["Predicted sum"] == str(predicted_sum(model, card, images, idx))


def test_digit_sum_link_holds_the_weights_snapshot(fake_world):
    """Issue 21: a link to an untrained set opened as trained; the snapshot is the link's ``weights``."""
    model, card, images, labels, _, ckpt_dir = fake_world
    torch.manual_seed(1)
    untrained = build_model("mnist")
    save(untrained, new_card("mnist", untrained), ckpt_dir / "mnist_init.safetensors")
    untrained, untrained_card = load_path(ckpt_dir / "mnist_init.safetensors")
    idx = ds.draw_indices(labels, "random", 3)
    assert predicted_sum(untrained, untrained_card, images, idx) != predicted_sum(model, card, images, idx), \
        "two snapshots that answer differently, so the test can tell which one the page used"
    at = open_page_at(DIGIT_SUM, seed="3", mode="random", weights="init")
    assert not at.warning, [w.value for w in at.warning]
    assert at.radio(key="ds_stage").value == "init"
    assert metrics(at)["Predicted sum"] == str(predicted_sum(untrained, untrained_card, images, idx))
    at.radio(key="ds_stage").set_value("final")
    rerun(at)
    assert at.query_params["weights"] == "final"
    assert metrics(at)["Predicted sum"] == str(predicted_sum(model, card, images, idx))
    at.radio(key="ds_stage").set_value("init")
    rerun(at)
    assert at.query_params["weights"] == "init" and at.query_params["seed"] == "3"


def test_digit_sum_link_to_a_snapshot_this_server_lacks_says_so(fake_world):
    at = open_page_at(DIGIT_SUM, weights="epoch1")
    warnings = " ".join(w.value for w in at.warning)
    assert "model snapshot = 'epoch1' cannot be used: choose one of final" in warnings, warnings
    assert metrics(at)["Test accuracy"] == "97.25%", "the trained model's card"


def test_digit_sum_histogram_shows_every_difference_on_a_log_axis(fake_world):
    """Issue 15: on a linear axis the bars beside the one at 0 were invisible; now the count axis is logarithmic
    and every difference that happened has a labelled bar, its count equal to the trials' own count."""
    model, card, images, labels, _, _ = fake_world
    at = switch_to(DIGIT_SUM)
    at.radio(key="ds_trials_mode").set_value("random")  # a random model answers one class: one of each gives one bar
    at.button(key="ds_run").click()
    rerun(at)
    chart = next(c for c in at.get("plotly_chart") if "difference" in c.proto.spec)
    figure = json.loads(chart.proto.spec)
    assert figure["layout"]["yaxis"]["type"] == "log"
    assert figure["layout"]["yaxis"]["range"][0] < 0, "a bar of 1 trial must rise above the axis"
    bar = figure["data"][0]
    with torch.no_grad():
        predicted = model(normalize(images, card)).argmax(1).numpy()
    stats = ds.run_trials(ds.TestPredictions(predicted, labels), 1000, "random", 0)
    values, counts = stats.histogram
    assert plotly_values(bar["x"]) == values[counts > 0].tolist()
    assert plotly_values(bar["y"]) == counts[counts > 0].tolist()
    assert [int(t) for t in plotly_values(bar["text"])] == counts[counts > 0].tolist()
    assert len(values[counts > 0]) >= 3, "this fake world should give several differences"


# ---------------------------------------------------------------------------------------------------------------
# A real browser


@pytest.fixture(scope="module")
def digit_sum_world(tmp_path_factory):
    """A fresh server on a fake MNIST and a random model: (its url, the fake labels, the model, its card)."""
    require_browser()
    root = tmp_path_factory.mktemp("digit_sum_world")
    images, labels = write_fake_mnist(root / "data")
    torch.manual_seed(0)
    model = build_model("mnist")
    save(model, new_card("mnist", model), root / "ckpt" / "mnist.safetensors")
    loaded, card = load_path(root / "ckpt" / "mnist.safetensors")
    server = start_server(env={"CNNVIZ_DATA_DIR": str(root / "data"), "CNNVIZ_CHECKPOINT_DIR": str(root / "ckpt")})
    try:
        yield server.url, torch.from_numpy(images)[:, None], labels, loaded, card
    finally:
        stop_server(server)


def metric_value(page, label: str) -> str:
    metric = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return metric.locator("[data-testid='stMetricValue']").inner_text().strip()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_digit_sum(page, digit_sum_world, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    url, images, labels, model, card = digit_sum_world
    open_page(page, f"{url}/digit_sum?seed=5&mode=random")  # a link, the first page this server serves
    # the number input is first drawn with its default for a moment, then with the link's value
    expect(page.locator(".st-key-ds_seed input")).to_have_value("5", timeout=10_000)
    idx = ds.draw_indices(labels, "random", 5)
    assert metric_value(page, "True sum") == str(int(labels[idx].sum()))
    assert metric_value(page, "Predicted sum") == str(predicted_sum(model, card, images, idx))
    page.get_by_role("button", name="Draw a new set").click()
    wait_for_idle(page)
    assert page.locator(".st-key-ds_seed input").input_value() == "6"
    assert "seed=6" in page.url and "mode=random" in page.url
    page.get_by_role("tab", name="Many trials").click()
    page.get_by_role("button", name="Run 1,000 trials").click()
    wait_for_idle(page, timeout=120_000)
    page.wait_for_selector(".st-key-ds_hist")
    main = "[data-testid='stMainBlockContainer']"
    assert "Sums agree, a digit wrong" in page.inner_text(main)
    no_exception(page)
    page.get_by_role("tab", name="Draw your own ten").click()
    canvas = page.locator(".st-key-ds_canvas_1 canvas").last
    canvas.scroll_into_view_if_needed()
    for attempt in range(3):  # the drawing library may still be setting up the canvas for a moment
        page.wait_for_timeout(1000)
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 70, box["y"] + 20)
        page.mouse.down()
        for i in range(1, 21):
            page.mouse.move(box["x"] + 70, box["y"] + 20 + 5 * i, steps=2)
        page.mouse.up()
        try:
            page.wait_for_selector("text=Not drawn yet: 0, 2, 3, 4, 5, 6, 7, 8, 9", timeout=20_000)
            break
        except PlaywrightTimeout:  # draw again
            if attempt == 2:
                page.screenshot(path=str(tmp_path / "digit_sum_no_drawing.png"))
                raise
    wait_for_idle(page)
    no_exception(page)
    widths = page.evaluate("() => [...document.querySelectorAll('[data-testid=stImage] img')]"
                           ".filter(i => i.offsetParent).map(i => i.getBoundingClientRect().width)")
    assert widths and max(widths) <= 84, f"one drawn digit is shown {widths} px wide (issue 15: about 1040)"
    page.screenshot(path=str(tmp_path / "digit_sum.png"))


@pytest.mark.browser
@pytest.mark.slow
def test_browser_digit_sum_bad_link(page, digit_sum_world):
    url, images, labels, model, card = digit_sum_world
    open_page(page, f"{url}/digit_sum?seed=abc&mode=all")
    main = page.locator("[data-testid='stMainBlockContainer']")
    main.get_by_text("The link's set number (seed) = 'abc' cannot be used").wait_for()
    main.get_by_text("The link's which ten = 'all' cannot be used").wait_for()
    assert page.locator(".st-key-ds_seed input").input_value() == "0"
    idx = ds.draw_indices(labels, "one of each", 0)
    assert metric_value(page, "Predicted sum") == str(predicted_sum(model, card, images, idx))
    no_exception(page)
