"""The explorer's network view (cnnviz/components/network_view.js) in Chromium, measured from the DOM: map sizes in
screen pixels, the view's height, labels that fit, clicks that reach the inspector, Play with its controls and
highlighted column on screen, and a hovered cell's receptive field outlined on the input picture and earlier maps."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.pictures import preprocess
from cnnviz.render.network_data import backward_columns, forward_columns, geometry, pack, receptive_field
from tests.support import model_picture, open_page, served, wait_for_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEW = ".st-key-network_forward"
WIDTH, HEIGHT = 1280, 720


def open_view(page, app_url: str, query: str = "", size: tuple[int, int] = (WIDTH, HEIGHT),
              projector: bool = False) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    open_page(page, f"{app_url}/explorer{query}")
    page.wait_for_selector(f"{VIEW} .nv-col", timeout=90_000)
    wait_for_idle(page, 60_000)
    if projector:
        page.locator(".st-key-projector label").first.click()
        wait_for_idle(page, 60_000)
        page.locator(f"{VIEW} .nv-view").wait_for()
        page.wait_for_function("""() => [...document.querySelectorAll('.st-key-network_forward *')]
            .some(e => e.shadowRoot ? e.shadowRoot.querySelector('.nv-map') : e.matches('.nv-map'))""")
    page.locator(f"{VIEW} .nv-view").scroll_into_view_if_needed()


def boxes(page, selector: str) -> list[dict]:
    return [loc.bounding_box() for loc in page.locator(f"{VIEW} {selector}").all()]


def heading(page) -> str:
    return page.locator("h4").filter(has_text=re.compile(r"^\d+\. ")).first.inner_text()


def slider_value(page, key: str) -> int:
    return int(page.locator(f".st-key-{key} [data-testid='stSliderThumbValue']").inner_text())


def inside_viewport(box: dict | None) -> bool:
    return bool(box) and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= WIDTH \
        and box["y"] + box["height"] <= HEIGHT


@pytest.mark.parametrize("width,height,projector,scale", [(1280, 720, False, 1.0), (1920, 1080, False, 1.0),
                                                          (1280, 720, True, 1.5)],
                         ids=["1280x720", "1920x1080", "1280x720-projector"])
def test_maps_are_legible_and_the_view_fits_one_screen(page, app_url, tmp_path, width, height, projector, scale):
    open_view(page, app_url, size=(width, height), projector=projector)
    names = page.locator(f"{VIEW} .nv-name").all_inner_texts()
    assert len(names) == 28 and names[0] == "1. block1.conv1" and names[-1] == "28. head.flatten"
    assert page.locator(f"{VIEW} .nv-col.nv-selected .nv-name").inner_text() == "1. block1.conv1"
    expanded = boxes(page, ".nv-col.nv-selected .nv-map")
    assert len(expanded) == 16  # block1.conv1: 16 maps of 28x28
    # >= 3 screen px per map pixel (projector mode: the maps grow with the text)
    assert min(min(b["width"], b["height"]) for b in expanded) >= 84 * scale
    others = boxes(page, ".nv-col:not(.nv-selected) .nv-map")
    assert len(others) > 500
    assert min(min(b["width"], b["height"]) for b in others) >= 28 * scale  # 14x14 and 7x7 scaled up
    view = page.locator(f"{VIEW} .nv-view").bounding_box()
    assert view["height"] <= 0.6 * height, view
    assert view["x"] >= 0 and view["x"] + view["width"] <= width, "the view fits the page's width"
    scroll = page.locator(f"{VIEW} .nv-body").evaluate(
        "b => ({sw: b.scrollWidth, cw: b.clientWidth, sh: b.scrollHeight, ch: b.clientHeight})")
    assert scroll["sh"] <= scroll["ch"], f"an inner vertical scroll: {scroll}"
    assert scroll["sw"] > scroll["cw"], "28 layers scroll sideways inside the view"
    cut = page.locator(f"{VIEW} .nv-view").evaluate("""v => [...v.querySelectorAll('*')]
        .filter(e => e.childElementCount === 0 && e.textContent.trim() && e.scrollWidth > e.clientWidth)
        .map(e => e.textContent)""")
    assert cut == []
    assert all(page.locator(f"{VIEW} .nv-range").first.locator("span").all_inner_texts())  # a colour range
    font = page.locator(f"{VIEW} .nv-name").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font >= (18 if projector else 12)
    page.screenshot(path=str(tmp_path / f"network_view_{width}x{height}{'_projector' if projector else ''}.png"))


def test_clicks_pick_the_layer_channel_and_cell_in_the_inspector(page, app_url):
    open_view(page, app_url)
    relu = page.locator(f"{VIEW} .nv-col[data-col='2']")  # block1.relu1, collapsed
    relu.locator(".nv-map[data-ch='5']").click()
    wait_for_idle(page)
    assert heading(page).startswith("3. block1.relu1")
    assert slider_value(page, "fwd_relu_ch") == 5
    assert "layer=block1.relu1" in page.url
    assert page.locator(f"{VIEW} .nv-col.nv-selected").get_attribute("data-col") == "2"
    assert page.locator(f"{VIEW} .nv-col.nv-selected .nv-map.nv-chosen").get_attribute("data-ch") == "5"
    # back to the convolution by a click on its column, then a cell of its expanded channel 3
    page.locator(f"{VIEW} .nv-col[data-col='0'] .nv-name").click()
    wait_for_idle(page)
    assert heading(page).startswith("1. block1.conv1")
    target = page.locator(f"{VIEW} .nv-col.nv-selected .nv-map[data-ch='3']")
    box = target.bounding_box()
    row, col = 20, 9  # a cell of the 28x28 map, clicked at its centre
    target.click(position={"x": (col + 0.5) * box["width"] / 28, "y": (row + 0.5) * box["height"] / 28})
    wait_for_idle(page)
    assert (slider_value(page, "fwd_conv_ch"), slider_value(page, "fwd_conv_row"),
            slider_value(page, "fwd_conv_col")) == (3, row, col)
    assert "kernel W[3,0]" in page.inner_text("[data-testid='stMainBlockContainer']")  # channel 3's kernel, written


RECORD_PLAY = """view => {  // sample the view every 50 ms inside the page (a loaded test machine polls slowly)
    const box = (e) => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width,
                                                                       height: r.height}; };
    const q = (s) => view.querySelector(s);
    window.__nvPlay = [];
    window.__nvSeen = [];  // every position, as it is written (a sample can miss a fast step)
    new MutationObserver(() => window.__nvSeen.push(q('.nv-pos').textContent))
        .observe(q('.nv-pos'), {childList: true, characterData: true, subtree: true});
    window.__nvTimer = setInterval(() => window.__nvPlay.push({
        pos: q('.nv-pos').textContent, play: box(q('button.nv-play')), posBox: box(q('.nv-pos')),
        body: box(q('.nv-body')), name: box(q('.nv-col.nv-selected .nv-name')),
        lit: view.querySelectorAll('.nv-link.nv-lit').length}), 50);
}"""


def test_play_glides_to_the_last_layer_with_controls_and_column_on_screen(page, app_url, tmp_path):
    open_view(page, app_url)
    page.locator(f"{VIEW} select.nv-speed").select_option(label="fast")
    view = page.locator(f"{VIEW} .nv-view")
    view.evaluate(RECORD_PLAY)
    play = page.locator(f"{VIEW} button.nv-play")
    play.click()
    page.locator(f"{VIEW} .nv-pos").filter(has_text="28 / 28").wait_for(timeout=60_000)
    page.wait_for_timeout(600)  # the last glide
    samples = page.evaluate("() => { clearInterval(window.__nvTimer); return window.__nvPlay; }")
    shown = {}  # position -> whether its column's name was seen inside the view and the window
    for state in samples:
        assert inside_viewport(state["play"]) and inside_viewport(state["posBox"]), state  # the controls, always
        name, body = state["name"], state["body"]
        visible = inside_viewport(name) and name["x"] >= body["x"] and name["x"] + name["width"] <= body["x"] + \
            body["width"]
        shown[state["pos"]] = shown.get(state["pos"], False) or visible
    seen = set(page.evaluate("() => window.__nvSeen"))
    assert len(seen) >= 27, seen  # it moved through the layers one by one, not in one jump
    assert all(shown.values()), [p for p, ok in shown.items() if not ok]  # each highlighted column came into view
    assert any(s["lit"] == 1 for s in samples)  # the link just crossed is lit
    page.wait_for_function("() => location.search.includes('layer=head.flatten')", timeout=30_000)
    wait_for_idle(page)
    assert heading(page).startswith("28. head.flatten")  # the inspector followed
    assert play.inner_text().endswith("Play")  # stopped at the end
    page.screenshot(path=str(tmp_path / "network_view_played.png"))


def app_trace(name: str = "mnist"):
    """The trace network_view_app.py shows: a drawn zero through the MNIST model, or CIFAR-10's colour gradient."""
    model, card = load_model(name)
    return capture(model, preprocess(model_picture(name), card))


