"""This browser session: its id, whether it is still open, its bounded caches of captures and figures; and the
expiry of closed sessions' state."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import streamlit as st
import torch


def digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().numpy().tobytes()).hexdigest()[:16]


def session_cached(kind: str, key: tuple, compute, size: int = 6):
    """Keep the last ``size`` results of ``compute()`` of each kind in this browser session, keyed by ``key``.

    Each kind has its own bounded store (traces, rendered overviews, attributions ...), freed with the session;
    the key must hold everything the result depends on (model, weights, input, target, objective, ...).
    """
    stores = st.session_state.setdefault("_cnnviz_cache", {})
    cache = stores.setdefault(kind, {})
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
        return cache[key]
    value = compute()
    cache[key] = value
    while len(cache) > size:
        cache.pop(next(iter(cache)))
    return value


def session_id() -> str:
    """This browser session's id (a fixed name outside a Streamlit run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def session_alive(grace_s: float = 10.0) -> Callable[[], bool] | None:
    """A check, callable from any thread, that is false once this session has been gone for ``grace_s`` seconds.

    None where there is no Streamlit server (AppTest, scripts): the training then runs until stopped.
    """
    import time

    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return None
    runtime, sid = Runtime.instance(), session_id()
    gone_since: list[float] = []

    def alive() -> bool:
        if runtime.is_active_session(sid):
            gone_since.clear()
            return True
        if not gone_since:
            gone_since.append(time.monotonic())
        return time.monotonic() - gone_since[0] < grace_s

    return alive


def expire_closed_sessions(wait_s: float = 5.0) -> bool:
    """Drop the state of browser sessions closed longer ago than ``server.disconnectedSessionTTL``, now.

    Streamlit keeps a closed session (its state: traces, figures) in a TTL cache so that a browser can reconnect,
    but that cache removes an expired entry only when another session connects or leaves. Behind HAProxy, a replica
    no one visits after a class kept every closed session's state: +245 MB on one of two replicas after 30 sessions
    (bench/load.py), while the other, which saw one more visit, went back to warm. Scheduled on the server's event
    loop (the cache is not thread-safe) and waited for up to ``wait_s``; callable from any thread. False (nothing
    done) outside a running server, or if Streamlit's internals have moved.
    """
    try:
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return False
        runtime = Runtime.instance()
        cache = runtime._session_mgr._session_storage._cache  # MemorySessionStorage's TTLCache
        loop = runtime._get_async_objs().eventloop
    except Exception:  # noqa: BLE001 - another Streamlit, another session storage: leave it to Streamlit
        return False
    done = threading.Event()

    def reap() -> None:
        try:
            cache.expire()
        finally:
            done.set()

    loop.call_soon_threadsafe(reap)
    return done.wait(wait_s)
