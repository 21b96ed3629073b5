"""Load test: N real Streamlit sessions against one server on 127.0.0.1.

    python bench/load.py [--sessions 30] [--seconds 60] [--driver protocol|browser] [--rounds 2] [--json out.json]

Each session works the network explorer like a learner: draws digits on the canvas (and sometimes clears it),
picks test samples ("New sample"), switches between MNIST and CIFAR-10, moves the backprop slider, and visits the
other pages. After every interaction it waits for Streamlit's run to finish (the latency), counts exceptions, and
checks the page's numbers against what that input gives alone: drawings and test samples against
``cnnviz.engine.capture.capture`` run here, in this process, on the same picture.

Two drivers:
- ``protocol`` (default): each session is a websocket client speaking Streamlit's own protocol (bench/protocol.py),
  as the browser's frontend does: every widget value in each rerun request, the page rebuilt from the deltas, its
  images fetched over HTTP. No rendering, so thirty sessions fit beside the server on two cores. A pause of
  ``--think`` seconds between interactions stands for a person looking at the result.
- ``browser``: each session is a Chromium context driven by Playwright (mouse strokes on the real canvas). It
  measures what a learner sees, rendering included, but the browsers take the server's CPU: a few sessions only.

The server's RSS, threads and open file handles are read with psutil before, during and after; after the sessions
close, the script waits for Streamlit to drop their stored state (``server.disconnectedSessionTTL``), opens one
session (Streamlit's session store evicts on writes) and reads the figures again.

Exit status 1 when any session saw an exception, a wrong number, a timeout or a driver error, or when the server's
memory after the run is more than 200 MB above its warm start. Loopback only; every loop is bounded by the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app import ALL_PAGES, SECTIONS  # noqa: E402
from cnnviz import heap_trim as memory  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, IDLE, start_server, stop_server  # noqa: E402

MEMORY_LIMIT_MB = 200.0
DEBUG_DIR = os.environ.get("CNNVIZ_LOAD_DEBUG")  # a folder: log every update, screenshot every timeout
OTHER_PAGES = ("home", "graph", "mlp", "conv_lab", "digit_sum")
PAGE_TITLES = {p.url_path: p.title for p in ALL_PAGES}  # the sidebar's link texts
SECTION_TITLES = tuple(SECTIONS)  # shown in the sidebar only while app.py's st.navigation is in charge
VIEWPORT = {"width": 1280, "height": 900}
MODEL_PREFIX = {"mnist": "MNIST", "cifar10": "CIFAR-10"}  # the explorer's model radio labels begin so
DRIVERS = ("protocol", "browser")
SETTLE_S = memory.COLLECT_EVERY_S + memory.TRIM_EVERY_S + 2  # one collection and one trim after the last session
SESSION_KIND = {"protocol": "sessions (websocket clients, no browser)",
                "browser": "sessions (browser contexts, one Chromium)"}

# Counts every change of the app's script state, so a run that starts and ends between two polls is still seen.
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


def _debug(line: str) -> None:
    with open(Path(DEBUG_DIR) / "log.txt", "a") as f:
        f.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")


# ---------------------------------------------------------------------------------------------------------------
# Strokes: each one continuous mouse stroke, so one stroke = one canvas update = one run


def _polyline(points: list[tuple[float, float]], step: float = 8.0) -> list[tuple[float, float]]:
    out = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        n = max(1, int(math.hypot(x1 - x0, y1 - y0) / step))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1)]
    return out


STROKES: dict[str, list[tuple[float, float]]] = {
    "one": _polyline([(140, 40), (140, 240)]),
    "zero": [(140 + 55 * math.sin(2 * math.pi * k / 48), 140 - 95 * math.cos(2 * math.pi * k / 48))
             for k in range(49)],
    "seven": _polyline([(70, 50), (210, 50), (120, 240)]),
    "two": _polyline([(80, 80), (110, 45), (170, 45), (200, 90), (80, 230), (210, 230)]),
    "four": _polyline([(170, 240), (170, 40), (70, 170), (220, 170)]),
    "L": _polyline([(100, 40), (100, 230), (200, 230)]),
}


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Update:
    session: int
    kind: str
    latency_s: float
    t_end: float


@dataclass
class Problem:
    session: int
    kind: str  # "exception", "mismatch" (a wrong number), "missing" (nothing to read), "navigation", "timeout",
    #            "driver"
    detail: str


@dataclass
class ServerStats:
    rss_mb: float
    threads: int
    fds: int

    @classmethod
    def read(cls, proc: psutil.Process) -> ServerStats:
        return cls(proc.memory_info().rss / 2**20, proc.num_threads(), proc.num_fds())


@dataclass
class LoadResult:
    sessions: int
    seconds: float
    checkpoint_dir: str
    models: list[str]
    driver: str = "protocol"
    ramp_s: float = 0.0
    window_s: float = 0.0
    server_cpu_s: float = 0.0  # CPU time the server used during the measured windows (user + system)
    driver_cpu_s: float = 0.0  # and this process (the sessions' clients and the reference computations)
    updates: list[Update] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    checks: int = 0  # numbers compared with the single-input reference
    stats: dict[str, ServerStats] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    after_rounds_mb: list[float] = field(default_factory=list)  # RSS after each round's sessions are gone
    baseline: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return len(self.problems)

    @property
    def memory_growth_mb(self) -> float:
        return self.stats["after"].rss_mb - self.stats["start"].rss_mb

    def latencies(self, kinds: tuple[str, ...] | None = None) -> list[float]:
        return [u.latency_s for u in self.updates if kinds is None or u.kind in kinds]

    def ok(self) -> bool:
        return self.errors == 0 and self.memory_growth_mb <= MEMORY_LIMIT_MB and len(self.updates) > 0


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


# ---------------------------------------------------------------------------------------------------------------
# The expected numbers, computed here without any server


class Oracle:
    """What the page must show for an input when it is run alone."""

    def __init__(self, checkpoint_dir: Path) -> None:
        from cnnviz.engine.checkpoints import load_model
        from cnnviz.engine.datasets import dataset_available

        self.models = {}
        for name in ("mnist", "cifar10"):
            try:
                self.models[name] = load_model(name, directory=checkpoint_dir)
            except Exception:  # noqa: BLE001 - a missing or broken model is left out of the mix
                pass
        self.sampled = [m for m in self.models if dataset_available(m)[0]]  # test sets on disk
        self._datasets: dict[str, object] = {}
        self._cache: dict[tuple[str, int], tuple[str, str]] = {}

    def sample(self, name: str, index: int) -> tuple[str, str]:
        """(prediction line, loss fragment) of test-set image ``index`` as the explorer shows them."""
        key = (name, index)
        if key not in self._cache:
            from cnnviz.engine.datasets import dataset
            from cnnviz.engine.pictures import preprocess

            if name not in self._datasets:
                self._datasets[name] = dataset(name, "test")
            image, label = self._datasets[name][index]
            x = preprocess(image, self.models[name][1], dataset_sample=True)
            self._cache[key] = self._numbers(name, x, int(label))
        return self._cache[key]

    def _numbers(self, name: str, x, label: int | None) -> tuple[str, str]:
        """The explorer's prediction line and loss fragment for input ``x``: the loss of the true ``label`` when
        known (a test sample), else of the predicted class."""
        from cnnviz.engine.capture import capture

        model, card = self.models[name]
        first = capture(model, x)
        trace = capture(model, x, target=first.pred if label is None else label, objective="loss")
        verdict = "" if label is None else " (correct)" if first.pred == label else f" (true: {card.classes[label]})"
        line = f"Prediction: {card.classes[first.pred]} ({float(first.probs[first.pred]):.1%}){verdict}"
        return line, f"-log {float(trace.probs[trace.target]):.4g} = {trace.loss:.4g}"

    def drawing(self, png: bytes) -> tuple[str, str] | None:
        """(prediction line, loss fragment) of a canvas PNG, read as the page reads it (cnnviz.ui.canvas_input);
        None when the page shows no prediction for it (an empty canvas)."""
        import numpy as np
        from PIL import Image

        from cnnviz.engine.pictures import EmptyImage, load_image, preprocess

        arr = np.asarray(load_image(png).convert("RGBA"))
        if not arr[..., :3].any():
            return None
        try:
            x = preprocess(Image.fromarray(arr), self.models["mnist"][1])
        except EmptyImage:
            return None
        return self._numbers("mnist", x, None)


# ---------------------------------------------------------------------------------------------------------------
# What a learner does, whatever drives the page


class Learner:
    """The mix of interactions of one session; a driver (browser or protocol) supplies each of them."""

    model: str
    rng: random.Random
    expected: tuple[str, str | None] | None
    index: int
    result: LoadResult
    oracle: Oracle

    def stroke(self, r: float) -> str | None:
        """The stroke to draw next (None: clear the canvas)."""
        return self.rng.choice(list(STROKES))

    async def pause(self) -> None:
        """Between two interactions."""

    async def on_driver_error(self, exc: Exception) -> None:
        self.result.problems.append(Problem(self.index, "driver", f"{type(exc).__name__}: {exc}"[:400]))

    async def expect_sample(self, what: str, caption: str) -> str | None:
        """The numbers the test sample named in ``caption`` must show, as ``expected``; a label for the check, or
        None (reported) when no sample is named."""
        found = re.search(r"test image #(\d+)", caption)
        if not found:
            self.result.problems.append(Problem(self.index, "missing", f"{what}: no sample caption in {caption!r}"))
            self.expected = None
            return None
        self.expected = await asyncio.to_thread(self.oracle.sample, self.model, int(found.group(1)))
        return f"{what} #{found.group(1)}"

    async def step(self) -> None:
        r = self.rng.random()
        if self.expected is None and 0.65 <= r < 0.9:  # nothing shown yet (after a visit): no slider to move
            r = self.rng.random() * 0.65
        if self.model == "mnist" and r < 0.35:
            await self.draw(self.stroke(r))
        elif r < 0.65:
            await self.new_sample()
        elif r < 0.9:
            await self.slide()
        else:
            await self.visit()

    async def run_until(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                await self.step()
            except Timeout as exc:
                self.result.problems.append(Problem(self.index, "timeout", str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - report, do not hide, anything the driver hits
                await self.on_driver_error(exc)
                return
            await self.pause()


# ---------------------------------------------------------------------------------------------------------------
# One browser session


class Timeout(Exception):
    pass


class Session(Learner):
    def __init__(self, index: int, context, url: str, result: LoadResult, oracle: Oracle | None,
                 model: str, timeout_s: float, seed: int) -> None:
        self.index, self.context, self.url, self.result, self.oracle = index, context, url, result, oracle
        self.model, self.timeout_s = model, timeout_s
        self.can_sample = oracle is not None and model in oracle.sampled
        self.rng = random.Random(seed)
        self.page = None
        self.canvas_dirty = False
        self.expected: tuple[str, str | None] | None = None  # (prediction line, loss fragment) of the input shown

    # -- plumbing
    async def open(self) -> None:
        if self.page is not None:
            await self.page.close()
        self.page = await self.context.new_page()
        self.page.set_default_timeout(self.timeout_s * 1000)
        await self.page.goto(f"{self.url}/explorer", wait_until="domcontentloaded")
        await self.page.wait_for_selector(IDLE, timeout=self.timeout_s * 1000)
        await self.page.wait_for_selector(".st-key-model_name", timeout=self.timeout_s * 1000)
        await self.page.evaluate(WATCH_RUNS)

    async def act(self, kind: str, action, record: bool = True) -> float:
        """Do ``action`` and wait until the run it starts has finished; record the latency and any exception."""
        page = self.page
        await page.evaluate(WATCH_RUNS)
        mark = await page.evaluate("window.__cnnvizChanges || 0")
        start = time.perf_counter()
        await action()
        try:
            await page.wait_for_function(RUN_FINISHED, arg=mark, timeout=self.timeout_s * 1000, polling=50)
        except Exception as exc:  # playwright's TimeoutError
            if DEBUG_DIR:
                await page.screenshot(path=str(Path(DEBUG_DIR) / f"timeout_{self.index}_{kind}.png"), full_page=True)
            raise Timeout(f"{kind}: no finished run within {self.timeout_s:.0f} s") from exc
        if DEBUG_DIR:
            nav = await page.locator("[data-testid='stSidebarNav']").inner_text()
            _debug(f"session {self.index}: {kind} {time.perf_counter() - start:.2f} s {page.url} "
                   f"nav={'app' if SECTION_TITLES[0] in nav else 'pages/'}")
        latency = time.perf_counter() - start
        if record:
            self.result.updates.append(Update(self.index, kind, latency, time.monotonic()))
        exceptions = await page.locator("[data-testid='stException']").all_inner_texts()
        if exceptions:
            self.result.problems.append(Problem(self.index, "exception", f"{kind}: {exceptions[0][:300]}"))
        return latency

    async def active_segment(self) -> str:
        return await self.page.locator(f".st-key-source_{self.model} button[aria-checked='true']").inner_text()

    async def check(self, what: str, with_loss: bool = False) -> None:
        """Compare the prediction (and, after a slider move to 'loss', the loss) with the single-input reference."""
        if self.expected is None:
            return
        line, loss = self.expected
        shown = (await self.page.locator(".st-key-prediction").inner_text(timeout=10_000)).strip()
        self.result.checks += 1
        if shown != line:
            self.result.problems.append(Problem(self.index, "mismatch", f"{what}: page {shown!r}, alone {line!r}"))
        if with_loss and loss is not None and await self.slider_value() == "loss":
            text = await self.page.locator("[data-testid='stMarkdownContainer']",
                                           has_text="L = -log p[target]").first.text_content(timeout=15_000)
            self.result.checks += 1
            if loss not in (text or ""):
                self.result.problems.append(Problem(self.index, "mismatch", f"{what}: loss {text!r}, alone {loss!r}"))

    async def slider_value(self) -> str | None:
        slider = self.page.locator(".st-key-backprop input[type='range']")
        if await slider.count() == 0:
            return None
        return await slider.get_attribute("aria-valuetext")

    # -- what a learner does
    async def ensure_model(self) -> None:
        if self.model == "mnist":
            return
        checked = await self.page.locator(".st-key-model_name input[type='radio']").nth(1).is_checked()
        if not checked:
            await self.act("model", lambda: self.page.locator(".st-key-model_name label",
                                                              has_text="CIFAR-10").click())
            self.canvas_dirty = False
            await self.after_sample_shown("model")

    async def ensure_source(self, source: str) -> None:
        if await self.active_segment() == source:
            return
        await self.act("source", lambda: self.page.locator(f".st-key-source_{self.model} button",
                                                           has_text=source).click())
        self.canvas_dirty = False
        if source == "Test sample":
            await self.after_sample_shown("source")
        else:
            self.expected = None

    async def after_sample_shown(self, what: str) -> None:
        if await self.active_segment() != "Test sample" or self.oracle is None:
            self.expected = None
            return
        captions = self.page.locator("[data-testid='stImageCaption']")
        try:  # the run has finished, but on a loaded machine the browser may paint the picture a while later
            await captions.filter(has_text="test image #").first.wait_for(timeout=30_000)
        except Exception:  # noqa: BLE001 (playwright's TimeoutError: reported just below as a missing caption)
            pass
        label = await self.expect_sample(what, " ".join(await captions.all_inner_texts()))
        if label:
            await self.check(label)

    async def draw(self, name: str) -> None:
        await self.ensure_source("Draw")
        canvas = self.page.locator(".st-key-canvas")
        if self.canvas_dirty:
            await self.clear(canvas)
        box = await self.canvas_box(canvas)
        points = STROKES[name]
        mouse = self.page.mouse

        async def stroke() -> None:
            await mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
            await mouse.down()
            for px, py in points[1:]:
                await mouse.move(box["x"] + px, box["y"] + py, steps=2)
            await mouse.up()

        await self.act("draw", stroke)
        self.canvas_dirty = True
        reference = self.result.baseline.get(name)
        self.expected = None if reference is None else tuple(json.loads(reference))
        await self.check(f"draw {name}")

    async def canvas_box(self, canvas) -> dict:
        """The drawing surface's box once the component has mounted and the layout has stopped moving (a person
        does not draw on a canvas that is still appearing)."""
        surface = canvas.locator("canvas").last
        await surface.wait_for(state="visible")
        box = await surface.bounding_box()
        for _ in range(50):
            await asyncio.sleep(0.3)
            again = await surface.bounding_box()
            if again == box and box is not None:
                return box
            box = again
        raise Timeout("draw: the canvas never stopped moving")

    async def clear(self, canvas) -> None:
        """The canvas's reset button. It usually reruns the app; when it does not, the prediction must be gone."""
        reset = canvas.get_by_role("button", name="Reset canvas & history")
        saved, self.timeout_s = self.timeout_s, min(self.timeout_s, 20.0)
        try:
            await self.act("clear", reset.click)
        except Timeout:
            if await self.page.locator(".st-key-prediction").count():
                raise Timeout("clear: the reset button neither reran the app nor removed the prediction") from None
        finally:
            self.timeout_s = saved
        await self.page.wait_for_selector(".st-key-prediction", state="detached", timeout=self.timeout_s * 1000)
        self.canvas_dirty, self.expected = False, None

    async def new_sample(self) -> None:
        if not self.can_sample:
            return await self.draw(self.rng.choice(list(STROKES)))
        await self.ensure_model()
        await self.ensure_source("Test sample")
        await self.act("sample", lambda: self.page.locator(f".st-key-sample_{self.model}_new button").click())
        await self.after_sample_shown("new sample")

    async def slide(self) -> None:
        await self.page.get_by_role("tab", name="Backward pass").click()  # client side: no run
        slider = self.page.locator(".st-key-backprop input[type='range']")
        value, top = int(await slider.input_value()), int(await slider.get_attribute("max"))
        if value == 0:
            key = self.rng.choice(["ArrowRight", "End"])
        elif value == top:
            key = self.rng.choice(["ArrowLeft", "Home"])
        else:
            key = self.rng.choice(["ArrowLeft", "ArrowRight", "Home", "End"])

        async def press() -> None:
            await slider.focus()
            await slider.press(key)

        await self.act("slider", press)
        await self.check(f"slider {key}", with_loss=True)

    async def navigation_kept(self, what: str) -> bool:
        """Whether the sidebar is still app.py's st.navigation (its section titles), not Streamlit's automatic
        listing of the pages/ folder, which means the page ran without app.py. Recovers by reloading."""
        nav = await self.page.locator("[data-testid='stSidebarNav']").inner_text(timeout=10_000)
        if all(section in nav for section in SECTION_TITLES):
            return True
        self.result.problems.append(Problem(
            self.index, "navigation", f"{what}: the sidebar became Streamlit's automatic pages/ listing "
            f"({' '.join(nav.split())[:80]!r}): the page ran without app.py"))
        await self.open()  # what a learner would do: reload
        self.canvas_dirty, self.expected = False, None
        return False

    async def visit(self) -> None:
        target = self.rng.choice(OTHER_PAGES)
        nav = self.page.locator("[data-testid='stSidebarNav']")
        await self.act("visit", lambda: nav.get_by_role("link", name=PAGE_TITLES[target]).click())
        heading = await self.page.locator("h1").first.inner_text(timeout=10_000)
        if not heading.strip():
            self.result.problems.append(Problem(self.index, "mismatch", f"visit {target}: no heading"))
        if not await self.navigation_kept(f"click {target}"):
            return
        await self.act("visit", lambda: nav.get_by_role("link", name=PAGE_TITLES["explorer"]).click())
        self.canvas_dirty, self.expected = False, None  # widgets start afresh on the page
        await self.page.wait_for_selector(".st-key-model_name")
        await self.navigation_kept("click explorer")

    async def on_driver_error(self, exc: Exception) -> None:
        await super().on_driver_error(exc)
        if DEBUG_DIR:
            await self.page.screenshot(path=str(Path(DEBUG_DIR) / f"driver_{self.index}.png"), full_page=True)


