"""learn_step against a step written out with torch autograd in float64, the layer-change flag, the held-out batch,
and the shared model left alone."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnviz.engine.learn import LARGE_CHANGE, heldout_batch, heldout_indices, heldout_score, learn_step
from tests.support import shipped_or_random, shipped_with_test_set


@pytest.fixture(scope="module")
def model64():
    return copy.deepcopy(shipped_or_random("mnist")).double().eval()


@pytest.fixture(scope="module")
def batch64():
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(1, 1, 28, 28, generator=gen, dtype=torch.float64)
    held_x = torch.randn(64, 1, 28, 28, generator=gen, dtype=torch.float64)
    held_y = torch.randint(0, 10, (64,), generator=gen)
    return x, held_x, held_y


def f64(value) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float64)


def _reference(model, x, target, lr, held_x, held_y):
    """The same step written out: float64 copy, autograd, theta - lr * grad, scores by hand."""
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    old = {n: p.detach().clone() for n, p in params.items()}
    logits = net(x.double())
    loss = F.cross_entropy(logits, torch.tensor([target]))
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))

    def score(m):
        with torch.no_grad():
            out = m(held_x.double())
        return int((out.argmax(1) == held_y).sum()), float(F.cross_entropy(out, held_y))

    held_before = score(net)
    with torch.no_grad():
        for n, p in params.items():
            p -= lr * grads[n]
        logits_after = net(x.double())
    return {
        "loss_before": float(loss.detach()),
        "loss_after": float(F.cross_entropy(logits_after, torch.tensor([target]))),
        "probs_before": torch.softmax(logits.detach(), 1)[0], "probs_after": torch.softmax(logits_after, 1)[0],
        "delta": {n: params[n].detach() - old[n] for n in params}, "old": old,
        "held_before": held_before, "held_after": score(net),
    }


@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_every_number_equals_autograd_in_float64(model64, batch64, lr):
    x, held_x, held_y = batch64
    rec = learn_step(model64, x, 3, lr, held_x, held_y)
    ref = _reference(model64, x, 3, lr, held_x, held_y)
    assert_close(f64(rec.loss_before), f64(ref["loss_before"]))
    assert_close(f64(rec.loss_after), f64(ref["loss_after"]))
    assert_close(torch.as_tensor(rec.probs_before), ref["probs_before"])
    assert_close(torch.as_tensor(rec.probs_after), ref["probs_after"])
    assert rec.pred_before == int(ref["probs_before"].argmax()) and rec.pred_after == int(ref["probs_after"].argmax())
    for update in rec.params:
        delta, old = ref["delta"][update.name], ref["old"][update.name]
        assert_close(torch.as_tensor(update.delta), delta)
        assert_close(f64(update.norm), delta.norm())
        assert_close(f64(update.relative), delta.norm() / old.norm())
    assert {u.name for u in rec.params} == set(ref["delta"])
    for change in rec.layers:  # weight and bias together: ||(dW, db)|| / ||(W, b)||
        delta = torch.cat([ref["delta"][p].flatten() for p in change.params])
        old = torch.cat([ref["old"][p].flatten() for p in change.params])
        assert all(p.rsplit(".", 1)[0] == change.layer for p in change.params)
        assert_close(f64(change.size), old.norm())
        assert_close(f64(change.change), delta.norm())
        assert_close(f64(change.relative), delta.norm() / old.norm())
        assert change.large == (change.relative > LARGE_CHANGE)
    assert sum(len(c.params) for c in rec.layers) == len(rec.params)
    correct, mean_loss = ref["held_before"]
    assert (rec.heldout_before.correct, rec.heldout_before.n) == (correct, 64)
    assert_close(f64(rec.heldout_before.mean_loss), f64(mean_loss))
    assert rec.heldout_before.accuracy == correct / 64
    correct, mean_loss = ref["held_after"]
    assert rec.heldout_after.correct == correct
    assert_close(f64(rec.heldout_after.mean_loss), f64(mean_loss))
    assert rec.mode == "eval" and "dropout is off" in rec.mode_text and "running statistics" in rec.mode_text


def test_float32_step_agrees_with_float64_and_keeps_tiny_losses():
    model = shipped_or_random("mnist")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 28, 28, generator=gen)
    pred = int(model(x).argmax())
    rec = learn_step(model, x, pred, 0.05)
    ref = _reference(model, x, pred, 0.05, x.double(), torch.tensor([pred]))
    assert_close(f64(rec.loss_before), f64(ref["loss_before"]), rtol=1e-4, atol=1e-7)
    assert_close(f64(rec.loss_after), f64(ref["loss_after"]), rtol=1e-3, atol=1e-6)
    for update in rec.params:
        assert_close(torch.as_tensor(update.delta).double(), ref["delta"][update.name], rtol=1e-3, atol=1e-6)
    assert rec.heldout_before is None and rec.heldout_after is None and rec.heldout_text == ""


def test_the_shared_model_is_not_changed_and_runs_in_eval_mode(batch64):
    model = copy.deepcopy(shipped_or_random("mnist")).double()
    model.train()  # even a model left in train mode is stepped in eval mode, on a copy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, held_x, held_y = batch64
    a = learn_step(model, x, 1, 0.3, held_x, held_y)
    b = learn_step(model, x, 1, 0.3, held_x, held_y)
    assert a.loss_after == b.loss_after  # no dropout: the same step twice gives the same numbers
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    ref = _reference(model, x, 1, 0.3, held_x, held_y)  # the reference runs in eval mode
    assert_close(f64(a.loss_after), f64(ref["loss_after"]))


def test_a_large_step_is_flagged_and_a_small_one_is_not(model64, batch64):
    """Issue 13: lr 5 towards "3" changed a layer by 1668% of its size and the page celebrated."""
    x, held_x, held_y = batch64
    wrong = (int(model64(x).argmax()) + 3) % 10
    big = learn_step(model64, x, wrong, 5.0, held_x, held_y, heldout_text="64 random images")
    assert big.large_layers and big.warning
    worst = max(big.layers, key=lambda c: c.relative)
    assert worst.layer in big.warning and "%" in big.warning
    assert set(big.large_layers) == {c.layer for c in big.layers if c.relative > 0.10}
    assert big.heldout_text == "64 random images"
    small = learn_step(model64, x, wrong, 1e-5, held_x, held_y)
    assert small.large_layers == () and small.warning == ""
    assert small.threshold == LARGE_CHANGE == 0.10


def test_cached_heldout_score_is_used_and_bad_input_is_refused(model64, batch64):
    x, held_x, held_y = batch64
    before = heldout_score(model64, held_x, held_y)
    rec = learn_step(model64, x, 2, 0.1, held_x, held_y, heldout_before=before)
    assert rec.heldout_before is before
    for lr in (float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="learning rate"):
            learn_step(model64, x, 2, lr)
    with pytest.raises(ValueError, match="class index"):
        learn_step(model64, x, 10, 0.1)
    with pytest.raises(ValueError, match="both"):
        learn_step(model64, x, 2, 0.1, held_x, None)
    with pytest.raises(ValueError, match="inf or nan"):
        learn_step(model64, x * math.inf, 2, 0.1)
    diverged = learn_step(model64, x, 2, 1e300)
    assert diverged.diverged


def test_heldout_indices_are_fixed():
    a = heldout_indices(10_000)
    assert len(a) == 256 == len(set(a.tolist())) and (np.diff(a) > 0).all() and a.max() < 10_000
    assert (a == heldout_indices(10_000)).all()
    assert not (a == heldout_indices(10_000, seed=1)).all()
    with pytest.raises(ValueError):
        heldout_indices(100, 101)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_heldout_batch_is_the_test_images_the_explorer_shows(name):
    from cnnviz.engine.datasets import dataset, dataset_available
    from cnnviz.engine.models import REGISTRY, ModelCard
    from cnnviz.engine.pictures import preprocess

    ok, message = dataset_available(name)
    if not ok:
        pytest.skip(message)
    batch = heldout_batch(name)
    spec = REGISTRY[name]
    card = ModelCard(name, spec.classes, spec.input_shape, spec.mean, spec.std)
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (256, *spec.input_shape)
    assert batch.indices == tuple(heldout_indices(10_000).tolist()) and "seed 0" in batch.text
    ds = dataset(name, "test")
    for row in (0, 17, 255):
        image, label = ds[batch.indices[row]]
        assert int(batch.labels[row]) == label
        assert_close(batch.normalized(card)[row], preprocess(image, card, dataset_sample=True)[0])
    assert len(set(batch.labels.tolist())) == 10


def test_a_step_that_ruins_the_held_out_accuracy_is_named_even_below_the_size_threshold():
    """MNIST, trained: one step of lr 0.01 towards a wrong class moves no layer by 10% of its size, yet the held-out
    accuracy collapses (measured: 100% -> 14% on the 256 images). The warning must say so."""
    model, card = shipped_with_test_set("mnist")
    batch = heldout_batch("mnist")
    held_x = batch.normalized(card)
    x, label = held_x[:1], int(batch.labels[0])
    assert label == 7  # the batch is fixed: its first image is a 7
    rec = learn_step(model, x, 3, 0.01, held_x, batch.labels)
    assert rec.large_layers == ()  # no layer moved by 10% of its size ...
    assert rec.heldout_before.accuracy - rec.heldout_after.accuracy > 0.5  # ... yet the model is ruined
    assert "held-out test images fell from" in rec.warning
    gentle = learn_step(model, x, label, 0.01, held_x, batch.labels)
    assert gentle.warning == "" and gentle.heldout_after.accuracy == gentle.heldout_before.accuracy
