"""A Streamlit client that speaks the app's own websocket protocol, for the load test (``bench/load.py``).

It does what the browser's Streamlit frontend does on the wire, and nothing a real session would not: it opens
``/_stcore/stream``, asks for a page with a ``rerun_script`` BackMsg carrying every widget value it holds, reads the
ForwardMsgs of that run (new_session, the deltas that build the page, script_finished) into a tree of elements keyed
by delta path, fetches the page's images from ``/media`` as the browser would, and remembers widget values the way
the frontend does (a widget that leaves the page loses its value; a button press is sent once). What it does not do
is render: its latency is the server's, from the interaction leaving the client to the run's last message arriving.

The protocol buffers are Streamlit's own (``streamlit.proto``), so the client follows the installed version.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.request
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

FINISHED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}
COMPILE_ERROR = ForwardMsg.FINISHED_WITH_COMPILE_ERROR


class ProtocolError(Exception):
    """The server said or did something a browser session would have shown as broken."""


class RunTimeout(Exception):
    pass


@dataclass
class RunOutcome:
    latency_s: float
    status: int
    fragment: bool
    elements: int  # deltas received in this run
    media: int = 0  # images fetched
    media_bytes: int = 0


@dataclass
class Page:
    """The page as the frontend holds it after the last run: elements by delta path, widgets by id."""

    elements: dict[tuple[int, ...], Element] = field(default_factory=dict)
    fragments: dict[str, str] = field(default_factory=dict)  # widget id -> id of the fragment it was drawn in

    def widgets(self) -> dict[str, Element]:
        out = {}
        for el in self.elements.values():
            wid = element_id(el)
            if wid:
                out[wid] = el
        return out

    def widget(self, key: str) -> tuple[str, Element]:
        """The widget whose user key is ``key`` (Streamlit's ids end in ``-<key>``)."""
        for wid, el in self.widgets().items():
            if wid.endswith("-" + key):
                return wid, el
        raise ProtocolError(f"no widget with key {key!r} on the page")

    def has_widget(self, key: str) -> bool:
        return any(wid.endswith("-" + key) for wid in self.widgets())

    def texts(self) -> list[str]:
        """Markdown bodies, headings and image captions in page order."""
        out = []
        for path in sorted(self.elements):
            el = self.elements[path]
            kind = el.WhichOneof("type")
            if kind == "markdown":
                out.append(el.markdown.body)
            elif kind == "heading":
                out.append(el.heading.body)
            elif kind == "imgs":
                out += [img.caption for img in el.imgs.imgs if img.caption]
        return out

    def exceptions(self) -> list[str]:
        return [f"{el.exception.type}: {el.exception.message}" for el in self.elements.values()
                if el.WhichOneof("type") == "exception"]

    def media_urls(self) -> list[str]:
        return [img.url for el in self.elements.values() if el.WhichOneof("type") == "imgs"
                for img in el.imgs.imgs if img.url.startswith("/media/")]


def element_id(el: Element) -> str | None:
    kind = el.WhichOneof("type")
    if kind is None:
        return None
    sub = getattr(el, kind)
    return getattr(sub, "id", None) or None if "id" in sub.DESCRIPTOR.fields_by_name else None


def canvas_value(png: bytes, points: list[tuple[float, float]] | None) -> str:
    """What streamlit-drawable-canvas sends for a drawing: fabric.js's objects and the canvas as a PNG data URL."""
    objects = []
    if points:
        path = [["M", *points[0]]] + [["L", *p] for p in points[1:]]
        objects.append({"type": "Path", "version": "7.4.0", "stroke": "#FFFFFF", "strokeWidth": 20,
                        "strokeLineCap": "round", "strokeLineJoin": "round", "fill": None, "path": path})
    data = "data:image/png;base64," + base64.b64encode(png).decode()
    return json.dumps({"drawing": {"raw": {"version": "7.4.0", "objects": objects}, "data": data}},
                      separators=(",", ":"))


def stroke_png(points: list[tuple[float, float]] | None, size: int = 280, width: int = 20) -> bytes:
    """The canvas as its PNG: white round-capped strokes on black, as the page's canvas draws them."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    if points:
        draw = ImageDraw.Draw(img)
        draw.line(points, fill=(255, 255, 255, 255), width=width, joint="curve")
        r = width / 2
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class StreamlitClient:
    """One browser tab's worth of Streamlit session, over the websocket."""

    def __init__(self, url: str, timeout_s: float = 120.0, fetch_media: bool = True) -> None:
        self.http = url.rstrip("/")
        self.ws_url = self.http.replace("http://", "ws://", 1) + "/_stcore/stream"
        self.timeout_s = timeout_s
        self.fetch_media = fetch_media
        self.ws = None
        self.page = Page()
        self.pages: dict[str, str] = {}  # url path -> page script hash (from the navigation message)
        self.page_hash: str | None = None
        self.values: dict[str, WidgetState] = {}  # what the frontend would send: every widget on the page
        self.seen_media: set[str] = set()

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await asyncio.wait_for(
            connect(self.ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=self.timeout_s,
                    ping_interval=None, compression=None), self.timeout_s)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    # -- widget values, as the frontend keeps them
    def widget_state(self, key: str) -> tuple[WidgetState | None, Element]:
        """Widget ``key``'s element and the value this client last sent for it (None: still its default)."""
        wid, el = self.page.widget(key)
        return self.values.get(wid), el

    # -- runs
    async def open(self, path: str) -> RunOutcome:
        """The first visit: the address bar's path picks the page (as a deep link does)."""
        if self.ws is None:
            await self.connect()
        self.values.clear()
        return await self._run(page_name=path)

    async def navigate(self, path: str) -> RunOutcome:
        """A click on the sidebar: the page by its script hash, the other page's widget values dropped."""
        if path not in self.pages:
            raise ProtocolError(f"no page {path!r} in the navigation ({sorted(self.pages)})")
        self.values.clear()
        return await self._run(page_hash=self.pages[path])

    async def interact(self, key: str, trigger: bool = False, **value) -> RunOutcome:
        """Change widget ``key`` (or press it, ``trigger=True``) and wait for the run it starts."""
        wid, _ = self.page.widget(key)
        fragment = self.page.fragments.get(wid)
        extra = []
        if trigger:
            extra.append(WidgetState(id=wid, trigger_value=True))
        else:
            self.values[wid] = WidgetState(id=wid, **value)
        return await self._run(page_hash=self.page_hash, fragment_id=fragment, extra=extra)

    async def _send(self, page_name: str | None, page_hash: str | None, fragment_id: str | None,
                    extra: list[WidgetState]) -> None:
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = ""
        if page_name is not None:
            cs.page_name = page_name
        if page_hash is not None:
            cs.page_script_hash = page_hash
        if fragment_id:
            cs.fragment_id = fragment_id
        triggered = {w.id for w in extra}
        cs.widget_states.widgets.extend([w for wid, w in self.values.items() if wid not in triggered] + extra)
        cs.context_info.timezone = "UTC"
        cs.context_info.locale = "en-US"
        cs.context_info.url = f"{self.http}/{page_name or ''}"
        await self.ws.send(msg.SerializeToString())

    async def _run(self, page_name: str | None = None, page_hash: str | None = None, fragment_id: str | None = None,
                   extra: list[WidgetState] | None = None) -> RunOutcome:
        start = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        await self._send(page_name, page_hash, fragment_id, extra or [])
        pending: dict[tuple[int, ...], Element] = {}
        fragments: dict[str, str] = {}
        run_id = None
        is_fragment = False
        count = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunTimeout(f"no finished run within {self.timeout_s:.0f} s")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                raise RunTimeout(f"no finished run within {self.timeout_s:.0f} s") from None
            fm = ForwardMsg()
            fm.ParseFromString(raw)
            kind = fm.WhichOneof("type")
            if kind == "new_session":
                run_id = fm.metadata.run.script_run_id
                is_fragment = bool(fm.metadata.run.fragment_ids)
                pending, fragments, count = {}, {}, 0
                self.page_hash = fm.new_session.page_script_hash or self.page_hash
            elif kind == "navigation":
                self.pages = {}
                for p in fm.navigation.app_pages:  # the default page's path is empty: known by its name too
                    self.pages[p.url_pathname] = self.pages[p.page_name.lower()] = p.page_script_hash
                self.page_hash = fm.navigation.page_script_hash or self.page_hash
            elif kind == "ref_hash":
                raise ProtocolError("the server sent a cached-message reference the client never asked for")
            elif kind == "delta":
                if fm.metadata.run.script_run_id and run_id and fm.metadata.run.script_run_id != run_id:
                    continue  # a late message of a run that was cut short for ours
                delta = fm.delta
                which = delta.WhichOneof("type")
                path = tuple(fm.metadata.delta_path)
                count += 1
                if which == "new_element":
                    pending[path] = delta.new_element
                    wid = element_id(delta.new_element)
                    if wid and delta.fragment_id:
                        fragments[wid] = delta.fragment_id
                elif which == "add_block":
                    pending[path] = Element()  # a container: keeps its place, holds no value
            elif kind == "script_finished":
                status = fm.script_finished
                if status == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # our run supersedes it; wait for ours
                if run_id is None:
                    continue  # the end of a run that began before ours
                self._apply(pending, fragments, is_fragment)
                outcome = RunOutcome(time.perf_counter() - start, status, is_fragment, count)
                if status == COMPILE_ERROR:
                    raise ProtocolError("the page failed to compile")
                if self.fetch_media:
                    await self._fetch_media(outcome, deadline)
                outcome.latency_s = time.perf_counter() - start
                return outcome

    def _apply(self, pending: dict, fragments: dict, is_fragment: bool) -> None:
        if not is_fragment:
            self.page = Page(pending, fragments)
        elif pending:
            root = min(pending, key=len)  # the fragment's own container, drawn first
            kept = {p: e for p, e in self.page.elements.items() if p[:len(root)] != root}
            self.page = Page({**kept, **pending}, {**self.page.fragments, **fragments})
        live = set(self.page.widgets())
        self.values = {wid: v for wid, v in self.values.items() if wid in live}

    async def _fetch_media(self, outcome: RunOutcome, deadline: float) -> None:
        urls = [u for u in self.page.media_urls() if u not in self.seen_media]

        def get(url: str) -> int:
            with urllib.request.urlopen(self.http + url, timeout=max(1.0, deadline - time.monotonic())) as r:
                return len(r.read())

        for url in urls:
            try:
                outcome.media_bytes += await asyncio.to_thread(get, url)
            except Exception as exc:  # noqa: BLE001 - a broken image is what a learner would see
                raise ProtocolError(f"image {url} could not be fetched: {exc}") from None
            outcome.media += 1
            self.seen_media.add(url)
