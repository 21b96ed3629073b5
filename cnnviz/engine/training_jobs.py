"""Trainings that run in the background for the "Train a CNN" page: one per session, a server-wide limit, a queue.

A ``TrainingJob`` runs ``cnnviz.engine.training.Trainer`` in its own thread with ``THREADS`` torch threads (torch's
thread count is per thread, so explorer users keep the other cores), can be paused, resumed and stopped, and
publishes what it has learned so far as a ``Progress`` record the page draws. ``JobRegistry`` starts at most
``limit`` jobs at once and queues the rest in order; a job whose owner is gone (``alive()`` false: the browser
session ended) stops, or leaves the queue. No streamlit here: the page passes the session's id and ``alive``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from cnnviz.engine.builder import PRESETS, CustomNet, NetworkConfig, blocks_text, validate
from cnnviz.engine.datasets import load_arrays
from cnnviz.engine.models import REGISTRY, ModelCard, new_card
from cnnviz.engine.pictures import normalize
from cnnviz.engine.training import _GLOBAL_RNG, Settings, Trainer

THREADS = int(os.environ.get("CNNVIZ_TRAINING_THREADS", "1"))  # torch threads per training
MAX_STEPS = 20_000  # step budget per training
MAX_PAUSE_S = 600.0  # a training paused longer than this stops and frees its place
EVAL_IMAGES = 1000  # held-out images for the live accuracy curve (the whole test split at the end)
CURVE_POINTS = 400  # points kept per curve for drawing
ACTIVE = ("queued", "running", "paused")


class JobError(Exception):
    """A training cannot be started (one per session, a bad build, too many steps). The message says why."""


def default_settings(preset: str | None = None, dataset: str = "mnist") -> Settings:
    """The page's default hyperparameters for a preset.

    Shipped architecture: one epoch of MNIST (938 steps of 64), SGD with momentum, one-cycle to 0.05 (98.67% held
    out; at batch 128 and 0.1 it was 98.46%). Tiny: 300 steps of 128 with Adam (200 steps gave 97.74%).
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

    state: str  # "queued", "running", "paused", "finished", "stopped", "failed"
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


class _Data:
    """One dataset's splits in memory, shared by the jobs that use it and dropped when none does."""

    def __init__(self, name: str, data_dir: str | None) -> None:
        self.train_x, self.train_y = load_arrays(name, "train", data_dir)
        self.test_x, self.test_y = load_arrays(name, "test", data_dir)


_data_lock = threading.Lock()
_data_cache: weakref.WeakValueDictionary[tuple[str, str | None], _Data] = weakref.WeakValueDictionary()


def _data(name: str, data_dir: str | None) -> _Data:
    with _data_lock:
        data = _data_cache.get((name, data_dir))
        if data is None:
            data = _data_cache[(name, data_dir)] = _Data(name, data_dir)
        return data


