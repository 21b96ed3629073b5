"""Shared fixtures: a real `streamlit run` server, a Playwright page on Debian's Chromium, and wait helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CNNVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-gpu", "--no-sandbox", "--disable-quic", "--disable-dev-shm-usage",
]
REQUIRE_BROWSER = os.environ.get("CNNVIZ_REQUIRE_BROWSER") == "1"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class StreamlitServer:
    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url, self.process, self.log_path = url, process, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def start_server(app: str = "app.py", env: dict[str, str] | None = None, timeout: float = 60.0) -> StreamlitServer:
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="cnnviz-server-")) / "server.log"
    log = log_path.open("w")
    cmd = [
        sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true",
        "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    server = StreamlitServer(url, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().decode().strip() == "ok":
                    return server
        except OSError:
            pass
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout:.0f} s:\n{server.log()}")


def stop_server(server: StreamlitServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


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
