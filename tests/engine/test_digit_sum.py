"""The digit-sum challenge backend: draws, sums against the model's own predictions, trials, and a model left as is."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.engine import digit_sum as ds
from cnnviz.engine.checkpoints import CHECKPOINT_DIR, load_model
from cnnviz.engine.datasets import dataset_available, load_arrays
from cnnviz.engine.models import build_model, new_card
from cnnviz.engine.pictures import normalize, preprocess


def fake_test_set(per_class: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Blobby uint8 digits (N, 1, 28, 28) with labels cycling 0..9: enough to drive a random model."""
    g = torch.Generator().manual_seed(seed)
    n = per_class * 10
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 4:24, 6:22] = torch.randint(0, 256, (n, 1, 20, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return images, labels


@pytest.fixture(scope="module")
def model_and_card():
    torch.manual_seed(0)
    model = build_model("mnist")
    model.eval()
    return model, new_card("mnist", model)


def reference_predictions(model, card, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(normalize(images, card)).argmax(1).numpy()


# ---------------------------------------------------------------------------------------------------------------
# Draws


def test_one_of_each_draws_every_class_once_and_is_reproducible():
    _, labels = fake_test_set()
    idx = ds.draw_indices(labels, "one of each", seed=3)
    assert labels[idx].tolist() == list(range(10))
    assert ds.draw_indices(labels, "one of each", seed=3).tolist() == idx.tolist()
    others = {tuple(ds.draw_indices(labels, "one of each", seed=s).tolist()) for s in range(10)}
    assert len(others) > 5, "different seeds should give different sets"


def test_random_draw_has_ten_different_images():
    _, labels = fake_test_set()
    idx = ds.draw_indices(labels, "random", seed=1)
    assert len(set(idx.tolist())) == 10 and idx.min() >= 0 and idx.max() < len(labels)
    assert ds.draw_indices(labels, "random", seed=1).tolist() == idx.tolist()


def test_draw_explains_impossible_requests():
    labels = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="no image of a 0"):
        ds.draw_indices(labels, "one of each", 0)
    with pytest.raises(ValueError, match="only 3 images"):
        ds.draw_indices(labels, "random", 0)
    with pytest.raises(ValueError, match="mode"):
        ds.draw_indices(labels, "all", 0)


@pytest.mark.parametrize("mode", ds.MODES)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sums_match_the_models_predictions(model_and_card, mode, seed):
    model, card = model_and_card
    images, labels = fake_test_set()
    draw = ds.draw_and_classify(model, card, images, labels, mode, seed)
    idx = ds.draw_indices(labels, mode, seed)
    expected = reference_predictions(model, card, images[idx])
    assert draw.predicted.tolist() == expected.tolist()
    assert draw.predicted_sum == int(expected.sum())
    assert draw.true_sum == int(labels[idx].sum())
    if mode == "one of each":
        assert draw.true_sum == 45
    assert draw.difference == draw.predicted_sum - draw.true_sum
    assert draw.wrong == int((expected != labels[idx].numpy()).sum())
    assert draw.images.shape == (10, 28, 28)
    np.testing.assert_allclose(draw.images, images[idx, 0].numpy() / 255.0)


def test_errors_cancel_is_reported_only_when_sums_agree_with_a_wrong_digit():
    base = dict(indices=np.arange(3), images=np.zeros((3, 28, 28)), confidence=np.ones(3))
    cancel = ds.DigitDraw(true_labels=np.array([3, 5, 1]), predicted=np.array([5, 3, 1]), **base)
    exact = ds.DigitDraw(true_labels=np.array([3, 5, 1]), predicted=np.array([3, 5, 1]), **base)
    off = ds.DigitDraw(true_labels=np.array([3, 5, 1]), predicted=np.array([3, 5, 7]), **base)
    assert cancel.errors_cancel and cancel.wrong == 2 and cancel.difference == 0
    assert not exact.errors_cancel and exact.wrong == 0
    assert not off.errors_cancel and off.difference == 6


# ---------------------------------------------------------------------------------------------------------------
# The shared model is never changed


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_predicting_leaves_the_shared_model_untouched(model_and_card):
    model, card = model_and_card
    images, labels = fake_test_set()
    before = _snapshot(model)
    ds.draw_and_classify(model, card, images, labels, "random", 0)
    ds.predict_test_set(model, card, images, labels)
    ds.classify_pictures(model, card, [Image.fromarray(np.full((50, 50), 255, np.uint8)), None])
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # weights and BatchNorm running statistics
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_a_model_in_training_mode_is_refused_not_changed():
    torch.manual_seed(1)
    model = build_model("mnist")  # train mode: BatchNorm would update its running statistics
    card = new_card("mnist", model)
    images, labels = fake_test_set()
    before = _snapshot(model)
    with pytest.raises(ds.NotInEvalMode):
        ds.draw_and_classify(model, card, images, labels)
    with pytest.raises(ds.NotInEvalMode):
        ds.classify_pictures(model, card, [None])
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k


# ---------------------------------------------------------------------------------------------------------------
# Many trials


def _preds(labels: np.ndarray, predicted: np.ndarray) -> ds.TestPredictions:
    return ds.TestPredictions(np.asarray(predicted), np.asarray(labels))


@pytest.mark.parametrize("mode", ds.MODES)
def test_a_perfect_model_always_agrees(mode):
    labels = np.arange(200) % 10
    stats = ds.run_trials(_preds(labels, labels), 300, mode, 0)
    assert (stats.differences == 0).all() and stats.all_correct_rate == 1 and stats.cancel_rate == 0
    assert stats.accuracy == 100


def test_swapping_3_and_5_always_cancels_in_one_of_each():
    labels = np.arange(200) % 10
    predicted = np.where(labels == 3, 5, np.where(labels == 5, 3, labels))
    stats = ds.run_trials(_preds(labels, predicted), 500, "one of each", 4)
    assert stats.sums_agree_rate == 1 and stats.cancel_rate == 1 and stats.all_correct_rate == 0
    assert (stats.wrong == 2).all()


def test_reading_every_7_as_1_moves_the_sum_by_minus_6():
    labels = np.arange(200) % 10
    predicted = np.where(labels == 7, 1, labels)
    stats = ds.run_trials(_preds(labels, predicted), 400, "one of each", 2)
    assert (stats.differences == -6).all()
    values, counts = stats.histogram
    assert values.tolist() == [-6] and counts.tolist() == [400]
    rnd = ds.run_trials(_preds(labels, predicted), 400, "random", 2)
    # at random, each trial's difference is -6 times the number of sevens drawn
    assert set(np.unique(rnd.differences).tolist()) <= {0, -6, -12, -18, -24}
    assert (rnd.differences == -6 * rnd.wrong).all()


def test_trial_statistics_add_up_and_match_a_loop_over_draws(model_and_card):
    model, card = model_and_card
    images, labels = fake_test_set()
    preds = ds.predict_test_set(model, card, images, labels)
    assert preds.predicted.tolist() == reference_predictions(model, card, images).tolist()
    stats = ds.run_trials(preds, 1000, "one of each", 9)
    values, counts = stats.histogram
    assert counts.sum() == 1000 and len(values) == values.max() - values.min() + 1
    assert stats.sums_agree_rate == pytest.approx(stats.all_correct_rate + stats.cancel_rate)
    assert counts[values == 0].sum() / 1000 == stats.sums_agree_rate
    assert stats.accuracy == pytest.approx(100 * float((preds.predicted == labels.numpy()).mean()))
    assert ds.run_trials(preds, 1000, "one of each", 9).differences.tolist() == stats.differences.tolist()


def test_trials_refuse_silly_counts():
    labels = np.arange(20) % 10
    with pytest.raises(ValueError, match="between"):
        ds.run_trials(_preds(labels, labels), 0)


# ---------------------------------------------------------------------------------------------------------------
# Your own drawings


def test_classify_pictures_matches_the_model_on_the_preprocessed_drawings(model_and_card):
    model, card = model_and_card
    canvas = np.zeros((120, 120, 4), dtype=np.uint8)
    canvas[..., 3] = 255
    canvas[20:100, 55:65, :3] = 255  # a "1"
    seven = canvas.copy()
    seven[20:30, 30:90, :3] = 255
    pictures = [None, Image.fromarray(canvas), None, None, None, None, None, Image.fromarray(seven),
                Image.fromarray(np.zeros((120, 120, 4), np.uint8)), None]
    draw = ds.classify_pictures(model, card, pictures)
    assert draw.true_labels.tolist() == [1, 7]
    assert draw.missing == (0, 2, 3, 4, 5, 6, 8, 9)  # the blank canvas at 8 counts as not drawn
    with torch.no_grad():
        expected = [int(model(preprocess(p, card)).argmax()) for p in (pictures[1], pictures[7])]
    assert draw.predicted.tolist() == expected
    assert draw.true_sum == 8 and draw.predicted_sum == sum(expected)


def test_classify_pictures_with_nothing_drawn():
    torch.manual_seed(0)
    model = build_model("mnist").eval()
    draw = ds.classify_pictures(model, new_card("mnist", model), [None] * 10)
    assert draw.missing == tuple(range(10)) and draw.true_sum == 0 and draw.predicted_sum == 0


# ---------------------------------------------------------------------------------------------------------------
# What does measure fitting


def test_fit_report_reads_the_card():
    torch.manual_seed(0)
    card = new_card("mnist", build_model("mnist"))
    assert ds.fit_report(card).gap is None and "no test accuracy" in ds.fit_report(card).summary
    card.test_accuracy, card.train_accuracy = 98.0, 99.9
    assert ds.fit_report(card).gap == pytest.approx(1.9)
    assert "no sign" in ds.fit_report(card).summary
    card.train_accuracy = 99.9
    card.test_accuracy = 95.0
    assert "over-fitting" in ds.fit_report(card).summary and "no sign" not in ds.fit_report(card).summary
    card.test_accuracy, card.train_accuracy = 70.0, 71.0
    assert "under-fitting" in ds.fit_report(card).summary
    card.test_accuracy, card.train_accuracy = 99.3, None
    card.history = [{"epoch": 1, "train_accuracy": 97.0, "test_accuracy": 99.3}]
    assert ds.fit_report(card).train_accuracy == 97.0 and ds.fit_report(card).gap == pytest.approx(-2.3)


# ---------------------------------------------------------------------------------------------------------------
# The shipped checkpoint on the real test set (when both are here)


@pytest.mark.slow
def test_shipped_model_accuracy_on_the_test_set_matches_its_card():
    if not (Path(os.environ.get("CNNVIZ_CHECKPOINT_DIR", CHECKPOINT_DIR)) / "mnist.safetensors").is_file():
        pytest.skip("no trained MNIST checkpoint yet")
    ok, message = dataset_available("mnist")
    if not ok:
        pytest.skip(message)
    model, card = load_model("mnist")
    images, labels = load_arrays("mnist", "test")
    preds = ds.predict_test_set(model, card, images, labels)
    assert card.test_accuracy is not None
    assert preds.accuracy == pytest.approx(card.test_accuracy, abs=0.05)
    draw = ds.draw_and_classify(model, card, images, labels, "one of each", 0)
    assert draw.predicted.tolist() == preds.predicted[draw.indices].tolist()


# ---------------------------------------------------------------------------------------------------------------
# One sampler for a single draw and for many trials


@pytest.mark.parametrize("mode", ds.MODES)
def test_draws_and_trials_use_the_one_sampler(mode):
    labels = np.arange(120) % 10
    predicted = np.where(labels == 7, 1, labels)
    idx = ds.sample_indices(labels, mode, np.random.default_rng(3), trials=50)  # (50, 10)
    assert idx.shape == (50, 10)
    assert all(len(set(row)) == 10 for row in idx.tolist())  # never the same image twice in a draw
    if mode == "one of each":
        assert (labels[idx] == np.arange(10)).all()
    stats = ds.run_trials(ds.TestPredictions(predicted, labels), 50, mode, 3)
    assert stats.differences.tolist() == (predicted[idx].sum(1) - labels[idx].sum(1)).tolist()
    one = ds.sample_indices(labels, mode, np.random.default_rng(3))  # (1, 10): the page's ten digits
    assert ds.draw_indices(labels, mode, 3).tolist() == one[0].tolist()
