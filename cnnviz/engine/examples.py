"""Instructive examples, chosen once from the test set and shipped as small JSON files beside the checkpoints.

For each model and weights stage (``checkpoints/examples_<name>_<stage>.json``):
- ``hard``: a short list of test images the model finds hard (top probability below 0.9, or misclassified), the
  best teaching default first (see ``RULE``);
- ``mistakes``: every misclassified test image with its true class, predicted class and confidence.
Each file records the SHA-256 of the checkpoint it was computed from; loading refuses a stale file.

Regenerate with ``python -m cnnviz.engine.examples`` (needs the test sets: $CNNVIZ_DATA_DIR).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnviz.engine.checkpoints import available_stages, checkpoint_dir, load_model
from cnnviz.engine.models import ModelCard
from cnnviz.engine.predict import predict_probs
from cnnviz.numbers import fmt, fmt_close_to_one

FORMAT = 1
HARD_BELOW = 0.9  # a prediction whose top probability is below this is "uncertain"
N_HARD = 12
CLEAR_BY_FINAL_P = 0.99  # snapshots: an image the fully trained model gets right with this probability is "clear"
CLEAR_BY_EPOCH1_P = 0.9  # the final MNIST model: an image even the one-epoch model gets right with this is "clear"
SATURATED_P = 0.99  # p(target) above this: the loss gradient p - onehot is at most 0.01 in size
RULE = (
    "Hard = top probability below 0.9, or misclassified. Order, best teaching default first: "
    "(1) a clear image, correctly classified but unsure (top probability 0.5-0.9), closest to 0.7 first: the "
    "prediction is right and the loss is clearly non-zero (about 0.36 at p = 0.7), so the backward pass and a learning "
    "step show something; (2) a clear image, correct with top probability below 0.5, most probable first; (3) a clear "
    "image, misclassified, most confident first; (4) any other hard image, the true class most probable first. "
    "'Clear' is judged by another model: for the MNIST snapshots taken while learning (init, epoch1), the fully "
    "trained model classifies it correctly with probability at least 0.99; for the fully trained MNIST model, even "
    "the model after one epoch classifies it correctly with probability at least 0.9; CIFAR-10 ships no second "
    "model, so every "
    "image counts as clear there. Within the list, a class not yet listed goes first, so the first ten show "
    "different classes where possible."
)


class ExamplesError(Exception):
    """The examples file is missing, damaged or stale. The message says how to regenerate it."""


@dataclass(frozen=True)
class HardExample:
    index: int  # test-set index (the dataset's order, as the explorer's test samples)
    true: int  # true class
    pred: int  # predicted class
    p_top: float  # probability of the predicted class
    p_true: float  # probability of the true class
    runner_up: int  # the most probable class other than the prediction
    p_runner_up: float
    group: int  # 1-4, see RULE


@dataclass(frozen=True)
class Mistake:
    index: int  # test-set index
    true: int
    pred: int
    confidence: float  # probability of the (wrong) predicted class


@dataclass(frozen=True)
class Examples:
    name: str  # "mnist" or "cifar10"
    stage: str  # "final", "epoch1", "init"
    checkpoint_sha256: str  # of the .safetensors file the lists were computed from
    n_test: int  # test images looked at
    accuracy: float  # fraction correct on them
    hard: tuple[HardExample, ...]  # best teaching default first
    mistakes: tuple[Mistake, ...]  # every misclassified test image, most confident first
    rule: str  # how ``hard`` was chosen and ordered

    @property
    def default(self) -> HardExample | None:
        """The test image the explorer shows until the learner draws."""
        return self.hard[0] if self.hard else None


@dataclass(frozen=True)
class Saturation:
    """Whether p(target) is so close to 1 that the loss gradient is tiny, and which class to try instead."""

    saturated: bool  # p(target) >= threshold
    p_target: float
    gradient_size: float  # |dL/dz_target| = 1 - p(target); the whole gradient dL/dz = p - onehot is this small
    runner_up: int  # the most probable class other than the target
    p_runner_up: float
    message: str  # "" when not saturated, else a sentence for the page


def saturation(probs: np.ndarray, target: int, classes: tuple[str, ...] | None = None,
               threshold: float = SATURATED_P) -> Saturation:
    """Tell when p(target) is about 1, so that the loss gradient (p - onehot) is tiny, and name the runner-up class.

    Args:
        probs: (K,) class probabilities; target: the class whose loss is differentiated.
        classes: class names for the message.
        threshold: p(target) from which the gradient counts as tiny (0.99: every entry of p - onehot <= 0.01).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or not 0 <= int(target) < p.size:
        raise ValueError(f"probs must be (K,) and target a class index, got shape {p.shape} and {target!r}")
    others = p.copy()
    others[int(target)] = -np.inf
    runner = int(np.argmax(others))
    p_t = float(p[int(target)])
    grad = 1.0 - p_t
    saturated = p_t >= threshold

    def name(k: int) -> str:
        return f"'{classes[k]}'" if classes else f"class {k}"

    message = ""
    if saturated:
        message = (f"p({name(int(target))}) = {fmt_close_to_one(p_t)}, so the loss gradient dL/dz = p - onehot is "
                   f"tiny (its largest entry is {fmt(grad, 3)}) and every gradient further back is tiny too. Choose "
                   f"the runner-up {name(runner)} (p = {fmt(float(p[runner]), 3)}) as the target to see a large "
                   "gradient.")
    return Saturation(saturated, p_t, grad, runner, float(p[runner]), message)


