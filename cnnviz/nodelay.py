"""Send the app's websocket messages when they are written: TCP_NODELAY on every connection the server holds.

Why: Streamlit opens its listening socket as ``socket.socket(family=...)`` (protocol number 0), and asyncio turns
Nagle's algorithm off only on sockets whose protocol is IPPROTO_TCP (``asyncio.base_events._set_nodelay``). So on
every browser connection, a small message written while an earlier one is unacknowledged waits for the browser's
delayed ACK: up to 40 ms on Linux. Measured with a websocket client on a plain `streamlit run` of a page that writes,
computes 80 ms, writes again: the first message of each run arrived ~40 ms late (at 41-54 ms instead of ~1 ms);
with this, at once. On the explorer, the prediction of a new drawing reached the client 40 ms earlier.

``enable()`` (app.py calls it on every run; it acts once per process) makes asyncio set the option on every TCP
stream socket it wraps from then on, and sets it on the connections already open. Nothing else changes: the same
bytes are sent in the same order, only without waiting.
"""

from __future__ import annotations

import asyncio.base_events
import asyncio.selector_events
import gc
import socket
import threading

_lock = threading.Lock()
_done = {"enabled": False}


def set_nodelay(sock) -> bool:
    """TCP_NODELAY on ``sock`` if it is a TCP stream socket (whatever its protocol number says). True if set."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
    except (OSError, AttributeError):  # closed, or not a real socket
        pass
    return False


def enable() -> None:
    """From now on every asyncio TCP connection in this process sends without delay; so do the open ones."""
    with _lock:
        if _done["enabled"]:
            return
        _done["enabled"] = True
        asyncio.base_events._set_nodelay = set_nodelay  # what _SelectorSocketTransport.__init__ calls
        transport = asyncio.selector_events._SelectorSocketTransport
        for obj in gc.get_objects():  # once per process: the connections accepted before this call
            if issubclass(type(obj), transport):  # type(), not isinstance: no lazy module's __class__ is touched
                sock = obj.get_extra_info("socket")
                if sock is not None:
                    set_nodelay(sock)
