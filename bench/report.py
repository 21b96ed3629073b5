"""The load test's result, and the figures it prints."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field

import psutil

from bench.session import Tally

MEMORY_LIMIT_MB = 50.0  # issue 14: memory back within 50 MB of warm once the sessions have closed


@dataclass
class ServerStats:
    """Summed over the server's processes (one `streamlit run`, or every replica and HAProxy)."""

    rss_mb: float = 0.0
    threads: int = 0
    fds: int = 0
    cpu_s: float = 0.0  # user + system

    @classmethod
    def read(cls, procs: list[psutil.Process]) -> ServerStats:
        out = cls()
        for p in procs:
            try:
                out = cls(out.rss_mb + p.memory_info().rss / 2**20, out.threads + p.num_threads(),
                          out.fds + p.num_fds(), out.cpu_s + sum(p.cpu_times()[:2]))
            except psutil.Error:  # a replica that just died
                pass
        return out


@dataclass
class LoadResult(Tally):
    sessions: int = 0
    target: str = ""  # what the sessions ran against
    window_s: float = 0.0
    server_cpu_s: float = math.nan  # CPU the server's processes used in the window
    driver_cpu_s: float = 0.0  # and this process (the sessions' clients and the reference computations)
    stats: dict[str, ServerStats] = field(default_factory=dict)  # empty: the server's processes are not visible

    @property
    def memory_growth_mb(self) -> float:
        return self.stats["after"].rss_mb - self.stats["start"].rss_mb if "after" in self.stats else math.nan

    def ok(self) -> bool:
        return not self.problems and len(self.updates) > 0 and not self.memory_growth_mb > MEMORY_LIMIT_MB


def percentiles(xs: list[float]) -> str:
    xs = sorted(xs) or [math.nan]
    return " / ".join(f"{xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]:.2f}" for q in (0.5, 0.95, 1))


def summary(r: LoadResult) -> str:
    lat, s, cores = [t for _, t in r.updates], r.stats, os.cpu_count() or 1
    captures = sum(k in ("draw", "sample", "source", "model") for k, _ in r.updates)
    rows = [("sessions (websocket clients)", f"{r.sessions} against {r.target}"),
            ("page updates in the window", f"{len(lat)} in {r.window_s:.1f} s ({len(lat) / max(r.window_s, 1e-9):.2f}"
                                           f"/s); captures of a new input: {captures}"),
            ("latency p50 / p95 / max", percentiles(lat) + " s"),
            ("numbers checked against a single-input run", str(r.checks)),
            ("reconnections (a server went away)", str(r.reconnects)),
            ("errors", f"{len(r.problems)}  {dict(Counter(p.kind for p in r.problems)) or ''}"),
            ("CPU in the window: server / driver", f"{r.server_cpu_s:.0f} s / {r.driver_cpu_s:.0f} s of "
                                                   f"{r.window_s * cores:.0f} s on {cores} cores; server "
                                                   f"{1000 * r.server_cpu_s / max(len(lat), 1):.0f} ms per update")]
    if s:
        rows += [("server RSS cold / warm / end / closed / after", " / ".join(f"{s[k].rss_mb:.0f}" for k in (
                     "cold", "start", "end", "closed", "after")) + f" MB (growth {r.memory_growth_mb:+.0f} MB, limit "
                  f"{MEMORY_LIMIT_MB:.0f})"),
                 ("threads, open fds: start / end / after", f"{s['start'].threads} / {s['end'].threads} / "
                  f"{s['after'].threads}, {s['start'].fds} / {s['end'].fds} / {s['after'].fds}")]
    else:
        rows.append(("server memory, threads, CPU", "not visible (a server this script did not start)"))
    rows += [(f"  {kind}", f"{len(xs)} updates, p50 / p95 / max {percentiles(xs)} s") for kind in sorted(
        {k for k, _ in r.updates}) if (xs := [t for k2, t in r.updates if k2 == kind])]
    lines = [f"{k:53} {v}" for k, v in rows] + [f"  session {p.session}: {p.kind}: {p.detail}" for p in r.problems[:20]]
    return "\n".join([*lines, "PASS" if r.ok() else "FAIL"])
