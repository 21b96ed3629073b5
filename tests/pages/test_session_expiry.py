"""ui.expire_closed_sessions: the state of sessions closed longer than the TTL ago is dropped now, on the server's
event loop, using Streamlit's own session cache (TTLCache) as the server holds it."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

from streamlit.runtime import Runtime
from streamlit.runtime.caching.ttl_cache import TTLCache

from cnnviz import ui


def test_expired_sessions_leave_the_cache_and_live_ones_stay(monkeypatch):
    clock = [100.0]
    cache = TTLCache(maxsize=128, ttl=30, timer=lambda: clock[0])
    cache["closed-long-ago"] = object()
    clock[0] += 20
    cache["closed-just-now"] = object()
    clock[0] += 15  # the first is 35 s old (expired), the second 15 s
    assert len(cache._data) == 2  # expired, but still held: nothing has written to the cache since
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = SimpleNamespace(_session_mgr=SimpleNamespace(_session_storage=SimpleNamespace(_cache=cache)),
                           _get_async_objs=lambda: SimpleNamespace(eventloop=loop))
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: True))
    monkeypatch.setattr(Runtime, "instance", classmethod(lambda cls: fake))
    try:
        assert ui.expire_closed_sessions() is True
        assert list(cache._data) == ["closed-just-now"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_without_a_server_or_with_other_internals_it_does_nothing(monkeypatch):
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: False))
    assert ui.expire_closed_sessions() is False
    monkeypatch.setattr(Runtime, "exists", classmethod(lambda cls: True))
    monkeypatch.setattr(Runtime, "instance", classmethod(lambda cls: SimpleNamespace()))
    start = time.monotonic()
    assert ui.expire_closed_sessions() is False
    assert time.monotonic() - start < 1.0  # no wait for a loop that is not there
