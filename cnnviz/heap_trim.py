"""Give memory the app has freed back to the operating system (the allocator settings need glibc).

Why: every Streamlit script run happens in a new thread, and a run of the explorer allocates and frees tens of
megabytes (traces, figures, images). glibc keeps freed memory for reuse: in one heap per thread that allocated
(up to 8 x cores of them) and, for blocks above a threshold that grows with every large free, inside those heaps
instead of unmapping it. After thirty students leave, the server's resident memory would stay at its peak although
Python holds none of it. Two settings bound that, and a periodic trim returns what is free:

- ``M_ARENA_MAX = 2``: at most two heaps, however many run threads come and go;
- ``M_MMAP_THRESHOLD = 256 KiB`` (fixed, so it no longer grows): arrays above it (feature maps, gradients, images)
  get their own mapping, which ``free`` returns to the system at once;
- ``malloc_trim(0)`` every ``TRIM_EVERY_S`` seconds in one daemon thread: hands back whole free pages inside the
  heaps, also while no one is using the app (when no script runs that could do it);
- ``gc.collect()`` every ``COLLECT_EVERY_S`` seconds in the same thread (after an optional hook: app.py drops the
  state of sessions closed longer ago than Streamlit keeps it, see ``ui.expire_closed_sessions``): a closed
  session's state (its cached traces, tens of megabytes) sits in reference cycles of Streamlit's session objects,
  and Python's cycle collector only runs when enough new objects are allocated, which an idle server never does.
  Measured: 25 traces (about 200 MB of tensors) still alive after every session had gone, until a collection. A
  full collection of the server's ~500,000 objects takes about 0.2 s, so once every half minute (Streamlit's own
  collection after every script run is turned off in .streamlit/config.toml: it cost that on every update).

Nothing here changes what any computation returns; it only changes when freed memory leaves the process.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from collections.abc import Callable

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
ARENAS = 2
TRIM_EVERY_S = 10.0
COLLECT_EVERY_S = 30.0

_lock = threading.Lock()
_state = {"tuned": False, "last_trim": float("-inf"), "trimmer": None}


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return lib
    except (OSError, AttributeError):  # another C library (musl): nothing to tune
        return None


_LIBC = _glibc()


def available() -> bool:
    return _LIBC is not None


def tune() -> bool:
    """Bound the heaps and fix the mapping threshold (once per process). True when glibc accepted both."""
    with _lock:
        if _LIBC is None:
            return False
        if not _state["tuned"]:
            ok = _LIBC.mallopt(M_ARENA_MAX, ARENAS) == 1
            ok = _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and ok
            _state["tuned"] = ok
        return bool(_state["tuned"])


def trim(interval_s: float = 10.0) -> bool:
    """Return free heap pages to the system, unless that was done less than ``interval_s`` ago. True if it ran."""
    if _LIBC is None:
        return False
    now = time.monotonic()
    with _lock:
        if now - _state["last_trim"] < interval_s:
            return False
        _state["last_trim"] = now
    _LIBC.malloc_trim(0)
    return True


def collect_and_trim() -> None:
    """Free unreachable reference cycles, then return the free pages (whatever the interval)."""
    gc.collect()
    trim(0.0)


def start(every_s: float = TRIM_EVERY_S, collect_every_s: float = COLLECT_EVERY_S,
          before_collect: Callable[[], object] | None = None) -> bool:
    """``tune()`` and start the collecting and trimming thread, once per process (app.py calls this on every run).
    ``before_collect`` runs in that thread before each collection (app.py: drop expired sessions' state).
    True once the thread runs; without glibc it only collects."""
    tune()
    with _lock:
        if _state["trimmer"] is None:
            def loop() -> None:
                last_collect = time.monotonic()
                while True:
                    time.sleep(every_s)
                    if time.monotonic() - last_collect >= collect_every_s:
                        last_collect = time.monotonic()
                        if before_collect is not None:
                            try:
                                before_collect()
                            except Exception:  # noqa: BLE001 - a failing hook must not stop the trimming
                                pass
                        collect_and_trim()
                    else:
                        trim(every_s / 2)

            _state["trimmer"] = threading.Thread(target=loop, name="cnnviz-malloc-trim", daemon=True)
            _state["trimmer"].start()
    return True
