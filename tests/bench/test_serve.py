"""Serving a class (issue 14): `python -m cnnviz.serve` with 2 replicas behind HAProxy on free loopback ports.

The balancer answers health and serves the page; it pins a browser to a replica with a cookie (a session's images
live in its replica only, so they load through the balancer only if it is sticky); a websocket session gets a run
with the right numbers through it; and when a replica is killed, its sessions reconnect to the other one and go on
with the right numbers, the other replica's sessions do not notice, and the dead replica is started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.oracle import Oracle
from bench.session import ProtocolSession, Tally
from cnnviz.devserver import start_server, stop_server
from cnnviz.serve import healthy

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()),
                                                   reason="no HAProxy here (apt-get install haproxy)")]


def run(coroutine):
    with ThreadPoolExecutor(1) as pool:  # a thread of its own: a browser fixture may run an event loop in this one
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="module")
def balancer():
    server = start_server(replicas=2, timeout=90)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def oracle():
    from cnnviz.engine.checkpoints import checkpoint_dir

    return Oracle(checkpoint_dir())


def replicas(server) -> dict[str, tuple[int, int]]:
    """Cookie value -> (pid, port) of each replica, from cnnviz.serve's log (the latest start of each)."""
    found = re.findall(r"replica (\d+): pid (\d+), 127\.0\.0\.1:(\d+)", server.log())
    return {f"r{i}": (int(pid), int(port)) for i, pid, port in found}


def test_the_balancer_serves_the_page_and_sets_a_sticky_cookie(balancer):
    assert healthy(balancer.url)
    with urllib.request.urlopen(balancer.url + "/", timeout=30) as resp:
        page = resp.read().decode()
        cookie = resp.headers.get("Set-Cookie", "")
    assert '<div id="root">' in page, page[:300]  # Streamlit's page, from a replica
    assert re.search(r"CNNVIZ_REPLICA=r[12];", cookie), f"no sticky cookie in {cookie!r}"
    request = urllib.request.Request(balancer.url + "/", headers={"Cookie": "CNNVIZ_REPLICA=r2"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert "CNNVIZ_REPLICA" not in resp.headers.get("Set-Cookie", ""), "a pinned browser keeps its cookie"


def test_the_replicas_share_one_line_for_trainings(balancer):
    """Each replica's registry reads $CNNVIZ_TRAINING_PLACES: the same folder for all (cnnviz.serve sets it), so the
    server-wide limit of trainings counts every replica's (the sharing itself: tests/training/test_places.py)."""
    found = set()
    for pid, _ in replicas(balancer).values():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        found.add(next((v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"CNNVIZ_TRAINING_PLACES=")), None))
    assert len(found) == 1 and None not in found, found
    assert Path(found.pop()).is_dir()


def test_a_websocket_session_gets_a_checked_run_through_the_balancer(balancer, oracle):
    tally = Tally()

    async def learners():
        sessions = [ProtocolSession(i, balancer.url, tally, oracle, "mnist", timeout_s=60, seed=i, think=(0, 0))
                    for i in range(2)]
        try:
            for s in sessions:
                await s.open()
            await sessions[0].draw("seven")
            return [s.client.cookies.get("CNNVIZ_REPLICA") for s in sessions], sessions[0].client.seen_media
        finally:
            for s in sessions:
                await s.client.close()

    cookies, media = run(learners())
    assert sorted(cookies) == ["r1", "r2"], "two learners at once are spread over the two replicas"
    assert tally.checks >= 1 and not tally.problems, tally.problems
    assert media, "the page's images were fetched through the balancer (from the replica that made them)"


def test_a_killed_replica_is_restarted_and_its_sessions_continue_on_the_other(balancer, oracle):
    before = replicas(balancer)
    tally = Tally()

    async def scenario():
        sessions = {}
        for i in range(8):  # new sessions until there is one on each replica
            s = ProtocolSession(i, balancer.url, tally, oracle, "mnist", timeout_s=90, seed=i, think=(0, 0))
            await s.open()
            sessions.setdefault(s.client.cookies["CNNVIZ_REPLICA"], s)
            if len(sessions) == 2:
                break
        victim, survivor = sessions["r1"], sessions["r2"]
        await victim.draw("one")
        os.kill(before["r1"][0], signal.SIGKILL)
        await survivor.draw("two")  # the other replica's learner sees nothing
        reconnects = survivor.client.reconnects
        await victim.draw("seven")  # its websocket closed: reconnects to r2, reruns, and the numbers are right
        for s in sessions.values():
            await s.client.close()
        return reconnects, victim.client.reconnects, victim.client.cookies, survivor.client.cookies

    survivor_reconnects, victim_reconnects, victim_cookies, survivor_cookies = run(scenario())
    assert survivor_reconnects == 0 and "CNNVIZ_MOVED" not in survivor_cookies
    assert victim_reconnects == 1 and victim_cookies["CNNVIZ_REPLICA"] == "r2"
    assert victim_cookies.get("CNNVIZ_MOVED") == "r1", "the page can tell the learner they were moved"
    assert tally.checks >= 3 and not tally.problems, tally.problems
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (replicas(balancer)["r1"][0] != before["r1"][0]
                                               and healthy(f"http://127.0.0.1:{before['r1'][1]}")):
        time.sleep(0.5)
    assert replicas(balancer)["r1"][0] != before["r1"][0], balancer.log()
    assert healthy(f"http://127.0.0.1:{before['r1'][1]}"), "replica 1 is started again on its port"
    assert "replica 1 (pid" in balancer.log() and "exited" in balancer.log()
    assert json.dumps(replicas(balancer)["r2"]) == json.dumps(before["r2"]), "replica 2 was left alone"
