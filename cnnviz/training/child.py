"""One training of the "Train a CNN" page, inside its own child process (started by ``jobs.TrainingJob``).

A process, not a thread of the server: it has its own interpreter lock, an allocator not tuned by ``heap_trim``, a
bounded number of torch threads at a lower priority, and it hands all its memory back when it exits. It talks to its
job over one duplex pipe of plain values (never a pickled model; the messages: ``main``) and exits when the server's
end closes. Why this design, and what it costs: docs/design.md and docs/performance.md.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnviz import heap_trim
from cnnviz.engine.builder import NetworkConfig, blocks_text
from cnnviz.engine.checkpoints import to_bytes
from cnnviz.engine.datasets import load_arrays
from cnnviz.engine.models import REGISTRY, ModelCard, new_card
from cnnviz.engine.pictures import normalize
from cnnviz.engine.predict import evaluate_arrays
from cnnviz.training.loop import Settings, Trainer, init_model

# Torch threads per training: one core, so that explorer users keep the others (and the results are deterministic for
# a given count). $CNNVIZ_TRAINING_THREADS raises it on a bigger server.
THREADS = int(os.environ.get("CNNVIZ_TRAINING_THREADS", "1"))
# Scheduling priority of a training child (0 normal, 19 lowest): an explorer user's page update is interactive and a
# training is background work, so when both want the same core the scheduler gives the server about ten times
# the child's share (nice 10 weighs 110 against 1024). An idle core still trains at full speed (docs/performance.md).
NICE = 10
EVAL_IMAGES = 1000  # held-out images for the live accuracy curve (the whole test split at the end)
GRAD_NORM_POINTS = 400  # gradient norms are taken on at most this many steps
SEND_EVERY_S = 0.25  # progress goes to the server at most four times a second (the page polls once a second)
LOOK_EVERY_S = 1.0  # the first layer's filters and the fixed digit's maps are taken again this often


class Data:
    """One dataset's splits in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    def __init__(self, name: str, data_dir: str | None) -> None:
        self.train_x, self.train_y = load_arrays(name, "train", data_dir)
        self.test_x, self.test_y = load_arrays(name, "test", data_dir)


class ServerGone(Exception):
    """The server's end of the pipe is closed: the child stops at once."""