# ----------------------------------------------------------------------------------------------- choosing


def choose_hard(probs: np.ndarray, labels: np.ndarray, judge_probs: np.ndarray | None = None,
                judge_p: float = CLEAR_BY_FINAL_P, n: int = N_HARD) -> list[HardExample]:
    """The hard test images, best teaching default first, by ``RULE``.

    Args:
        probs: (N, K) this model's probabilities on the test set; labels: (N,) true classes.
        judge_probs: (N, K) another model's probabilities, judging which images are clear; None: all are clear.
        judge_p: an image is clear when the judge classifies it correctly with at least this probability.
        n: how many to return.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = probs.argmax(1)
    p_top = probs.max(1)
    p_true = probs[np.arange(len(labels)), labels]
    correct = pred == labels
    hard = (p_top < HARD_BELOW) | ~correct
    if judge_probs is None:
        clear = np.ones(len(labels), dtype=bool)
    else:
        judge = np.asarray(judge_probs)
        clear = (judge.argmax(1) == labels) & (judge[np.arange(len(labels)), labels] >= judge_p)
    group = np.full(len(labels), 4)
    group[clear & correct & (p_top >= 0.5)] = 1
    group[clear & correct & (p_top < 0.5)] = 2
    group[clear & ~correct] = 3
    key = np.where(group == 1, np.abs(p_top - 0.7), np.where(group == 4, -p_true, -p_top))  # ascending
    candidates = np.flatnonzero(hard)
    order = candidates[np.lexsort((candidates, key[candidates], group[candidates]))]
    chosen: list[int] = []
    seen: set[int] = set()
    for i in order:  # a class not yet listed first, in rule order
        if len(chosen) == n:
            break
        if int(labels[i]) not in seen:
            chosen.append(int(i))
            seen.add(int(labels[i]))
    taken = set(chosen)
    rest = [int(i) for i in order if int(i) not in taken]
    chosen += rest[:n - len(chosen)]
    out = []
    for i in chosen:
        others = probs[i].copy()
        others[pred[i]] = -np.inf
        runner = int(others.argmax())
        out.append(HardExample(int(i), int(labels[i]), int(pred[i]), float(p_top[i]), float(p_true[i]), runner,
                               float(probs[i, runner]), int(group[i])))
    return out


def find_mistakes(probs: np.ndarray, labels: np.ndarray) -> list[Mistake]:
    """Every misclassified image, most confident first (ties by index)."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != np.asarray(labels))
    conf = probs[wrong, pred[wrong]]
    order = wrong[np.lexsort((wrong, -conf))]
    return [Mistake(int(i), int(labels[i]), int(pred[i]), float(probs[i, pred[i]])) for i in order]


