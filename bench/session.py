"""One learner on the explorer, spoken in Streamlit's protocol (bench/protocol.py), and what it records."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import namedtuple
from dataclasses import dataclass, field

from bench.oracle import Oracle
from bench.protocol import STROKES, ProtocolError, StreamlitClient, stroke_png
from cnnviz.canvas import canvas_value

OTHER_PAGES = ("home", "graph", "mlp", "conv_lab", "digit_sum")
MODEL_PREFIX = {"mnist": "MNIST", "cifar10": "CIFAR-10"}  # the explorer's model radio labels begin so


Problem = namedtuple("Problem", "session kind detail")  # kind: exception/mismatch/missing/timeout/protocol/driver


@dataclass
class Tally:
    updates: list[tuple[str, float]] = field(default_factory=list)  # (kind of interaction, latency s)
    problems: list[Problem] = field(default_factory=list)
    checks: int = 0  # numbers compared with the input run alone
    reconnects: int = 0  # websockets reopened after their server went away


class ProtocolSession:
    """A learner: draws digits (sometimes clears the canvas), picks test samples, steps through the backward view,
    visits other pages, pausing ``think`` seconds between interactions; every prediction and loss shown is checked."""

    def __init__(self, index: int, url: str, tally: Tally, oracle: Oracle, model: str, timeout_s: float,
                 seed: int, think: tuple[float, float] = (1.0, 4.0)) -> None:
        self.index, self.tally, self.oracle, self.model, self.think = index, tally, oracle, model, think
        self.client, self.rng = StreamlitClient(url, timeout_s=timeout_s), random.Random(seed)
        self.seq = 0  # the network view's event counter
        self.can_sample = model in oracle.sampled
        self.expected: tuple[str, str] | None = None  # (prediction line, loss fragment) of the input shown
        self.kept: bytes | None = None  # the last drawing: the canvas paints it again when it comes back

    def problem(self, kind: str, detail: str) -> None:
        self.tally.problems.append(Problem(self.index, kind, detail[:400]))

    async def open(self, path: str = "explorer") -> None:
        await self.act("visit", lambda: self.client.open(path), record=False)

    async def act(self, kind: str, run, record: bool = True) -> None:
        reconnects = self.client.reconnects
        try:
            latency = await run()
        except ProtocolError as exc:
            self.problem("protocol", f"{kind}: {exc}")
            raise
        if record:
            self.tally.updates.append((kind, latency))
        for text in self.client.exceptions():
            self.problem("exception", f"{kind}: {text[:300]}")
        if self.client.reconnects != reconnects:
            self.kept = None  # a new session: nothing drawn in it yet
            if re.search(r"test image #\d+", " ".join(self.client.texts())):
                # a new session on another server (the old one died): it shows what a fresh page shows, as the
                # learner's browser does ("pick your input again"); that is what is checked from here on
                await self.expect_sample(f"{kind} after a reconnection")

    async def guarded(self, step) -> bool:
        """Await ``step``; a problem in it ends the session and is reported once (act reports protocol errors)."""
        try:
            await step
            return True
        except Exception as exc:  # noqa: BLE001 - report, do not hide, anything the driver hits
            if not isinstance(exc, ProtocolError):
                self.problem("timeout" if isinstance(exc, TimeoutError) else "driver", f"{exc!r}")
            return False

    async def run_until(self, deadline: float) -> None:
        while time.monotonic() < deadline and await self.guarded(self.step()):
            await asyncio.sleep(self.rng.uniform(*self.think))

    async def step(self) -> None:
        r = self.rng.random()
        if self.expected is None and 0.65 <= r < 0.9:  # nothing shown yet (after a visit): no slider to move
            r = self.rng.random() * 0.65
        if self.model == "mnist" and r < 0.35:
            await self.draw(None if self.expected and r < 0.03 else self.rng.choice(list(STROKES)))
        else:
            await (self.new_sample() if r < 0.65 else self.slide() if r < 0.9 else self.visit())

    def check(self, what: str, with_loss: bool = False) -> None:
        """The prediction (and, with the backward view at the loss, the loss) against the same input run alone."""
        lines = [t.removeprefix("### ").strip() for t in self.client.texts() if "Prediction:" in t]
        if self.expected is None:
            if lines:
                self.problem("mismatch", f"{what}: a prediction {lines[0]!r} for an empty canvas")
            return
        self.tally.checks += 1
        if lines != [self.expected[0]]:
            self.problem("mismatch", f"{what}: page {lines}, alone {self.expected[0]!r}")
        if with_loss and self.backward_at() == 0:  # the loss
            self.tally.checks += 1
            texts = [t for t in self.client.texts() if "L = -log p[target]" in t]
            if not texts or self.expected[1] not in texts[0].replace("**", ""):
                self.problem("mismatch", f"{what}: loss {texts[:1]}, alone {self.expected[1]!r}")

    def current(self, key: str) -> str | None:
        """The value of widget ``key`` (a slider, radio or button group): the one sent last, else its default."""
        try:
            _, el, sent = self.client.widget(key)
        except ProtocolError:
            return None
        kind, one = el.WhichOneof("type"), el.WhichOneof("type") in ("radio", "selectbox")
        if sent is not None:
            return sent.string_value if one else sent.string_array_value.data[0]
        if one:
            return getattr(el, kind).options[getattr(el, kind).default]
        if kind == "slider":
            return el.slider.options[int(el.slider.default[0])]
        return el.button_group.options[el.button_group.default[0]].content if el.button_group.default else None

    async def choose(self, kind: str, key: str, start: str) -> None:
        """Pick the option of widget ``key`` (radio, selectbox, segmented control) that begins with ``start``."""
        el = self.client.widget(key)[1]
        w = getattr(el, el.WhichOneof("type"))
        label = next(o if isinstance(o, str) else o.content for o in w.options
                     if (o if isinstance(o, str) else o.content).startswith(start))
        value = {"string_value": label} if isinstance(w.options[0], str) else {"string_array_value": {"data": [label]}}
        if self.current(key) != label:
            await self.act(kind, lambda: self.client.interact(key, **value))
            if kind == "view":  # another view of the same input: the same prediction
                self.check(f"view {label}")
            else:  # another model or input source: what it shows first
                await self.expect_sample(kind)

    async def expect_sample(self, what: str) -> None:
        """The test image a caption names, if any: its numbers become ``expected`` (else none), and are checked."""
        found = re.search(r"test image #(\d+)", " ".join(self.client.texts()))
        if self.kept and self.shows_canvas():  # the canvas came back with the session's last drawing
            self.expected = await asyncio.to_thread(self.oracle.drawing, self.kept)
            return self.check(f"{what}: the canvas with its last drawing")
        self.expected = found and await asyncio.to_thread(self.oracle.sample, self.model, int(found.group(1)))
        self.check(f"{what} {found.group(0) if found else ''}")

    def shows_canvas(self) -> bool:
        try:
            self.client.widget("canvas")
            return True
        except ProtocolError:
            return False

    async def ensure_source(self, source: str) -> None:
        await self.choose("model", "model_name", MODEL_PREFIX[self.model])
        await self.choose("source", f"source_{self.model}", source)

    async def draw(self, name: str | None) -> None:
        """One stroke on a fresh canvas (``name`` None: the canvas cleared)."""
        await self.ensure_source("Draw")
        png = stroke_png(STROKES[name]) if name else None  # Clear sends None
        value = json.dumps(canvas_value(png))
        await self.act("draw" if name else "clear", lambda: self.client.interact("canvas", json_value=value))
        self.kept = png
        self.expected = await asyncio.to_thread(self.oracle.drawing, png)
        if self.expected is None:  # nothing drawn: no prediction, or the test image the page shows instead
            return await self.expect_sample("clear")
        self.check(f"draw {name}")

    async def new_sample(self) -> None:
        if not self.can_sample:
            return await self.draw(self.rng.choice(list(STROKES)))
        await self.ensure_source("Test sample")
        await self.act("sample", lambda: self.client.interact(f"sample_{self.model}_new", trigger=True))
        await self.expect_sample("new sample")

    def backward_at(self) -> int | None:
        """The backward view's position (0: the loss), None when the view is not shown."""
        try:
            return int(self.client.component_data("network_backward")["selected"])
        except ProtocolError:
            return None

    async def slide(self) -> None:
        """A step in the backward view (its Next/Prev buttons, or a click on a column), as the browser sends it."""
        if self.backward_at() is None:  # the backward pass is a view of its own
            await self.choose("view", "view", "Backward")
        data = self.client.component_data("network_backward")
        at, last = data["selected"], len(data["payload"]["columns"]) - 1  # the payload: no "have" is ever sent
        to = self.rng.choice(sorted({0, last, max(0, at - 1), min(last, at + 1)} - {at}))
        self.seq += 1
        event = {"kind": "step", "layer": to, "seq": self.seq, "have": None}
        await self.act("slider", lambda: self.client.trigger("network_backward", "event", event))
        self.check(f"backward step to {to}", with_loss=True)

    async def visit(self) -> None:
        await self.act("visit", lambda: self.client.navigate(self.rng.choice(OTHER_PAGES)))
        await self.act("visit", lambda: self.client.navigate("explorer"))
        # Widgets start afresh on the page, but the canvas comes back with the session's last drawing
        if self.kept and self.shows_canvas():
            await self.expect_sample("back on the explorer")
        else:
            self.expected = None
