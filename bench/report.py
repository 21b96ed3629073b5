"""The load test's result, and the figures it prints."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import psutil

from bench.session import Tally

MEMORY_LIMIT_MB = 200.0


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
    window_s: float = 0.0  # the measured windows, all rounds
    server_cpu_s: float = math.nan  # CPU the server's processes used in the windows
    driver_cpu_s: float = 0.0  # and this process (the sessions' clients and the reference computations)
    stats: dict[str, ServerStats] = field(default_factory=dict)  # empty: the server's processes are not visible
    peak_rss_mb: float = 0.0
    after_rounds_mb: list[float] = field(default_factory=list)  # RSS after each round's sessions are gone

    @property
    def memory_growth_mb(self) -> float:
        return self.stats["after"].rss_mb - self.stats["start"].rss_mb if "after" in self.stats else math.nan

    def latencies(self, kind: str | None = None) -> list[float]:
        return [s for k, s in self.updates if kind in (None, k)]

    def ok(self) -> bool:
        return not self.problems and len(self.updates) > 0 and not self.memory_growth_mb > MEMORY_LIMIT_MB


def percentile(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] if xs else math.nan


def summary(r: LoadResult) -> str:
    lat, s, cores = r.latencies(), r.stats, os.cpu_count() or 1
    captures = sum(k in ("draw", "sample", "source", "model") for k, _ in r.updates)
    kinds = {k: sum(p.kind == k for p in r.problems) for k in sorted({p.kind for p in r.problems})}
    rows = [
        ("sessions (websocket clients)", f"{r.sessions} against {r.target}"),
        ("measured window", f"{r.window_s:.1f} s in {max(1, len(r.after_rounds_mb))} round(s)"),
        ("page updates (finished runs)", f"{len(lat)} ({len(lat) / max(r.window_s, 1e-9):.2f}/s); captures of a "
                                         f"new input: {captures}"),
        ("latency p50 / p95 / max", f"{percentile(lat, 0.5):.2f} / {percentile(lat, 0.95):.2f} / "
                                    f"{max(lat, default=math.nan):.2f} s"),
        ("numbers checked against a single-input run", str(r.checks)),
        ("reconnections (a server went away)", str(r.reconnects)),
        ("errors", f"{len(r.problems)}  {kinds or ''}"),
        ("CPU in the window: server / driver", f"{r.server_cpu_s:.0f} s / {r.driver_cpu_s:.0f} s of "
                                               f"{r.window_s * cores:.0f} s on {cores} cores; server "
                                               f"{1000 * r.server_cpu_s / max(len(lat), 1):.0f} ms per update"),
    ]
    if s:
        rows += [("server RSS cold / warm / peak / end / closed / after", " / ".join(
                     f"{v:.0f}" for v in (s["cold"].rss_mb, s["start"].rss_mb, r.peak_rss_mb, s["end"].rss_mb,
                                          s["closed"].rss_mb, s["after"].rss_mb))
                  + f" MB (growth {r.memory_growth_mb:+.0f} MB, limit {MEMORY_LIMIT_MB:.0f})"),
                 ("RSS after each round", " / ".join(f"{v:.0f}" for v in r.after_rounds_mb) + " MB"),
                 ("threads, open fds: start / end / after", f"{s['start'].threads} / {s['end'].threads} / "
                  f"{s['after'].threads}, {s['start'].fds} / {s['end'].fds} / {s['after'].fds}")]
    else:
        rows.append(("server memory, threads, CPU", "not visible (a server this script did not start)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows] + ["", f"{'kind':10} {'n':>5} {'p50 s':>7} {'p95 s':>7}"]
    for kind in sorted({k for k, _ in r.updates}):
        xs = r.latencies(kind)
        lines.append(f"{kind:10} {len(xs):5d} {percentile(xs, 0.5):7.2f} {percentile(xs, 0.95):7.2f}")
    lines += [f"  session {p.session}: {p.kind}: {p.detail}" for p in r.problems[:20]]
    return "\n".join([*lines, "PASS" if r.ok() else "FAIL"])