# ----------------------------------------------------------------------------------------------- files


def examples_path(name: str, stage: str, directory: str | Path | None = None) -> Path:
    base = Path(directory) if directory is not None else checkpoint_dir()
    return base / f"examples_{name}_{stage}.json"


def checkpoint_path(name: str, stage: str, directory: str | Path | None = None) -> Path:
    base = Path(directory) if directory is not None else checkpoint_dir()
    return base / (f"{name}.safetensors" if stage == "final" else f"{name}_{stage}.safetensors")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_json(ex: Examples) -> dict[str, Any]:
    def r(v: float) -> float:
        return round(float(v), 6)

    return {
        "format": FORMAT, "name": ex.name, "stage": ex.stage, "checkpoint_sha256": ex.checkpoint_sha256,
        "n_test": ex.n_test, "accuracy": r(ex.accuracy), "rule": ex.rule,
        "hard": [{"index": h.index, "true": h.true, "pred": h.pred, "p_top": r(h.p_top), "p_true": r(h.p_true),
                  "runner_up": h.runner_up, "p_runner_up": r(h.p_runner_up), "group": h.group} for h in ex.hard],
        "mistakes": {"index": [m.index for m in ex.mistakes], "true": [m.true for m in ex.mistakes],
                     "pred": [m.pred for m in ex.mistakes], "confidence": [r(m.confidence) for m in ex.mistakes]},
    }


def from_json(d: dict[str, Any]) -> Examples:
    m = d["mistakes"]
    return Examples(
        name=d["name"], stage=d["stage"], checkpoint_sha256=d["checkpoint_sha256"], n_test=int(d["n_test"]),
        accuracy=float(d["accuracy"]), rule=d["rule"],
        hard=tuple(HardExample(**h) for h in d["hard"]),
        mistakes=tuple(Mistake(int(i), int(t), int(p), float(c))
                       for i, t, p, c in zip(m["index"], m["true"], m["pred"], m["confidence"], strict=True)),
    )


def load_examples(name: str, stage: str = "final", directory: str | Path | None = None,
                  check_checkpoint: bool = True) -> Examples:
    """The shipped examples of one model and weights stage.

    Args:
        name, stage: as for ``checkpoints.load_model``.
        directory: the checkpoint folder (default: $CNNVIZ_CHECKPOINT_DIR or the project's checkpoints/).
        check_checkpoint: refuse the file when the checkpoint's SHA-256 differs from the one it was computed from.
    Raises:
        ExamplesError: missing, unreadable or stale file; the message says how to regenerate it.
    """
    path = examples_path(name, stage, directory)
    again = f"Regenerate it with `python -m cnnviz.engine.examples {name}` (needs the {name} test set)."
    if not path.is_file():
        raise ExamplesError(f"{path}: no examples file for {name} ({stage}). {again}")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ExamplesError(f"{path}: format {data.get('format')!r}, expected {FORMAT}. {again}")
        ex = from_json(data)
    except ExamplesError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExamplesError(f"{path}: not a readable examples file ({type(exc).__name__}: {exc}). {again}") from None
    if (ex.name, ex.stage) != (name, stage):
        raise ExamplesError(f"{path}: holds {ex.name} ({ex.stage}), not {name} ({stage}). {again}")
    if check_checkpoint:
        ckpt = checkpoint_path(name, stage, directory)
        if not ckpt.is_file():
            raise ExamplesError(f"{path}: its checkpoint {ckpt.name} is missing.")
        if file_sha256(ckpt) != ex.checkpoint_sha256:
            raise ExamplesError(f"{path}: stale: {ckpt.name} has changed since these examples were chosen, so they "
                                f"may no longer be hard or wrong for it. {again}")
    return ex