@pytest.fixture(scope="module")
def backward_app_url():
    """A server for tests/browser/network_view_app.py: the view alone, in the backward pass's order."""
    yield from served(app="tests/browser/network_view_app.py")


def test_backward_play_lights_each_link_with_the_gradients_size(page, backward_app_url):
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    open_page(page, backward_app_url)
    view = page.locator(".st-key-nv_backward .nv-view")
    view.locator(".nv-col").first.wait_for(timeout=90_000)
    names = view.locator(".nv-name").all_inner_texts()
    assert len(names) == 30 and names[0] == "1. loss" and names[-1] == "30. input pixels"  # the slider's order
    thickness = [b["height"] for b in (loc.bounding_box() for loc in view.locator(".nv-line").all())]
    norms = [float(np.linalg.norm(c.values)) for c in backward_columns(app_trace())][1:]  # what each link carries
    assert len(thickness) == len(norms) == 29
    for a in range(29):  # thicker where the gradient passed on is larger
        for b in range(29):
            if norms[a] > norms[b]:
                assert thickness[a] >= thickness[b], (a, b, norms[a], norms[b], thickness)
    assert max(thickness) - min(thickness) >= 6, thickness  # the sizes span orders of magnitude: visibly so
    view.locator("select.nv-speed").select_option(label="fast")
    view.evaluate(RECORD_PLAY)
    view.locator("button.nv-play").click()
    view.locator(".nv-pos").filter(has_text="30 / 30").wait_for(timeout=60_000)
    samples = page.evaluate("() => { clearInterval(window.__nvTimer); return window.__nvPlay; }")
    assert len(set(page.evaluate("() => window.__nvSeen"))) >= 29
    assert all(s["lit"] <= 1 for s in samples) and sum(s["lit"] == 1 for s in samples) > len(samples) / 2
    page.wait_for_function("() => document.body.innerText.includes('last event: step 29')", timeout=30_000)


