"""The network explorer in a real Chromium: layouts at projector sizes, the network view, Play to the pixels, links,
Mistakes, the attribution overlay, and redrawing that keeps the view."""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import expect

from cnnviz.devserver import IDLE
from tests.support import no_exception, open_page, wait_for_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZES = [(1024, 768), (1280, 720), (1920, 1080)]


def draw(page, points) -> None:
    box = page.locator(".st-key-canvas canvas").last.bounding_box()
    page.mouse.move(box["x"] + points[0][0] * box["width"] / 280, box["y"] + points[0][1] * box["height"] / 280)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280)
    page.mouse.up()
    drawing_shown(page)


def drawing_shown(page) -> None:
    """Wait until the page shows a drawing's run (not the teaching sample's, which a loaded machine can still show
    when a run's 300 ms chance to start has passed)."""
    page.get_by_text("What the network receives: 28x28, your drawing").first.wait_for(timeout=60_000)


def stroke_one():
    return [(140, 40 + 10 * k) for k in range(21)]


def stroke_zero():
    return [(140 + 55 * math.sin(2 * math.pi * k / 48), 140 - 95 * math.cos(2 * math.pi * k / 48)) for k in range(49)]


def prediction(page) -> str:
    page.wait_for_selector(".st-key-prediction h3", timeout=60_000)
    wait_for_idle(page, 60_000)
    return page.locator(".st-key-prediction h3").inner_text()


def choose_view(page, label: str) -> None:
    page.locator(".st-key-view").get_by_text(label, exact=True).click()
    wait_for_idle(page, 60_000)


# The explorer's height with its default view (the forward pass at the first convolution), in px: two screens at
# 1920x1080; at 1280x720 issue 22 asks for two screens (1,440 px), not reached yet: the limit is what the page
# measures now (2,513 px before), so a change that makes it taller fails here.
PAGE_HEIGHT = {(1024, 768): 2300, (1280, 720): 1880, (1920, 1080): 2160}

# A control a person cannot read whole: text wider than its box (an ellipsis), or a control past the main area's edge
CUT_CONTROLS = """() => {
    const md = '[data-testid=stMarkdownContainer]';
    const texts = [...document.querySelectorAll([`[data-testid=stMain] button ${md}`,
        `[data-testid=stWidgetLabel] ${md}`, '[data-testid=stMain] [data-baseweb=select] div'].join(', '))]
        .filter(e => e.getBoundingClientRect().width > 0 && e.scrollWidth > e.clientWidth + 1
                     && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
        .map(e => `${e.innerText.trim().slice(0, 30)} (${e.scrollWidth} px of text in ${e.clientWidth})`);
    const inside = e => (e.closest('[data-testid=stColumn]') || document.querySelector('[data-testid=stMain]'))
        .getBoundingClientRect().right;  // a control past its column's edge is cut off by it
    const outside = [...document.querySelectorAll(['[data-testid=stMain] button',
                                                   '[data-testid=stMain] [data-baseweb=select]'].join(', '))]
        .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > inside(e) + 1; })
        .map(e => `${(e.innerText || e.getAttribute('aria-label') || '').slice(0, 30)} past the edge`);
    return [...texts, ...outside];
}"""