def compute_examples(name: str, stage: str, x: torch.Tensor, labels: torch.Tensor,
                     directory: str | Path | None = None, judge_probs: np.ndarray | None = None,
                     judge_p: float = CLEAR_BY_FINAL_P, probs: np.ndarray | None = None) -> Examples:
    """Run one shipped model on the whole test set (normalised ``x``) and choose its examples (see ``RULE``)."""
    if probs is None:
        probs = predict_probs(load_model(name, stage, directory)[0], x).numpy()
    return _choose(name, stage, file_sha256(checkpoint_path(name, stage, directory)), probs, labels.numpy(),
                   judge_probs, judge_p)


def _choose(name: str, stage: str, checkpoint_sha256: str, probs: np.ndarray, y: np.ndarray,
            judge_probs: np.ndarray | None = None, judge_p: float = CLEAR_BY_FINAL_P) -> Examples:
    """The examples (``RULE``) of a model whose test-set probabilities are ``probs`` for labels ``y``."""
    return Examples(
        name=name, stage=stage, checkpoint_sha256=checkpoint_sha256, n_test=len(y),
        accuracy=float((probs.argmax(1) == y).mean()), hard=tuple(choose_hard(probs, y, judge_probs, judge_p)),
        mistakes=tuple(find_mistakes(probs, y)), rule=RULE,
    )


def examples_of_model(model: nn.Module, card: ModelCard, data_dir: str | Path | None = None) -> Examples:
    """The hard test images and mistakes of any network (one trained or uploaded in a session) on the test set of its
    card's dataset, chosen by ``RULE`` without a second model to judge clarity.

    Raises:
        DataUnavailable: the test set is not on disk.
    """
    from cnnviz.engine.datasets import load_arrays
    from cnnviz.engine.pictures import normalize

    images, labels = load_arrays(card.name, "test", data_dir)
    probs = predict_probs(model, images, prepare=lambda batch: normalize(batch, card)).numpy()  # (N, K)
    return _choose(card.name, card.stage, "", probs, labels.numpy())


def testset_inputs(name: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole test set normalised as the explorer feeds a test sample, and its labels."""
    from cnnviz.engine.datasets import load_arrays
    from cnnviz.engine.models import REGISTRY
    from cnnviz.engine.pictures import normalize

    spec = REGISTRY[name]
    images, labels = load_arrays(name, "test", data_dir)
    return normalize(images, ModelCard(name, spec.classes, spec.input_shape, spec.mean, spec.std)), labels


def compute_all(name: str, directory: str | Path | None = None,
                data_dir: str | Path | None = None) -> dict[str, Examples]:
    """Every available weights stage's examples of one model, each judged for clarity as ``RULE`` says."""
    x, labels = testset_inputs(name, data_dir)
    stages = available_stages(name, directory)
    probs = {stage: predict_probs(load_model(name, stage, directory)[0], x).numpy() for stage in stages}
    out = {}
    for stage in stages:
        if stage != "final":
            judge, judge_p = probs.get("final"), CLEAR_BY_FINAL_P
        else:
            judge, judge_p = probs.get("epoch1"), CLEAR_BY_EPOCH1_P
        out[stage] = compute_examples(name, stage, x, labels, directory, judge, judge_p, probs[stage])
    return out


def generate(names: list[str], directory: str | Path | None = None, data_dir: str | Path | None = None) -> list[Path]:
    """Write ``examples_<name>_<stage>.json`` for every available stage of each model; returns the paths."""
    written = []
    for name in names:
        for stage, ex in compute_all(name, directory, data_dir).items():
            path = examples_path(name, stage, directory)
            path.write_text(json.dumps(to_json(ex), separators=(",", ":")) + "\n")
            written.append(path)
            print(f"{path}: accuracy {fmt(100 * ex.accuracy, 4)}%, {len(ex.mistakes)} mistakes, default test image "
                  f"#{ex.default.index if ex.default else '-'}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Choose each shipped model's hard test images and list its mistakes.")
    parser.add_argument("names", nargs="*", default=["mnist", "cifar10"], help="models (default: mnist cifar10)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $CNNVIZ_DATA_DIR)")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: checkpoints/)")
    args = parser.parse_args(argv)
    generate(args.names, args.checkpoint_dir, args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
