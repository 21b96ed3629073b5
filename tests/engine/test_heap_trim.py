"""cnnviz/heap_trim.py: freed memory goes back to the operating system (glibc), and nothing else changes.

Each check runs in a fresh interpreter, so the allocator settings never leak into the test process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnviz import heap_trim as memory

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not memory.available(), reason="glibc's allocator only (Linux with glibc)")


def run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_trim_hands_back_freed_heap_pages_that_free_alone_keeps():
    result = run_python("""
import json, psutil
from cnnviz import heap_trim as memory
rss = lambda: psutil.Process().memory_info().rss / 2**20
assert memory.tune()
blocks = [bytearray(64 * 1024) for _ in range(2400)]   # ~150 MB in the heap (below the mapping threshold)
for b in blocks:
    b[::4096] = b"x" * len(b[::4096])                  # touch every page
pin = bytearray(64 * 1024)                               # allocated last: keeps the heap's top in use
full = rss()
del blocks
freed = rss()
ran = memory.trim(0)
print(json.dumps({"full": full, "freed": freed, "trimmed": rss(), "ran": ran, "again": memory.trim(3600)}))
""")
    assert result["ran"] is True and result["again"] is False  # the interval holds
    assert result["full"] - result["freed"] < 60, result  # free() alone keeps most of the pages
    assert result["freed"] - result["trimmed"] > 100, result  # the trim returns them


def test_large_arrays_are_unmapped_when_freed_and_start_is_idempotent():
    result = run_python("""
import json, threading, psutil, numpy as np
from cnnviz import heap_trim as memory
rss = lambda: psutil.Process().memory_info().rss / 2**20
assert memory.start(every_s=3600) and memory.start(every_s=3600)
threads = [t.name for t in threading.enumerate() if t.name == "cnnviz-malloc-trim"]
big = np.ones(4_000_000, np.float32)
del big                   # under glibc's defaults this raises the mapping threshold to 16 MB: later arrays stay
arrays = [np.ones((300, 300), np.float32) for _ in range(400)]   # 360 KB each: above the fixed 256 KiB threshold
pin = np.ones((300, 300), np.float32)                            # allocated last: keeps the heap's top in use
full = rss()
del arrays
print(json.dumps({"threads": threads, "full": full, "freed": rss()}))
""")
    assert result["threads"] == ["cnnviz-malloc-trim"]  # one trimming thread however often the app starts it
    assert result["full"] - result["freed"] > 100, result  # mapped arrays leave at free(), no trim needed
    # (without memory.tune() the same script frees 0 MB here: measured with glibc 2.36)


def test_collect_and_trim_frees_garbage_cycles_an_idle_process_keeps():
    """A closed Streamlit session's state sits in reference cycles; without allocations nothing collects them."""
    result = run_python("""
import gc, json, psutil, numpy as np
from cnnviz import heap_trim as memory
rss = lambda: psutil.Process().memory_info().rss / 2**20
memory.tune()
class Session:
    pass
s = Session()
s.me = s                                           # a cycle, as Streamlit's session objects make
s.traces = [np.ones((500, 500), np.float32) for _ in range(150)]   # ~150 MB
full = rss()
del s
dropped = rss()                                    # the cycle is unreachable, but nothing has collected it
memory.collect_and_trim()
print(json.dumps({"full": full, "dropped": dropped, "collected": rss()}))
""")
    assert result["full"] - result["dropped"] < 20, result
    assert result["dropped"] - result["collected"] > 120, result
