"""Training page targets (issue 16), measured with the page's own presets and default settings.

    python bench/train.py accuracy [--preset tiny|shipped|both]   held-out accuracy and training time
    python bench/train.py memory                                 server + child memory during one training, and after
    python bench/train.py explorer [--runs 100 --rounds 10]      capture() time while a training runs and is paused

Needs $CNNVIZ_DATA_DIR (MNIST). Each training runs as on the server: in its own process, with the page's thread
count and priority (cnnviz.engine.training_child.THREADS, NICE).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import torch

from cnnviz.engine import training_jobs as jobs
from cnnviz.engine.builder import PRESETS
from cnnviz.engine.datasets import dataset, load_arrays
from cnnviz.engine.training_child import NICE
from cnnviz.evaluate import evaluate_arrays

NAMES = {"tiny": "Tiny: two convolutions", "shipped": "Shipped MNIST architecture (18k parameters)"}
TARGETS = {"tiny": "97% within 120 s", "shipped": "98.5% after one epoch"}


def mb(n_bytes: int) -> float:
    return n_bytes / 2**20


def run_job(preset: str) -> tuple[jobs.TrainingJob, float]:
    """Start the preset with the page's defaults as a job (its own process); return it once it is running, and the
    seconds its process took to start (imports, data, the network)."""
    cfg = PRESETS[NAMES[preset]]
    job = jobs.JobRegistry(limit=1).submit("bench", cfg, jobs.default_settings(NAMES[preset]), dataset="mnist")
    started = time.perf_counter()
    while job.state in ("queued", "starting"):
        time.sleep(0.05)
    return job, time.perf_counter() - started


def accuracy(preset: str) -> None:
    job, start_s = run_job(preset)
    job.wait()
    model, card = job.result()
    test_x, test_y = load_arrays("mnist", "test")
    full = evaluate_arrays(model, test_x, test_y, card)
    s = job.settings
    print(f"{preset}: {job.state}, {job.step} steps of batch {s.batch_size} ({s.optimizer}, lr {s.lr:g} "
          f"{s.schedule}, augment {s.augment}, seed {s.seed}), {jobs.THREADS} torch thread(s), its process started "
          f"in {start_s:.1f} s")
    print(f"  training time {job.train_seconds:.1f} s ({job.step / job.train_seconds:.1f} steps/s); "
          f"held-out accuracy {full.accuracy:.2f}% on the {full.count:,} MNIST test images "
          f"(target {TARGETS[preset]})")


def memory() -> None:
    """The server is this process; the training's child and multiprocessing's resource tracker are its children.

    RSS counts the pages of torch's shared libraries once in each process that maps them, so the sum over server and
    child counts those twice; PSS shares them out (the sum of PSS is what both take from the machine together).
    Sampled every 0.2 s, so a short peak can fall between samples; the child's high-water mark of RSS (getrusage,
    once it has exited) is exact."""
    import ctypes
    import resource

    trim = ctypes.CDLL("libc.so.6").malloc_trim  # what cnnviz.heap_trim does on the server every 10 s
    server = psutil.Process()
    start = mb(server.memory_info().rss)
    dataset("mnist", "test"), load_arrays("mnist", "test")  # torchvision and MNIST's test set, as a warm server
    gc.collect(), trim(0)
    warm, warm_pss = mb(server.memory_info().rss), mb(server.memory_full_info().pss)
    peak = {"rss": 0.0, "pss": 0.0, "child": 0.0, "child_uss": 0.0, "server": warm}
    job, _ = run_job("tiny")
    child = psutil.Process(job.process.pid)
    while not job.done():
        try:
            c, s = child.memory_full_info(), server.memory_full_info()
        except psutil.Error:  # the child has just exited
            break
        for key, value in (("rss", s.rss + c.rss), ("pss", s.pss + c.pss), ("child", c.rss), ("child_uss", c.uss),
                           ("server", s.rss)):
            peak[key] = max(peak[key], mb(value))
        time.sleep(0.2)
    job.wait()
    child_hwm = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux; the only exited child
    held = mb(server.memory_info().rss)
    tracker = sum(mb(p.memory_info().rss) for p in server.children())  # what is left: the resource tracker
    del job, child  # what ending the session does: its job (and the model it holds) is dropped
    gc.collect(), trim(0)
    after = mb(server.memory_info().rss)
    print(f"memory: server RSS {start:.0f} MB after imports, {warm:.0f} MB warm (MNIST read once, as the explorer "
          f"does; PSS {warm_pss:.0f} MB). One tiny training: peak server + child RSS {peak['rss']:.0f} MB "
          f"(+{peak['rss'] - warm:.0f} MB), peak server + child PSS {peak['pss']:.0f} MB "
          f"(+{peak['pss'] - warm_pss:.0f} MB); the child alone at most {peak['child']:.0f} MB RSS, "
          f"{peak['child_uss']:.0f} MB of it its own (USS), its high-water mark {child_hwm:.0f} MB RSS; the server "
          f"alone at most {peak['server']:.0f} MB "
          f"(+{peak['server'] - warm:.0f} MB). Server {held:.0f} MB with the finished job held "
          f"(+{held - warm:.0f} MB), {after:.0f} MB once it is dropped ({after - warm:+.0f} MB); child processes "
          f"left: the resource tracker, {tracker:.0f} MB RSS")


def explorer(runs: int, rounds: int) -> None:
    """capture() timed in this process (the server) while a training's process trains, and while it is paused, in
    alternating rounds (the machine's speed drifts between runs; alternating cancels most of it)."""
    from app import TORCH_THREADS
    from cnnviz import heap_trim
    from cnnviz.engine.capture import capture

    heap_trim.tune()  # the server's allocator settings and torch threads (app.py)
    torch.set_num_threads(TORCH_THREADS)
    from cnnviz.engine.checkpoints import load_model

    model, _ = load_model("mnist")
    x = torch.randn(1, 1, 28, 28)

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            capture(model, x)
            out.append(time.perf_counter() - t)
        return out

    timed(50)
    alone = statistics.median(timed(runs))
    job, _ = run_job("shipped")
    busy, paused = [], []
    for _ in range(rounds):
        job.resume()
        step = job.step
        while job.step < step + 3:  # training again, not only resumed
            time.sleep(0.05)
        busy += timed(runs)
        job.pause()
        while job.state != "paused":
            time.sleep(0.05)
        paused += timed(runs)
    steps = job.step
    job.stop()
    job.wait()
    busy_ms, paused_ms = 1000 * statistics.median(busy), 1000 * statistics.median(paused)
    print(f"explorer: MNIST capture() median {busy_ms:.2f} ms while a training runs in its process, {paused_ms:.2f} "
          f"ms while it is paused; ratio {busy_ms / paused_ms:.2f}x (target at most 1.5x); {alone * 1000:.2f} ms "
          f"before it started. {rounds} rounds of {runs} captures each way, {steps} training steps in all; capture "
          f"on {torch.get_num_threads()} torch threads, training on {jobs.THREADS} at nice {NICE}")


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "memory", "explorer"])
    parser.add_argument("--preset", choices=["tiny", "shipped", "both"], default="both")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if args.what == "accuracy":
        for preset in (["tiny", "shipped"] if args.preset == "both" else [args.preset]):
            accuracy(preset)
    elif args.what == "memory":
        memory()
    else:
        explorer(args.runs, args.rounds)
    print(f"({load()} on {os.cpu_count()} cores at the end)")


if __name__ == "__main__":
    main()