# ---------------------------------------------------------------------------------------------------------------
# One session over Streamlit's websocket protocol (bench/protocol.py): no browser, so thirty fit on two cores


class ProtocolSession(Learner):
    """A learner on the explorer, spoken in Streamlit's protocol. Waits ``think`` seconds (a range) between
    interactions, as a person looks at what changed before the next stroke."""

    def __init__(self, index: int, url: str, result: LoadResult, oracle: Oracle, model: str, timeout_s: float,
                 seed: int, think: tuple[float, float] = (1.0, 4.0)) -> None:
        from bench.protocol import StreamlitClient

        self.index, self.result, self.oracle, self.model = index, result, oracle, model
        self.client = StreamlitClient(url, timeout_s=timeout_s)
        self.can_sample = model in oracle.sampled
        self.rng = random.Random(seed)
        self.think = think
        self.expected: tuple[str, str | None] | None = None  # (prediction line, loss fragment) of the input shown

    async def open(self) -> None:
        await self.client.connect()
        await self.act("visit", lambda: self.client.open("explorer"), record=False)

    async def close(self) -> None:
        await self.client.close()

    async def act(self, kind: str, run, record: bool = True) -> None:
        from bench.protocol import ProtocolError, RunTimeout

        try:
            outcome = await run()
        except RunTimeout as exc:
            raise Timeout(f"{kind}: {exc}") from None
        except ProtocolError as exc:
            self.result.problems.append(Problem(self.index, "protocol", f"{kind}: {exc}"[:400]))
            raise
        if record:
            self.result.updates.append(Update(self.index, kind, outcome.latency_s, time.monotonic()))
        if DEBUG_DIR:
            _debug(f"session {self.index}: {kind} {outcome.latency_s:.2f} s, {outcome.elements} deltas, "
                   f"{outcome.media} images")
        for text in self.client.page.exceptions():
            self.result.problems.append(Problem(self.index, "exception", f"{kind}: {text[:300]}"))

    def shown(self, prefix: str) -> list[str]:
        return [t for t in self.client.page.texts() if prefix in t]

    def check(self, what: str, with_loss: bool = False) -> None:
        """The prediction (and, with the slider on 'loss', the loss) against the same input run alone."""
        lines = [t.removeprefix("### ").strip() for t in self.shown("Prediction:")]
        if self.expected is None:
            if lines:
                self.result.problems.append(Problem(self.index, "mismatch", f"{what}: a prediction {lines[0]!r} "
                                                                            "for an empty canvas"))
            return
        line, loss = self.expected
        self.result.checks += 1
        if lines != [line]:
            self.result.problems.append(Problem(self.index, "mismatch", f"{what}: page {lines}, alone {line!r}"))
        if with_loss and loss is not None and self.slider_value() == "loss":
            texts = self.shown("L = -log p[target]")
            self.result.checks += 1
            if not texts or loss not in texts[0].replace("**", ""):
                self.result.problems.append(Problem(self.index, "mismatch", f"{what}: loss {texts[:1]}, "
                                                                            f"alone {loss!r}"))

    def slider_value(self) -> str | None:
        if not self.client.page.has_widget("backprop"):
            return None
        sent, el = self.client.widget_state("backprop")
        if sent is not None:
            return sent.string_array_value.data[0]
        return el.slider.options[int(el.slider.default[0])]

    # -- what a learner does
    def segment(self) -> str | None:
        key = f"source_{self.model}"
        if not self.client.page.has_widget(key):
            return None
        sent, el = self.client.widget_state(key)
        if sent is not None:
            return sent.string_array_value.data[0]
        options = [o.content for o in el.button_group.options]
        return options[el.button_group.default[0]] if el.button_group.default else None

    async def ensure_model(self) -> None:
        sent, el = self.client.widget_state("model_name")
        label = next(o for o in el.radio.options if o.startswith(MODEL_PREFIX[self.model]))
        current = sent.string_value if sent is not None else el.radio.options[el.radio.default]
        if current != label:
            await self.act("model", lambda: self.client.interact("model_name", string_value=label))
            await self.after_sample_shown("model")

    async def ensure_source(self, source: str) -> None:
        await self.ensure_model()
        if self.segment() == source:
            return
        await self.act("source", lambda: self.client.interact(f"source_{self.model}",
                                                              string_array_value={"data": [source]}))
        if source == "Test sample":
            await self.after_sample_shown("source")
        else:
            self.expected = None
            self.check("source draw")

    async def after_sample_shown(self, what: str) -> None:
        if self.segment() != "Test sample":
            self.expected = None
            return
        label = await self.expect_sample(what, " ".join(self.shown("test image #")))
        if label:
            self.check(label)

    async def draw(self, name: str | None) -> None:
        """One stroke on a fresh canvas (``name`` None: the canvas cleared)."""
        from bench.protocol import canvas_value, stroke_png

        await self.ensure_source("Draw")
        points = STROKES[name] if name else None
        png = stroke_png(points)
        await self.act("draw" if name else "clear",
                       lambda: self.client.interact("canvas", json_value=canvas_value(png, points)))
        self.expected = await asyncio.to_thread(self.oracle.drawing, png)
        self.check(f"draw {name or 'nothing'}")

    async def new_sample(self) -> None:
        if not self.can_sample:
            return await self.draw(self.rng.choice(list(STROKES)))
        await self.ensure_source("Test sample")
        await self.act("sample", lambda: self.client.interact(f"sample_{self.model}_new", trigger=True))
        await self.after_sample_shown("new sample")

    async def slide(self) -> None:
        _, el = self.client.page.widget("backprop")
        options = list(el.slider.options)
        at = options.index(self.slider_value())
        choices = {0, len(options) - 1, max(0, at - 1), min(len(options) - 1, at + 1)} - {at}
        to = options[self.rng.choice(sorted(choices))]
        await self.act("slider", lambda: self.client.interact("backprop", string_array_value={"data": [to]}))
        self.check(f"slider to {to}", with_loss=True)

    async def visit(self) -> None:
        target = self.rng.choice(OTHER_PAGES)
        await self.act("visit", lambda: self.client.navigate(target))
        if not [t for t in self.client.page.texts() if t.strip()]:
            self.result.problems.append(Problem(self.index, "missing", f"visit {target}: an empty page"))
        await self.act("visit", lambda: self.client.navigate("explorer"))
        self.expected = None  # widgets start afresh on the page
        if not self.client.page.has_widget("model_name"):
            self.result.problems.append(Problem(self.index, "missing", "visit explorer: no model picker"))

    def stroke(self, r: float) -> str | None:
        return None if self.expected is not None and r < 0.03 else self.rng.choice(list(STROKES))  # None: clear

    async def on_driver_error(self, exc: Exception) -> None:
        last = self.result.problems[-1] if self.result.problems else None
        if not (last and last.session == self.index and last.kind == "protocol"):  # not reported already
            await super().on_driver_error(exc)

    async def pause(self) -> None:
        await asyncio.sleep(self.rng.uniform(*self.think))


