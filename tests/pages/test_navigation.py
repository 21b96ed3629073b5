"""Every page registered in app.py runs without an exception, in AppTest and in a real browser."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import ALL_PAGES, SECTIONS
from cnnviz.devserver import IDLE
from tests.support import ROOT, open_page

PAGE_IDS = [p.url_path for p in ALL_PAGES]


@pytest.mark.parametrize("spec", ALL_PAGES, ids=PAGE_IDS)
def test_page_runs_without_exception(spec):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page(spec.path)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title, f"{spec.path} shows no title"


def test_home_links_every_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown) + " " + " ".join(s.value for s in at.subheader)
    for section in SECTIONS:
        assert section in text
    links = at.get("page_link")
    labels = {link.proto.label for link in links}
    titles = {p.title for pages in SECTIONS.values() for p in pages}
    assert titles <= labels, "every page has its card"
    lesson = sorted(label for label in labels if label[0].isdigit())
    assert [label.split(". ", 1)[0] for label in lesson] == [str(n) for n in range(1, len(lesson) + 1)]
    assert {label.split(". ", 1)[1] for label in lesson} == titles, "the first lesson visits every page once"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("spec", ALL_PAGES, ids=PAGE_IDS)
def test_page_in_browser(page, app_url, spec, tmp_path):
    path = "" if spec is ALL_PAGES[0] else spec.url_path  # the default page lives at "/"
    open_page(page, f"{app_url}/{path}")
    page.wait_for_selector(IDLE)
    nav = page.locator("[data-testid='stSidebarNav']").inner_text()
    for section in SECTIONS:  # st.navigation's grouped sidebar, not Streamlit's automatic listing of a pages/ folder
        assert section in nav, nav
    assert page.locator("[data-testid='stException']").count() == 0, page.inner_text("body")[:2000]
    heading = page.locator("h1").first.inner_text()
    assert heading.strip(), "page has no heading"
    page.screenshot(path=str(tmp_path / f"{spec.url_path}.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.slow
def test_deep_link_on_a_fresh_server_uses_the_navigation(page):
    """The first request a new server gets is a deep link: it must still go through st.navigation."""
    from cnnviz.devserver import start_server, stop_server
    from tests.support import require_browser

    require_browser()
    server = start_server()
    try:
        open_page(page, f"{server.url}/conv_lab")
        nav = page.locator("[data-testid='stSidebarNav']").inner_text()
        for section in SECTIONS:
            assert section in nav, nav
        assert page.locator("h1").first.inner_text().strip() == "Convolution & pooling lab"
    finally:
        stop_server(server)
