"""Training page targets (issue 16), measured with the page's own presets and default settings.

    python bench/train.py accuracy [--preset tiny|shipped|both]   held-out accuracy and training time
    python bench/train.py memory                                 RSS added by one training job, and after it ends
    python bench/train.py explorer [--runs 200]                  capture() time with and without a training running

Needs $CNNVIZ_DATA_DIR (MNIST). Trainings use the page's thread count (cnnviz.engine.training_jobs.THREADS).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from cnnviz.engine import training_jobs as jobs
from cnnviz.engine.builder import PRESETS
from cnnviz.engine.datasets import load_arrays
from cnnviz.evaluate import evaluate_arrays

NAMES = {"tiny": "Tiny: two convolutions", "shipped": "Shipped MNIST architecture (18k parameters)"}
TARGETS = {"tiny": "97% within 120 s", "shipped": "98.5% after one epoch"}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(preset: str, hold: bool = False) -> jobs.TrainingJob:
    """Start the preset with the page's defaults as a job, wait for it, return it."""
    registry = jobs.JobRegistry(limit=1)
    cfg = PRESETS[NAMES[preset]]
    job = registry.submit("bench", cfg, jobs.default_settings(NAMES[preset]), dataset="mnist")
    while not job.done():
        time.sleep(0.5)
    return job


def accuracy(preset: str) -> None:
    job = run_job(preset)
    model, card = job.result()
    test_x, test_y = load_arrays("mnist", "test")
    full = evaluate_arrays(model, test_x, test_y, card)
    s = job.settings
    print(f"{preset}: {job.state}, {job.step} steps of batch {s.batch_size} ({s.optimizer}, lr {s.lr:g} "
          f"{s.schedule}, augment {s.augment}, seed {s.seed}), {jobs.THREADS} torch thread(s)")
    print(f"  training time {job.train_seconds:.1f} s ({job.step / job.train_seconds:.1f} steps/s); "
          f"held-out accuracy {full.accuracy:.2f}% on the {full.count:,} MNIST test images "
          f"(target {TARGETS[preset]})")


def memory() -> None:
    import ctypes

    trim = ctypes.CDLL("libc.so.6").malloc_trim  # what cnnviz.heap_trim does on the server every 10 s
    start = rss_mb()
    load_arrays("mnist", "train"), load_arrays("mnist", "test")  # torchvision and the data once, as a warm server
    gc.collect(), trim(0)
    warm = rss_mb()
    peak = [warm]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.2):
            peak.append(rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    job = run_job("tiny")
    held = rss_mb()
    sampling.set()
    sampler.join()
    del job  # what ending the session does: its job (and the model it holds) is dropped
    gc.collect(), trim(0)
    after = rss_mb()
    print(f"memory: RSS {start:.0f} MB after imports, {warm:.0f} MB warm (MNIST read once, as the explorer does); "
          f"one tiny training: peak {max(peak):.0f} MB (+{max(peak) - warm:.0f} MB), {held:.0f} MB with the "
          f"finished job held (+{held - warm:.0f} MB), {after:.0f} MB once it is dropped ({after - warm:+.0f} MB)")


def explorer(runs: int) -> None:
    from cnnviz import heap_trim
    from cnnviz.engine.capture import capture

    heap_trim.tune()  # the server's allocator settings (app.py), which also slow the training thread down
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

    timed(20)
    alone = statistics.median(timed(runs))
    registry = jobs.JobRegistry(limit=1)
    name = NAMES["shipped"]
    settings = jobs.default_settings(name)
    job = registry.submit("bench", PRESETS[name], settings, dataset="mnist")
    while job.state != "running" or job.step < 5:
        time.sleep(0.2)
    busy = statistics.median(timed(runs))
    steps_while = job.step
    job.stop()
    job.wait()  # its final evaluation on the whole test set is done too
    again = statistics.median(timed(runs))
    print(f"explorer: MNIST capture() median {alone * 1000:.2f} ms alone, {busy * 1000:.2f} ms while a training "
          f"runs ({steps_while} steps done), {again * 1000:.2f} ms after; ratio {busy / alone:.2f}x "
          f"(target at most 1.5x), {runs} runs each, training on {jobs.THREADS} torch thread(s)")


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "memory", "explorer"])
    parser.add_argument("--preset", choices=["tiny", "shipped", "both"], default="both")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if args.what == "accuracy":
        for preset in (["tiny", "shipped"] if args.preset == "both" else [args.preset]):
            accuracy(preset)
    elif args.what == "memory":
        memory()
    else:
        explorer(args.runs)
    print(f"({load()} on {os.cpu_count()} cores at the end)")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