# ---------------------------------------------------------------------------------------------------------------
# The run


async def _monitor(proc: psutil.Process, result: LoadResult, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            result.peak_rss_mb = max(result.peak_rss_mb, proc.memory_info().rss / 2**20)
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def _baseline(browser, url: str, result: LoadResult, timeout_s: float, sampled: list[str]) -> None:
    """One session alone: every stroke's prediction and loss, and one visit to every page (warms the server)."""
    context = await browser.new_context(viewport=VIEWPORT)
    solo = Session(-1, context, url, LoadResult(1, 0, "", []), None, "mnist", timeout_s, seed=0)
    try:
        # A learner arrives at the home page first (a deep link as the very first request is tested separately:
        # tests/test_load_small.py and tests/test_pages.py).
        page = await context.new_page()
        await page.goto(f"{url}/", wait_until="domcontentloaded")
        await page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
        await page.close()
        await solo.open()
        if "mnist" in result.models:
            for name in STROKES:
                await solo.draw(name)
                line = (await solo.page.locator(".st-key-prediction").inner_text()).strip()
                text = await solo.page.locator("[data-testid='stMarkdownContainer']",
                                               has_text="L = -log p[target]").first.text_content(timeout=15_000)
                found = re.search(r"-log \S+ = \S+?(?=\.\s|\.$|$)", text or "")
                result.baseline[name] = json.dumps([line, found.group(0) if found else None])
            await solo.slide()
        for model in sampled:
            solo.model, solo.can_sample = model, True
            await solo.new_sample()
        for target in OTHER_PAGES:  # by address: warms each page without the sidebar's own behaviour
            await solo.page.goto(f"{url}/{target}", wait_until="domcontentloaded")
            await solo.page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
        if solo.result.problems:
            result.problems += [Problem(-1, p.kind, "baseline: " + p.detail) for p in solo.result.problems]
    finally:
        await context.close()


async def run_load_async(sessions: int = 30, seconds: float = 60.0, checkpoint_dir: Path | None = None,
                         timeout_s: float = 240.0, drain_s: float | None = None, session_ttl_s: int | None = None,
                         cifar_share: float = 0.2, seed: int = 0, rounds: int = 1, driver: str = "protocol",
                         think: tuple[float, float] = (1.0, 4.0), log=print) -> LoadResult:
    from cnnviz.engine.checkpoints import checkpoint_dir as default_checkpoint_dir

    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, not {driver!r}")
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir()
    oracle = Oracle(checkpoint_dir)
    models = [m for m in oracle.models if m == "mnist" or m in oracle.sampled]  # CIFAR sessions need its test set
    if "mnist" not in oracle.models:
        raise SystemExit(f"no usable MNIST checkpoint in {checkpoint_dir}: train it or pass --checkpoint-dir")
    result = LoadResult(sessions, seconds, str(checkpoint_dir), models, driver=driver)
    env = {"CNNVIZ_CHECKPOINT_DIR": str(checkpoint_dir)}
    if session_ttl_s is not None:
        env["STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"] = str(session_ttl_s)
    ttl = session_ttl_s if session_ttl_s is not None else 120
    drain_s = ttl + 10 if drain_s is None else drain_s
    n_cifar = round(sessions * cifar_share) if "cifar10" in models else 0

    def model_of(i: int) -> str:
        return "cifar10" if i < n_cifar else "mnist"

    server = start_server(env=env)
    proc = psutil.Process(server.process.pid)
    try:
        result.stats["cold"] = ServerStats.read(proc)
        log(f"server {server.url} (pid {proc.pid}), {driver} driver, models {models}, checkpoints {checkpoint_dir}")
        if driver == "protocol":
            await _protocol_baseline(server.url, result, oracle, timeout_s)

            async def new_round(r: int):
                runners = [ProtocolSession(i, server.url, result, oracle, model_of(i), timeout_s,
                                           seed=seed * 1000 + r * sessions + i, think=think) for i in range(sessions)]

                async def close() -> None:
                    await asyncio.gather(*(s.close() for s in runners), return_exceptions=True)
                return runners, close

            async def poke() -> None:
                await _protocol_poke(server.url, timeout_s)

            await _rounds(proc, result, rounds, seconds, drain_s, new_round, poke, log)
        else:
            from playwright.async_api import async_playwright

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    await _baseline(browser, server.url, result, timeout_s, oracle.sampled)

                    async def new_round(r: int):
                        contexts = [await browser.new_context(viewport=VIEWPORT) for _ in range(sessions)]
                        runners = [Session(i, c, server.url, result, oracle, model_of(i), timeout_s,
                                           seed=seed * 1000 + r * sessions + i) for i, c in enumerate(contexts)]

                        async def close() -> None:
                            for c in contexts:
                                await c.close()
                        return runners, close

                    async def poke() -> None:
                        await _poke(browser, server.url, timeout_s)

                    await _rounds(proc, result, rounds, seconds, drain_s, new_round, poke, log)
                finally:
                    await browser.close()
    finally:
        stop_server(server)
    return result


async def _rounds(proc: psutil.Process, result: LoadResult, rounds: int, seconds: float, drain_s: float,
                  new_round, poke, log) -> None:
    """Warm reading, then ``rounds`` times: open every session, let them work for ``seconds``, close them, wait for
    the server to drop their state, read its memory, threads and file handles again."""
    await asyncio.sleep(2)
    result.stats["start"] = ServerStats.read(proc)
    log(f"warm: {asdict(result.stats['start'])}")
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(proc, result, stop))
    try:
        for r in range(rounds):
            runners, close = await new_round(r)
            ramp = time.monotonic()
            opened = await asyncio.gather(*(s.open() for s in runners), return_exceptions=True)
            for s, outcome in zip(runners, opened, strict=True):
                if isinstance(outcome, Timeout):
                    result.problems.append(Problem(s.index, "timeout", f"open: {outcome}"))
                elif isinstance(outcome, BaseException):
                    result.problems.append(Problem(s.index, "driver", f"open: {outcome!r}"[:400]))
            live = [s for s, o in zip(runners, opened, strict=True) if not isinstance(o, BaseException)]
            result.ramp_s += time.monotonic() - ramp
            log(f"round {r + 1}: {len(live)} sessions open after {time.monotonic() - ramp:.1f} s; "
                f"running for {seconds:.0f} s")
            start = time.monotonic()
            cpu0, own0 = sum(proc.cpu_times()[:2]), time.process_time()
            await asyncio.gather(*(s.run_until(start + seconds) for s in live))
            result.window_s += time.monotonic() - start
            result.server_cpu_s += sum(proc.cpu_times()[:2]) - cpu0
            result.driver_cpu_s += time.process_time() - own0
            result.stats["end"] = ServerStats.read(proc)
            await close()
            await asyncio.sleep(3)
            result.stats["closed"] = ServerStats.read(proc)
            if drain_s > 0:
                log(f"sessions closed; waiting {drain_s:.0f} s for the server to drop their stored state")
                await asyncio.sleep(drain_s)
                await poke()
            result.stats["after"] = await _settled(proc, result.stats["start"])
            result.after_rounds_mb.append(result.stats["after"].rss_mb)
    finally:
        stop.set()
        await monitor


