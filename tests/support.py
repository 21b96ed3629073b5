"""What the tests share, each once: small models and inputs, opening a page in AppTest and reading what it shows,
and waiting on a real browser (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest
from torch import nn

from cnnviz.devserver import CHROMIUM, IDLE, start_server, stop_server
from cnnviz.engine.checkpoints import CheckpointError, load_model
from cnnviz.engine.models import build_model

ROOT = Path(__file__).resolve().parent.parent
EXPLORER = "app_pages/explorer.py"
REQUIRE_BROWSER = os.environ.get("CNNVIZ_REQUIRE_BROWSER") == "1"


# ------------------------------------------------------------------------------------------- models and inputs
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so it is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def small_cnn() -> nn.Module:
    """A small random CNN with OVERLAPPING max-pool windows (kernel 3, stride 1) and an average pool."""
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 4, 3, padding=1)),
        ("bn1", nn.BatchNorm2d(4)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, stride=1)),  # overlapping windows
        ("conv2", nn.Conv2d(4, 5, 2, stride=2, padding=1)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(5 * 2 * 2, 3)),
    ])).eval()


def shipped_or_random(name: str, seed: int = 0) -> nn.Module:
    """The committed checkpoint, or (while it is being trained) a random model with random BN statistics."""
    try:
        model, _ = load_model(name)
        return model
    except CheckpointError:
        torch.manual_seed(seed)
        return randomize_batchnorm(build_model(name), seed).eval()


def leaf_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]


def reference_pass(model: nn.Module, x: torch.Tensor, target: int, objective: str):
    """An independent computation: float64 copy, run leaf by leaf, retain_grad() and .backward().

    Valid for chain-shaped models (ours are). Returns (activations, activation grads, param grads, logits).
    """
    net = copy.deepcopy(model).double().eval()
    for p in net.parameters():
        p.grad = None
    h = x.detach().double().clone().requires_grad_(True)
    acts = [h]
    for _, module in leaf_chain(net):
        h = module(h)
        h.retain_grad()
        acts.append(h)
    logits = h
    if objective == "loss":
        obj = nn.functional.cross_entropy(logits, torch.tensor([target]))
    else:
        obj = logits[0, target]
    obj.backward()
    grads = [a.grad for a in acts]
    param_grads = {n: p.grad for n, p in net.named_parameters()}
    return acts, grads, param_grads, logits.detach()


def shipped_with_test_set(name: str) -> tuple[nn.Module, object]:
    """The shipped model and card, skipping the test (with the reason) when its test set or checkpoint is missing."""
    from cnnviz.engine.datasets import dataset_available

    ok, message = dataset_available(name)
    if not ok:
        pytest.skip(message)
    try:
        return load_model(name)
    except CheckpointError as exc:
        pytest.skip(str(exc))


def drawing(shape: str) -> Image.Image:
    """A drawing on the 280x280 canvas, white on black as the canvas draws: "one", "zero" or "dot"."""
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    d = ImageDraw.Draw(img)
    if shape == "one":
        d.line([(140, 40), (140, 240)], fill=(255, 255, 255, 255), width=20)
    elif shape == "zero":
        d.ellipse([(80, 40), (200, 240)], outline=(255, 255, 255, 255), width=20)
    elif shape == "dot":
        d.ellipse([(135, 135), (145, 145)], fill=(255, 255, 255, 255))
    return img


def model_picture(name: str) -> Image.Image:
    """A drawn zero (MNIST) or a smooth colour photo-like picture (CIFAR-10): inputs like the page's."""
    if name == "mnist":
        img = Image.new("L", (280, 280), 0)
        ImageDraw.Draw(img).ellipse([(80, 40), (200, 240)], outline=255, width=20)
        return img
    yy, xx = np.mgrid[0:32, 0:32]
    rgb = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=-1).astype(np.uint8)  # (32, 32, 3)
    return Image.fromarray(rgb)


def digit_input(card) -> torch.Tensor:
    """A drawn ring (an MNIST-like 0: ink 1, background 0), normalised as the model's card says: a real picture."""
    yy, xx = np.mgrid[0:28, 0:28]
    r = np.hypot(yy - 14, (xx - 14) * 1.4)
    pixels = np.clip(1.0 - np.abs(r - 8) / 2.0, 0, 1)
    (mean,), (std,) = card.mean, card.std
    return torch.tensor((pixels - mean) / std, dtype=torch.float32)[None, None]


