"""A Streamlit client speaking the app's websocket protocol (Streamlit's own protobufs), and the canvas it draws on.
On the wire it does what the browser's frontend does, except rendering: ``/_stcore/health`` first (a balancer sets
its cookie there), the websocket with the cookies, a ``rerun_script`` with every widget value it holds, the page's
images from ``/media``; it reconnects and reruns the page when its server goes away."""

from __future__ import annotations

import asyncio
import http.cookies
import io
import json
import math
import time
import urllib.request

from PIL import Image, ImageDraw
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState


class ProtocolError(Exception):
    """The server said or did something a browser session would have shown as broken."""


class RunTimeout(TimeoutError):
    """No finished run (or no server to reconnect to) within the client's timeout."""


STROKES: dict[str, list[tuple[float, float]]] = {  # one continuous stroke each, on the 280x280 canvas
    "one": [(140, 40), (140, 240)],
    "zero": [(140 + 55 * math.sin(2 * math.pi * k / 48), 140 - 95 * math.cos(2 * math.pi * k / 48)) for k in range(49)],
    "seven": [(70, 50), (210, 50), (120, 240)],
    "two": [(80, 80), (110, 45), (170, 45), (200, 90), (80, 230), (210, 230)],
    "four": [(170, 240), (170, 40), (70, 170), (220, 170)],
    "L": [(100, 40), (100, 230), (200, 230)],
}


