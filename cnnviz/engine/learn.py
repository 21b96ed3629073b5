"""Learn from one input, honestly: one SGD step on a private full copy, each layer's change relative to its size,
and the model on a fixed held-out batch of test images before and after the step.

The shared model is never changed: the step runs on ``copy.deepcopy(model)`` in eval mode (dropout off, batch norm
on its running statistics, which the step leaves as they are). Losses are computed in float64 from the logits, so a
tiny loss (p close to 1) keeps its digits.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz.engine.models import REGISTRY, ModelCard
from cnnviz.engine.pictures import normalize
from cnnviz.engine.predict import predict_logits
from cnnviz.engine.trace import HeldOutScore, LayerChange, LayerUpdate, LearnRecord
from cnnviz.numbers import fmt

HELDOUT_SIZE = 256
HELDOUT_SEED = 0
LARGE_CHANGE = 0.10  # a step that moves a layer by more than 10% of its size is flagged
HELDOUT_DROP = 0.05  # ... and one that costs more than 5 points of held-out accuracy is named in the warning
EVAL_MODE_TEXT = ("The step runs in eval mode: dropout is off and batch norm uses the running statistics it learned "
                  "in training (not this one input's), so only weights and biases change; the running statistics "
                  "stay as they are. Real training runs in train mode on batches of many images.")


@dataclass(frozen=True)
class HeldOutBatch:
    """A fixed batch of test images, the same for every step and every session (cache it per model)."""

    name: str  # "mnist" or "cifar10"
    images: torch.Tensor  # (N, C, H, W) uint8, as the model sees them before normalisation
    labels: torch.Tensor  # (N,) int64
    indices: tuple[int, ...]  # their test-set indices (the dataset's order), ascending
    seed: int

    @property
    def text(self) -> str:
        return f"{len(self.indices)} test images chosen once at random (seed {self.seed}), never learned from"

    def normalized(self, card: ModelCard) -> torch.Tensor:
        """The images as the model takes them: (N, C, H, W) float32, normalised with the card's mean/std."""
        return normalize(self.images, card)


