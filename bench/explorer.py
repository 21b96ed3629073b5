"""Benchmark the explorer page: server-side run after a new drawing, and mouse-up to prediction in a browser.

    python bench/explorer.py [--drawings 20] [--skip-browser]

1. Server side: AppTest runs the page with a new drawing injected into the canvas's state; the time of that run
   (preprocess + capture + the visible view) is measured for each drawing, wall clock and the CPU time of the
   process (the server's cost per update).
2. Browser: `streamlit run` on loopback and Debian's Chromium; the mouse draws a stroke on the canvas and the time
   from mouse-up until this run's prediction is on screen is measured (target: p95 under 0.4 s), and until the
   visible view has finished updating (target: p95 under 0.8 s); then, in the Backward pass view, one step of the
   backprop slider (the "next" button) until the view has updated (target: p95 under 0.5 s).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def random_strokes(rng: np.random.Generator) -> list[tuple[float, float]]:
    """A random closed-ish curve or line in a 280x280 canvas."""
    cx, cy = rng.uniform(110, 170), rng.uniform(110, 170)
    rx, ry = rng.uniform(10, 70), rng.uniform(50, 100)
    turns = rng.uniform(0.5, 1.0)
    return [(cx + rx * math.sin(2 * math.pi * turns * k / 30), cy - ry * math.cos(2 * math.pi * turns * k / 30))
            for k in range(31)]


def stroke_image(points) -> Image.Image:
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(img).line(points, fill=(255, 255, 255, 255), width=20, joint="curve")
    return img


def server_side(n: int) -> list[float]:
    from streamlit.testing.v1 import AppTest

    from bench.protocol import canvas_value

    rng = np.random.default_rng(0)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/explorer.py").run()
    times, cpu = [], []
    for i in range(n + 2):
        at.session_state["canvas"] = canvas_value(stroke_image(random_strokes(rng)))
        start, start_cpu = time.perf_counter(), time.process_time()
        at.run()
        if i >= 2:  # the first runs warm caches
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
        if at.exception:
            raise RuntimeError([e.value for e in at.exception])
    return times, cpu


# Streamlit marks each element with data-stale="true" while a run is going and the element has not been sent again
# by that run; once the prediction's elements are all "false" again, this run's new prediction is what is shown.
FRESH_PREDICTION = """() => {
    const cells = document.querySelectorAll('.st-key-prediction [data-stale]');
    return cells.length > 0 && [...cells].every(e => e.getAttribute('data-stale') === 'false');
}"""


# One backprop step is shown: the slider's label changed, no element is stale, and the app is idle.
STEP_SHOWN = """before => {
    const slider = document.querySelector('.st-key-backprop');
    const app = document.querySelector("[data-testid='stApp']");
    return slider && slider.innerText !== before && app.getAttribute('data-test-script-state') === 'notRunning'
        && document.querySelectorAll('[data-stale="true"]').length === 0;
}"""


def browser(n: int) -> tuple[list[float], list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    from bench.browser import CHROMIUM, CHROMIUM_ARGS, IDLE
    from bench.server import start_server, stop_server

    server = start_server()
    rng = np.random.default_rng(1)
    times: list[float] = []
    finished: list[float] = []
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.wait_for_selector(IDLE, timeout=60_000)
            page.goto(f"{server.url}/explorer")
            page.wait_for_selector(".st-key-canvas canvas", timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            for i in range(n + 1):
                box = page.locator(".st-key-canvas canvas").last.bounding_box()
                if i:
                    page.locator(".st-key-canvas").get_by_role("button").last.click()  # clear
                    page.wait_for_selector(IDLE, timeout=60_000)
                pts = random_strokes(rng)
                page.mouse.move(box["x"] + pts[0][0], box["y"] + pts[0][1])
                page.mouse.down()
                for px, py in pts[1:]:
                    page.mouse.move(box["x"] + px, box["y"] + py)
                start = time.perf_counter()
                page.mouse.up()
                page.wait_for_selector("[data-testid='stApp'][data-test-script-state='running']", timeout=5_000)
                page.wait_for_function(FRESH_PREDICTION, timeout=60_000)  # this run's prediction is on screen
                shown = time.perf_counter()
                page.wait_for_selector(IDLE, timeout=60_000)  # ... and every view below it
                if i:  # the first drawing warms the model cache
                    times.append((shown - start) * 1000)
                    finished.append((time.perf_counter() - start) * 1000)
            page.locator(".st-key-view").get_by_text("Backward pass", exact=True).click()
            page.wait_for_selector(".st-key-backprop__next button", timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            steps: list[float] = []
            for _ in range(min(n, 25)):
                before = page.locator(".st-key-backprop").first.inner_text()
                start = time.perf_counter()
                page.locator(".st-key-backprop__next button").first.click()
                page.wait_for_function(STEP_SHOWN, arg=before, timeout=60_000, polling=20)
                steps.append((time.perf_counter() - start) * 1000)
            b.close()
    finally:
        stop_server(server)
    return times, finished, steps


def summary(name: str, times: list[float], target: str) -> None:
    p95 = sorted(times)[int(0.95 * (len(times) - 1))]
    print(f"{name:44} n={len(times):3d}  median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms  "
          f"max {max(times):7.1f} ms   target: {target}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drawings", type=int, default=20)
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    wall, cpu = server_side(args.drawings)
    summary("server-side page run after a new drawing", wall, "(wall clock, AppTest)")
    summary("server CPU per update after a new drawing", cpu, "< 120 ms")
    if not args.skip_browser:
        shown, finished, steps = browser(args.drawings)
        summary("browser: mouse-up -> new prediction shown", shown, "p95 < 400 ms")
        summary("browser: mouse-up -> the visible view updated", finished, "p95 < 800 ms")
        summary("browser: one backprop-slider step", steps, "p95 < 500 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
