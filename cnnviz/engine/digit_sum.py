"""The digit-sum challenge: classify ten MNIST test digits and compare the sum of the predictions with the true sum.

The shared model is only ever read: predictions run under ``torch.no_grad`` on a model already in eval mode, with
no hooks, no ``.train()`` and no gradients, so every browser session can use the same cached model at once.

No streamlit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnviz.engine.models import ModelCard
from cnnviz.engine.pictures import ImageError, normalize, preprocess, unnormalize
from cnnviz.engine.predict import predict_probs

MODES = ("one of each", "random")
DIGITS = 10
BATCH = 500
MAX_TRIALS = 100_000


class NotInEvalMode(RuntimeError):
    """The model is in training mode: predicting would change BatchNorm's running statistics."""


@dataclass(frozen=True, eq=False)
class DigitDraw:
    """Ten (or fewer, for drawings) digits, their true and predicted labels, and the two sums."""

    indices: np.ndarray  # (n,) test-set indices; -1 for a drawing
    images: np.ndarray  # (n, 28, 28) float in [0, 1], for display
    true_labels: np.ndarray  # (n,) int
    predicted: np.ndarray  # (n,) int
    confidence: np.ndarray  # (n,) softmax probability of the predicted class
    missing: tuple[int, ...] = ()  # drawings: the digits left blank

    @property
    def true_sum(self) -> int:
        return int(self.true_labels.sum())

    @property
    def predicted_sum(self) -> int:
        return int(self.predicted.sum())

    @property
    def difference(self) -> int:
        """Predicted sum minus true sum."""
        return self.predicted_sum - self.true_sum

    @property
    def wrong(self) -> int:
        return int((self.predicted != self.true_labels).sum())

    @property
    def errors_cancel(self) -> bool:
        """The sums agree although at least one digit is wrong."""
        return self.difference == 0 and self.wrong > 0


@dataclass(frozen=True, eq=False)
class TestPredictions:
    """The model's prediction for every test image, computed once and reused by every trial."""

    predicted: np.ndarray  # (N,) int
    labels: np.ndarray  # (N,) int

    @property
    def accuracy(self) -> float:
        """Percent correct on these images."""
        return 100.0 * float((self.predicted == self.labels).mean()) if len(self.labels) else 0.0


@dataclass(frozen=True, eq=False)
class TrialStats:
    """Many draws of ten digits at once."""

    trials: int
    mode: str
    seed: int
    differences: np.ndarray  # (trials,) predicted sum - true sum
    wrong: np.ndarray  # (trials,) wrong digits per trial
    accuracy: float  # percent, over the images the trials drew from

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(difference values, how many trials had each), every value from min to max."""
        lo, hi = int(self.differences.min()), int(self.differences.max())
        values = np.arange(lo, hi + 1)
        return values, np.bincount(self.differences - lo, minlength=len(values))

    @property
    def sums_agree_rate(self) -> float:
        return float((self.differences == 0).mean())

    @property
    def all_correct_rate(self) -> float:
        return float((self.wrong == 0).mean())

    @property
    def cancel_rate(self) -> float:
        """How often the sums agree while at least one digit is wrong (errors cancelling)."""
        return float(((self.differences == 0) & (self.wrong > 0)).mean())

    @property
    def expected_all_correct(self) -> float:
        """accuracy^10: the chance that ten independent digits are all right."""
        return (self.accuracy / 100.0) ** DIGITS


@dataclass(frozen=True, eq=False)
class FitReport:
    """What the model card says about fitting: the numbers that do measure over- and under-fitting."""

    test_accuracy: float | None
    train_accuracy: float | None
    gap: float | None  # train - test, percentage points
    epochs: int
    history: tuple[dict[str, float], ...]
    summary: str


def _check_eval(model: nn.Module) -> None:
    if model.training:
        raise NotInEvalMode("the model is in training mode; load it with checkpoints.load_model (eval mode)")


def predict_digits(model: nn.Module, card: ModelCard, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Class and confidence for uint8 images (N, 1, 28, 28), batch by batch, without touching the model.

    Raises:
        NotInEvalMode: the model is in training mode (a shared model's mode is never changed).
    """
    _check_eval(model)
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    probs = predict_probs(model, images, BATCH, prepare=lambda batch: normalize(batch, card))  # (N, 10)
    conf, pred = probs.max(dim=1)
    return pred.numpy().astype(np.int64), conf.numpy()


def sample_indices(labels: np.ndarray | torch.Tensor, mode: str, rng: np.random.Generator, trials: int = 1,
                   count: int = DIGITS) -> np.ndarray:
    """The one digit sampler: ``trials`` draws of test images, one of each class (in order 0..9) or ``count`` at
    random without repeats within a draw.

    Returns:
        (trials, count) test-set indices.
    Raises:
        ValueError: unknown mode, a class with no image, or fewer than ``count`` images.
    """
    labels = np.asarray(labels)
    if mode == "one of each":
        columns = []
        for digit in range(DIGITS):
            where = np.flatnonzero(labels == digit)
            if len(where) == 0:
                raise ValueError(f"the test set has no image of a {digit}")
            columns.append(where[rng.integers(len(where), size=trials)])
        return np.stack(columns, axis=1).astype(np.int64)  # (trials, 10)
    if mode == "random":
        if len(labels) < count:
            raise ValueError(f"the test set has only {len(labels)} images; {count} are needed")
        return np.stack([rng.choice(len(labels), size=count, replace=False) for _ in range(trials)]).astype(np.int64)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def draw_indices(labels: np.ndarray | torch.Tensor, mode: str, seed: int, count: int = DIGITS) -> np.ndarray:
    """One draw of ``count`` test images by ``seed`` (see :func:`sample_indices`): (count,) indices."""
    return sample_indices(labels, mode, np.random.default_rng(seed), 1, count)[0]