async def _protocol_baseline(url: str, result: LoadResult, oracle: Oracle, timeout_s: float) -> None:
    """One session alone before the load: every page once (warms the server), and the explorer's numbers for one
    drawing and one sample of each model checked, so a driver that reads the page wrongly fails here, alone."""
    solo = ProtocolSession(-1, url, LoadResult(1, 0, "", []), oracle, "mnist", timeout_s, seed=0, think=(0, 0))
    try:
        await solo.client.connect()
        await solo.act("visit", lambda: solo.client.open(""))  # a learner arrives at the home page
        for target in (*OTHER_PAGES, "explorer"):
            await solo.act("visit", lambda t=target: solo.client.navigate(t))
        for name in STROKES:
            await solo.draw(name)
        await solo.slide()
        for model in oracle.sampled:
            solo.model, solo.can_sample = model, True
            await solo.new_sample()
    except Exception as exc:  # noqa: BLE001 - reported as the baseline's problem below
        await solo.on_driver_error(exc)
    finally:
        await solo.close()
    result.problems += [Problem(-1, p.kind, "baseline: " + p.detail) for p in solo.result.problems]


async def _protocol_poke(url: str, timeout_s: float) -> None:
    """Open and close one session (see ``_poke``)."""
    from bench.protocol import StreamlitClient

    client = StreamlitClient(url, timeout_s=timeout_s, fetch_media=False)
    try:
        await client.open("")
    finally:
        await client.close()
    await asyncio.sleep(3)


