"""Shared fixtures: a real `streamlit run` server and a Playwright page on Debian's Chromium (helpers: support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cnnviz.devserver import CHROMIUM, CHROMIUM_ARGS, StreamlitServer, start_server, stop_server
from tests.support import require_browser


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
