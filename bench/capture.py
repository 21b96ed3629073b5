"""Benchmark: capture() against a plain forward + autograd.grad of the same objective, in the same run.

    python bench/capture.py [--repeats N]

Prints, for each shipped model, median and p95 in milliseconds and the ratio capture / plain: of the two medians,
and the median of the ratios of back-to-back pairs (robust to the machine's load drifting during the run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import TORCH_THREADS
from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import CheckpointError, load_model


def p95(xs: list[float]) -> float:
    return sorted(xs)[int(0.95 * (len(xs) - 1))]


def bench_model(name: str, model: torch.nn.Module, x: torch.Tensor, repeats: int) -> None:
    params = list(model.parameters())

    def plain() -> None:
        xi = x.detach().clone().requires_grad_(True)
        logits = model(xi)
        loss = F.cross_entropy(logits, logits.argmax(1))
        torch.autograd.grad(loss, [xi, *params])

    def captured() -> None:
        capture(model, x)

    for _ in range(10):  # warm both (a pooled private copy, allocator, caches)
        plain()
        captured()
    plain_t: list[float] = []
    capture_t: list[float] = []
    for i in range(repeats):  # one of each back to back, order alternating: both see the same machine load
        pair = (plain, captured) if i % 2 == 0 else (captured, plain)
        times = {}
        for fn in pair:
            start = time.perf_counter()
            fn()
            times[fn] = (time.perf_counter() - start) * 1000
        plain_t.append(times[plain])
        capture_t.append(times[captured])
    pm, cm = statistics.median(plain_t), statistics.median(capture_t)
    pair_ratio = statistics.median(c / p for c, p in zip(capture_t, plain_t, strict=True))
    print(f"{name:8} {'plain':8} {pm:10.2f} {p95(plain_t):8.2f}")
    print(f"{name:8} {'capture':8} {cm:10.2f} {p95(capture_t):8.2f}")
    print(f"{name:8} ratio capture/plain: of the medians {cm / pm:.2f}, median of back-to-back pairs {pair_ratio:.2f}",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=TORCH_THREADS,
                        help=f"torch threads (default {TORCH_THREADS}: what the app's server uses, app.TORCH_THREADS)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':8} {'what':8} {'median ms':>10} {'p95 ms':>8}")
    for name in ("mnist", "cifar10"):
        try:
            model, card = load_model(name)
        except CheckpointError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        bench_model(name, model, torch.randn(1, *card.input_shape), args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
