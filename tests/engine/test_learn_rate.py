"""The Learn view's default learning rate: one step on any of a shipped model's hard test images, towards its true
class, keeps held-out accuracy within a point and still lowers that image's loss; the next larger rate of the grid
breaks the first promise on some hard image (the default is not needlessly small)."""

from __future__ import annotations

import pytest

from cnnviz.engine.checkpoints import available_stages, load_model
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.examples import load_examples
from cnnviz.engine.learn import LR_GRID, SAFE_DROP, heldout_batch, heldout_score, learn_step
from cnnviz.engine.pictures import preprocess

SHIPPED = [(n, s) for n in ("mnist", "cifar10") for s in available_stages(n)]


def steps(name: str, stage: str, lr: float):
    model, card = load_model(name, stage)
    batch = heldout_batch(name)
    hx = batch.normalized(card)
    before = heldout_score(model, hx, batch.labels)
    ds = dataset(name, "test")
    for hard in load_examples(name, stage).hard:
        image, label = ds[hard.index]
        x = preprocess(image, card, dataset_sample=True)
        yield hard.index, learn_step(model, x, int(label), lr, hx, batch.labels, before)


@pytest.mark.slow
@pytest.mark.parametrize("name,stage", SHIPPED)
def test_the_default_step_keeps_held_out_accuracy_within_a_point(name, stage):
    if not dataset_available(name)[0]:
        pytest.skip(f"{name} test set not available (set CNNVIZ_DATA_DIR)")
    lr = load_model(name, stage)[1].learn_rate
    assert lr in LR_GRID, f"{name} {stage}: run python -m cnnviz.engine.learn"
    for index, step in steps(name, stage, lr):
        drop = step.heldout_before.accuracy - step.heldout_after.accuracy
        assert drop <= SAFE_DROP, (index, drop)
        assert step.loss_after < step.loss_before, (index, step.loss_before, step.loss_after)
    if lr != LR_GRID[0]:
        larger = LR_GRID[LR_GRID.index(lr) - 1]
        assert any(s.heldout_before.accuracy - s.heldout_after.accuracy > SAFE_DROP
                   for _, s in steps(name, stage, larger)), f"{larger} keeps every hard image within a point too"
