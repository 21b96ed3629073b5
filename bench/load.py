"""Load test: N real Streamlit sessions (bench/session.py) against the app, every number they see checked.

    python bench/load.py [--sessions 30] [--seconds 60] [--replicas N | --url URL] [--session-ttl S]

Against a `streamlit run` or `python -m cnnviz.serve` (``--replicas``) started here, whose processes' RSS, threads,
fds and CPU it reads (last once Streamlit has dropped the closed sessions and the app has trimmed its heap), or a
running server (``--url``). Exit status 1 on any problem in a session, or memory growth over 50 MB (from warm to
after the sessions closed)."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.oracle import Oracle  # noqa: E402
from bench.report import LoadResult, ServerStats, summary  # noqa: E402
from bench.session import OTHER_PAGES, ProtocolSession, Tally  # noqa: E402
from cnnviz.devserver import start_server, stop_server  # noqa: E402
from cnnviz.engine.checkpoints import checkpoint_dir as default_checkpoint_dir  # noqa: E402
from cnnviz.heap_trim import COLLECT_EVERY_S, TRIM_EVERY_S  # noqa: E402

SETTLE_S = COLLECT_EVERY_S + TRIM_EVERY_S + 2  # one cycle collection and one heap trim after the last session


def server_processes(server) -> list[psutil.Process]:  # streamlit, or all under cnnviz.serve; none for --url
    try:
        top = psutil.Process(server.process.pid)
        return top.children(recursive=True) if "cnnviz.serve" in top.cmdline() else [top]
    except (psutil.Error, AttributeError):
        return []


async def warm_up(url: str, result: LoadResult, oracle: Oracle, timeout_s: float, replica: int = 1) -> None:
    """Sessions -1 on each replica (its sticky cookie set): every page once, a drawing, and a test sample of each
    model the load uses, checked but not timed. What they load once per process (models, test sets, examples) is
    the "warm" memory the load's growth is measured from."""
    for model in ("mnist", *(("cifar10",) if "cifar10" in oracle.sampled else ())):
        solo = ProtocolSession(-1, url, Tally(), oracle, model, timeout_s, seed=0, think=(0, 0))
        solo.client.cookies["CNNVIZ_REPLICA"] = f"r{replica}"  # cnnviz.serve's names; a plain server ignores it
        await solo.open("")  # a learner arrives at the home page
        for target in (*OTHER_PAGES, "explorer"):
            await solo.act("visit", lambda t=target, s=solo: s.client.navigate(t))
        if model == "mnist":
            await solo.guarded(solo.draw("seven"))
        await solo.guarded(solo.new_sample())
        await solo.guarded(solo.slide())
        await solo.client.close()
        result.problems += solo.tally.problems


async def run_load_async(sessions: int = 30, seconds: float = 60.0, checkpoint_dir: Path | None = None,
                         timeout_s: float = 240.0, session_ttl_s: int | None = None, cifar_share: float = 0.2,
                         think: tuple[float, float] = (1.0, 4.0), url: str | None = None, replicas: int = 0,
                         seed: int = 0, log=print) -> LoadResult:
    oracle = Oracle(Path(checkpoint_dir or default_checkpoint_dir()))
    env = {"CNNVIZ_CHECKPOINT_DIR": str(checkpoint_dir or default_checkpoint_dir())}
    if session_ttl_s is not None:
        env["STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"] = str(session_ttl_s)
    n_cifar = round(sessions * cifar_share) if "cifar10" in oracle.sampled else 0  # CIFAR sessions need its test set
    server = None if url else start_server(env=env, replicas=replicas)
    result = LoadResult(sessions=sessions, target=f"{url} (given)" if url else f"{server.url} ("
                        + (f"cnnviz.serve, {replicas} replicas)" if replicas else "streamlit run)"))
    url, stats = url or server.url, lambda: ServerStats.read(server_processes(server))
    try:
        log(f"load against {result.target}; {env['CNNVIZ_CHECKPOINT_DIR']}; {n_cifar} CIFAR-10 sessions")
        result.stats["cold"] = stats()
        await asyncio.gather(*(warm_up(url, result, oracle, timeout_s, r) for r in range(1, max(1, replicas) + 1)))
        result.stats["start"] = stats()
        runners = [ProtocolSession(i, url, result, oracle, "cifar10" if i < n_cifar else "mnist", timeout_s,
                                   seed=seed * 1000 + i, think=think) for i in range(sessions)]
        opened = await asyncio.gather(*(s.guarded(s.open()) for s in runners))
        log(f"{sum(opened)} sessions open; running for {seconds:.0f} s")
        start, own, result.stats["before"] = time.monotonic(), time.process_time(), stats()
        await asyncio.gather(*(s.run_until(start + seconds) for s, ok in zip(runners, opened, strict=True) if ok))
        result.window_s, result.driver_cpu_s = time.monotonic() - start, time.process_time() - own
        result.stats["end"] = stats()
        result.server_cpu_s = result.stats["end"].cpu_s - result.stats["before"].cpu_s
        result.reconnects = sum(s.client.reconnects for s in runners)
        await asyncio.gather(*(s.client.close() for s in runners), return_exceptions=True)
        if server:
            await asyncio.sleep(3)
            result.stats["closed"] = stats()
            drain = (session_ttl_s if session_ttl_s is not None else 120) + 10
            log(f"sessions closed; waiting {drain} + {SETTLE_S:.0f} s for the server to drop their state")
            # no visit afterwards (a replica after a class): the app itself drops expired sessions' state
            # (ui.expire_closed_sessions, before each of heap_trim's collections)
            await asyncio.sleep(drain + SETTLE_S)
            result.stats["after"] = stats()
    finally:
        if server:
            stop_server(server)
    if not server:
        result.stats, result.server_cpu_s = {}, float("nan")
    return result


def run_load(**kwargs) -> LoadResult:
    """Run the load to completion, in a thread of its own: Playwright's sync API (the test suite's browser
    fixtures) may keep an event loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_load_async(**kwargs)).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--session-ttl", type=int, default=None, help="server.disconnectedSessionTTL (default 120)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help="a running server or balancer (none is started)")
    where.add_argument("--replicas", type=int, default=0, help="start python -m cnnviz.serve with N replicas")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.seconds <= 0 or args.replicas < 0:
        parser.error("needs --sessions >= 1, --seconds > 0, --replicas >= 0")
    result = run_load(sessions=args.sessions, seconds=args.seconds, session_ttl_s=args.session_ttl,
                      url=args.url and args.url.rstrip("/"), replicas=args.replicas)
    print(summary(result))
    return 0 if result.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