def stroke_png(points: list[tuple[float, float]] | None, size: int = 280, width: int = 20) -> bytes:
    """The canvas as its PNG: white strokes on black, as the page's canvas draws them."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    if points:
        ImageDraw.Draw(img).line(points, fill=(255, 255, 255, 255), width=width, joint="curve")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def element_id(el: Element) -> str | None:
    sub = getattr(el, el.WhichOneof("type") or "empty")
    return (sub.id or None) if "id" in sub.DESCRIPTOR.fields_by_name else None


class StreamlitClient:
    """One browser tab's worth of Streamlit session, over the websocket. ``elements`` is the page after the last
    run, by delta path; ``values`` what the frontend would send: the value of every widget the user changed."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.http, self.timeout_s, self.ws, self.page_hash, self.reconnects = url.rstrip("/"), timeout_s, None, None, 0
        self.elements: dict[tuple[int, ...], Element] = {}
        self.fragments: dict[str, str] = {}  # widget id -> id of the fragment it was drawn in
        self.pages: dict[str, str] = {}  # url path -> page script hash (from the navigation message)
        self.values: dict[str, WidgetState] = {}
        self.seen_media, self.cookies = set(), {}

    def of_type(self, kind: str) -> list:
        return [getattr(self.elements[p], kind) for p in sorted(self.elements)
                if self.elements[p].WhichOneof("type") == kind]

    def texts(self) -> list[str]:
        """Markdown bodies, headings and image captions."""
        return ([m.body for m in self.of_type("markdown")] + [h.body for h in self.of_type("heading")]
                + [i.caption for imgs in self.of_type("imgs") for i in imgs.imgs if i.caption])

    def exceptions(self) -> list[str]:
        return [f"{e.type}: {e.message}" for e in self.of_type("exception")]

    def widget(self, key: str) -> tuple[str, Element, WidgetState | None]:
        """Widget ``key`` (ids end in ``-<key>``): its id, element and the value last sent (None: its default)."""
        for el in self.elements.values():
            if (wid := element_id(el)) and wid.endswith("-" + key):
                return wid, el, self.values.get(wid)
        raise ProtocolError(f"no widget with key {key!r} on the page")

    def get(self, path: str, timeout: float) -> bytes:
        """An HTTP GET with this tab's cookies; keeps the cookies the response sets."""
        with urllib.request.urlopen(urllib.request.Request(self.http + path, headers=self._cookie()),
                                    timeout=timeout) as r:
            for header in r.headers.get_all("Set-Cookie") or []:
                self.cookies.update({k: m.value for k, m in http.cookies.SimpleCookie(header).items()})
            return r.read()

    def _cookie(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        await asyncio.to_thread(self.get, "/_stcore/health", self.timeout_s)
        self.ws = await asyncio.wait_for(connect(
            self.http.replace("http://", "ws://", 1) + "/_stcore/stream", subprotocols=["streamlit"], max_size=None,
            open_timeout=self.timeout_s, ping_interval=None, compression=None,
            additional_headers=self._cookie() or None), self.timeout_s)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def open(self, path: str) -> float:
        """A visit by address (a deep link), as the first one is. Returns the run's latency."""
        if self.ws is None:
            await self.connect()
        self.values.clear()
        return await self._run(page_name=path)

    async def navigate(self, path: str) -> float:
        """A click on the sidebar: the page by its script hash (from the navigation message)."""
        if path not in self.pages:
            raise ProtocolError(f"no page {path!r} in the navigation")
        self.values.clear()
        return await self._run(page_hash=self.pages[path])

    async def interact(self, key: str, trigger: bool = False, **value) -> float:
        """Change widget ``key`` (or press it, ``trigger=True``) and wait for the run it starts."""
        wid = self.widget(key)[0]
        if not trigger:
            self.values[wid] = WidgetState(id=wid, **value)
        extra = [WidgetState(id=wid, trigger_value=True)] if trigger else []
        return await self._run(page_hash=self.page_hash, fragment_id=self.fragments.get(wid), extra=extra)

    def component_data(self, key: str) -> dict:
        """The JSON data the page gave Components v2 component ``key`` in the last run."""
        return json.loads(self.widget(key)[1].bidi_component.json)

    async def trigger(self, key: str, event: str, value) -> float:
        """What a Components v2 component's ``setTriggerValue(event, value)`` sends (Streamlit's private layout: one
        aggregator widget per component, "<internal prefix>_<id>__events"); waits for the run it starts."""
        wid = self.widget(key)[0]
        state = WidgetState(id=f"$$STREAMLIT_INTERNAL_KEY_{wid}__events",
                            json_trigger_value=json.dumps([{"event": event, "value": value}]))
        return await self._run(page_hash=self.page_hash, fragment_id=self.fragments.get(wid), extra=[state])

    async def _run(self, page_name: str | None = None, page_hash: str | None = None, fragment_id: str | None = None,
                   extra: list[WidgetState] | tuple = ()) -> float:
        from websockets.exceptions import ConnectionClosed

        start, deadline = time.perf_counter(), time.monotonic() + self.timeout_s
        for _ in range(3):
            try:
                msg = BackMsg()
                cs = msg.rerun_script
                cs.query_string, cs.page_name, cs.page_script_hash = "", page_name or "", page_hash or ""
                cs.fragment_id = fragment_id or ""
                cs.widget_states.widgets.extend([*self.values.values(), *extra])
                cs.context_info.timezone, cs.context_info.locale = "UTC", "en-US"
                cs.context_info.url = f"{self.http}/{page_name or ''}"
                await self.ws.send(msg.SerializeToString())
                await asyncio.wait_for(self._receive(), max(0.0, deadline - time.monotonic()))
                await self._fetch_media(deadline)
                return time.perf_counter() - start
            except asyncio.TimeoutError:
                raise RunTimeout(f"no finished run within {self.timeout_s:.0f} s") from None
            except ConnectionClosed:  # the server went away: what the frontend does, reconnect and rerun the page
                self.reconnects += 1
                while True:
                    try:
                        await self.connect()
                        break
                    except (OSError, asyncio.TimeoutError) as exc:
                        if time.monotonic() > deadline:
                            raise RunTimeout(f"no server to reconnect to: {exc}") from None
                        await asyncio.sleep(1.0)
                page_name, page_hash, fragment_id = None if self.page_hash else page_name, self.page_hash, None
        raise ProtocolError("the websocket closed three times in one run")

    async def _receive(self) -> None:
        pending: dict[tuple[int, ...], Element] = {}
        fragments: dict[str, str] = {}
        run_id, is_fragment = None, False
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(await self.ws.recv())
            kind = fm.WhichOneof("type")
            if kind == "new_session":
                run_id, is_fragment = fm.metadata.run.script_run_id, bool(fm.metadata.run.fragment_ids)
                pending, fragments = {}, {}
                self.page_hash = fm.new_session.page_script_hash or self.page_hash
            elif kind == "navigation":
                for p in fm.navigation.app_pages:  # the default page's path is empty: known by its name too
                    self.pages[p.url_pathname] = self.pages[p.page_name.lower()] = p.page_script_hash
                self.page_hash = fm.navigation.page_script_hash or self.page_hash
            elif kind == "delta" and fm.metadata.run.script_run_id in ("", run_id):  # not a late one of a cut run
                which, path = fm.delta.WhichOneof("type"), tuple(fm.metadata.delta_path)
                if which == "new_element":
                    pending[path] = fm.delta.new_element
                    if (wid := element_id(fm.delta.new_element)) and fm.delta.fragment_id:
                        fragments[wid] = fm.delta.fragment_id
                elif which == "add_block":
                    pending[path] = Element()  # a container: keeps its place, holds no value
            elif kind == "script_finished" and run_id is not None:
                if fm.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # our run supersedes it; wait for ours
                if fm.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    raise ProtocolError("the page failed to compile")
                if is_fragment and pending:  # replaces the fragment's own container (drawn first) and what is in it
                    root = min(pending, key=len)
                    pending = {**{p: e for p, e in self.elements.items() if p[:len(root)] != root}, **pending}
                    fragments = {**self.fragments, **fragments}
                if not is_fragment or pending:
                    self.elements, self.fragments = pending, fragments
                live = {element_id(el) for el in self.elements.values()}
                self.values = {wid: v for wid, v in self.values.items() if wid in live}
                return

    async def _fetch_media(self, deadline: float) -> None:
        for img in (i for imgs in self.of_type("imgs") for i in imgs.imgs):
            if img.url.startswith("/media/") and img.url not in self.seen_media:
                try:
                    await asyncio.to_thread(self.get, img.url, max(1.0, deadline - time.monotonic()))
                except Exception as exc:  # noqa: BLE001 - a broken image is what a learner would see,
                    await self.ws.ping()  # unless its server died: ConnectionClosed here, so reconnect and rerun
                    raise ProtocolError(f"image {img.url} could not be fetched: {exc}") from None
                self.seen_media.add(img.url)
