"""Two networks uploaded one after the other in a real Chromium: each becomes "Your model" at once (named after its
file), and the page shows each one's own prediction, not the first one's."""

from __future__ import annotations

import re

import pytest
import torch
from playwright.sync_api import expect

from cnnviz.engine.builder import PRESETS, CustomNet
from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model, load_uploaded_pair, to_bytes
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.examples import examples_of_model
from cnnviz.engine.models import new_card
from cnnviz.engine.pictures import preprocess
from tests.support import open_page, wait_for_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def pair(seed: int) -> tuple[bytes, bytes]:
    torch.manual_seed(seed)
    net = CustomNet(PRESETS["Tiny: two convolutions"]).eval()
    card = new_card("mnist", load_model("mnist")[0])
    card.param_count = sum(p.numel() for p in net.parameters())
    return to_bytes(net, card)


def expected(files: tuple[bytes, bytes]) -> str:
    """The prediction the explorer shows first for this network: on the first of its own hard test images."""
    model, card = load_uploaded_pair(*files)
    image, _ = dataset("mnist", "test")[examples_of_model(model, card).hard[0].index]
    trace = capture(model, preprocess(image, card, dataset_sample=True))
    return f"Prediction: {card.classes[trace.pred]} ({trace.probs[trace.pred]:.1%})"


def test_two_uploaded_networks_each_show_their_own_numbers(page, app_url, tmp_path):
    if not dataset_available("mnist")[0]:
        pytest.skip("MNIST test set not available (set CNNVIZ_DATA_DIR)")
    nets = {"first": pair(1), "second": pair(3)}
    assert expected(nets["first"]) != expected(nets["second"]), "pick other seeds"
    page.set_viewport_size({"width": 1280, "height": 720})
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-prediction h3", timeout=60_000)
    for name, (weights, card) in nets.items():
        (tmp_path / f"{name}.safetensors").write_bytes(weights)
        (tmp_path / f"{name}.json").write_bytes(card)
        if not page.locator(".st-key-up_weights").is_visible():
            page.get_by_role("button", name="Load", exact=True).click()
        page.locator(".st-key-up_weights [data-testid='stFileUploaderDropzoneInput']").set_input_files(
            str(tmp_path / f"{name}.safetensors"))
        wait_for_idle(page, 60_000)
        page.locator(".st-key-up_card [data-testid='stFileUploaderDropzoneInput']").set_input_files(
            str(tmp_path / f"{name}.json"))
        page.get_by_text(f"Loaded {name}.safetensors", exact=False).first.wait_for(timeout=120_000)
        page.keyboard.press("Escape")  # close the popover
        expect(page.locator(".st-key-model_name input")).to_have_value("Your model", timeout=60_000)
        page.get_by_text(re.compile(rf"Your model: [\d,]+ parameters, uploaded {name}\.safetensors at \d\d:\d\d"))\
            .first.wait_for(timeout=60_000)
        heading = page.locator(".st-key-prediction h3")
        heading.get_by_text(expected(nets[name]), exact=False).wait_for(timeout=120_000)
        assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:2000]
    page.screenshot(path=str(tmp_path / "second_upload.png"), full_page=True)