def open_app(page, url: str, query: str, size: tuple[int, int]):
    page.set_viewport_size({"width": size[0], "height": size[1]})
    open_page(page, f"{url}/?{query}")
    view = page.locator(".nv-view")
    view.locator(".nv-col").first.wait_for(timeout=90_000)
    view.locator(".nv-piccv").wait_for()
    return view


def assert_outlines(outline: dict, area: dict, rows: tuple[int, int], cols: tuple[int, int], h: int, w: int) -> None:
    """``outline`` covers exactly rows..., cols... of the h x w map drawn in ``area`` (screen px, 1 px slack)."""
    sy, sx = area["height"] / h, area["width"] / w
    want = {"x": area["x"] + cols[0] * sx, "y": area["y"] + rows[0] * sy,
            "width": (cols[1] - cols[0] + 1) * sx, "height": (rows[1] - rows[0] + 1) * sy}
    assert all(abs(outline[k] - want[k]) <= 1.0 for k in want), (outline, want)


HOVERS = {  # pass, model, hovered column (selected: expanded), its channel and cell, an earlier column to measure
    "mnist": ("forward", "mnist", 3, 2, (6, 20), 0),  # block1.conv2 -> block1.conv1 (16 maps)
    "cifar10": ("forward", "cifar10", 7, 5, (9, 2), 3),  # stage2.conv1 (16x16) -> stage1.conv2 (32 maps of 32x32)
    "backward": ("backward", "mnist", 25, 1, (27, 0), 27),  # dL/d(input of block1.conv2) -> of block1.bn1
}


@pytest.mark.parametrize("case,width,height", [("mnist", 1024, 768), ("mnist", 1280, 720), ("mnist", 1920, 1080),
                                               ("cifar10", 1280, 720), ("backward", 1280, 720)])
