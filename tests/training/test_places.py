"""The server-wide places and line for trainings (cnnviz.training.places), shared by a class server's processes.

Two ``Places`` (or two ``JobRegistry``) on one folder stand for two replicas: flock locks conflict between two opens
of one file inside one process as between processes. A killed process is a real child process.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cnnviz.engine.builder import PRESETS
from cnnviz.training import jobs as tj
from cnnviz.training import places
from cnnviz.training.places import Places
from tests.training.test_training import SLOW, TINY, _wait, fake_source

ROOT = Path(__file__).resolve().parents[2]


def test_one_place_two_replicas_first_come_first_served(tmp_path):
    a, b = Places(1, tmp_path), Places(1, tmp_path)
    ta, tb = a.take_ticket(), b.take_ticket()
    assert (a.position(ta), b.position(tb), a.position(tb)) == (1, 2, 2), "one line for both"
    assert b.take_place(tb) is None, "the second in line waits even though the place is free"
    place = a.take_place(ta)
    assert place is not None and (a.running(), b.running()) == (1, 1)
    assert b.waiting() == [tb.number] and b.position(tb) == 1
    assert b.take_place(tb) is None, "the one place is taken (by another replica)"
    tc = a.take_ticket()
    assert (a.position(tc), tc.number) == (2, tb.number + 1), "a later ticket queues behind the other replica's"
    a.release(place)
    assert b.running() == 0
    place_b = b.take_place(tb)
    assert place_b is not None and a.position(tc) == 1 and a.take_place(tc) is None
    b.release(place_b)
    assert a.take_place(tc) is not None and a.waiting() == []


def test_places_up_to_the_limit_and_leaving_the_line(tmp_path):
    a, b = Places(2, tmp_path), Places(2, tmp_path)
    first = a.take_place(a.take_ticket())
    second = b.take_place(b.take_ticket())
    assert None not in (first, second) and a.running() == 2
    t1, t2 = a.take_ticket(), b.take_ticket()
    a.give_back(t1)  # its session ended while it waited
    a.give_back(t1)  # twice is harmless
    assert b.position(t2) == 1 and b.take_place(t2) is None
    b.release(second)
    assert b.take_place(t2) is not None and a.running() == 2


def test_a_killed_process_frees_its_place_and_leaves_the_line(tmp_path):
    script = ("import sys, time; from cnnviz.training.places import Places; p = Places(1, sys.argv[1]); "
              "p.take_place(p.take_ticket()); t = p.take_ticket(); print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "ready"
        here = Places(1, tmp_path)
        mine = here.take_ticket()
        assert here.running() == 1 and here.position(mine) == 2, "its place and its waiting ticket count"
        assert here.take_place(mine) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert here.position(mine) == 1 and len(list(tmp_path.glob("wait-*"))) == 1, "the dead ticket is removed"
    assert here.running() == 0 and here.take_place(mine) is not None


@pytest.mark.parametrize("no_fcntl", [False, True], ids=["no folder", "no fcntl"])
def test_without_a_folder_or_flock_the_places_are_counted_in_this_process(monkeypatch, tmp_path, no_fcntl):
    if no_fcntl:
        monkeypatch.setattr(places, "fcntl", None)
    p = Places(1, tmp_path / "places" if no_fcntl else None)
    assert not p.shared
    t1, t2 = p.take_ticket(), p.take_ticket()
    assert p.take_place(t2) is None
    place = p.take_place(t1)
    assert place is not None and p.running() == 1 and p.position(t2) == 1 and p.take_place(t2) is None
    p.release(place)
    assert p.take_place(t2) is not None and p.waiting() == []
    assert not (tmp_path / "places").exists(), "no file made"


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Places(0)


@pytest.mark.slow
def test_two_replicas_with_a_limit_of_one_share_it(tmp_path):
    """Two registries on one folder (two replicas of a class server): the second replica's training waits for the
    first's, is shown first in line, and starts by itself (its poller) when the other replica's training ends."""
    one, two = tj.JobRegistry(limit=1, data=fake_source, folder=str(tmp_path)), \
        tj.JobRegistry(limit=1, data=fake_source, folder=str(tmp_path))
    first = one.submit("a", PRESETS[TINY], SLOW)
    second = two.submit("b", PRESETS[TINY], dataclasses.replace(SLOW, steps=20))
    third = one.submit("c", PRESETS[TINY], dataclasses.replace(SLOW, steps=20))
    try:
        _wait(lambda: first.progress().step > 0)
        assert (second.progress().state, second.progress().queue_position) == ("queued", 1)
        assert third.progress().queue_position == 2, "behind the other replica's training, though in first's process"
        assert one.counts() == two.counts() == (1, 2)
        first.stop()
        _wait(lambda: second.progress().step > 0 or second.done(), timeout=30)
        assert third.progress().state == "queued" and third.progress().queue_position == 1
        _wait(second.done, timeout=60)
        _wait(lambda: third.progress().state != "queued", timeout=10)
        _wait(third.done, timeout=60)
        assert second.progress().step == third.progress().step == 20
        assert one.counts() == two.counts() == (0, 0)
        _wait(lambda: one._poller is None and two._poller is None, timeout=5)  # no one waits: the pollers end
    finally:
        one.stop_all()
        two.stop_all()


def test_the_server_registry_reads_the_shared_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_TRAINING_PLACES", str(tmp_path))
    monkeypatch.setenv("CNNVIZ_TRAINING_LIMIT", "3")
    registry = tj.JobRegistry()
    assert registry.places.folder == tmp_path and registry.places.limit == 3
    monkeypatch.delenv("CNNVIZ_TRAINING_PLACES")
    monkeypatch.setenv("CNNVIZ_TRAINING_LIMIT", "0")
    registry = tj.JobRegistry()
    assert not registry.places.shared and registry.limit == 1, "a plain server counts its own; a limit of 0 is 1"


def test_a_ticket_is_named_before_the_next_one_is_given(tmp_path):
    """First come, first served: when ticket N+1 exists, ticket N's wait- file exists too (it is made under the
    counter's lock), so N+1 can never look first while N waits."""
    a, b = Places(1, tmp_path), Places(1, tmp_path)
    t1 = a.take_ticket()
    assert (tmp_path / f"wait-{t1.number:012d}").exists() and not list(tmp_path.glob(".new-*"))
    t2 = b.take_ticket()
    assert b.position(t2) == 2 and b.take_place(t2) is None