def draw_and_classify(model: nn.Module, card: ModelCard, images: torch.Tensor, labels: torch.Tensor | np.ndarray,
                      mode: str = "one of each", seed: int = 0) -> DigitDraw:
    """Draw ten test digits by ``seed`` and classify them with the model.

    Args:
        model: the trained MNIST model, in eval mode (it is not changed).
        card: its card (mean and std for normalisation).
        images: uint8 (N, 1, 28, 28) test images.
        labels: (N,) true labels.
        mode: "one of each" (true sum 45) or "random".
        seed: which draw.
    """
    idx = draw_indices(labels, mode, seed)
    chosen = images[torch.as_tensor(idx)]  # (10, 1, 28, 28) uint8
    pred, conf = predict_digits(model, card, chosen)
    shown = chosen[:, 0].numpy().astype(np.float64) / 255.0
    return DigitDraw(idx, shown, np.asarray(labels)[idx].astype(np.int64), pred, conf)


def classify_pictures(model: nn.Module, card: ModelCard, pictures: Sequence[Image.Image | None],
                      true_labels: Sequence[int] | None = None) -> DigitDraw:
    """Classify drawings (e.g. ten canvases, one per digit). Blank or unusable pictures are listed in ``missing``.

    Args:
        pictures: one picture per digit, None for an untouched canvas.
        true_labels: the digit each picture is meant to be; default 0, 1, ..., 9.
    """
    _check_eval(model)
    true_labels = list(range(len(pictures))) if true_labels is None else list(true_labels)
    inputs, shown, kept, missing = [], [], [], []
    for picture, label in zip(pictures, true_labels, strict=True):
        if picture is None:
            missing.append(label)
            continue
        try:
            x = preprocess(picture, card)  # (1, 1, 28, 28)
        except ImageError:
            missing.append(label)
            continue
        inputs.append(x)
        shown.append(unnormalize(x[0], card)[0])
        kept.append(label)
    if not inputs:
        empty = np.zeros(0, dtype=np.int64)
        return DigitDraw(empty, np.zeros((0, 28, 28)), empty, empty, np.zeros(0), tuple(missing))
    conf, pred = predict_probs(model, torch.cat(inputs)).max(dim=1)  # of (n, 10)
    n = len(kept)
    return DigitDraw(np.full(n, -1), np.stack(shown), np.array(kept, dtype=np.int64),
                     pred.numpy().astype(np.int64), conf.numpy(), tuple(missing))


def predict_test_set(model: nn.Module, card: ModelCard, images: torch.Tensor,
                     labels: torch.Tensor | np.ndarray) -> TestPredictions:
    """Every test image's predicted class, once, so that thousands of trials cost only indexing."""
    pred, _ = predict_digits(model, card, images)
    return TestPredictions(pred, np.asarray(labels).astype(np.int64))


def run_trials(preds: TestPredictions, trials: int = 1000, mode: str = "one of each", seed: int = 0) -> TrialStats:
    """Draw ten digits ``trials`` times and record predicted-sum minus true-sum and the wrong digits of each.

    Raises:
        ValueError: trials outside 1..100,000, or the draw is impossible (see :func:`draw_indices`).
    """
    if not 1 <= trials <= MAX_TRIALS:
        raise ValueError(f"trials must be between 1 and {MAX_TRIALS:,}")
    labels, predicted = preds.labels, preds.predicted
    idx = sample_indices(labels, mode, np.random.default_rng(seed), trials)  # (trials, 10)
    differences = predicted[idx].sum(axis=1) - labels[idx].sum(axis=1)
    wrong = (predicted[idx] != labels[idx]).sum(axis=1)
    return TrialStats(trials, mode, seed, differences.astype(np.int64), wrong.astype(np.int64), preds.accuracy)


def fit_report(card: ModelCard) -> FitReport:
    """Test accuracy, train accuracy and their gap from the model card, with a plain reading of them."""
    test, train = card.test_accuracy, card.train_accuracy
    history = tuple(dict(h) for h in card.history)
    if train is None and history:
        train = history[-1].get("train_accuracy")
    if test is None:
        return FitReport(None, train, None, card.epochs, history,
                         "The card records no test accuracy (an untrained or unfinished model?), so there is "
                         "nothing to judge fitting by.")
    if train is None:
        return FitReport(test, None, None, card.epochs, history,
                         f"Test accuracy {test:.2f}%. The card records no training accuracy, so the gap is unknown.")
    gap = train - test
    if test < 90:
        reading = ("Both accuracies are low for MNIST: the model is under-fitting (too little training or too small "
                   "a model).")
    elif gap > 2:
        reading = ("Training accuracy is well above test accuracy: the model fits its training images better than new "
                   "ones, the sign of over-fitting.")
    elif gap < -0.5:
        reading = ("Training accuracy is below test accuracy. That is usual: the training accuracy is averaged "
                   "over the epoch while the weights were still changing, on augmented (shifted, rotated) images "
                   "with dropout on, a harder task than the test. No sign of over-fitting.")
    else:
        reading = "Training and test accuracy are close and high: no sign of over- or under-fitting."
    return FitReport(test, train, gap, card.epochs, history, reading)
