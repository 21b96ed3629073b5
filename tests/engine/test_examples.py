"""Instructive examples: the saturation helper against autograd, the choosing rule, loading (missing, stale,
damaged), and the shipped lists against what the shipped models predict on the shared test data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnviz.engine.checkpoints import available_stages, checkpoint_dir, load_model
from cnnviz.engine.examples import (
    HARD_BELOW,
    ExamplesError,
    choose_hard,
    compute_all,
    examples_path,
    find_mistakes,
    from_json,
    load_examples,
    saturation,
    to_json,
)

SHIPPED = [(name, stage) for name in ("mnist", "cifar10") for stage in available_stages(name)]


def test_saturation_matches_the_loss_gradient_from_autograd():
    logits = torch.tensor([[2.0, 14.0, 1.0, 3.5]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([1])), [logits])  # p - onehot
    probs = torch.softmax(logits.detach(), 1)[0].numpy()
    sat = saturation(probs, 1, classes=("a", "b", "c", "d"))
    assert sat.saturated and sat.runner_up == 3 and sat.p_runner_up == pytest.approx(float(probs[3]))
    assert_close(torch.tensor(-sat.gradient_size, dtype=torch.float64), g[0, 1])
    assert float(g.abs().max()) == pytest.approx(sat.gradient_size)  # the largest entry is 1 - p(target)
    assert "'d'" in sat.message and "1 - " in sat.message and "tiny" in sat.message
    unsure = saturation(np.array([0.3, 0.7]), 1)
    assert not unsure.saturated and unsure.message == "" and unsure.runner_up == 0
    other = saturation(np.array([0.995, 0.004, 0.001]), 2)  # target is not the prediction: runner-up is the pred
    assert not other.saturated and other.runner_up == 0
    with pytest.raises(ValueError):
        saturation(np.array([0.5, 0.5]), 2)


def test_choosing_rule_orders_the_teaching_default_first():
    labels = np.array([0, 1, 2, 3, 4, 0, 1])
    probs = np.full((7, 5), 0.0)
    rows = {
        0: (0, 0.99),  # confident and right: not hard
        1: (1, 0.72),  # right, unsure, p close to 0.7: group 1, first
        2: (2, 0.55),  # right, unsure: group 1, after row 1
        3: (0, 0.95),  # wrong and confident: group 3
        4: (4, 0.40),  # right but below 0.5: group 2
        5: (0, 0.69),  # right, p close to 0.7, but class 0 ... group 1
        6: (1, 0.70),  # right, p = 0.7, class 1: group 1, best
    }
    for i, (k, p) in rows.items():
        probs[i] = (1 - p) / 4
        probs[i, k] = p
    hard = choose_hard(probs, labels)
    order = [h.index for h in hard]
    assert 0 not in order and set(order) == {1, 2, 3, 4, 5, 6}
    assert order[0] == 6  # p = 0.7 exactly, correct
    assert order.index(5) < order.index(1)  # class 0 not yet listed goes before a second '1'
    assert [h.group for h in hard if h.index in (4, 3)] == [2, 3]
    assert all(h.p_top < HARD_BELOW or h.pred != h.true for h in hard)
    # a judge that finds row 6 unclear moves it to group 4
    judge = np.eye(5)[labels]
    judge[6] = np.eye(5)[3]
    assert choose_hard(probs, labels, judge)[0].index == 5
    mistakes = find_mistakes(probs, labels)
    assert [(m.index, m.true, m.pred) for m in mistakes] == [(3, 3, 0)] and mistakes[0].confidence == 0.95


def test_loading_says_what_is_wrong(tmp_path):
    if not (checkpoint_dir() / "mnist.safetensors").is_file():
        pytest.skip("needs the shipped MNIST checkpoint")
    for suffix in (".safetensors", ".json"):
        shutil.copy(checkpoint_dir() / f"mnist{suffix}", tmp_path / f"mnist{suffix}")
    with pytest.raises(ExamplesError, match=r"python -m cnnviz\.engine\.examples mnist"):
        load_examples("mnist", "final", tmp_path)
    shipped = examples_path("mnist", "final")
    if not shipped.is_file():
        pytest.skip("no shipped examples file")
    shutil.copy(shipped, tmp_path / shipped.name)
    ex = load_examples("mnist", "final", tmp_path)
    assert from_json(json.loads(json.dumps(to_json(ex)))) == ex
    weights = tmp_path / "mnist.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the checkpoint changes: the lists are stale
    weights.write_bytes(bytes(data))
    with pytest.raises(ExamplesError, match="stale"):
        load_examples("mnist", "final", tmp_path)
    assert load_examples("mnist", "final", tmp_path, check_checkpoint=False) == ex
    (tmp_path / shipped.name).write_text("{not json")
    with pytest.raises(ExamplesError, match="not a readable examples file"):
        load_examples("mnist", "final", tmp_path)
    (tmp_path / shipped.name).write_text(json.dumps({**to_json(ex), "format": 99}))
    with pytest.raises(ExamplesError, match="format"):
        load_examples("mnist", "final", tmp_path)


@pytest.mark.parametrize(("name", "stage"), SHIPPED)
def test_shipped_examples_are_fresh(name, stage):
    ex = load_examples(name, stage)  # the checkpoint's hash matches the one the lists were computed from
    _, card = load_model(name, stage)
    assert ex.n_test == 10_000 and len(ex.hard) == 12 and ex.default is ex.hard[0]
    assert len(ex.mistakes) == round((1 - ex.accuracy) * ex.n_test)
    if stage == "final":
        assert 100 * ex.accuracy == pytest.approx(card.test_accuracy, abs=0.01)
        assert ex.default.pred == ex.default.true and 0.5 <= ex.default.p_top < 0.9  # right, but unsure
    assert len({h.true for h in ex.hard[:10]}) >= (10 if stage != "init" else 9)


def _data_or_skip(name):
    from cnnviz.engine.datasets import dataset, dataset_available

    ok, message = dataset_available(name)
    if not ok:
        pytest.skip(message)
    return dataset(name, "test")


@pytest.mark.parametrize(("name", "stage"), SHIPPED)
def test_shipped_lists_match_what_the_models_predict(name, stage):
    """The listed images, run through the explorer's own path (test sample -> preprocess -> model)."""
    from cnnviz.engine.capture import capture
    from cnnviz.engine.pictures import preprocess

    ds = _data_or_skip(name)
    ex = load_examples(name, stage)
    model, card = load_model(name, stage)
    listed = [(h.index, h.true, h.pred, h.p_top) for h in ex.hard]
    listed += [(m.index, m.true, m.pred, m.confidence) for m in ex.mistakes[:40]]
    for index, true, pred, p in listed:
        image, label = ds[index]
        probs = capture(model, preprocess(image, card, dataset_sample=True)).probs
        assert label == true, index
        assert int(np.argmax(probs)) == pred, index
        assert float(probs[pred]) == pytest.approx(p, abs=1e-4), index


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_shipped_lists_are_complete(name):
    """Recomputed on the whole test set: the same mistakes and the same hard list (nothing missing, nothing extra).

    Another CPU's float32 kernels move a confidence by up to ~2e-6 (seen: 1.6e-6 between two x86 machines), which can
    swap two mistakes whose confidences differ by less than that (seen: 5e-10 apart). So the mistakes must be the
    same images with the same predictions, their confidences within 1e-5, and the shipped order most confident first
    by the fresh confidences, up to that tolerance."""
    _data_or_skip(name)
    fresh = compute_all(name)
    tol = 1e-5
    for stage, ex in fresh.items():
        shipped = load_examples(name, stage)
        pairs = sorted((m.index, m.pred) for m in ex.mistakes)
        assert sorted((m.index, m.pred) for m in shipped.mistakes) == pairs, stage
        conf = {m.index: m.confidence for m in ex.mistakes}
        for m in shipped.mistakes:
            assert m.confidence == pytest.approx(conf[m.index], abs=tol), (stage, m.index)
        in_order = [conf[m.index] for m in shipped.mistakes]
        out_of_order = [(shipped.mistakes[k].index, shipped.mistakes[k + 1].index)
                        for k in range(len(in_order) - 1) if in_order[k + 1] > in_order[k] + tol]
        assert not out_of_order, (stage, out_of_order[:5])
        assert [h.index for h in shipped.hard] == [h.index for h in ex.hard], stage
        assert shipped.accuracy == pytest.approx(ex.accuracy, abs=1e-6)