# ------------------------------------------------------------------------------------------- pages in AppTest
def ok(at: AppTest) -> AppTest:
    """``at`` after a run that raised nothing in the page."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def rerun(at: AppTest) -> AppTest:
    at.run()
    return ok(at)


def open_page_at(path: str, timeout: float = 120, **query: object) -> AppTest:
    """The page (``path`` under the repository) opened from a link with this query string, after its first run."""
    at = AppTest.from_file(str(ROOT / path), default_timeout=timeout)
    at.query_params.update({name: str(value) for name, value in query.items()})
    return rerun(at)


def switch_to(path: str, timeout: float = 120) -> AppTest:
    """The app opened at its home page, then switched to the page ``path`` as the sidebar does."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout).run()
    at.switch_page(path).run()
    return ok(at)


def number_input(at: AppTest, label: str):
    """The number box labelled ``label`` ("w1", "learning rate")."""
    return next(n for n in at.number_input if n.label == label)


def page_text(at: AppTest) -> str:
    """Everything the page writes, the metrics as "label: value", each equation on one line."""
    kinds = ("title", "markdown", "code", "caption", "success", "info", "warning", "error", "subheader")
    parts = [str(e.value) for kind in kinds for e in getattr(at, kind)] + [f"{m.label}: {m.value}" for m in at.metric]
    return re.sub(r"\n +([=+]) ", r" \1 ", "\n".join(parts))  # equations broken over lines, joined again


def texts(at: AppTest) -> list[str]:
    """The page's markdown blocks."""
    return [m.value for m in at.markdown]


def open_view(at: AppTest, view: str) -> AppTest:
    """The explorer switched to ``view`` ("forward", "backward", ...)."""
    at.segmented_control(key="view").set_value(view).run()
    return ok(at)


def view_data(at: AppTest) -> dict:
    """What the explorer gave the network view (cnnviz/components/network_view.py) in its last run."""
    return next(json.loads(e.proto.json) for e in at.get("bidi_component")
                if e.proto.component_name == "cnnviz.network_view")


def plotly_values(data) -> list[float]:
    """A plotly JSON array: a list, or {"dtype": "f8", "bdata": base64} for numpy data."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return [float(v) for v in data]


# ------------------------------------------------------------------------------------------- a real browser
def _browser_missing_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return (f"no Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium; elsewhere: "
                "playwright install chromium and set CNNVIZ_CHROMIUM)")
    return None


def require_browser() -> None:
    """Skip a browser test when no browser is here, or fail if CNNVIZ_REQUIRE_BROWSER=1 says one must be."""
    reason = _browser_missing_reason()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"browser test cannot run and CNNVIZ_REQUIRE_BROWSER=1: {reason}")
    pytest.skip(reason)


def served(app: str = "app.py", env: dict[str, str] | None = None) -> Iterator[str]:
    """For a fixture (``yield from served()``): the url of a fresh server no browser has visited, stopped after."""
    require_browser()
    server = start_server(app, env=env)
    try:
        yield server.url
    finally:
        stop_server(server)


def wait_for_idle(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished the run an interaction started (no sleeping)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    # A rerun may start a moment after the interaction: give it the chance, then wait for it to end.
    try:
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='running']", timeout=300)
    except Exception:  # noqa: BLE001 - the run may already be over
        pass
    page.wait_for_selector(IDLE, timeout=timeout)


def open_page(page, url: str, timeout: float = 60_000) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_selector("[data-testid='stMainBlockContainer']", timeout=timeout)


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:3000]


def projector_on(page) -> None:
    page.locator("[data-testid=stSidebar] label").filter(has_text="Projector mode").click()
    wait_for_idle(page)
    page.wait_for_function("() => document.querySelector('[data-testid=stSidebar]').getBoundingClientRect().right <= 0")
    page.wait_for_timeout(500)  # the wider page is laid out again


def choose_option(page, key: str, option: str, tries: int = 3) -> None:
    """Pick ``option`` in the selectbox with key ``key``: open its list (clicking its input) and click the option,
    again if a rerun closed the list before the option could be clicked (a loaded machine)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        page.locator(f".st-key-{key} input").first.click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=15_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
