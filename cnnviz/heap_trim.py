"""Give memory the app has freed back to the operating system (the allocator settings need glibc).

Every Streamlit run is a new thread that allocates and frees tens of megabytes, glibc keeps what is freed in per-thread
heaps, and an idle server never runs Python's cycle collector, so a closed session's traces would stay resident. This
bounds the heaps, unmaps large arrays when freed, and runs one daemon thread that collects cycles and trims the heap.
Nothing here changes what any computation returns. Settings and measurements: docs/performance.md (Memory).
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
MMAP_THRESHOLD_BYTES = 256 * 1024  # fixed (glibc raises it with every large free): larger arrays get their own mapping
ARENAS = 2  # at most two heaps, however many run threads come and go
TRIM_EVERY_S = 10.0  # malloc_trim(0): whole free pages inside the heaps go back, also while no script runs
COLLECT_EVERY_S = 30.0  # a full gc.collect() of the server's objects is costly: twice a minute, not after every run

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