async def _settled(proc: psutil.Process, start: ServerStats, limit_s: float = SETTLE_S + 3,
                   min_s: float = SETTLE_S) -> ServerStats:
    """The server's figures once the last closed session's own threads (its script runner, its websocket
    handlers) have ended and the app's periodic cycle collection and allocator trim (cnnviz/heap_trim.py) have had a
    turn: polled for at least ``min_s`` and up to ``limit_s``; threads and fds from the reading with the fewest
    threads, RSS from the last reading. A leak stays visible: memory still referenced is neither collected nor
    trimmed, and threads that belong to no live session never end, so the reading stays above ``start``."""
    best = ServerStats.read(proc)
    begin = time.monotonic()
    while True:
        elapsed = time.monotonic() - begin
        if elapsed >= limit_s or (elapsed >= min_s and best.threads <= start.threads):
            break
        await asyncio.sleep(0.5)
        now = ServerStats.read(proc)
        if (now.threads, now.fds) < (best.threads, best.fds):
            best = now
        best = ServerStats(now.rss_mb, best.threads, best.fds)
    return best


async def _poke(browser, url: str, timeout_s: float) -> None:
    """Open and close one session: its disconnect is a write to Streamlit's session store, which evicts the
    sessions whose time to live has passed (the store only reaps on writes)."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        await page.goto(f"{url}/home", wait_until="domcontentloaded")
        await page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
    finally:
        await context.close()
    await asyncio.sleep(3)


def run_load(**kwargs) -> LoadResult:
    """Run the load test to completion (see ``run_async``)."""
    return run_async(lambda: run_load_async(**kwargs))


def run_async(make_coroutine):
    """``asyncio.run(make_coroutine())``, in a thread of its own when this thread already runs an event loop:
    Playwright's sync API (the test suite's browser fixtures) keeps one running, where ``asyncio.run`` refuses."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    box: dict[str, object] = {}

    def worker() -> None:
        try:
            box["result"] = asyncio.run(make_coroutine())
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread below)
            box["error"] = exc

    thread = threading.Thread(target=worker, name="cnnviz-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]


# ---------------------------------------------------------------------------------------------------------------
# Report


def summary(result: LoadResult) -> str:
    lat = result.latencies()
    kinds = sorted({u.kind for u in result.updates})
    captures = [u for u in result.updates if u.kind in ("draw", "sample", "source", "model")]
    by_kind = {p.kind: sum(1 for q in result.problems if q.kind == p.kind) for p in result.problems}
    s = result.stats
    rows = [
        (SESSION_KIND[result.driver], f"{result.sessions}  ({', '.join(result.models)})"),
        ("rounds; ramp-up / measured window", f"{len(result.after_rounds_mb)}; {result.ramp_s:.1f} s / "
                                              f"{result.window_s:.1f} s (asked {result.seconds:.0f} a round)"),
        ("page updates (finished runs)", f"{len(lat)}  (captures of a new input: {len(captures)})"),
        ("throughput", f"{len(lat) / max(result.window_s, 1e-9):.2f} updates/s, "
                       f"{len(captures) / max(result.window_s, 1e-9):.2f} captures/s"),
        ("CPU in the window: server / driver", f"{result.server_cpu_s:.0f} s / {result.driver_cpu_s:.0f} s of "
                                               f"{result.window_s * (os.cpu_count() or 1):.0f} s on "
                                               f"{os.cpu_count()} cores; server "
                                               f"{1000 * result.server_cpu_s / max(len(lat), 1):.0f} ms per update"),
        ("latency p50 / p95 / max", f"{percentile(lat, 0.5):.2f} / {percentile(lat, 0.95):.2f} / "
                                    f"{max(lat, default=float('nan')):.2f} s"),
        ("numbers checked against a single-input run", str(result.checks)),
        ("errors", f"{result.errors}  {by_kind or ''}"),
        ("server RSS cold / warm start / peak / end", f"{s['cold'].rss_mb:.0f} / {s['start'].rss_mb:.0f} / "
                                                     f"{result.peak_rss_mb:.0f} / {s['end'].rss_mb:.0f} MB"),
        ("server RSS after close / after drain", f"{s['closed'].rss_mb:.0f} / {s['after'].rss_mb:.0f} MB (growth "
                                                 f"{result.memory_growth_mb:+.0f} MB, limit {MEMORY_LIMIT_MB:.0f})"),
        ("RSS after each round", " / ".join(f"{v:.0f}" for v in result.after_rounds_mb) + " MB"),
        ("threads start / end / after", f"{s['start'].threads} / {s['end'].threads} / {s['after'].threads}"),
        ("open fds start / end / after", f"{s['start'].fds} / {s['end'].fds} / {s['after'].fds}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    lines.append(f"{'kind'.ljust(10)} {'n':>5} {'p50 s':>7} {'p95 s':>7}")
    for kind in kinds:
        xs = result.latencies((kind,))
        lines.append(f"{kind.ljust(10)} {len(xs):5d} {percentile(xs, 0.5):7.2f} {percentile(xs, 0.95):7.2f}")
    for p in result.problems[:20]:
        lines.append(f"  session {p.session}: {p.kind}: {p.detail}")
    lines.append("PASS" if result.ok() else "FAIL")
    return "\n".join(lines)


def to_json(result: LoadResult) -> dict:
    lat = result.latencies()
    return {
        "sessions": result.sessions, "driver": result.driver, "seconds": result.seconds, "models": result.models,
        "ramp_s": result.ramp_s, "window_s": result.window_s, "updates": len(lat),
        "updates_per_s": len(lat) / max(result.window_s, 1e-9),
        "server_cpu_s": result.server_cpu_s, "driver_cpu_s": result.driver_cpu_s,
        "p50_s": percentile(lat, 0.5), "p95_s": percentile(lat, 0.95), "checks": result.checks,
        "errors": result.errors, "problems": [asdict(p) for p in result.problems],
        "stats": {k: asdict(v) for k, v in result.stats.items()}, "peak_rss_mb": result.peak_rss_mb,
        "memory_growth_mb": result.memory_growth_mb, "after_rounds_mb": result.after_rounds_mb, "ok": result.ok(),
        "by_kind": {k: {"n": len(result.latencies((k,))), "p50_s": percentile(result.latencies((k,)), 0.5),
                        "p95_s": percentile(result.latencies((k,)), 0.95)}
                    for k in sorted({u.kind for u in result.updates})},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="default: $CNNVIZ_CHECKPOINT_DIR or the project's checkpoints/")
    parser.add_argument("--timeout", type=float, default=240.0, help="longest wait for one page update (s)")
    parser.add_argument("--drain", type=float, default=None,
                        help="wait after closing the sessions before the last reading (default: session TTL + 10 s)")
    parser.add_argument("--session-ttl", type=int, default=None,
                        help="server.disconnectedSessionTTL for this server (default: Streamlit's, 120 s)")
    parser.add_argument("--cifar-share", type=float, default=0.2, help="share of sessions on the CIFAR-10 model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the whole load (new sessions each time): a leak keeps growing, a high-water mark "
                             "does not")
    parser.add_argument("--driver", choices=DRIVERS, default="protocol",
                        help="protocol: each session a websocket client speaking Streamlit's protocol (default); "
                             "browser: each session a Playwright browser context (renders too, so far fewer fit)")
    parser.add_argument("--think", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"),
                        help="protocol driver: seconds a session pauses between interactions, drawn uniformly")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.seconds <= 0:
        parser.error("--sessions must be >= 1 and --seconds > 0")
    if not 0 <= args.think[0] <= args.think[1]:
        parser.error("--think needs 0 <= MIN <= MAX")
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    result = run_load(sessions=args.sessions, seconds=args.seconds, checkpoint_dir=args.checkpoint_dir,
                      timeout_s=args.timeout, drain_s=args.drain, session_ttl_s=args.session_ttl,
                      cifar_share=args.cifar_share, seed=args.seed, rounds=args.rounds, driver=args.driver,
                      think=tuple(args.think))
    print(summary(result))
    if args.json:
        args.json.write_text(json.dumps(to_json(result), indent=2) + "\n")
    return 0 if result.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