def heldout_indices(n_test: int, size: int = HELDOUT_SIZE, seed: int = HELDOUT_SEED) -> np.ndarray:
    """``size`` distinct test-set indices drawn with a fixed seed, ascending."""
    if not 0 < size <= n_test:
        raise ValueError(f"size must be between 1 and {n_test}, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n_test, size, replace=False))


def heldout_batch(name: str, size: int = HELDOUT_SIZE, seed: int = HELDOUT_SEED,
                  data_dir: str | Path | None = None) -> HeldOutBatch:
    """The fixed held-out batch of ``name``'s test set: uint8 images and labels (about 0.1 s; cache it).

    Args:
        name: "mnist" or "cifar10".
        size, seed: how many images, and the seed that chooses them.
        data_dir: the data folder (default: $CNNVIZ_DATA_DIR).
    Raises:
        DataUnavailable: the test set is not on disk (the message says how to fix it).
    """
    from cnnviz.engine.datasets import dataset

    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {tuple(REGISTRY)}")
    c, h, w = REGISTRY[name].input_shape
    ds = dataset(name, "test", data_dir)
    idx = heldout_indices(len(ds), size, seed)
    images = torch.empty((len(idx), c, h, w), dtype=torch.uint8)
    labels = torch.empty(len(idx), dtype=torch.long)
    for row, i in enumerate(idx):
        image, label = ds[int(i)]  # the same decoding as the explorer's test samples (preprocess, dataset_sample)
        arr = np.array(image.convert("L" if c == 1 else "RGB").resize((w, h)), dtype=np.uint8)
        images[row] = torch.from_numpy(arr[None] if c == 1 else arr.transpose(2, 0, 1).copy())
        labels[row] = int(label)
    return HeldOutBatch(name, images, labels, tuple(int(i) for i in idx), int(seed))


def heldout_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> HeldOutScore:
    """Accuracy and mean cross-entropy (float64, from the logits) of ``model`` in eval mode on normalised images."""
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    logits = predict_logits(model, images, batch_size).double()  # (N, K)
    n = int(images.shape[0])
    correct = int((logits.argmax(1) == labels).sum())
    return HeldOutScore(n, correct, correct / n, float(F.cross_entropy(logits, labels, reduction="sum")) / n)


LR_GRID = (0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5)  # the default learning rate is one of these
SAFE_DROP = 0.01  # the default step leaves held-out accuracy within one point


def safe_learning_rate(model: nn.Module, inputs: list[torch.Tensor], targets: list[int], heldout_x: torch.Tensor,
                       heldout_y: torch.Tensor, grid: tuple[float, ...] = LR_GRID, drop: float = SAFE_DROP) -> float:
    """The largest rate of ``grid`` at which one ``learn_step`` on any one of ``inputs`` leaves held-out accuracy
    within ``drop`` of where it was (the smallest rate if none does).

    Args:
        model: the shared model (never changed: the steps run on a private copy, with learn_step's arithmetic).
        inputs: (1, C, H, W) normalised inputs, e.g. the model's hard test images; targets: their classes.
        heldout_x, heldout_y: the fixed held-out batch, normalised, and its labels.
    """
    net = copy.deepcopy(model).eval()
    params = [p for p in net.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    before = heldout_score(net, heldout_x, heldout_y).accuracy
    grads = []
    for x, target in zip(inputs, targets, strict=True):
        with torch.enable_grad():
            loss = F.cross_entropy(net(x.detach().to(start[0].dtype)), torch.tensor([int(target)]))
            grads.append(torch.autograd.grad(loss, params))
    for lr in grid:
        for g in grads:
            with torch.no_grad():
                for p, p0, gp in zip(params, start, g, strict=True):
                    p.copy_(p0 - lr * gp)  # as learn_step's p.sub_(lr * g), bit for bit
            if heldout_score(net, heldout_x, heldout_y).accuracy < before - drop:
                break
        else:
            return lr
    return grid[-1]


def choose_learn_rate(model: nn.Module, card: ModelCard, hard_indices: list[int],
                      data_dir: str | Path | None = None) -> float:
    """``safe_learning_rate`` over the given test images of the card's dataset (a model's hard ones), each stepped
    towards its true class, with the held-out batch. Raises DataUnavailable without the test set."""
    from cnnviz.engine.datasets import dataset
    from cnnviz.engine.pictures import preprocess

    ds = dataset(card.name, "test", data_dir)
    samples = [ds[i] for i in hard_indices]
    batch = heldout_batch(card.name, data_dir=data_dir)
    return safe_learning_rate(model, [preprocess(image, card, dataset_sample=True) for image, _ in samples],
                              [int(label) for _, label in samples], batch.normalized(card), batch.labels)


def _relative(change: float, size: float) -> float:
    if size > 0:
        return change / size
    return 0.0 if change == 0 else math.inf


def learn_step(model: nn.Module, x: torch.Tensor, target: int, lr: float, heldout_x: torch.Tensor | None = None,
               heldout_y: torch.Tensor | None = None, heldout_before: HeldOutScore | None = None,
               threshold: float = LARGE_CHANGE, heldout_text: str = "") -> LearnRecord:
    """One plain SGD step on this single input, on a private full copy of the model, in eval mode.

    Args:
        model: the shared model (never changed).
        x: (1, C, H, W) normalised input; target: the class to learn; lr: the learning rate (finite).
        heldout_x, heldout_y: the fixed held-out batch, normalised (``HeldOutBatch.normalized``) and its labels.
        heldout_before: the model's score on that batch if the caller has it cached (it does not depend on x).
        threshold: flag layers whose change exceeds this fraction of their size. The warning also names a drop of
            held-out accuracy by more than ``HELDOUT_DROP`` (MNIST: lr 0.01 towards a wrong class moves no layer by
            10% but takes the held-out accuracy from 100% to 14%).
        heldout_text: what the batch is, for the page (``HeldOutBatch.text``).
    Returns:
        A LearnRecord (see cnnviz.engine.trace).
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
        raise ValueError(f"learning rate must be a finite number, got {lr!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must have shape (1, C, H, W), got {tuple(getattr(x, 'shape', ()))}")
    if not torch.isfinite(x).all():
        raise ValueError("the input contains inf or nan")
    if (heldout_x is None) != (heldout_y is None):
        raise ValueError("give both heldout_x and heldout_y, or neither")
    net = copy.deepcopy(model).eval()
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    names, params = [n for n, _ in named], [p for _, p in named]
    dtype = params[0].dtype
    x = x.detach().to(dtype)
    tgt = torch.tensor([int(target)])
    if heldout_x is not None and heldout_before is None:
        heldout_before = heldout_score(net, heldout_x, heldout_y)
    with torch.enable_grad():
        logits = net(x)  # (1, K)
        if not 0 <= int(target) < logits.shape[1]:
            raise ValueError(f"target {target} is not a class index (0..{logits.shape[1] - 1})")
        grads = torch.autograd.grad(F.cross_entropy(logits, tgt), params)
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.sub_(lr * g)
        logits_after = net(x)
    heldout_after = heldout_score(net, heldout_x, heldout_y) if heldout_x is not None else None

    updates, groups = [], {}
    for name, p, old in zip(names, params, before, strict=True):
        delta = (p.detach() - old).double()
        change, size = float(delta.norm()), float(old.double().norm())
        updates.append(LayerUpdate(name, delta.to(dtype).numpy(), change, _relative(change, size)))
        layer = name.rsplit(".", 1)[0]
        sq = groups.setdefault(layer, [[], 0.0, 0.0])
        sq[0].append(name)
        sq[1] += size * size
        sq[2] += change * change
    layers = []
    for layer, (pnames, size_sq, change_sq) in groups.items():
        rel = _relative(math.sqrt(change_sq), math.sqrt(size_sq))
        layers.append(LayerChange(layer, tuple(pnames), math.sqrt(size_sq), math.sqrt(change_sq), rel,
                                  not rel <= threshold))  # nan counts as large
    large = tuple(c.layer for c in layers if c.large)
    warning = ""
    if large:
        worst = max((c for c in layers if c.large), key=lambda c: c.relative if math.isfinite(c.relative) else 1e300)
        warning = (f"This step changed {len(large)} of {len(layers)} layers by more than {fmt(threshold * 100)}% of "
                   f"their size (most: {worst.layer}, by {fmt(worst.relative * 100, 3)}%). A step this large "
                   "overwrites what the layers had learned; watch the held-out accuracy.")
    if heldout_before is not None and heldout_after is not None \
            and not heldout_after.accuracy >= heldout_before.accuracy - HELDOUT_DROP:
        warning = (warning + " " if warning else "") + (
            f"Accuracy on the {heldout_after.n} held-out test images fell from "
            f"{fmt(100 * heldout_before.accuracy, 4)}% to {fmt(100 * heldout_after.accuracy, 4)}%: this one step "
            "undid much of what the model had learned.")
    loss_before = float(F.cross_entropy(logits.detach().double(), tgt))
    loss_after = float(F.cross_entropy(logits_after.double(), tgt))
    diverged = not math.isfinite(loss_after) or not all(math.isfinite(u.norm) for u in updates)
    return LearnRecord(
        lr=float(lr), target=int(target), mode="eval", mode_text=EVAL_MODE_TEXT,
        loss_before=loss_before, loss_after=loss_after,
        probs_before=torch.softmax(logits.detach().double(), 1)[0].numpy(),
        probs_after=torch.softmax(logits_after.double(), 1)[0].numpy(),
        pred_before=int(logits.detach().argmax(1)), pred_after=int(logits_after.argmax(1)),
        layers=tuple(layers), params=tuple(updates), threshold=float(threshold), large_layers=large,
        warning=warning, heldout_before=heldout_before, heldout_after=heldout_after,
        heldout_text=heldout_text if heldout_x is not None else "", diverged=diverged,
    )


def main(argv: list[str] | None = None) -> int:
    """Write each shipped checkpoint's ``learn_rate`` into its card (needs the test sets)."""
    import argparse
    import json

    from cnnviz.engine.checkpoints import available_stages, checkpoint_dir, load_model
    from cnnviz.engine.examples import checkpoint_path, load_examples

    parser = argparse.ArgumentParser(description="Choose the Learn view's default learning rate of each shipped model.")
    parser.add_argument("names", nargs="*", default=["mnist", "cifar10"])
    parser.add_argument("--data-dir", default=None, help="data folder (default: $CNNVIZ_DATA_DIR)")
    args = parser.parse_args(argv)
    for name in args.names:
        for stage in available_stages(name):
            model, card = load_model(name, stage)
            hard = [h.index for h in load_examples(name, stage).hard]
            lr = choose_learn_rate(model, card, hard, args.data_dir)
            path = checkpoint_path(name, stage, checkpoint_dir()).with_suffix(".json")
            meta = json.loads(path.read_text())
            meta["card"]["learn_rate"] = lr
            path.write_text(json.dumps(meta, indent=2) + "\n")
            print(f"{path}: learn_rate {lr}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
