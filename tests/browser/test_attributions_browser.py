"""The backward view's input step in a real Chromium, measured from the DOM: the attribution overlays and the
dL/d(pixel) map at >= 280 screen px with the picture's outline and their stated clipping, and the gradient-size
chart's decade labels apart at every window size and in projector mode."""

from __future__ import annotations

import itertools

import pytest

from tests.support import open_page, projector_on, wait_for_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

URL = "/explorer?view=backward&layer=input"
SIZES = [(1024, 768), (1280, 720), (1920, 1080)]

BOXES = """(selector) => [...document.querySelectorAll(selector)].map(e => {
    const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height,
            text: e.innerText}; })"""

# Each decade label a person can see on the chart's axis, with the x of its tick mark
TICKS = """() => {
    const axis = document.querySelector('.cv-n-ticks');
    const marks = [...axis.querySelectorAll('b')].map(b => b.getBoundingClientRect().left);
    return [...axis.querySelectorAll('i')].map((e, j) => {
        const r = e.getBoundingClientRect();
        return {text: e.innerText, left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width,
                mark: marks[j]}; }).filter(t => t.width > 0); }"""


def open_input_step(page, app_url: str, width: int, height: int) -> None:
    page.set_viewport_size({"width": width, "height": height})
    open_page(page, f"{app_url}{URL}")
    page.wait_for_selector(".st-key-attr_method", timeout=120_000)
    page.wait_for_selector(".cv-ov img", timeout=120_000)
    wait_for_idle(page, 120_000)


def boxes(page, selector: str) -> list[dict]:
    return page.evaluate(BOXES, selector)


def outlined(page, figure: str, picture: str) -> dict:
    """The figure's picture box, after checking that its outline lies exactly on it."""
    (shown,) = boxes(page, f"{figure} {picture}")
    (line,) = boxes(page, f"{figure} img.cv-outline")
    for side in ("left", "right", "top", "bottom"):
        assert abs(line[side] - shown[side]) <= 1, (figure, side, line, shown)
    return shown


def test_overlays_and_the_gradient_map_are_large_outlined_and_state_their_clipping(page, app_url, tmp_path):
    open_input_step(page, app_url, 1280, 720)
    grid = outlined(page, ".cv-map-a", ".cv-map-g")
    assert grid["width"] >= 280 and grid["height"] >= 280, grid
    note = page.locator(".cv-map-n").inner_text()
    assert "colours saturate at the 99th percentile of |value| = " in note and "outline of the ink" in note
    chart = boxes(page, ".cv-n")[0]
    assert grid["right"] + 40 <= chart["left"], (grid, chart)  # the map stays clear of the chart beside it
    for method in ("Saliency", "Grad-CAM", "Integrated gradients"):
        if method != "Saliency":
            page.locator(".st-key-attr_method").get_by_text(method, exact=True).click()
            page.get_by_text(f"{method}{' at ' if method == 'Grad-CAM' else ', over'}").first.wait_for(timeout=120_000)
            wait_for_idle(page, 120_000)
        shown = outlined(page, ".cv-ov", "img:not(.cv-outline)")
        assert shown["width"] >= 280 and shown["height"] >= 280, (method, shown)
        text = page.locator(".cv-ov").inner_text()
        assert method in text and ("99th percentile of |value| = " in text or "span the largest" in text), text
        page.locator(".cv-ov").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / f"overlay_{method}_1280.png"))
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.parametrize("projector", [False, True], ids=["plain", "projector"])
@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_gradient_size_ticks_never_overlap(page, app_url, tmp_path, width, height, projector):
    open_input_step(page, app_url, width, height)
    if projector:
        projector_on(page)
        page.wait_for_selector(".cv-ov img", timeout=120_000)
    ticks = page.evaluate(TICKS)
    assert len(ticks) >= 2, ticks  # at least two decades named, so the scale can be read
    exps = [int(t["text"].removeprefix("1e")) for t in ticks]
    assert exps == sorted(exps), ticks
    for a, b in itertools.pairwise(ticks):
        assert a["right"] + 2 <= b["left"], f"{a['text']} and {b['text']} overlap: {ticks}"
    for t in ticks:
        assert abs((t["left"] + t["right"]) / 2 - t["mark"]) <= 1.5, t  # each label under its tick
        assert 0 <= t["left"] and t["right"] <= width, t
    tracks = boxes(page, ".cv-n-track")
    font = page.locator(".cv-n").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font >= (18 if projector else 13)
    assert min(t["width"] for t in tracks) >= 4 * font - 1  # every bar has room
    page.locator(".cv-n").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / f"norms_{width}{'_projector' if projector else ''}.png"))
