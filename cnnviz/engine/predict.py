"""Batched prediction, one way for the whole engine, and the test-set evaluation built on it.

The model runs batch by batch under ``torch.no_grad`` with every module in eval mode, and each module's mode is
restored afterwards exactly as it was (a model already in eval mode, as every shared model is, is never written to).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnviz.engine.models import ModelCard
from cnnviz.engine.pictures import normalize


def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 500,
                   prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The model's logits for ``inputs``, ``batch_size`` at a time, in eval mode and without autograd.

    Args:
        inputs: (N, C, H, W), at least one; ``prepare`` turns each batch into the model's input (e.g. normalises
            uint8 images), and the result is cast to the model's dtype.
    Returns:
        (N, K) logits in the model's dtype.
    """
    if len(inputs) == 0:
        raise ValueError("no inputs to predict")
    params = next(model.parameters(), None)
    modes = [(m, m.training) for m in model.modules()]
    if any(training for _, training in modes):
        model.eval()
    try:
        with torch.no_grad():
            outs = []
            for start in range(0, len(inputs), batch_size):
                x = inputs[start:start + batch_size]
                x = x if prepare is None else prepare(x)
                outs.append(model(x if params is None else x.to(params.dtype)))  # (B, K)
    finally:
        for m, training in modes:
            m.training = training
    return torch.cat(outs)


def predict_probs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 500,
                  prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(N, K) float64 softmax probabilities of ``predict_logits`` (same arguments)."""
    return torch.softmax(predict_logits(model, inputs, batch_size, prepare).double(), dim=1)


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # percent
    per_class: np.ndarray  # (K,) percent
    confusion: np.ndarray  # (K, K) counts, rows = true class, columns = predicted
    count: int
    loss: float


def evaluate_arrays(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, card: ModelCard) -> EvalResult:
    """Accuracy, per-class accuracy, confusion matrix and mean cross-entropy on uint8 images (N, C, H, W)."""
    logits = predict_logits(model, images, prepare=lambda batch: normalize(batch, card))  # (N, K)
    loss = float(nn.functional.cross_entropy(logits, labels))
    pred = logits.argmax(1)
    k = len(card.classes)
    confusion = torch.zeros((k, k), dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    conf = confusion.numpy()
    per_class = 100.0 * np.diag(conf) / np.maximum(conf.sum(1), 1)
    accuracy = 100.0 * float((pred == labels).float().mean())
    return EvalResult(accuracy, per_class, conf, len(labels), loss)
