"""Trainings that run in the background for the "Train a CNN" page: one per session, a server-wide limit, a queue.

A ``TrainingJob``'s supervising thread starts one training in a child process (``child``), reads its progress into
the ``Progress`` record the page draws, forwards pause, resume and stop, and rebuilds the trained network like an
upload. ``JobRegistry`` runs at most ``limit`` and queues the rest. Children are forked from multiprocessing's fork
server, never from the threaded server itself (why: docs/design.md). No streamlit.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from cnnviz.engine.builder import PRESETS, NetworkConfig, validate
from cnnviz.engine.checkpoints import CheckpointError, load_uploaded_pair
from cnnviz.engine.models import REGISTRY, ModelCard
from cnnviz.training import child
from cnnviz.training.child import THREADS
from cnnviz.training.loop import Settings
from cnnviz.training.places import Places, Ticket

MAX_STEPS = 20_000  # step budget per training
MAX_PAUSE_S = 600.0  # a training paused longer than this stops and frees its place
CURVE_POINTS = 400  # points kept per curve for drawing
WAIT_POLL_S = 0.5  # how often a process with trainings in line asks whether a place is free (another one's may be)
LOG = logging.getLogger(__name__)
OWNER_CHECK_EVERY_S = 2.0  # how often a running job asks whether its browser session is still there
EXIT_WAIT_S = 10.0  # how long a child may take to exit after its last message (or SIGTERM) before it is killed
ACTIVE = ("queued", "starting", "running", "paused")
CONTEXT = multiprocessing.get_context("forkserver")  # see the module's docstring: never "fork" from the server
CONTEXT.set_forkserver_preload([child.__name__])  # instead of the default ["__main__"]: the server's script
VIEWS = ("filters", "maps", "digit_probs", "digit", "digit_label")  # the child's latest look, replaced whole


def start_fork_server() -> None:
    """Start the fork server if it is not running. Returns at once; it imports torch meanwhile (seconds).

    A training started later forks at once. The fork server inherits the server's environment and working directory
    as they are now: ``cnnviz`` must be importable from there, or each child imports torch itself (spawn's cost).

    Does nothing inside a training's process while it starts: multiprocessing runs the parent's main script again
    there (under AppTest that is the Train page itself, which calls this), and a fork server may not start then.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    multiprocessing.forkserver.ensure_running()


class JobError(Exception):
    """A training cannot be started (one per session, a bad build, too many steps). The message says why."""


def default_settings(preset: str | None = None, dataset: str = "mnist") -> Settings:
    """The page's default hyperparameters for a preset.

    Shipped architecture: one epoch of MNIST (938 steps of 64), SGD with momentum, one-cycle to 0.05. Tiny: 300 steps
    of 128 with Adam. Deep sigmoid: plain SGD. What they reach: docs/performance.md.
    """
    if preset is not None and preset.startswith("Shipped"):
        return Settings(optimizer="momentum", lr=0.05, schedule="onecycle", batch_size=64, steps=938, augment=False,
                        seed=0, weight_decay=1e-4)
    if preset is not None and preset.startswith("Deep"):
        return Settings(optimizer="sgd", lr=0.1, schedule="constant", batch_size=64, steps=600, augment=False)
    return Settings(optimizer="adam", lr=0.01, schedule="onecycle", batch_size=128, steps=300, augment=False)


@dataclass(frozen=True)
class Progress:
    """Everything the page shows about a job, copied at one moment (safe to read from another thread)."""

    state: str  # "queued", "starting" (its process loads torch: seconds), "running", "paused", "finished",
    #             "stopped", "failed"
    step: int
    steps: int
    epoch: int
    queue_position: int  # 1 = next to start; 0 when not queued
    steps_per_s: float
    seconds_left: float | None
    accuracy: float | None  # percent, latest held-out accuracy
    loss: tuple[tuple[int, float], ...]  # (step, training loss), averaged to at most CURVE_POINTS points
    held_out: tuple[tuple[int, float], ...]  # (step, held-out accuracy %)
    lr: tuple[tuple[int, float], ...]
    grad_norms: dict[str, tuple[tuple[int, float], ...]]  # layer -> (step, ||dL/dW||)
    filters: np.ndarray | None  # first convolution's weights (C_out, C_in, k, k)
    digit: np.ndarray | None  # the fixed test digit's pixels (C, H, W) in [0, 1]
    digit_label: int | None
    maps: dict[str, np.ndarray]  # layer -> the fixed digit's feature maps (C, H, W) at this step
    digit_probs: np.ndarray | None
    message: str  # why it stopped or failed, for the learner


def _curve(points: list[tuple[int, float]], limit: int = CURVE_POINTS) -> tuple[tuple[int, float], ...]:
    """At most ``limit`` points: consecutive points averaged in equal groups (the last step kept)."""
    if len(points) <= limit:
        return tuple(points)
    size = math.ceil(len(points) / limit)
    out = []
    for i in range(0, len(points), size):
        group = points[i:i + size]
        out.append((group[-1][0], float(np.mean([v for _, v in group]))))
    return tuple(out)


class TrainingJob:
    """One training of a network built from blocks, in a child process. Created by ``JobRegistry.submit``."""

    def __init__(self, registry: JobRegistry, owner: str, cfg: NetworkConfig, settings: Settings, dataset: str,
                 data_dir: str | None, alive: Callable[[], bool] | None) -> None:
        self.registry, self.owner, self.cfg, self.settings = registry, owner, cfg, settings
        self.dataset, self.data_dir, self.alive = dataset, data_dir, alive
        self.state, self.message = "queued", ""
        self.step, self.epoch = 0, 1
        self.train_seconds = 0.0
        self._lock = threading.Lock()
        self._stop = False  # a stop was asked for: the child ends its training and sends what it has learned
        self._ended_by: str | None = None  # why the server ended the child itself (nothing is kept)
        self._paused_since: float | None = None
        self._losses: list[tuple[int, float]] = []
        self._lrs: list[tuple[int, float]] = []
        self._held_out: list[tuple[int, float]] = []
        self._norms: dict[str, list[tuple[int, float]]] = {}
        self._views: dict[str, Any] = {"filters": None, "maps": {}, "digit_probs": None, "digit": None,
                                       "digit_label": None}
        self._result: tuple[nn.Module, ModelCard] | None = None
        self.finished_at: float | None = None  # time.time() when it ended
        self._done = threading.Event()
        self._conn = None  # the server's end of the pipe
        self._send_lock = threading.Lock()
        self.process: multiprocessing.process.BaseProcess | None = None
        self.thread: threading.Thread | None = None

    # -- control (any thread) --------------------------------------------------------------------------------
    def pause(self) -> None:
        """Ask the child to pause: the state reads "paused" once the step in flight is done."""
        with self._lock:
            running = self.state == "running"
        if running:
            self._send("pause")

    def resume(self) -> None:
        with self._lock:
            resumable = self.state in ("running", "paused")
            if resumable:
                self.state, self._paused_since = "running", None
        if resumable:
            self._send("resume")

    def stop(self, message: str = "stopped by you") -> None:
        """Stop: a running or paused job keeps what it has learned; a queued one leaves the queue."""
        with self._lock:
            self._stop = True
            if not self.message:
                self.message = message
        self._send("stop")
        self.registry._dequeue(self)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> tuple[nn.Module, ModelCard] | None:
        """The trained model (eval mode, never changed again) and its card, once the job has ended with weights."""
        return self._result

    def progress(self) -> Progress:
        with self._lock:
            per_s = self.step / self.train_seconds if self.train_seconds > 0 else 0.0
            left = (self.settings.steps - self.step) / per_s if per_s > 0 and self.state in ACTIVE else None
            return Progress(
                state=self.state, step=self.step, steps=self.settings.steps, epoch=self.epoch,
                queue_position=self.registry.position(self), steps_per_s=per_s, seconds_left=left,
                accuracy=self._held_out[-1][1] if self._held_out else None,
                loss=_curve(self._losses), held_out=tuple(self._held_out), lr=_curve(self._lrs),
                grad_norms={k: _curve(v) for k, v in self._norms.items()}, filters=self._views["filters"],
                digit=self._views["digit"], digit_label=self._views["digit_label"], maps=dict(self._views["maps"]),
                digit_probs=self._views["digit_probs"], message=self.message,
            )

    def _send(self, message: str) -> None:
        with self._send_lock:
            if self._conn is None:
                return
            try:
                self._conn.send(message)
            except OSError:  # the child has ended: its supervisor records how
                pass

    def _end_process(self, message: str) -> None:
        """End the job at once, keeping nothing (the session ended, the server stops): the child is terminated."""
        with self._lock:
            self._ended_by = self._ended_by or message
            process = self.process
        if not self.registry._dequeue(self, message) and process is not None and process.is_alive():
            process.terminate()

    # -- the child process and its supervisor -----------------------------------------------------------------
    def _start(self) -> None:
        """Start the thread that starts the child and supervises it (the registry calls this when a place is free)."""
        with self._lock:
            ended = self._stop or self._ended_by is not None
            if not ended:
                self.state = "starting"
        if ended:
            self._finish("stopped", self._ended_by or self.message)
            return
        self.thread = threading.Thread(target=self._run, name=f"cnnviz-train-{self.owner[:8]}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """Start the child, then supervise it. Not under the lock: the first training waits seconds for the fork
        server's imports, while the page reads ``progress()``."""
        with self._lock:  # a stop() from now on reaches the child through the pipe
            ended = self._stop or self._ended_by is not None
            if not ended:
                self._conn, child_conn = CONTEXT.Pipe()
                self.process = CONTEXT.Process(
                    target=child.main, name=f"cnnviz-train-{self.owner[:8]}", daemon=True,
                    args=(child_conn, self.cfg.to_args(), asdict(self.settings), self.dataset, self.data_dir,
                          self.registry.data))
        if ended:
            self._finish("stopped", self._ended_by or self.message)
            return
        try:
            self.process.start()
        except Exception as exc:  # noqa: BLE001 - a message on the page, never a traceback
            with self._send_lock:
                self._conn.close()
                self._conn = None
            self._finish("failed", f"training failed: its process could not start ({type(exc).__name__}: {exc})")
            return
        finally:
            child_conn.close()  # the child holds its own copy: its end closes when the child exits
        with self._lock:  # _end_process() found no started process to end: end it now
            ended = self._ended_by is not None
        if ended:
            self.process.terminate()
        self._supervise()

    def _supervise(self) -> None:
        """Read the child's messages until its pipe closes; end it when its owner is gone; then say how it ended."""
        conn, process = self._conn, self.process
        end = None
        last_check = time.monotonic()
        try:
            while end is None:
                if conn.poll(0.5):
                    message = conn.recv()
                    if message["kind"] == "progress":
                        self._apply(message)
                    else:
                        end = message
                if time.monotonic() - last_check > OWNER_CHECK_EVERY_S:
                    last_check = time.monotonic()
                    self._check_owner()
        except (EOFError, OSError):  # the child is gone without its last message
            pass
        except Exception as exc:  # noqa: BLE001 - a message this cannot read: end the child, say why on the page
            process.kill()
            end = {"state": "failed", "message": f"training failed: {type(exc).__name__}: {exc}", "weights": None}
        finally:
            process.join(EXIT_WAIT_S)
            if process.exitcode is None:
                process.kill()
                process.join()
            with self._send_lock:
                conn.close()
                self._conn = None
        self._ended(end, process.exitcode)

    def _check_owner(self) -> None:
        if self._owner_gone():
            self._end_process("stopped: the browser session ended")
        elif self._paused_since is not None and time.monotonic() - self._paused_since > MAX_PAUSE_S:
            self.stop(f"stopped: paused for more than {MAX_PAUSE_S / 60:g} minutes")

    def _apply(self, message: dict[str, Any]) -> None:
        """Add what the child learned since its last message."""
        with self._lock:
            if self.state in ("starting", "running", "paused"):
                if message["state"] == "paused" and self.state != "paused":
                    self._paused_since = time.monotonic()
                self.state = message["state"]
            self.step, self.epoch, self.train_seconds = message["step"], message["epoch"], message["train_seconds"]
            self._losses += message["loss"]
            self._lrs += message["lr"]
            self._held_out += message["held_out"]
            for name, points in message["norms"].items():
                self._norms.setdefault(name, []).extend(points)
            self._views.update({k: message[k] for k in VIEWS if k in message})

    def _ended(self, end: dict[str, Any] | None, exitcode: int | None) -> None:
        if self._ended_by is not None:
            self._finish("stopped", self._ended_by)
        elif end is None:
            how = (f"killed by signal {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
                   else f"exit code {exitcode}")
            self._finish("failed", f"training failed: its process ended unexpectedly ({how}), perhaps for lack of "
                                   "memory. Start it again; a smaller network or batch needs less.")
        elif end["weights"] is None:  # failed (a message why), or stopped before the first step
            self._finish(end["state"], end["message"] if end["state"] == "failed" else self.message or end["message"])
        else:
            try:
                self._result = load_uploaded_pair(end["weights"], end["card"], "the trained weights", "its card")
            except CheckpointError as exc:
                self._finish("failed", f"training failed: the trained network could not be read back: {exc}")
                return
            self._finish(end["state"], self.message if end["state"] == "stopped" else "")

    def _finish(self, state: str, message: str = "") -> None:
        with self._lock:
            self.state, self.finished_at = state, time.time()
            if message:
                self.message = message
        self._done.set()
        self.registry._finished(self)

    def _owner_gone(self) -> bool:
        try:
            return self.alive is not None and not self.alive()
        except Exception:  # noqa: BLE001 - a failing check counts as gone
            return True


@dataclass
class JobRegistry:
    """The server's trainings: at most ``limit`` run at once, the rest wait in order; one active job per owner.

    The places and the line are shared with the server's other processes through ``places`` (a folder of lock
    files, ``$CNNVIZ_TRAINING_PLACES``, which ``cnnviz.serve`` sets for its replicas); without
    it (one ``streamlit run``) they are this process's own. This registry keeps its own jobs (one per owner is
    checked here: a session lives in one process); while any of them waits, a thread asks every ``WAIT_POLL_S``
    whether a place is free, since another process's training may have freed it.

    ``data`` is how a training's child reads its dataset, called there as ``data(dataset, data_dir)``. It travels
    to the child by name, so it must be importable from a module (tests pass stand-in data).
    """

    limit: int = field(  # at least 1
        default_factory=lambda: max(1, int(os.environ.get("CNNVIZ_TRAINING_LIMIT", os.cpu_count() or 1))))
    data: Callable[[str, str | None], Any] = child.Data
    folder: str | None = field(default_factory=lambda: os.environ.get("CNNVIZ_TRAINING_PLACES") or None)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: list[TrainingJob] = field(default_factory=list)
    _queue: list[TrainingJob] = field(default_factory=list)
    _tickets: dict[int, Ticket] = field(default_factory=dict)  # id(job) -> its ticket while it waits
    _places: dict[int, int] = field(default_factory=dict)  # id(job) -> its place while it runs
    _poller: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.places = Places(self.limit, self.folder)

    def submit(self, owner: str, cfg: NetworkConfig, settings: Settings, dataset: str = "mnist",
               data_dir: str | None = None, alive: Callable[[], bool] | None = None) -> TrainingJob:
        """Queue a training for ``owner`` (a session id); it starts when a place is free.

        Raises:
            JobError: the owner already has a training, or the network or settings cannot train here.
        """
        if dataset not in REGISTRY:
            raise JobError(f"unknown dataset {dataset!r}")
        spec = REGISTRY[dataset]
        cfg = replace(cfg, input_shape=spec.input_shape, num_classes=len(spec.classes))
        try:
            validate(cfg)
            settings.check()
        except ValueError as exc:
            raise JobError(str(exc)) from None
        if settings.steps > MAX_STEPS:
            raise JobError(f"{settings.steps:,} steps is more than the {MAX_STEPS:,} one training may take here")
        with self._lock:
            if any(j.owner == owner for j in self._running + self._queue):
                raise JobError("You already have a training running or waiting: stop it first (one per session).")
            try:
                ticket = self.places.take_ticket()
            except OSError as exc:
                LOG.error("the line for trainings in %s cannot be used: %s", self.places.folder, exc)
                raise JobError(f"Trainings cannot start on this server now: its line for trainings "
                               f"({self.places.folder}) cannot be used ({exc}). Tell whoever runs the "
                               "server.") from None
            job = TrainingJob(self, owner, cfg, settings, dataset, data_dir, alive)
            self._tickets[id(job)] = ticket
            self._queue.append(job)
        self._advance()
        return job

    def position(self, job: TrainingJob) -> int:
        """Its place in the server's line (every process's waiting trainings), 1 = next; 0 when not waiting."""
        with self._lock:
            ticket = self._tickets.get(id(job)) if job in self._queue else None
            local = self._queue.index(job) + 1 if ticket is not None else 0
        try:
            return self.places.position(ticket) if ticket is not None else 0
        except OSError:  # the shared folder cannot be read: at least this process's own line
            return local

    def counts(self) -> tuple[int, int]:
        """(running, waiting) on the whole server (this process's own when the shared folder cannot be read)."""
        try:
            return self.places.running(), len(self.places.waiting())
        except OSError:
            with self._lock:
                return len(self._running), len(self._queue)

    def active(self, owner: str) -> TrainingJob | None:
        with self._lock:
            return next((j for j in self._running + self._queue if j.owner == owner), None)

    def _leave_line(self, job: TrainingJob) -> None:  # under self._lock
        self._queue.remove(job)
        self.places.give_back(self._tickets.pop(id(job)))

    def _dequeue(self, job: TrainingJob, message: str = "") -> bool:
        """Take a waiting job out of the queue as "stopped"; False when it was not waiting."""
        with self._lock:
            if job not in self._queue:
                return False
            self._leave_line(job)
        job._finish("stopped", message or job.message)
        return True

    def _finished(self, job: TrainingJob) -> None:
        with self._lock:
            if job in self._running:
                self._running.remove(job)
                self.places.release(self._places.pop(id(job)))
        self._advance()

    def _advance(self) -> None:
        """Start this process's first waiting job while it is first in the server's line and a place is free; drop
        waiting jobs whose session has ended. If one still waits, make sure the poller asks again later."""
        while True:
            with self._lock:
                gone = [j for j in self._queue if j._owner_gone()]
                for j in gone:
                    self._leave_line(j)
                start = None
                place = None
                if self._queue:
                    try:
                        place = self.places.take_place(self._tickets[id(self._queue[0])])
                    except OSError as exc:  # the poller asks again
                        LOG.warning("no place for a training: the line in %s cannot be used: %s", self.places.folder,
                                    exc)
                    if place is not None:
                        start = self._queue.pop(0)
                        del self._tickets[id(start)]
                        self._places[id(start)] = place
                        self._running.append(start)
                waits = bool(self._queue) and start is None
                if waits and (self._poller is None or not self._poller.is_alive()):
                    self._poller = threading.Thread(target=self._poll, name="cnnviz-train-line", daemon=True)
                    self._poller.start()
            for j in gone:
                j._finish("stopped", "stopped: the browser session ended")
            if start is None:
                return
            start._start()

    def _poll(self) -> None:
        """While a job of this process waits: ask again every WAIT_POLL_S (a place another process held may be free)."""
        while True:
            time.sleep(WAIT_POLL_S)
            with self._lock:
                if not self._queue:
                    self._poller = None
                    return
            try:
                self._advance()
            except Exception:  # keep asking: a waiting training must not wait forever
                LOG.exception("starting a waiting training failed; trying again")

    def stop_all(self) -> None:
        """End every training at once (the server stops): their processes are terminated, the queue emptied."""
        with self._lock:
            jobs = self._queue + self._running  # the queue first: no waiting job starts in a place this frees
        for j in jobs:
            j._end_process("stopped: the server is shutting down")
        for j in jobs:
            j.wait(EXIT_WAIT_S + 5)


JOBS = JobRegistry()  # the server's registry (limit: $CNNVIZ_TRAINING_LIMIT, default the number of cores)

__all__ = ["ACTIVE", "JOBS", "MAX_STEPS", "PRESETS", "THREADS", "JobError", "JobRegistry", "Progress",
           "TrainingJob", "default_settings", "start_fork_server"]