def init_model(cfg: NetworkConfig, seed: int) -> CustomNet:
    """Build the network with initial weights drawn from ``seed`` (torch's global generator, under a lock)."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CustomNet(cfg)


class TrainingJob:
    """One training of a network built from blocks. Created by ``JobRegistry.submit``."""

    def __init__(self, registry: JobRegistry, owner: str, cfg: NetworkConfig, settings: Settings, dataset: str,
                 data_dir: str | None, alive: Callable[[], bool] | None) -> None:
        self.registry, self.owner, self.cfg, self.settings = registry, owner, cfg, settings
        self.dataset, self.data_dir, self.alive = dataset, data_dir, alive
        self.state, self.message = "queued", ""
        self.step, self.epoch = 0, 1
        self.train_seconds = 0.0
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self._stop = False
        self._losses: list[tuple[int, float]] = []
        self._lrs: list[tuple[int, float]] = []
        self._held_out: list[tuple[int, float]] = []
        self._norms: dict[str, list[tuple[int, float]]] = {}
        self._filters: np.ndarray | None = None
        self._digit: np.ndarray | None = None
        self._digit_label: int | None = None
        self._maps: dict[str, np.ndarray] = {}
        self._probs: np.ndarray | None = None
        self._result: tuple[nn.Module, ModelCard] | None = None
        self._done = threading.Event()
        self.thread: threading.Thread | None = None

    # -- control (any thread) --------------------------------------------------------------------------------
    def pause(self) -> None:
        """Ask the worker to pause: the state reads "paused" once the step in flight is done."""
        with self._lock:
            if self.state == "running":
                self._resume.clear()

    def resume(self) -> None:
        with self._lock:
            if self.state in ("running", "paused"):
                self.state = "running"
                self._resume.set()

    def stop(self, message: str = "stopped by you") -> None:
        """Stop: a running or paused job keeps what it has learned; a queued one leaves the queue."""
        with self._lock:
            self._stop = True
            if not self.message:
                self.message = message
            self._resume.set()
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
                grad_norms={k: _curve(v) for k, v in self._norms.items()}, filters=self._filters,
                digit=self._digit, digit_label=self._digit_label, maps=dict(self._maps), digit_probs=self._probs,
                message=self.message,
            )

    # -- the worker thread -------------------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            stopped = self._stop
            if not stopped:
                self.state = "running"
        if stopped:
            self._finish("stopped", self.message)
            return
        self.thread = threading.Thread(target=self._run, name=f"cnnviz-train-{self.owner[:8]}", daemon=True)
        self.thread.start()

    def _finish(self, state: str, message: str = "") -> None:
        with self._lock:
            self.state = state
            if message:
                self.message = message
        self._done.set()
        self.registry._finished(self)

    def _owner_gone(self) -> bool:
        try:
            return self.alive is not None and not self.alive()
        except Exception:  # noqa: BLE001 - a failing check counts as gone
            return True

    def _run(self) -> None:
        torch.set_num_threads(THREADS)  # this thread only: explorer sessions keep their own count
        try:
            self._train()
        except Exception as exc:  # noqa: BLE001 - any failure becomes a message on the page, never a dead thread
            self._finish("failed", f"training failed: {type(exc).__name__}: {exc}")

    def _train(self) -> None:
        s = self.settings
        data = _data(self.dataset, self.data_dir)
        model = init_model(self.cfg, s.seed)
        card = new_card(self.dataset, model)
        trainer = Trainer(model, card, s, data.train_x, data.train_y)
        eval_every = max(10, s.steps // 40)
        norm_every = max(1, s.steps // CURVE_POINTS)
        held_x, held_y = data.test_x[:EVAL_IMAGES], data.test_y[:EVAL_IMAGES]
        digit_x = data.test_x[:1]
        with self._lock:
            self._digit = digit_x[0].float().numpy() / 255.0
            self._digit_label = int(data.test_y[0])
        self._look(model, digit_x, card)
        last_look = last_alive = time.perf_counter()
        epoch_sum = [0.0, 0, 0]  # loss * n, correct, n
        while trainer.step_count < s.steps and not self._stop:
            now = time.perf_counter()
            if now - last_alive > 2.0:
                last_alive = now
                if self._owner_gone():
                    self._stop, self.message = True, "stopped: the browser session ended"
                    break
            if not self._resume.is_set():
                paused_at = time.perf_counter()
                with self._lock:
                    if not self._resume.is_set():
                        self.state = "paused"
                while not self._resume.wait(1.0):
                    if self._owner_gone() or time.perf_counter() - paused_at > MAX_PAUSE_S:
                        self._stop = True
                        self.message = self.message or "stopped: paused too long, or the browser session ended"
                        self._resume.set()
                last_alive = time.perf_counter()
                continue
            trainer.track_grad_norms = trainer.step_count % norm_every == 0
            stats = trainer.step()
            elapsed = time.perf_counter() - now
            if not math.isfinite(stats.loss):
                self._finish("failed", f"the loss became {stats.loss} at step {stats.step}: the weights diverged. "
                                       "Try a smaller learning rate.")
                return
            epoch_sum[0] += stats.loss * stats.count
            epoch_sum[1] += stats.correct
            epoch_sum[2] += stats.count
            with self._lock:
                self.step, self.epoch = stats.step, stats.epoch
                self.train_seconds += elapsed
                self._losses.append((stats.step, stats.loss))
                self._lrs.append((stats.step, stats.lr))
                for name, norm in (stats.grad_norms or {}).items():
                    self._norms.setdefault(name, []).append((stats.step, norm))
            end_of_epoch = stats.step % trainer.steps_per_epoch == 0 or stats.step == s.steps
            if stats.step % eval_every == 0 or stats.step in (10, 25, 50) or stats.step == s.steps:
                accuracy = _accuracy(model, held_x, held_y, card)
                with self._lock:
                    self._held_out.append((stats.step, accuracy))
            if end_of_epoch:
                card.history.append({"epoch": stats.epoch, "train_loss": epoch_sum[0] / epoch_sum[2],
                                     "train_accuracy": 100 * epoch_sum[1] / epoch_sum[2], "step": stats.step})
                epoch_sum = [0.0, 0, 0]
            if time.perf_counter() - last_look > 1.0 or stats.step == s.steps:
                self._look(model, digit_x, card)
                last_look = time.perf_counter()
        self._finalise(trainer, model, card, data)

    def _look(self, model: nn.Module, digit_x: torch.Tensor, card: ModelCard) -> None:
        """First-layer filters and the fixed digit's feature maps after each activation, as they are now."""
        was_training = model.training
        model.eval()
        maps: dict[str, np.ndarray] = {}
        filters = None
        try:
            with torch.no_grad():
                h = normalize(digit_x, card)  # (1, C, H, W)
                for name, module in model.named_children():
                    h = module(h)
                    if filters is None and isinstance(module, nn.Conv2d):
                        filters = module.weight.detach().clone().numpy()
                    if name.rstrip("0123456789") in ("relu", "sigmoid", "tanh"):
                        maps[name] = h[0].clone().numpy()  # (C, H, W)
                probs = torch.softmax(h, 1)[0].numpy()
        finally:
            model.train(was_training)
        with self._lock:
            self._filters, self._maps, self._probs = filters, maps, probs

    def _finalise(self, trainer: Trainer, model: nn.Module, card: ModelCard, data: _Data) -> None:
        from cnnviz.evaluate import evaluate_arrays

        if trainer.step_count == 0:
            self._finish("stopped", self.message or "stopped before the first step")
            return
        result = evaluate_arrays(model, data.test_x, data.test_y, card)
        s = self.settings
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        card.test_accuracy = round(result.accuracy, 2)
        if card.history:
            card.history[-1]["test_accuracy"] = result.accuracy
            card.train_accuracy = round(card.history[-1]["train_accuracy"], 2)
        card.epochs = math.ceil(trainer.step_count / trainer.steps_per_epoch)
        card.training_time_s = round(self.train_seconds, 1)
        card.seed = s.seed
        card.date = dt.date.today().isoformat()
        card.stage = "final"
        spec = REGISTRY[self.dataset]
        card.dataset = f"{spec.dataset} ({'torchvision MNIST' if self.dataset == 'mnist' else 'JPEG image folder'})"
        card.notes = (f"Built and trained on cnnviz's 'Train a CNN' page: blocks [{blocks_text(self.cfg.blocks)}]"
                      .replace("\n", ", ") + f", activation {self.cfg.activation}, batch norm "
                      f"{'on' if self.cfg.batch_norm else 'off'}, {self.cfg.head} head; {trainer.step_count} of "
                      f"{s.steps} steps of batch {s.batch_size}, {s.optimizer}, learning rate {s.lr:g} "
                      f"({s.schedule}), augmentation {'on' if s.augment else 'off'}, seed {s.seed}.")
        self._result = (model, card)
        with self._lock:
            self._held_out.append((trainer.step_count, result.accuracy))
        stopped = trainer.step_count < s.steps
        self._finish("stopped" if stopped else "finished", self.message if stopped else "")


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, card: ModelCard) -> float:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = model(normalize(images, card)).argmax(1)
    finally:
        model.train(was_training)
    return 100.0 * float((pred == labels).float().mean())


