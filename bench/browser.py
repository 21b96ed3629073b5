"""Chromium for the browser benchmark and the browser tests: where it is, how it starts, and how a page's runs are
watched (Streamlit marks ``[data-testid='stApp']`` with its script state)."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("CNNVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-gpu", "--no-sandbox", "--disable-quic", "--disable-dev-shm-usage",
]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

