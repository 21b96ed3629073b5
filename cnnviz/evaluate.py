"""Evaluate a shipped checkpoint on the full test split.

    python -m cnnviz.evaluate {mnist,cifar10} [--data-dir D] [--checkpoints DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnviz.engine.checkpoints import CheckpointError, load_model
from cnnviz.engine.datasets import DataUnavailable, load_arrays
from cnnviz.engine.models import ModelCard
from cnnviz.engine.pictures import normalize


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # percent
    per_class: np.ndarray  # (K,) percent
    confusion: np.ndarray  # (K, K) counts, rows = true class, columns = predicted
    count: int
    loss: float


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, card: ModelCard, batch_size: int = 500) -> torch.Tensor:
    """Logits for uint8 images (N, C, H, W), batch by batch, model in eval mode. Returns (N, K)."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(normalize(images[i:i + batch_size], card)) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs)


def evaluate_arrays(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, card: ModelCard) -> EvalResult:
    logits = predict(model, images, card)
    loss = float(nn.functional.cross_entropy(logits, labels))
    pred = logits.argmax(1)
    k = len(card.classes)
    confusion = torch.zeros((k, k), dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    conf = confusion.numpy()
    per_class = 100.0 * np.diag(conf) / np.maximum(conf.sum(1), 1)
    accuracy = 100.0 * float((pred == labels).float().mean())
    return EvalResult(accuracy, per_class, conf, len(labels), loss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["mnist", "cifar10"])
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: $CNNVIZ_DATA_DIR)")
    parser.add_argument("--checkpoints", default=None, help="checkpoint folder (default: checkpoints/)")
    parser.add_argument("--stage", default="final", help="final, init or epoch1")
    args = parser.parse_args(argv)
    try:
        model, card = load_model(args.model, stage=args.stage, directory=args.checkpoints)
        images, labels = load_arrays(args.model, "test", args.data_dir)
    except (CheckpointError, DataUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = evaluate_arrays(model, images, labels, card)
    seconds = time.perf_counter() - start
    print(f"{card.dataset} test split ({result.count} images), checkpoint {args.model} [{args.stage}]")
    print(f"accuracy {result.accuracy:.2f}%   loss {result.loss:.4f}   ({seconds:.1f} s)")
    if card.test_accuracy is not None:
        print(f"card says {card.test_accuracy:.2f}%")
    print("\nper-class accuracy:")
    for name, acc in zip(card.classes, result.per_class, strict=True):
        print(f"  {name:>10}  {acc:6.2f}%")
    print("\nconfusion matrix (rows: true class, columns: predicted):")
    width = max(5, len(str(result.confusion.max())) + 1)
    print(" " * 11 + "".join(f"{c[:width - 1]:>{width}}" for c in card.classes))
    for name, row in zip(card.classes, result.confusion, strict=True):
        print(f"{name:>10} " + "".join(f"{v:>{width}}" for v in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
