"""What the explorer must show for an input run alone, computed in the load driver's own process with the engine
the page uses (``canvas_picture``, ``preprocess``, ``capture``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.pictures import EmptyImage, canvas_picture, preprocess
from cnnviz.numbers import fmt, fmt_close_to_one


class Oracle:
    """The explorer's prediction line and loss fragment for test samples and canvas drawings."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.models = {n: load_model(n, directory=checkpoint_dir) for n in ("mnist", "cifar10")}
        self.sampled = [m for m in self.models if dataset_available(m)[0]]  # test sets on disk
        self.sample = cache(self.sample)

    def sample(self, name: str, index: int) -> tuple[str, str]:
        """(prediction line, loss fragment) of test-set image ``index``."""
        image, label = _test_split(name)[index]
        return self._numbers(name, preprocess(image, self.models[name][1], dataset_sample=True), int(label))

    def drawing(self, png: bytes | None) -> tuple[str, str] | None:
        """(prediction line, loss fragment) of a canvas PNG; None when the page shows no prediction for it."""
        picture = canvas_picture(png)
        try:
            return None if picture is None else self._numbers("mnist", preprocess(picture, self.models["mnist"][1]))
        except EmptyImage:
            return None

    def _numbers(self, name: str, x, label: int | None = None) -> tuple[str, str]:
        """The loss is of the true ``label`` when known (a test sample), else of the predicted class."""
        model, card = self.models[name]
        first = capture(model, x)
        trace = capture(model, x, target=first.pred if label is None else label, objective="loss")
        verdict = "" if label is None else " (correct)" if first.pred == label else f" (true: {card.classes[label]})"
        line = f"Prediction: {card.classes[first.pred]} ({float(first.probs[first.pred]):.1%}){verdict}"
        return line, f"-log {fmt_close_to_one(float(trace.probs[trace.target]))} = {fmt(trace.loss, 4)}"


@cache
def _test_split(name: str):
    return dataset(name, "test")
