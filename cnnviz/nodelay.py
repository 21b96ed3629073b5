"""Send the app's websocket messages when they are written: TCP_NODELAY on every connection the server holds.

Streamlit's listening socket has protocol number 0, and asyncio turns Nagle's algorithm off only on sockets whose
protocol is IPPROTO_TCP, so a small message written while an earlier one is unacknowledged would wait for the browser's
delayed ACK. ``enable()`` (once per process) makes asyncio set the option on every TCP stream socket it wraps from then
on, and on the connections already open; the same bytes go out in the same order. Effect: docs/performance.md.
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
