"""Shared fixtures: a real `streamlit run` server, a Playwright page on Debian's Chromium, and wait helpers."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.browser import CHROMIUM, CHROMIUM_ARGS, IDLE  # noqa: E402 - tests import these from here too
from bench.server import StreamlitServer, start_server, stop_server  # noqa: E402 - and these

REQUIRE_BROWSER = os.environ.get("CNNVIZ_REQUIRE_BROWSER") == "1"


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


@pytest.fixture(scope="session")
def streamlit_server() -> Iterator[StreamlitServer]:
    require_browser()
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def app_url(streamlit_server: StreamlitServer) -> str:
    return streamlit_server.url


@pytest.fixture(scope="session")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


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
