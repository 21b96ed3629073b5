"""Evaluate a shipped checkpoint on the full test split.

    python -m cnnviz.evaluate {mnist,cifar10} [--data-dir D] [--checkpoints DIR]
"""

from __future__ import annotations

import argparse
import sys
import time

from cnnviz.engine.checkpoints import CheckpointError, load_model
from cnnviz.engine.datasets import DataUnavailable, load_arrays
from cnnviz.engine.predict import evaluate_arrays


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
