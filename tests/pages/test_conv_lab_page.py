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
import torch.nn.functional as F
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from cnnviz.engine.checkpoints import load_path, save
from cnnviz.engine.models import build_model, new_card
from cnnviz.engine.pictures import normalize
from cnnviz.handwork.conv_math import matrix_text
from tests.conftest import IDLE, ROOT, open_page, start_server, stop_server, wait_for_idle

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


def test_lab_shows_the_relu_and_output_size_examples():
    at = run_page(LAB)
    assert at.title[0].value == "Convolution & pooling lab"
    body = texts(at)
    relu = F.relu(torch.tensor([[-478.0, 494.0], [460.0, -477.0]]))
    assert relu.tolist() == [[0, 494], [460, 0]]  # the example, checked by torch
    assert "ReLU([[-478, 494], [460, -477]]) = [[0, 494], [460, 0]]" in body
    shape = F.max_pool2d(torch.zeros(1, 32, 26, 26), 2, 2).shape  # (1, 32, 13, 13)
    assert f"26×26×32 → {shape[2]}×{shape[3]}×{shape[1]}" in body
    assert not at.error


def test_editing_the_convolution_matches_conv2d():
    at = run_page(LAB)
    x = [[1, 2, 0, 1], [0, 1, 3, 1], [2, 2, 1, 0], [1, 0, 1, 2]]
    f = [[1, -1], [0, 2]]
    at.text_area(key="fwd_x").set_value("\n".join(" ".join(map(str, r)) for r in x))
    at.text_area(key="fwd_f").set_value("[[1, -1], [0, 2]]")
    at.slider(key="fwd_stride").set_value(2)
    at.slider(key="fwd_pad").set_value(1)
    rerun(at)
    expected = F.conv2d(t4(x), t4(f), stride=2, padding=1)[0, 0]
    assert f"O = {matrix_text(expected.numpy())}" in texts(at)
    at.slider(key="fwd_pos").set_value(expected.numel())  # the last kernel position
    rerun(at)
    assert f"= {int(expected[-1, -1])}" in next(m.value for m in at.markdown if m.value.startswith("**O["))


def test_convolution_backward_with_a_typed_gradient_matches_autograd():
    at = run_page(LAB)
    at.radio(key="bwd_g_choice").set_value("type your own")
    rerun(at)
    g = [[1, -2], [3, 0.5]]
    at.text_area(key="bwd_g_text").set_value("1 -2\n3 0.5")
    rerun(at)
    x = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=DT)[None, None].requires_grad_(True)
    f = torch.tensor([[1.0, 0], [2, -1]], dtype=DT)[None, None].requires_grad_(True)
    gx, gf = torch.autograd.grad(F.conv2d(x, f), (x, f), t4(g))
    assert f"dE/dF = {matrix_text(gf[0, 0].numpy())};  dE/dX = {matrix_text(gx[0, 0].numpy())}" in texts(at)


def test_wrong_shape_gradient_gives_a_warning():
    at = run_page(LAB)
    at.radio(key="bwd_g_choice").set_value("type your own")
    rerun(at)
    at.text_area(key="bwd_g_text").set_value("1 2 3")
    rerun(at)
    assert any("must have the output's shape, 2x2" in w.value for w in at.warning)