def test_an_unusable_folder_gives_a_message_not_a_traceback(tmp_path):
    """The shared folder unusable (here a file in its place): submitting says so, the counts fall back to this
    process's own, nothing is left queued, and a later submit works once the folder can be made."""
    folder = tmp_path / "places"
    folder.write_text("a file where the folder should be")  # makes mkdir and open fail, even for root
    registry = tj.JobRegistry(limit=1, data=fake_source, folder=str(folder))
    with pytest.raises(tj.JobError, match="cannot be used"):
        registry.submit("a", PRESETS[TINY], SLOW)
    assert registry.counts() == (0, 0) and registry.active("a") is None, "nothing left queued"
    folder.unlink()
    job = registry.submit("a", PRESETS[TINY], dataclasses.replace(SLOW, steps=3))
    try:
        assert job.progress().state in ("starting", "running")
    finally:
        registry.stop_all()


def test_the_poller_keeps_asking_after_an_error(tmp_path, monkeypatch):
    """A waiting training is started by the poller even when asking for a place failed once (an OSError): the
    poller logs it and asks again, instead of dying and leaving the ticket first in line on every replica."""
    monkeypatch.setattr(tj, "WAIT_POLL_S", 0.05)
    one = tj.JobRegistry(limit=1, data=fake_source, folder=str(tmp_path))
    blocker = Places(1, tmp_path)
    held = blocker.take_place(blocker.take_ticket())  # another replica's training
    calls = []
    real = one.places.take_place

    def flaky(ticket):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(24, "Too many open files")
        return real(ticket)

    monkeypatch.setattr(one.places, "take_place", flaky)
    job = one.submit("a", PRESETS[TINY], dataclasses.replace(SLOW, steps=5))
    try:
        _wait(lambda: len(calls) >= 4, timeout=10)
        assert job.progress().state == "queued" and one._poller.is_alive()
        blocker.release(held)
        _wait(job.done, timeout=120)
        assert job.progress().state == "finished"
        _wait(lambda: one._poller is None, timeout=5)
    finally:
        one.stop_all()
