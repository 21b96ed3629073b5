"""Benchmark the explorer page: server-side run after a new drawing, and mouse-up to prediction in a browser.

    python bench/explorer.py [--drawings 20] [--skip-browser | --skip-server]

1. Server side: a real `streamlit run` on loopback is sent new drawings over its websocket, as the canvas sends
   them (bench/protocol.py); the CPU time the server process spends on each (all its threads: the run, the protobuf
   messages, the media files) is the server's cost per update (target: under 60 ms). For comparison, AppTest runs
   the same page in this process: its CPU figure is higher because AppTest compiles the page scripts again on every
   run and answers the runtime through mocks, which a server does not.
2. Browser: `streamlit run` on loopback and Debian's Chromium; the mouse draws a stroke on the canvas and the time
   from mouse-up until this run's prediction is on screen is measured (target: p95 under 0.4 s), until the network
   view has drawn the new maps (p95 under 0.3 s) and until the page has finished updating (p95 under 0.8 s); Play's
   frames per second in the forward view (30 or more); then one step of the backward view (its "Next" button) until
   the step's rule is shown (p95 under 0.5 s). Timed inside the page,
   from the input event to the animation frame that shows the result (see WATCH). The canvas (cnnviz/canvas.py)
   sends the drawing at mouse-up itself, so the figures include its PNG encoding.
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


def real_server(n: int) -> tuple[list[float], list[float]]:
    """CPU time (all threads) of a `streamlit run` process per new drawing, and the run's latency seen by the
    client."""
    import asyncio
    import json

    import psutil

    from bench.protocol import StreamlitClient
    from cnnviz.canvas import canvas_value
    from cnnviz.devserver import start_server, stop_server

    server = start_server()
    proc = psutil.Process(server.process.pid)
    rng = np.random.default_rng(0)

    async def drive() -> tuple[list[float], list[float]]:
        client = StreamlitClient(server.url)
        await client.open("explorer")
        cpu, latency = [], []
        for i in range(n + 3):
            value = json.dumps(canvas_value(stroke_image(random_strokes(rng))))
            before = sum(proc.cpu_times()[:2])
            took = await client.interact("canvas", json_value=value)
            await asyncio.sleep(0.3)  # let the server finish what it does after the run (media, session stats)
            if i >= 3:  # the first runs warm caches
                cpu.append((sum(proc.cpu_times()[:2]) - before) * 1000)
                latency.append(took * 1000)
            if client.exceptions():
                raise RuntimeError(client.exceptions())
        if not any("Prediction:" in t for t in client.texts()):
            raise RuntimeError("the explorer shows no prediction")
        await client.close()
        return cpu, latency

    try:
        return asyncio.run(drive())
    finally:
        stop_server(server)


def server_side(n: int) -> list[float]:
    from streamlit.testing.v1 import AppTest

    from cnnviz.canvas import canvas_value

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


# The clock runs in the page (performance.now()), from the input event to the frame that shows the result, so the
# figures are what a learner sees: Playwright's own round trips (tens to hundreds of ms on a busy 2-core machine)
# are not in them. A MutationObserver checks, after every change of the page, whether a run has started since the
# input and whether what is measured is on screen; the time is taken at the next animation frame (the paint).
# Streamlit marks each element with data-stale="true" while a run is going and the element has not been sent again
# by that run; once the prediction's elements are all "false" again, this run's new prediction is what is shown.
WATCH = """([event, slider]) => {
    const app = document.querySelector("[data-testid='stApp']");
    const box = document.querySelector('.st-key-prediction');
    const before = slider ? document.querySelector(slider).innerText : null;
    const t = window.__cnnviz_t = {};
    let started = false;
    const at = key => {
        if (!(key in t)) { t[key] = -1; requestAnimationFrame(() => { t[key] = performance.now(); }); }
    };
    const check = (records = []) => {
        const state = app.getAttribute('data-test-script-state');
        if (!('input' in t)) return;
        // a run has started since the input: seen running now, or the state changed within this batch of changes
        // (a fast run can go running -> notRunning between two calls of this observer)
        if (state === 'running' || records.some(r => r.target === app && r.attributeName === 'data-test-script-state')
            || (slider && document.querySelector(slider).innerText !== before))  // or the slider moved: a run did
            started = true;
        if (!started) return;
        const cells = box ? box.querySelectorAll('[data-stale]') : [];
        if (cells.length && [...cells].every(e => e.getAttribute('data-stale') === 'false')) at('prediction');
        if (state === 'notRunning' && document.querySelectorAll('[data-stale="true"]').length === 0
            && (!slider || document.querySelector(slider).innerText !== before)) at('done');
    };
    document.addEventListener(event, () => { t.input = performance.now(); check(); }, {capture: true, once: true});
    window.__cnnviz_obs && window.__cnnviz_obs.disconnect();
    window.__cnnviz_obs = new MutationObserver(check);
    window.__cnnviz_obs.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
    // the network view draws in its own shadow root: it sets data-draw-ms once it has drawn the data of a run
    window.__cnnviz_view && window.__cnnviz_view.disconnect();
    const view = [...document.querySelectorAll('*')].map(e => e.shadowRoot && e.shadowRoot.querySelector('.nv-view'))
        .find(Boolean);
    if (view) {
        window.__cnnviz_view = new MutationObserver(() => { if (started) at('view'); });
        window.__cnnviz_view.observe(view, {attributes: true, attributeFilter: ['data-draw-ms']});
    }
}"""

# Play in the forward view, timed by the page's own frames: requestAnimationFrame's callbacks per second while the
# highlight glides from column to column (a frame the page could not paint in time is a gap of 2+ intervals).
FRAMES = """async ([seconds]) => {
    const view = [...document.querySelectorAll('*')].map(e => e.shadowRoot && e.shadowRoot.querySelector('.nv-view'))
        .find(Boolean);
    view.querySelector('.nv-play').click();
    const stamps = [];
    await new Promise(done => {
        const start = performance.now();
        const frame = now => { stamps.push(now); if (now - start < seconds * 1000) requestAnimationFrame(frame);
                               else done(); };
        requestAnimationFrame(frame);
    });
    const playing = view.classList.contains('nv-playing');
    view.querySelector('.nv-play').click();
    const gaps = stamps.slice(1).map((t, i) => t - stamps[i]);
    return {fps: (stamps.length - 1) / ((stamps.at(-1) - stamps[0]) / 1000), gaps, playing};
}"""
SEEN = "key => window.__cnnviz_t && window.__cnnviz_t[key] > 0"
ELAPSED = "key => window.__cnnviz_t[key] - window.__cnnviz_t.input"


def browser(n: int) -> tuple[list[float], list[float], list[float], list[float], dict]:
    from playwright.sync_api import sync_playwright

    from cnnviz.devserver import CHROMIUM, CHROMIUM_ARGS, IDLE, start_server, stop_server

    server = start_server()
    rng = np.random.default_rng(1)
    times: list[float] = []
    finished: list[float] = []
    drawn: list[float] = []
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
                    page.locator(".st-key-canvas").get_by_role("button", name="Clear the canvas").click()
                    page.wait_for_timeout(100)  # the clear's run may not have begun yet
                    page.wait_for_selector(IDLE, timeout=60_000)
                pts = random_strokes(rng)
                page.mouse.move(box["x"] + pts[0][0], box["y"] + pts[0][1])
                page.mouse.down()
                for px, py in pts[1:]:
                    page.mouse.move(box["x"] + px, box["y"] + py)
                page.evaluate(WATCH, ["pointerup", None])  # the canvas cancels pointerdown: no mouse events follow
                page.mouse.up()
                page.wait_for_function(SEEN, arg="prediction", timeout=60_000)  # this run's prediction is on screen
                page.wait_for_function(SEEN, arg="done", timeout=60_000)  # ... and every view below it
                page.wait_for_function(SEEN, arg="view", timeout=60_000)  # ... and the network view drawn
                if i:  # the first drawing warms the model cache
                    times.append(page.evaluate(ELAPSED, "prediction"))
                    finished.append(page.evaluate(ELAPSED, "done"))
                    drawn.append(page.evaluate(ELAPSED, "view"))
            page.locator(".st-key-network_forward .nv-view").scroll_into_view_if_needed()
            play = page.evaluate(FRAMES, [5])
            page.wait_for_selector(IDLE, timeout=60_000)
            page.locator(".st-key-view").get_by_text("Backward pass", exact=True).click()
            page.wait_for_selector(".st-key-network_backward .nv-col", timeout=60_000)
            page.wait_for_timeout(500)  # the view's run may not have begun yet: a click during it would be lost
            page.wait_for_selector(IDLE, timeout=60_000)
            steps: list[float] = []
            following = page.locator(".st-key-network_backward").get_by_role("button", name="Next layer")
            for k in range(min(n, 25)):
                page.wait_for_selector(IDLE, timeout=60_000)
                if k % 8 == 7:  # back to the loss now and then: the walk has about ten steps
                    page.locator(".st-key-network_backward").get_by_role("button", name="Previous layer").click()
                    page.wait_for_timeout(300)
                    page.wait_for_selector(IDLE, timeout=60_000)
                page.evaluate(WATCH, ["click", "[data-testid='stMain']"])  # the step's rule, below the view
                following.click()
                page.wait_for_function(SEEN, arg="done", timeout=60_000)
                steps.append(page.evaluate(ELAPSED, "done"))
            b.close()
    finally:
        stop_server(server)
    return times, finished, drawn, steps, play


def summary(name: str, times: list[float], target: str) -> None:
    p95 = sorted(times)[int(0.95 * (len(times) - 1))]
    print(f"{name:44} n={len(times):3d}  median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms  "
          f"max {max(times):7.1f} ms   target: {target}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drawings", type=int, default=20)
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--skip-server", action="store_true", help="only the browser's figures")
    args = parser.parse_args()
    if not args.skip_server:
        cpu, latency = real_server(args.drawings)
        summary("server CPU per update after a new drawing", cpu, "< 60 ms")
        summary("the same run's latency at the websocket", latency, "(wall clock, streamlit run)")
        wall, cpu = server_side(args.drawings)
        summary("AppTest page run after a new drawing", wall, "(wall clock)")
        summary("AppTest run's CPU (+ script compile, mocks)", cpu, "(for comparison)")
    if not args.skip_browser:
        shown, finished, drawn, steps, play = browser(args.drawings)
        summary("browser: mouse-up -> new prediction shown", shown, "p95 < 400 ms")
        summary("browser: mouse-up -> the network view drawn", drawn, "p95 < 300 ms")
        summary("browser: mouse-up -> the visible page updated", finished, "p95 < 800 ms")
        summary("browser: one backward step, its rule shown", steps, "p95 < 500 ms")
        gaps = sorted(play["gaps"])
        print(f"{'browser: Play in the forward view (5 s)':44} {play['fps']:5.1f} frames/s  p95 frame "
              f"{gaps[int(0.95 * (len(gaps) - 1))]:5.1f} ms  longest {gaps[-1]:6.1f} ms   target: >= 30 frames/s"
              + ("" if play["playing"] else "  (Play had stopped before the end)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
