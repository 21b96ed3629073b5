"""Small models and inputs shared by the tests."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from cnnviz.engine.checkpoints import CheckpointError, load_model
from cnnviz.engine.models import build_model


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so it is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def small_cnn() -> nn.Module:
    """A small random CNN with OVERLAPPING max-pool windows (kernel 3, stride 1) and an average pool."""
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 4, 3, padding=1)),
        ("bn1", nn.BatchNorm2d(4)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, stride=1)),  # overlapping windows
        ("conv2", nn.Conv2d(4, 5, 2, stride=2, padding=1)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(5 * 2 * 2, 3)),
    ])).eval()


def shipped_or_random(name: str, seed: int = 0) -> nn.Module:
    """The committed checkpoint, or (while it is being trained) a random model with random BN statistics."""
    try:
        model, _ = load_model(name)
        return model
    except CheckpointError:
        torch.manual_seed(seed)
        return randomize_batchnorm(build_model(name), seed).eval()


def leaf_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]


def reference_pass(model: nn.Module, x: torch.Tensor, target: int, objective: str):
    """An independent computation: float64 copy, run leaf by leaf, retain_grad() and .backward().

    Valid for chain-shaped models (ours are). Returns (activations, activation grads, param grads, logits).
    """
    net = copy.deepcopy(model).double().eval()
    for p in net.parameters():
        p.grad = None
    h = x.detach().double().clone().requires_grad_(True)
    acts = [h]
    for _, module in leaf_chain(net):
        h = module(h)
        h.retain_grad()
        acts.append(h)
    logits = h
    if objective == "loss":
        obj = nn.functional.cross_entropy(logits, torch.tensor([target]))
    else:
        obj = logits[0, target]
    obj.backward()
    grads = [a.grad for a in acts]
    param_grads = {n: p.grad for n, p in net.named_parameters()}
    return acts, grads, param_grads, logits.detach()


def shipped_with_test_set(name: str) -> tuple[nn.Module, object]:
    """The shipped model and card, skipping the test (with the reason) when its test set or checkpoint is missing."""
    import pytest

    from cnnviz.engine.datasets import dataset_available

    ok, message = dataset_available(name)
    if not ok:
        pytest.skip(message)
    try:
        return load_model(name)
    except CheckpointError as exc:
        pytest.skip(str(exc))