@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_layout_canvas_controls_and_overview_fit(page, app_url, tmp_path, width, height):
    page.set_viewport_size({"width": width, "height": height})
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    wait_for_idle(page, 60_000)
    shown = prediction(page)  # the teaching default: a hard test sample, not a 100%-confident drawing
    p = float(re.search(r"\(([\d.]+)%\)", shown).group(1))
    assert p < 99.0, shown
    canvas = page.locator(".st-key-canvas canvas").last.bounding_box()
    assert canvas["y"] >= 0 and canvas["y"] + canvas["height"] <= height, f"canvas clipped: {canvas}"
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= width
    for label in ("Undo the last stroke", "Clear the canvas"):  # the canvas's own buttons, under it
        box = page.locator(".st-key-canvas").get_by_role("button", name=label).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= height, f"{label} clipped: {box}"
    for label in ("Draw", "Test sample", "Mistakes", "Upload"):
        box = page.locator(f"[data-testid='stRadio'] label:has-text('{label}')").first.bounding_box()
        assert box and box["x"] + box["width"] <= width and box["width"] > 0, label
    page.screenshot(path=str(tmp_path / f"explorer_{width}.png"))
    view = page.locator(".st-key-network_forward .nv-view")  # the network view (tests/browser/test_network_view_*)
    names = view.locator(".nv-name").all_inner_texts()
    assert len(names) == 28 and names[0].endswith("block1.conv1")
    for col in view.locator(".nv-col").all():  # every layer reachable: the view scrolls sideways to each column
        col.scroll_into_view_if_needed()
        box = col.bounding_box()
        assert box and box["width"] > 20 and box["x"] >= 0 and box["x"] + min(box["width"], 600) <= width
    overflow = view.evaluate("""v => [v, ...v.querySelectorAll('*')]
        .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowY) && e.scrollHeight > e.clientHeight)
        .length""")
    assert overflow == 0  # no inner vertical scroll box
    assert view.bounding_box()["height"] <= 0.6 * max(height, 720)
    font = view.locator(".nv-name").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font >= 12
    assert page.evaluate(CUT_CONTROLS) == []
    tall = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    assert tall <= PAGE_HEIGHT[(width, height)], f"the page is {tall} px tall"
    no_exception(page)


BACKWARD = ".st-key-network_backward"


@pytest.mark.parametrize("width,height", [(1024, 768), (1280, 720), (1920, 1080)])
def test_play_walks_the_backward_view_to_the_pixels_with_its_controls_on_screen(page, app_url, tmp_path, width,
                                                                                 height):
    """Play in the view's own header: at every step the controls and the highlighted column are inside the window,
    and the page's step (its rule, the URL) follows, down to the pixels."""
    page.set_viewport_size({"width": width, "height": height})
    open_page(page, f"{app_url}/explorer?view=backward")
    page.wait_for_selector(f"{BACKWARD} .nv-col", timeout=60_000)
    wait_for_idle(page, 60_000)
    view = page.locator(f"{BACKWARD} .nv-view")
    view.scroll_into_view_if_needed()
    view.locator("select.nv-speed").select_option(label="fast")
    view.locator(".nv-play").click()
    seen, inside = set(), []
    for _ in range(400):  # every 50 ms until Play stops at the pixels
        state = view.evaluate("""v => {
            const box = e => { const r = e.getBoundingClientRect();
                               return [r.left, r.top, r.right, r.bottom]; };
            const sel = v.querySelector('.nv-col.nv-selected');
            return { pos: v.querySelector('.nv-pos').textContent, playing: v.classList.contains('nv-playing'),
                     sel: sel ? box(sel) : null, play: box(v.querySelector('.nv-play')),
                     next: box(v.querySelector('[aria-label="Next layer"]')) }; }""")
        if state["sel"]:
            seen.add(state["pos"])
            for name in ("sel", "play", "next"):
                left, top, right, bottom = state[name]
                inside.append((name, state["pos"], left >= -1 and top >= -1 and bottom <= height + 1
                               and left < width and min(right, left + 300) <= width + 1))
        if not state["playing"] and "input pixels" in state["pos"]:
            break
        page.wait_for_timeout(50)
    assert "input pixels" in view.locator(".nv-pos").inner_text()
    assert len(seen) >= 10, seen  # it walked the layers, not jumped
    assert all(ok for _, _, ok in inside), [i for i in inside if not i[2]][:5]
    page.wait_for_function("() => document.body.innerText.includes('The input: dL/d(pixel)')", timeout=60_000)
    assert "layer=input" in page.url
    page.screenshot(path=str(tmp_path / f"backward_end_{width}.png"))
    no_exception(page)