@dataclass
class JobRegistry:
    """The server's trainings: at most ``limit`` run at once, the rest wait in order; one active job per owner."""

    limit: int = field(default_factory=lambda: int(os.environ.get("CNNVIZ_TRAINING_LIMIT", os.cpu_count() or 1)))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: list[TrainingJob] = field(default_factory=list)
    _queue: list[TrainingJob] = field(default_factory=list)

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
            job = TrainingJob(self, owner, cfg, settings, dataset, data_dir, alive)
            self._queue.append(job)
        self._advance()
        return job

    def position(self, job: TrainingJob) -> int:
        with self._lock:
            return self._queue.index(job) + 1 if job in self._queue else 0

    def counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        with self._lock:
            return len(self._running), len(self._queue)

    def active(self, owner: str) -> TrainingJob | None:
        with self._lock:
            return next((j for j in self._running + self._queue if j.owner == owner), None)

    def _dequeue(self, job: TrainingJob) -> None:
        with self._lock:
            if job not in self._queue:
                return
            self._queue.remove(job)
        job._finish("stopped", job.message)

    def _finished(self, job: TrainingJob) -> None:
        with self._lock:
            if job in self._running:
                self._running.remove(job)
        self._advance()

    def _advance(self) -> None:
        """Start queued jobs while places are free; drop queued jobs whose session has ended."""
        while True:
            with self._lock:
                gone = [j for j in self._queue if j._owner_gone()]
                for j in gone:
                    self._queue.remove(j)
                start = self._queue.pop(0) if self._queue and len(self._running) < self.limit else None
                if start is not None:
                    self._running.append(start)
            for j in gone:
                j.message = "stopped: the browser session ended"
                j._finish("stopped")
            if start is None:
                return
            start._start()

    def stop_all(self) -> None:
        with self._lock:
            jobs = self._running + self._queue
        for j in jobs:
            j.stop("stopped: the server is shutting down")
        for j in jobs:
            with contextlib.suppress(RuntimeError):
                j.wait(10)


JOBS = JobRegistry()  # the server's registry (limit: $CNNVIZ_TRAINING_LIMIT, default the number of cores)

__all__ = ["ACTIVE", "JOBS", "MAX_STEPS", "PRESETS", "THREADS", "JobError", "JobRegistry", "Progress",
           "TrainingJob", "default_settings", "init_model"]