@pytest.mark.parametrize("text,message", [
    ("1 2\n3", "same number of entries"), ("1 two\n3 4", "not a number"), ("", "empty"),
    ("[[1, 2], [3, 4]", "list of rows"), ("1 nan", "finite"),
])
def test_bad_matrix_text_gives_a_message_not_a_traceback(text, message):
    at = run_page(LAB)
    at.text_area(key="fwd_x").set_value(text)
    rerun(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert "ReLU([[-478, 494], [460, -477]])" in texts(at)  # the rest of the lab still works


def test_filter_larger_than_the_input_is_explained():
    at = run_page(LAB)
    at.text_area(key="fwd_f").set_value("1 1 1 1\n1 1 1 1\n1 1 1 1\n1 1 1 1")
    rerun(at)
    assert any("larger than the padded input" in e.value for e in at.error)
    at.slider(key="fwd_pad").set_value(1)  # padding makes it fit
    rerun(at)
    assert not at.error
    expected = F.conv2d(t4([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), torch.ones(1, 1, 4, 4, dtype=DT), padding=1)
    assert f"O = {matrix_text(expected[0, 0].numpy())}" in texts(at)


def test_overlapping_max_pool_routes_the_sum_like_autograd():
    at = run_page(LAB)
    at.slider(key="pool_k").set_value(3)
    at.slider(key="pool_s").set_value(1)
    rerun(at)
    x = torch.tensor([[1.0, 3, 2, 2], [4, 9, 1, 0], [2, 0, 5, 6], [1, 7, 3, 3]], dtype=DT)[None, None]
    x.requires_grad_(True)
    out = F.max_pool2d(x, 3, 1)
    g = torch.arange(1.0, out.numel() + 1, dtype=DT).reshape(out.shape)  # the page's default: 1, 2, 3, ...
    (gx,) = torch.autograd.grad(out, x, g)
    body = texts(at)
    assert f"dE/dX = {matrix_text(gx[0, 0].numpy())}" in body
    assert "won several windows" in body
    assert any("overlap" in i.value for i in at.info)


def test_max_pool_tie_is_explained():
    at = run_page(LAB)
    _, idx = F.max_pool2d(t4([[1, 3, 2, 2], [4, 9, 1, 0], [2, 0, 5, 6], [1, 7, 3, 3]]), 2, 2, return_indices=True)
    winner = int(idx[0, 0, 0, 1])  # window (0, 1) holds [[2, 2], [1, 0]]: PyTorch picks one of the two 2s
    assert f"picks the first, X[{winner // 4}, {winner % 4}]" in texts(at)


def test_output_size_names_the_rows_never_covered():
    at = run_page(LAB)
    at.slider(key="os_w").set_value(7)
    at.slider(key="os_f").set_value(2)
    at.slider(key="os_p").set_value(0)
    at.slider(key="os_s").set_value(2)
    rerun(at)
    out = F.conv2d(torch.zeros(1, 1, 7, 7), torch.zeros(1, 1, 2, 2), stride=2).shape[-1]
    assert f"7×7×32 → {out}×{out}×32" in texts(at)
    (warning,) = [w.value for w in at.warning]
    assert "never covered" in warning and "rows/columns 6" in warning


def test_two_layer_chain_last_step_matches_autograd():
    at = run_page(LAB)
    names = at.select_slider(key="ch_step").options
    at.select_slider(key="ch_step").set_value(names[-1])
    rerun(at)
    image = t4([[1, 0, 2, 1, 0, 3], [0, 1, 3, 2, 1, 0], [2, 1, 0, 1, 2, 1], [1, 3, 1, 0, 1, 2], [0, 2, 1, 3, 0, 1],
                [1, 0, 2, 1, 2, 0]]).requires_grad_(True)
    p = F.max_pool2d(F.conv2d(F.conv2d(image, t4([[1, 0], [-1, 2]])), t4([[0, 1], [1, -1]])), 2, 2)
    (g,) = torch.autograd.grad(0.5 * (p ** 2).sum(), image)
    assert f"dImage = {matrix_text(g[0, 0].numpy())}" in texts(at)


def test_gradient_descent_too_large_a_step_diverges():
    at = run_page(LAB)
    at.slider(key="gd_lr").set_value(1.1)
    at.slider(key="gd_steps").set_value(30)
    rerun(at)
    assert any("Diverges" in e.value for e in at.error)
    at.slider(key="gd_lr").set_value(0.1)
    rerun(at)
    assert not at.error and any("onverges" in s.value for s in at.success)


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








def canvas_value(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": url}, "backgroundFit": None}


def drawn_one(size: int = 140) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(size // 2, 20), (size // 2, size - 20)], fill=(255, 255, 255, 255), width=10)
    return img








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


@pytest.mark.browser
@pytest.mark.slow
def test_browser_conv_lab(page, app_url, tmp_path):
    open_app_page(page, app_url, "conv_lab")
    thumb = slider(page, "fwd_pos")
    thumb.focus()
    thumb.press("End")
    wait_for_idle(page)
    assert "O[1, 1]" in page.inner_text("[data-testid='stMainBlockContainer']")
    box = page.locator(".st-key-fwd_x textarea")
    box.fill("1 2\n3")
    box.press("Control+Enter")
    wait_for_idle(page)
    page.wait_for_selector("text=every row needs the same number of entries")
    no_exception(page)
    box.fill("1 2 3\n4 5 6\n7 8 9")
    box.press("Control+Enter")
    wait_for_idle(page)
    for name in ("2 · Convolution backward", "3 · Two layers chained", "4 · Output size", "5 · Pooling", "6 · ReLU",
                 "7 · Conv + FC network", "8 · Gradient descent"):
        page.get_by_role("tab", name=name).click()
        wait_for_idle(page)
        no_exception(page)
    page.get_by_role("tab", name="5 · Pooling").click()
    k = slider(page, "pool_k")
    k.focus()
    k.press("ArrowRight")  # kernel 3
    wait_for_idle(page)
    s = slider(page, "pool_s")
    s.focus()
    s.press("ArrowLeft")  # stride 1: overlapping windows
    wait_for_idle(page)
    page.wait_for_selector("text=the windows overlap")
    no_exception(page)
    assert page.locator(IDLE).count() == 1
    page.screenshot(path=str(tmp_path / "conv_lab.png"))


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