def test_hover_outlines_the_receptive_field_on_the_picture_and_earlier_maps(page, backward_app_url, tmp_path, case,
                                                                             width, height):
    pass_name, model, i, ch, (row, col), k = HOVERS[case]
    view = open_app(page, backward_app_url, f"pass={pass_name}&model={model}&selected={i}", (width, height))
    trace = app_trace(model)
    columns = forward_columns(trace) if pass_name == "forward" else backward_columns(trace)
    payload = pack(columns, pass_name, "expected", trace=trace)
    geo, metas = geometry(payload), payload["columns"]
    space, earlier = metas[i]["space"], metas[k]["space"]
    assert earlier < space
    (_, (y0, y1), (x0, x1)) = receptive_field(geo, space, (ch, row, col), 0)
    hovered = view.locator(f".nv-col[data-col='{i}'].nv-selected .nv-map[data-ch='{ch}']")
    _, h, w = metas[i]["shape"]
    box = hovered.bounding_box()
    assert box["width"] >= 3 * w  # the expanded column: >= 3 screen px per map pixel, so the hover is exact
    hovered.hover(position={"x": (col + 0.5) * box["width"] / w, "y": (row + 0.5) * box["height"] / h})
    text = view.locator(".nv-hover").inner_text()
    assert f"channel {ch} ({row}, {col})" in text and f"rows {y0}\u2013{y1}, columns {x0}\u2013{x1}" in text, text
    if pass_name == "backward":
        assert "in the forward pass" in text
    _, ph, pw = payload["input"]["shape"]
    assert_outlines(view.locator(".nv-pic .nv-rf").bounding_box(), view.locator(".nv-piccv").bounding_box(),
                    (y0, y1), (x0, x1), ph, pw)
    (c0, c1), rows, cols = receptive_field(geo, space, (ch, row, col), earlier)
    _, eh, ew = metas[k]["shape"]
    outlined = view.locator(f".nv-col[data-col='{k}'] .nv-map:has(.nv-rf)")
    assert [int(d) for d in outlined.evaluate_all("ms => ms.map(m => m.dataset.ch)")] == list(range(c0, c1 + 1))
    for m in (outlined.first, outlined.last):
        assert_outlines(m.locator(".nv-rf").bounding_box(), m.bounding_box(), rows, cols, eh, ew)
    later = i + 1 if pass_name == "forward" else i - 1  # a column nearer the loss: not in the field
    assert metas[later]["space"] > space and view.locator(f".nv-col[data-col='{later}'] .nv-rf").count() == 0
    page.screenshot(path=str(tmp_path / f"network_view_hover_{case}_{width}x{height}.png"))
    page.mouse.move(0, 0)
    page.wait_for_function("() => !document.querySelector('.nv-rf')")


@pytest.mark.parametrize("model,scale", [("cifar10", 1.0), ("cifar10", 1.5), ("mnist", 1.5)],
                         ids=["cifar10", "cifar10-projector", "mnist-projector"])
def test_expanded_column_fits_the_page_width_and_projector_mode_enlarges_the_maps(page, backward_app_url, tmp_path,
                                                                                  model, scale):
    view = open_app(page, backward_app_url, f"pass=forward&model={model}&scale={scale}", (WIDTH, HEIGHT))
    selected = view.locator(".nv-col.nv-selected")
    side = 32 if model == "cifar10" else 28
    maps = [b for b in (loc.bounding_box() for loc in selected.locator(".nv-map").all())]
    assert len(maps) == (32 if model == "cifar10" else 16)
    assert min(min(b["width"], b["height"]) for b in maps) >= 3 * side * scale  # projector mode: larger maps
    others = [loc.bounding_box() for loc in view.locator(".nv-col:not(.nv-selected) .nv-map").all()]
    assert min(min(b["width"], b["height"]) for b in others) >= 28 * scale
    assert view.locator(".nv-piccv").bounding_box()["width"] >= 3 * side * scale
    assert view.bounding_box()["height"] <= 0.6 * HEIGHT
    scroll = view.locator(".nv-body").evaluate(
        "b => ({sw: b.scrollWidth, cw: b.clientWidth, sh: b.scrollHeight, ch: b.clientHeight})")
    assert scroll["sh"] <= scroll["ch"], f"an inner vertical scroll: {scroll}"
    if scale == 1.0:  # 32 maps of 32x32 at 3 px per pixel wrap into rows that fit the page's width
        body, col = view.locator(".nv-body").bounding_box(), selected.bounding_box()
        assert col["width"] <= body["width"] - 16, (col, body)
        assert col["x"] >= body["x"] and col["x"] + col["width"] <= body["x"] + body["width"], (col, body)
    page.screenshot(path=str(tmp_path / f"network_view_{model}_{scale}.png"))
