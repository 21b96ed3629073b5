"""Projector mode and small screens in a real Chromium at a projector's 1280x720 (issue 21): what a person sees,
measured from the DOM. Metrics never shrink, inputs, slider values and chart ticks grow, the sidebar folds away,
no label ends in "...", and Home's lesson links and picture are whole and legible."""

from __future__ import annotations

import pytest

from tests.support import open_page, projector_on, wait_for_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH, HEIGHT = 1280, 720

FONT_PX = """(selector) => [...document.querySelectorAll(selector)]
    .filter(e => e.getBoundingClientRect().width > 0)
    .map(e => parseFloat(getComputedStyle(e).fontSize))"""

# Every label a person reads on a button, a link, a widget, a metric or a tab: the text and the box it must fit in
CUT_LABELS = """() => {
    const md = '[data-testid=stMarkdownContainer]';
    const labels = document.querySelectorAll([
        `[data-testid=stMain] button ${md}`, `[data-testid=stMain] a ${md}`, `[data-testid=stWidgetLabel] ${md}`,
        `[data-testid=stMetricLabel] ${md}`, '[data-testid=stMetricValue]', `[data-testid=stMain] ${md} p`,
        `[data-testid=stSidebarNav] ${md}`].join(', '));
    const onScreen = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > 0; };
    return [...labels].filter(e => onScreen(e) && e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.innerText.trim().slice(0, 40)} (${e.scrollWidth} px of text in ${e.clientWidth})`);
}"""

SIDEBAR = """() => {
    const s = document.querySelector('[data-testid=stSidebar]').getBoundingClientRect();
    return {visible: s.right > 0 && s.width > 0 ? s.width : 0,
            main: document.querySelector('[data-testid=stMain]').getBoundingClientRect().width};
}"""


def px(page, selector: str) -> list[float]:
    return page.evaluate(FONT_PX, selector)





def settled_cut_labels(page, wait_ms: float = 10_000) -> list[str]:
    """The cut labels once the page has settled: on a loaded machine the page's CSS (labels that wrap) can arrive
    after its first paint; a label still cut after ``wait_ms`` is a cut label."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"() => ({CUT_LABELS})().length === 0", timeout=wait_ms)
    except PlaywrightTimeout:
        pass
    return page.evaluate(CUT_LABELS)


def open_at_1280(page, url: str) -> None:
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    open_page(page, url)
    page.wait_for_timeout(1000)  # components and charts are drawn a moment after the run


@pytest.mark.parametrize("path", ["digit_sum", "mlp"])
def test_metrics_never_shrink_and_inputs_grow_in_projector_mode(page, app_url, path):
    open_at_1280(page, f"{app_url}/{path}")
    page.wait_for_selector("[data-testid=stMetricValue]")
    metric = "[data-testid=stMetricValue] p"
    inputs = "[data-testid=stMain] input[type=number], [data-testid=stMain] input[role=combobox]"
    before, inputs_before = px(page, metric), px(page, inputs)
    assert before and min(before) >= 36, before
    projector_on(page)
    after, inputs_after = px(page, metric), px(page, inputs)
    assert min(after) >= max(before), f"{path}: metrics {before} px without projector mode, {after} px with it"
    if path == "mlp":  # the digit-sum page has none without the MNIST test set
        assert inputs_after and min(inputs_after) >= 20, f"inputs at {inputs_after} px (were {inputs_before})"


def test_slider_values_and_chart_ticks_grow_in_projector_mode(page, app_url):
    open_at_1280(page, f"{app_url}/conv_lab?section=descent")
    page.wait_for_selector(".st-key-gd_fig .xtick text")
    projector_on(page)
    page.wait_for_selector(".st-key-gd_fig .xtick text")
    slider = px(page, "[data-testid=stSliderThumbValue] p")
    ticks = px(page, ".st-key-gd_fig .xtick text, .st-key-gd_fig .ytick text")
    assert slider and min(slider) >= 20, f"slider values at {slider} px"
    assert ticks and min(ticks) >= 18, f"the gradient-descent chart's ticks at {ticks} px"


def test_projector_mode_folds_the_sidebar_away(page, app_url):
    open_at_1280(page, f"{app_url}/graph")
    shown = page.evaluate(SIDEBAR)
    assert shown["visible"] >= 250, shown
    projector_on(page)
    folded = page.evaluate(SIDEBAR)
    assert folded["visible"] == 0 and folded["main"] >= WIDTH - 20, folded
    page.get_by_role("button", name="Show the result").click()  # another run keeps it folded
    wait_for_idle(page)
    assert page.evaluate(SIDEBAR)["visible"] == 0
    page.locator("[data-testid=stExpandSidebarButton]").click()  # and its arrow brings it back
    page.wait_for_function("() => document.querySelector('[data-testid=stSidebar]').getBoundingClientRect().right "
                           "> 250")
    page.wait_for_timeout(500)
    cut = settled_cut_labels(page)
    assert not cut, f"with the sidebar back in projector mode: cut labels {cut}"


@pytest.mark.parametrize("path", ["", "graph", "mlp", "conv_lab", "conv_lab?section=descent", "digit_sum"])
def test_no_label_is_cut_with_or_without_projector_mode(page, app_url, path, tmp_path):
    open_at_1280(page, f"{app_url}/{path}")
    cut = settled_cut_labels(page)
    assert not cut, f"/{path} at {WIDTH}x{HEIGHT}: cut labels {cut}"
    projector_on(page)
    cut = settled_cut_labels(page)
    page.screenshot(path=str(tmp_path / "projector.png"))
    assert not cut, f"/{path} at {WIDTH}x{HEIGHT} in projector mode: cut labels {cut}"


def test_home_shows_whole_lesson_links_and_a_legible_picture(page, app_url):
    open_at_1280(page, app_url)
    for n in range(1, 7):
        link = page.locator(f".st-key-lesson_{n} a")
        assert link.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), link.inner_text()
    for projector in (False, True):
        if projector:
            projector_on(page)
        picture = page.locator("[data-testid=stImage] img").first
        picture.scroll_into_view_if_needed()
        page.wait_for_function("() => document.querySelector('[data-testid=stImage] img')?.complete")
        shown, natural = picture.evaluate("e => [e.getBoundingClientRect().width, e.naturalWidth]")
        # the screenshot's text is 12 to 14 px at its own size: shown at least that large (1.5x on a projector)
        assert shown >= natural * (1.5 if projector else 1.0) - 1, (projector, shown, natural)
        assert shown <= WIDTH, "and it fits the screen"
