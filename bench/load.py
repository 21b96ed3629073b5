"""Load test: N real Streamlit sessions (bench/session.py) against the app, every number they see checked.

    python bench/load.py [--sessions 30] [--seconds 60] [--rounds 1] [--replicas N | --url URL] [--json out.json]

The server is one `streamlit run` started here, or (``--replicas N``) `python -m cnnviz.serve`, HAProxy in front of
N replicas, or (``--url``) whatever answers there. For a server it started, it reads RSS, threads, open files and
CPU of every server process; after the sessions close it waits for Streamlit to drop their state (session TTL +
10 s), opens one session (the session store evicts on writes), waits for the app's heap trim, and reads them again.
Exit status 1 on any problem in a session, or server memory after the run over 200 MB above its warm start.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.oracle import Oracle  # noqa: E402
from bench.report import LoadResult, ServerStats, summary  # noqa: E402
from bench.server import start_server, stop_server  # noqa: E402
from bench.session import OTHER_PAGES, ProtocolSession, Tally  # noqa: E402
from cnnviz.engine.checkpoints import checkpoint_dir as default_checkpoint_dir  # noqa: E402
from cnnviz.heap_trim import COLLECT_EVERY_S, TRIM_EVERY_S  # noqa: E402

SETTLE_S = COLLECT_EVERY_S + TRIM_EVERY_S + 2  # one cycle collection and one heap trim after the last session


def server_processes(server) -> list[psutil.Process]:
    """The `streamlit run`, or every process under `cnnviz.serve` (replicas, HAProxy); none for ``--url``."""
    try:
        top = psutil.Process(server.process.pid)
        return top.children(recursive=True) if "cnnviz.serve" in top.cmdline() else [top]
    except (psutil.Error, AttributeError):
        return []


async def warm_up(url: str, result: LoadResult, oracle: Oracle, timeout_s: float) -> None:
    """One session alone opens every page once, draws, moves the slider: checked like the others, not timed."""
    solo = ProtocolSession(-1, url, Tally(), oracle, "mnist", timeout_s, seed=0, think=(0, 0))
    try:
        await solo.open("")  # a learner arrives at the home page
        for target in (*OTHER_PAGES, "explorer"):
            await solo.act("visit", lambda t=target: solo.client.navigate(t))
        await solo.draw("seven")
        await solo.slide()
    except Exception as exc:  # noqa: BLE001 - reported below, with the warm-up's other problems
        solo.problem("driver", f"warm-up: {exc!r}")
    finally:
        await solo.client.close()
        result.problems += solo.tally.problems  # session -1


async def run_load_async(sessions: int = 30, seconds: float = 60.0, checkpoint_dir: Path | None = None,
                         timeout_s: float = 240.0, session_ttl_s: int | None = None, cifar_share: float = 0.2,
                         rounds: int = 1, think: tuple[float, float] = (1.0, 4.0), url: str | None = None,
                         replicas: int = 0, seed: int = 0, log=print) -> LoadResult:
    checkpoint_dir = Path(checkpoint_dir or default_checkpoint_dir())
    oracle = Oracle(checkpoint_dir)
    if "mnist" not in oracle.models:
        raise SystemExit(f"no usable MNIST checkpoint in {checkpoint_dir}: train it or pass --checkpoint-dir")
    env = {"CNNVIZ_CHECKPOINT_DIR": str(checkpoint_dir)}
    if session_ttl_s is not None:
        env["STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"] = str(session_ttl_s)
    n_cifar = round(sessions * cifar_share) if "cifar10" in oracle.sampled else 0  # CIFAR sessions need its test set
    server = None if url else start_server(env=env, replicas=replicas)
    result = LoadResult(sessions=sessions, target=f"{url} (given)" if url else f"{server.url} ("
                        + (f"cnnviz.serve, {replicas} replicas)" if replicas else "streamlit run)"))
    url, procs = url or server.url, lambda: server_processes(server)
    peak = asyncio.create_task(peak_rss(procs, result))
    try:
        if server:
            result.stats["cold"] = ServerStats.read(procs())
        log(f"load against {result.target}; checkpoints {checkpoint_dir}; {n_cifar} CIFAR-10 sessions")
        await warm_up(url, result, oracle, timeout_s)
        result.stats["start"] = ServerStats.read(procs())
        for r in range(rounds):
            runners = [ProtocolSession(i, url, result, oracle, "cifar10" if i < n_cifar else "mnist", timeout_s,
                                       seed=seed * 1000 + r * sessions + i, think=think) for i in range(sessions)]
            opened = await asyncio.gather(*(s.open() for s in runners), return_exceptions=True)
            for s, outcome in zip(runners, opened, strict=True):
                if isinstance(outcome, BaseException):
                    s.problem("timeout" if isinstance(outcome, TimeoutError) else "driver", f"open: {outcome!r}")
            log(f"round {r + 1}: sessions open; running for {seconds:.0f} s")
            start, before, own = time.monotonic(), ServerStats.read(procs()), time.process_time()
            await asyncio.gather(*(s.run_until(start + seconds) for s, o in zip(runners, opened, strict=True)
                                   if not isinstance(o, BaseException)))
            result.window_s += time.monotonic() - start
            result.driver_cpu_s += time.process_time() - own
            result.stats["end"] = ServerStats.read(procs())
            result.server_cpu_s = (result.server_cpu_s if r else 0) + result.stats["end"].cpu_s - before.cpu_s
            await asyncio.gather(*(s.client.close() for s in runners), return_exceptions=True)
            if server:
                await asyncio.sleep(3)
                result.stats["closed"] = ServerStats.read(procs())
                drain = (session_ttl_s if session_ttl_s is not None else 120) + 10
                log(f"sessions closed; waiting {drain} + {SETTLE_S:.0f} s for the server to drop their state")
                await asyncio.sleep(drain)
                poke = ProtocolSession(-2, url, Tally(), oracle, "mnist", timeout_s, seed=0)
                await poke.open("")
                await poke.client.close()
                await asyncio.sleep(SETTLE_S)
                result.stats["after"] = ServerStats.read(procs())
                result.after_rounds_mb.append(result.stats["after"].rss_mb)
    finally:
        peak.cancel()
        if server:
            stop_server(server)
    if not server:
        result.stats, result.server_cpu_s = {}, float("nan")
    return result


async def peak_rss(procs, result: LoadResult) -> None:
    while True:
        result.peak_rss_mb = max(result.peak_rss_mb, ServerStats.read(procs()).rss_mb)
        await asyncio.sleep(0.5)


def run_load(**kwargs) -> LoadResult:
    """Run the load to completion, in a thread of its own: Playwright's sync API (the test suite's browser
    fixtures) may keep an event loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_load_async(**kwargs)).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat with new sessions: does memory keep growing?")
    parser.add_argument("--think", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"),
                        help="seconds a session pauses between interactions, drawn uniformly")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--session-ttl", type=int, default=None, help="server.disconnectedSessionTTL (default 120)")
    parser.add_argument("--timeout", type=float, default=240.0, help="longest wait for one page update (s)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help="a running server or balancer (none is started)")
    where.add_argument("--replicas", type=int, default=0, help="start python -m cnnviz.serve with N replicas")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.seconds <= 0 or args.replicas < 0 or not 0 <= args.think[0] <= args.think[1]:
        parser.error("needs --sessions >= 1, --seconds > 0, --replicas >= 0, --think 0 <= MIN <= MAX")
    result = run_load(sessions=args.sessions, seconds=args.seconds, rounds=args.rounds, think=tuple(args.think),
                      checkpoint_dir=args.checkpoint_dir, session_ttl_s=args.session_ttl, timeout_s=args.timeout,
                      url=args.url and args.url.rstrip("/"), replicas=args.replicas)
    print(summary(result))
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    return 0 if result.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
