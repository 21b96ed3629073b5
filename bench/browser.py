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

# Counts every change of the app's script state that the page renders, so a run that starts and ends between two
# polls is still seen; not one whose start and end a busy browser renders in one go (no change at all: a quick run,
# or a loaded machine). Where a run shows something new, wait for that instead (tests/pages/test_hostile_inputs.py).
WATCH_RUNS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.__cnnvizWatched) return;
  app.__cnnvizWatched = true;
  window.__cnnvizChanges = window.__cnnvizChanges || 0;
  new MutationObserver(records => { window.__cnnvizChanges += records.length; })
    .observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]});
}"""
RUN_FINISHED = """mark => {
  const app = document.querySelector("[data-testid='stApp']");
  return (window.__cnnvizChanges || 0) > mark && app && app.getAttribute("data-test-script-state") === "notRunning";
}"""