def test_a_click_on_a_backward_map_opens_that_layer_channel_and_cell(page, app_url):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_page(page, f"{app_url}/explorer?view=backward&layer=block2.conv1")
    page.wait_for_selector(f"{BACKWARD} .nv-col.nv-selected", timeout=60_000)
    wait_for_idle(page, 60_000)
    col = page.locator(f"{BACKWARD} .nv-col.nv-selected")
    assert col.locator(".nv-name").inner_text().endswith("block2.conv1")
    target = col.locator(".nv-map[data-ch='3']")
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box["width"] >= 3 * 14 - 0.5  # the selected column: >= 3 screen px per map pixel (14x14 maps)
    page.mouse.click(box["x"] + box["width"] * (5.5 / 14), box["y"] + box["height"] * (2.5 / 14))  # cell (2, 5)
    page.wait_for_function("() => document.body.innerText.includes('Autograd says dL/dx[3, 2, 5]')", timeout=60_000)
    wait_for_idle(page)
    assert page.locator(".st-key-bw_ch_conv [data-testid='stSliderThumbValue']").inner_text() == "3"
    assert "layer=block2.conv1" in page.url
    no_exception(page)


def test_links_open_that_view_on_a_freshly_started_server(page):
    """The first request a new server gets is a link: it must open that sample, view, layer and target; a bad
    value gets a message and the default."""
    from cnnviz.devserver import start_server, stop_server

    server = start_server()
    try:
        open_page(page, f"{server.url}/explorer?model=mnist&sample=42&view=backward&layer=block2.conv1&target=3")
        page.wait_for_selector(f"{BACKWARD} .nv-col.nv-selected", timeout=60_000)
        wait_for_idle(page, 60_000)
        body = page.inner_text("body")
        assert "test image #42" in body and "block2.conv1: convolution" in body
        assert page.locator(".st-key-target input").input_value() == "3"
        no_exception(page)
        open_page(page, f"{server.url}/explorer?view=sideways&layer=nowhere&sample=-5")
        page.wait_for_selector(".st-key-prediction h3", timeout=60_000)
        wait_for_idle(page, 60_000)
        body = page.inner_text("body")
        assert "cannot be used" in body and "Forward pass" in body
        no_exception(page)
    finally:
        stop_server(server)


def test_mistakes_pick_and_attribution_overlay(page, app_url, tmp_path):
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    wait_for_idle(page, 60_000)
    page.locator("[data-testid='stRadio'] label:has-text('Mistakes')").first.click()
    wait_for_idle(page, 60_000)
    shown = prediction(page)
    assert "(true:" in shown, shown  # a mistake: the prediction is not the true class
    page.goto(page.url.split("?")[0] + "?" + re.sub(r"view=[a-z]+", "", page.url.split("?")[1]) + "&view=backward"
              "&layer=input")
    page.wait_for_selector(".st-key-attr_method", timeout=60_000)
    wait_for_idle(page, 60_000)
    for method in ("Grad-CAM", "Integrated gradients"):
        page.locator(".st-key-attr_method").get_by_text(method, exact=True).click()
        wait_for_idle(page, 120_000)
        assert page.locator("[data-testid='stImage'] img").count() >= 1
        assert "Objective:" in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "attribution.png"))
    no_exception(page)


def test_canvas_undo_removes_the_last_stroke_and_clear_brings_back_the_teaching_sample(page, app_url):
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    wait_for_idle(page, 60_000)
    teaching = prediction(page)
    canvas = page.locator(".st-key-canvas")
    undo = canvas.get_by_role("button", name="Undo the last stroke")
    clear = canvas.get_by_role("button", name="Clear the canvas")
    assert undo.is_disabled() and clear.is_disabled()  # nothing drawn yet
    draw(page, stroke_one())
    assert "Prediction: 1" in prediction(page)
    draw(page, stroke_zero())  # a second stroke around the first
    assert "Prediction: 1" not in prediction(page)
    undo.click()
    wait_for_idle(page)
    assert "Prediction: 1" in prediction(page)  # the first stroke alone again
    clear.click()
    wait_for_idle(page)
    assert prediction(page) == teaching
    assert "Until you draw" in page.inner_text("[data-testid='stMainBlockContainer']")
    assert undo.is_disabled() and clear.is_disabled()
    no_exception(page)


def canvas_lit(page) -> int:
    """How many of the canvas's pixels are not black (a drawing is white strokes on black)."""
    return page.locator(".st-key-canvas canvas").last.evaluate("""c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) n += d[i] > 128;
        return n; }""")


