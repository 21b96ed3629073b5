"""Benchmark: capture() against a plain forward + autograd.grad of the same objective, in the same run.

    python bench/capture.py [--repeats N]

Prints, for each shipped model, median and p95 in milliseconds and the ratio capture / plain.
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

from cnnviz.capture import capture
from cnnviz.checkpoints import CheckpointError, load_model


def timed(fn, repeats: int) -> list[float]:
    for _ in range(10):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


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

    plain_t: list[float] = []
    capture_t: list[float] = []
    for _ in range(4):  # interleaved, so both see the same machine load
        plain_t += timed(plain, repeats // 4)
        capture_t += timed(captured, repeats // 4)
    pm, cm = statistics.median(plain_t), statistics.median(capture_t)
    print(f"{name:8} {'plain':8} {pm:10.2f} {p95(plain_t):8.2f}")
    print(f"{name:8} {'capture':8} {cm:10.2f} {p95(capture_t):8.2f}")
    print(f"{name:8} ratio capture/plain (median) = {cm / pm:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
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
