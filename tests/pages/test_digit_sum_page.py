"""The convolution & pooling lab and the digit-sum challenge as a learner uses them: AppTest and a real browser.

Expected numbers are recomputed here with PyTorch (or taken from the issue's examples), never copied from the app.
"""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from cnnviz.engine import digit_sum as ds
from cnnviz.engine.checkpoints import load_path, save
from cnnviz.engine.models import build_model, new_card
from cnnviz.engine.pictures import normalize, preprocess
from tests.conftest import ROOT, open_page, start_server, stop_server, wait_for_idle

LAB = "app_pages/conv_lab.py"
DIGIT_SUM = "app_pages/digit_sum.py"
DT = torch.float64


def t4(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=DT)[None, None]


def run_page(path: str, timeout: float = 120) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout).run()
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---------------------------------------------------------------------------------------------------------------
# Convolution & pooling lab
























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
    at = run_page(DIGIT_SUM)
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
    at = run_page(DIGIT_SUM)
    note = " ".join(i.value for i in at.info)
    assert "**not** a sign of over- or under-fitting" in note
    assert "test images" in note and "gap" in note


def test_digit_sum_trials(fake_world):
    model, card, images, labels, _, _ = fake_world
    at = run_page(DIGIT_SUM)
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


def canvas_value(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": url}, "backgroundFit": None}


def drawn_one(size: int = 140) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(size // 2, 20), (size // 2, size - 20)], fill=(255, 255, 255, 255), width=10)
    return img


def test_digit_sum_draw_your_own_without_data(fake_world, tmp_path, monkeypatch):
    model, card, *_ = fake_world
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path / "no-data-here"))
    at = run_page(DIGIT_SUM)
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
    at = run_page(DIGIT_SUM)
    assert any("cannot be loaded" in e.value for e in at.error)
    assert any("python -m cnnviz.train mnist" in i.value for i in at.info)
    assert not at.metric


def test_digit_sum_without_data_or_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CNNVIZ_DATA_DIR", str(tmp_path / "none"))
    at = run_page(DIGIT_SUM)
    assert any("cannot be loaded" in e.value for e in at.error)


# ---------------------------------------------------------------------------------------------------------------
# A real browser


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:2000]


def slider(page, key: str):
    """The keyboard-operable thumb of a keyed st.slider (a visually hidden range input)."""
    thumb = page.locator(f".st-key-{key} input[type='range']")
    thumb.wait_for(state="attached")
    return thumb


def open_app_page(page, url: str, path: str) -> None:
    open_page(page, url)  # the app's root first: a cold deep link can skip st.navigation
    open_page(page, f"{url}/{path}")




@pytest.fixture(scope="module")
def digit_sum_server(tmp_path_factory):
    from tests.conftest import require_browser

    require_browser()
    root = tmp_path_factory.mktemp("digit_sum_world")
    write_fake_mnist(root / "data")
    torch.manual_seed(0)
    model = build_model("mnist")
    save(model, new_card("mnist", model), root / "ckpt" / "mnist.safetensors")
    server = start_server(env={"CNNVIZ_DATA_DIR": str(root / "data"), "CNNVIZ_CHECKPOINT_DIR": str(root / "ckpt")})
    try:
        yield server.url
    finally:
        stop_server(server)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_digit_sum(page, digit_sum_server, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    open_app_page(page, digit_sum_server, "digit_sum")
    main = "[data-testid='stMainBlockContainer']"
    assert "True sum" in page.inner_text(main)
    page.get_by_role("button", name="Draw a new set").click()
    wait_for_idle(page)
    assert page.locator(".st-key-ds_seed input").input_value() == "1"
    page.get_by_role("tab", name="Many trials").click()
    page.get_by_role("button", name="Run 1,000 trials").click()
    wait_for_idle(page)
    page.wait_for_selector(".st-key-ds_hist")
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
            page.wait_for_selector("text=Not drawn yet: 0, 2, 3, 4, 5, 6, 7, 8, 9", timeout=10_000)
            break
        except PlaywrightTimeout:  # draw again
            if attempt == 2:
                page.screenshot(path=str(tmp_path / "digit_sum_no_drawing.png"))
                raise
    wait_for_idle(page)
    no_exception(page)
    page.screenshot(path=str(tmp_path / "digit_sum.png"))