def same_drawing(page, lit: int) -> None:
    """The canvas shows the drawing again (the kept PNG is decoded, then painted: a moment after the run)."""
    for _ in range(20):
        now = canvas_lit(page)
        if abs(now - lit) <= lit * 0.02:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the canvas has {now} lit pixels, the drawing had {lit}")


def test_a_drawing_comes_back_after_another_input_or_page(page, app_url):
    """Streamlit drops a widget's state while it is not shown: the canvas keeps its last drawing in the session and
    paints it again when it comes back (the same prediction), and Undo then clears it."""
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    wait_for_idle(page, 60_000)
    teaching = prediction(page)
    draw(page, stroke_one())
    drawn = prediction(page)
    assert "Prediction: 1" in drawn
    lit = canvas_lit(page)
    assert lit > 500
    page.locator(".st-key-source_mnist").get_by_text("Upload", exact=True).click()
    page.locator(".st-key-canvas canvas").wait_for(state="detached", timeout=60_000)
    wait_for_idle(page, 60_000)
    page.locator(".st-key-source_mnist").get_by_text("Draw", exact=True).click()
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    assert prediction(page) == drawn
    same_drawing(page, lit)
    page.locator("[data-testid='stSidebarNavLink']").filter(has_text="computational graph").first.click()
    page.locator(".st-key-canvas canvas").wait_for(state="detached", timeout=60_000)
    wait_for_idle(page, 60_000)
    page.locator("[data-testid='stSidebarNavLink']").filter(has_text="explorer").first.click()
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    assert prediction(page) == drawn, "back from another page: the drawing and its prediction"
    same_drawing(page, lit)
    undo = page.locator(".st-key-canvas").get_by_role("button", name="Undo the last stroke")
    expect(undo).to_be_enabled()
    undo.click()
    wait_for_idle(page)
    assert prediction(page) == teaching and canvas_lit(page) == 0
    no_exception(page)


def test_a_finger_draws_on_the_canvas(browser, app_url):
    """A tablet in class: touch events draw (pointer events, touch-action none) instead of scrolling the page."""
    context = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True, is_mobile=False)
    try:
        page = context.new_page()
        open_page(page, f"{app_url}/explorer")
        page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
        wait_for_idle(page, 60_000)
        box = page.locator(".st-key-canvas canvas").last.bounding_box()
        scroll = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollTop")
        cdp = context.new_cdp_session(page)

        def touch(kind: str, x: float, y: float) -> None:
            points = [] if kind == "touchEnd" else [{"x": box["x"] + x * box["width"] / 280,
                                                     "y": box["y"] + y * box["height"] / 280}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        points = stroke_one()
        touch("touchStart", *points[0])
        for x, y in points[1:]:
            touch("touchMove", x, y)
        touch("touchEnd", 0, 0)
        drawing_shown(page)
        assert "Prediction: 1" in prediction(page)
        assert page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollTop") == scroll
        no_exception(page)
    finally:
        context.close()


def test_redrawing_keeps_the_view_and_the_slider(page, app_url):
    open_page(page, f"{app_url}/explorer")
    page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
    wait_for_idle(page, 60_000)
    draw(page, stroke_one())
    assert "Prediction: 1" in prediction(page)
    choose_view(page, "Backward pass")
    view = page.locator(f"{BACKWARD} .nv-view")
    view.wait_for(timeout=60_000)
    for _ in range(3):
        view.get_by_role("button", name="Next layer").click()
        wait_for_idle(page)
    before = view.locator(".nv-pos").inner_text()
    assert before.startswith("4 / "), before  # three steps from the loss
    # the steps reran only the view's fragment; the link offered is still the address bar's, with this layer
    assert "layer=" in page.url
    page.get_by_role("button", name="Link", exact=True).first.click()
    page.wait_for_selector(".cl-field", state="visible")
    assert page.locator(".cl-field").input_value() == page.url
    page.keyboard.press("Escape")
    page.locator(".st-key-canvas").get_by_role("button", name="Clear the canvas").click()
    wait_for_idle(page)
    draw(page, stroke_zero())
    assert "Prediction: 0" in prediction(page)
    page.wait_for_function("() => document.body.innerText.includes('Prediction: 0')")
    assert view.locator(".nv-pos").inner_text() == before
    no_exception(page)
    assert page.locator(IDLE).count() == 1
