"""The places for trainings that every process of one server shares, and the line to them, in a folder of lock files.

A class server runs several Streamlit processes, and "at most N trainings at once, the rest wait in line" must hold
across all of them: each process's ``JobRegistry`` asks this folder (``$CNNVIZ_TRAINING_PLACES``) for a place. The
kernel drops a process's ``flock`` locks however it ends, so a dead replica frees its places. Local filesystem, one
user, one limit; without a folder (one process) or ``fcntl`` (Windows) this process counts alone. See docs/serving.md.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: one process's count (a class server runs on Linux)
    fcntl = None


@dataclass
class Ticket:
    """A place in the line: its number, and (shared) the open, locked ``wait-`` file that says it still waits."""

    number: int
    fd: int | None = None
    path: Path | None = None


class Places:
    """``limit`` places for trainings and the line to them, shared through ``folder`` (this process's alone when None).

    The folder holds ``place-<i>`` (i < limit; a running training's process holds an exclusive ``flock`` on one),
    ``ticket`` (the last ticket number, read and written under its own lock) and ``wait-<number>`` (a waiting
    training's ticket, locked by its process while it waits; made under the ``ticket`` lock). The first ticket in
    number order takes the next free place; a ``wait-`` file nobody holds is a dead process's, and whoever sees it
    removes it. ``flock`` locks conflict between two opens of one file even in one process, so the same checks work
    for a process's own files.

    Errors of the folder (removed, not writable, too many open files) are raised as ``OSError``; the caller says so.
    """

    def __init__(self, limit: int, folder: str | os.PathLike | None = None) -> None:
        if limit < 1:
            raise ValueError(f"the training limit must be at least 1, not {limit}")
        self.limit = limit
        self.folder = Path(folder) if folder and fcntl is not None else None
        self._lock = threading.Lock()  # the in-process count and line
        self._held: set[int] = set()
        self._line: list[int] = []
        self._last = 0

    @property
    def shared(self) -> bool:
        return self.folder is not None

    def _open(self, name: str) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        return os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)

    # -- the line ---------------------------------------------------------------------------------------------
    def take_ticket(self) -> Ticket:
        """A ticket behind every ticket given out so far, on this server."""
        if not self.shared:
            with self._lock:
                self._last += 1
                self._line.append(self._last)
                return Ticket(self._last)
        counter = self._open("ticket")
        try:
            fcntl.flock(counter, fcntl.LOCK_EX)
            number = int(os.pread(counter, 32, 0).decode() or 0) + 1
            # Locked before it gets its name (a wait- file nobody holds is a dead process's), and named before the
            # counter is unlocked (no later ticket can look first meanwhile).
            new = f".new-{os.getpid()}-{threading.get_ident()}-{number}"
            fd = self._open(new)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                path = self.folder / f"wait-{number:012d}"
                os.rename(self.folder / new, path)
            except OSError:
                os.close(fd)
                raise
            os.ftruncate(counter, 0)
            os.pwrite(counter, str(number).encode(), 0)
        finally:
            os.close(counter)  # and its lock
        return Ticket(number, fd, path)

    def give_back(self, ticket: Ticket) -> None:
        """Leave the line (the training started, stopped or its session ended). Safe to call twice."""
        if not self.shared:
            with self._lock:
                if ticket.number in self._line:
                    self._line.remove(ticket.number)
            return
        if ticket.fd is None:
            return
        try:
            os.unlink(ticket.path)  # before the lock goes: no one may take it for a dead process's meanwhile
        except OSError:
            pass
        os.close(ticket.fd)
        ticket.fd = None

    def waiting(self) -> list[int]:
        """The numbers of the tickets waiting on this server, in order; removes dead processes' tickets."""
        if not self.shared:
            with self._lock:
                return sorted(self._line)
        numbers = []
        for path in self.folder.glob("wait-*"):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # it has just left the line
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its process holds it: waiting
                numbers.append(int(path.name.removeprefix("wait-")))
            else:  # nobody holds it: its process has died
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return sorted(numbers)

    def position(self, ticket: Ticket) -> int:
        """1 for the first in line on this server."""
        return 1 + sum(1 for n in self.waiting() if n < ticket.number)

    # -- the places -------------------------------------------------------------------------------------------
    def take_place(self, ticket: Ticket) -> int | None:
        """A place for the first ticket in line, if one is free: a handle to pass to ``release``. The ticket is then
        given back. None when the ticket is not first, or every place is taken (ask again later)."""
        if self.position(ticket) != 1:
            return None
        if not self.shared:
            with self._lock:
                free = next((i for i in range(self.limit) if i not in self._held), None)
                if free is None:
                    return None
                self._held.add(free)
            self.give_back(ticket)
            return free
        for i in range(self.limit):
            fd = self._open(f"place-{i}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.give_back(ticket)
            return fd
        return None

    def release(self, place: int) -> None:
        """Free a place taken with ``take_place``."""
        if not self.shared:
            with self._lock:
                self._held.discard(place)
            return
        os.close(place)

    def running(self) -> int:
        """How many places are taken on this server. A free place is locked shared for an instant to know it: a
        ``take_place`` at that instant tries the next one, or asks again later."""
        if not self.shared:
            with self._lock:
                return len(self._held)
        taken = 0
        for i in range(self.limit):
            fd = self._open(f"place-{i}")
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                taken += 1
            finally:
                os.close(fd)
        return taken