class _Link:
    """The child's end of the pipe: progress batched into messages, control messages read without waiting."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.paused = self.stopped = False
        self.pending: dict[str, Any] = self._empty()
        self.last_send = 0.0

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"loss": [], "lr": [], "held_out": [], "norms": {}}

    def read_control(self, timeout: float = 0.0) -> None:
        """Apply every control message that has arrived (waiting up to ``timeout`` s for the first)."""
        try:
            while self.conn.poll(timeout):
                timeout = 0.0
                message = self.conn.recv()
                if message == "stop":
                    self.stopped = True
                elif message in ("pause", "resume"):
                    self.paused = message == "pause"
        except (EOFError, OSError):
            raise ServerGone from None

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.conn.send(message)
        except OSError:  # BrokenPipeError and its kin
            raise ServerGone from None

    def flush(self, counters: dict[str, Any], force: bool = False, **views: Any) -> None:
        """Send what was learned since the last message, if ``SEND_EVERY_S`` has passed (or ``force``)."""
        now = time.perf_counter()
        if not force and not views and now - self.last_send < SEND_EVERY_S:
            return
        self.send({"kind": "progress", "state": "paused" if self.paused else "running", **counters,
                   **self.pending, **views})
        self.pending, self.last_send = self._empty(), now


def look(model: nn.Module, digit_x: torch.Tensor, card: ModelCard) -> dict[str, Any]:
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
                    filters = module.weight.detach().clone().numpy()  # (C_out, C_in, k, k)
                if name.rstrip("0123456789") in ("relu", "sigmoid", "tanh"):
                    maps[name] = h[0].clone().numpy()  # (C, H, W)
            probs = torch.softmax(h, 1)[0].numpy()
    finally:
        model.train(was_training)
    return {"filters": filters, "maps": maps, "digit_probs": probs}


def main(conn, cfg_args: dict[str, Any], settings_args: dict[str, Any], dataset: str, data_dir: str | None,
         data_source=Data) -> None:
    """The child process: train and report over ``conn``; any failure becomes an "end" message with the reason.

    Load the data, build the network from its seed, train with the shared loop (``training.Trainer``). Messages:
    server -> child ``"pause"``, ``"resume"``, ``"stop"``; child -> server ``{"kind": "progress", ...}`` (what was
    learned since the last message; ``state`` "running" or "paused"), then one ``{"kind": "end", "state", "message",
    "weights", "card"}``: safetensors bytes and the JSON card (``checkpoints.to_bytes``), or None if nothing is kept.

    Args:
        conn: the child's end of a ``multiprocessing.Pipe``.
        cfg_args, settings_args: ``NetworkConfig.to_args()`` and ``dataclasses.asdict(Settings)``.
        dataset: "mnist" or "cifar10".
        data_dir: the data folder (None: $CNNVIZ_DATA_DIR).
        data_source: called as ``data_source(dataset, data_dir)`` for the splits (tests pass stand-in data).
    """
    gc.freeze()  # the objects shared with the fork server: never traversed by this process's collections, so uncopied
    try:
        os.nice(NICE)
    except OSError:
        pass
    torch.set_num_threads(THREADS)
    link = _Link(conn)
    try:
        _train(link, NetworkConfig.from_args(cfg_args), Settings(**settings_args), dataset, data_dir, data_source)
    except ServerGone:
        pass
    except Exception as exc:  # noqa: BLE001 - any failure becomes a message on the page, never a traceback
        try:
            link.send({"kind": "end", "state": "failed", "message": f"training failed: {type(exc).__name__}: {exc}",
                       "weights": None, "card": None})
        except ServerGone:
            pass
    finally:
        conn.close()


def _train(link: _Link, cfg: NetworkConfig, s: Settings, dataset: str, data_dir: str | None, data_source) -> None:
    data = data_source(dataset, data_dir)
    heap_trim.collect_and_trim()  # what reading the files left in the heap
    model = init_model(cfg, s.seed)
    card = new_card(dataset, model)
    trainer = Trainer(model, card, s, data.train_x, data.train_y)
    eval_every = max(10, s.steps // 40)
    norm_every = max(1, s.steps // GRAD_NORM_POINTS)
    held_x, held_y = data.test_x[:EVAL_IMAGES], data.test_y[:EVAL_IMAGES]
    digit_x = data.test_x[:1]
    counters = {"step": 0, "epoch": 1, "train_seconds": 0.0}
    link.flush(counters, digit=digit_x[0].float().numpy() / 255.0, digit_label=int(data.test_y[0]),
               **look(model, digit_x, card))
    last_look = time.perf_counter()
    epoch_sum = [0.0, 0, 0]  # loss * n, correct, n
    while trainer.step_count < s.steps:
        link.read_control()
        if link.stopped:
            break
        if link.paused:
            link.flush(counters, force=True)
            while link.paused and not link.stopped:
                link.read_control(timeout=1.0)
            link.flush(counters, force=True)
            continue
        started = time.perf_counter()
        trainer.track_grad_norms = trainer.step_count % norm_every == 0
        stats = trainer.step()
        counters["train_seconds"] += time.perf_counter() - started
        if not math.isfinite(stats.loss):
            link.send({"kind": "end", "state": "failed", "weights": None, "card": None,
                       "message": f"the loss became {stats.loss} at step {stats.step}: the weights diverged. "
                                  "Try a smaller learning rate."})
            return
        counters["step"], counters["epoch"] = stats.step, stats.epoch
        epoch_sum[0] += stats.loss * stats.count
        epoch_sum[1] += stats.correct
        epoch_sum[2] += stats.count
        link.pending["loss"].append((stats.step, stats.loss))
        link.pending["lr"].append((stats.step, stats.lr))
        for name, norm in (stats.grad_norms or {}).items():
            link.pending["norms"].setdefault(name, []).append((stats.step, norm))
        if stats.step % eval_every == 0 or stats.step in (10, 25, 50) or stats.step == s.steps:
            link.pending["held_out"].append((stats.step, evaluate_arrays(model, held_x, held_y, card).accuracy))
        if stats.step % trainer.steps_per_epoch == 0 or stats.step == s.steps:
            card.history.append({"epoch": stats.epoch, "train_loss": epoch_sum[0] / epoch_sum[2],
                                 "train_accuracy": 100 * epoch_sum[1] / epoch_sum[2], "step": stats.step})
            epoch_sum = [0.0, 0, 0]
        if time.perf_counter() - last_look > LOOK_EVERY_S or stats.step == s.steps:
            link.flush(counters, **look(model, digit_x, card))
            last_look = time.perf_counter()
        else:
            link.flush(counters)
    _finalise(link, trainer, card, data, cfg, counters)


def _finalise(link: _Link, trainer: Trainer, card: ModelCard, data: Data, cfg: NetworkConfig,
              counters: dict[str, Any]) -> None:
    """Evaluate on the whole test split, fill the card, send the weights and the card."""
    s, model = trainer.settings, trainer.model
    if trainer.step_count == 0:
        link.flush(counters, force=True)
        link.send({"kind": "end", "state": "stopped", "message": "stopped before the first step", "weights": None,
                   "card": None})
        return
    result = evaluate_arrays(model, data.test_x, data.test_y, card)
    model.eval()
    card.test_accuracy = round(result.accuracy, 2)
    if card.history:
        card.history[-1]["test_accuracy"] = result.accuracy
        card.train_accuracy = round(card.history[-1]["train_accuracy"], 2)
    card.epochs = math.ceil(trainer.step_count / trainer.steps_per_epoch)
    card.training_time_s = round(counters["train_seconds"], 1)
    card.seed = s.seed
    card.date = dt.date.today().isoformat()
    card.stage = "final"
    dataset = card.name
    card.dataset = f"{REGISTRY[dataset].dataset} ({'torchvision MNIST' if dataset == 'mnist' else 'JPEG image folder'})"
    card.notes = (f"Built and trained on cnnviz's 'Train a CNN' page: blocks [{blocks_text(cfg.blocks)}]"
                  .replace("\n", ", ") + f", activation {cfg.activation}, batch norm "
                  f"{'on' if cfg.batch_norm else 'off'}, {cfg.head} head; {trainer.step_count} of "
                  f"{s.steps} steps of batch {s.batch_size}, {s.optimizer}, learning rate {s.lr:g} "
                  f"({s.schedule}), augmentation {'on' if s.augment else 'off'}, seed {s.seed}.")
    link.pending["held_out"].append((trainer.step_count, result.accuracy))
    link.flush(counters, force=True)
    weights, card_json = to_bytes(model, card)
    link.send({"kind": "end", "state": "stopped" if trainer.step_count < s.steps else "finished", "message": "",
               "weights": weights, "card": card_json})
