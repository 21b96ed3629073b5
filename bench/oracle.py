"""What the explorer must show for an input run alone: computed in the load driver's own process with the engine
the page uses (``canvas_picture``, ``preprocess``, ``capture``)."""

from __future__ import annotations

from pathlib import Path

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import load_model
from cnnviz.engine.datasets import dataset, dataset_available
from cnnviz.engine.pictures import EmptyImage, canvas_picture, preprocess


class Oracle:
    """The explorer's prediction line and loss fragment for test samples and canvas drawings."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.models = {}
        for name in ("mnist", "cifar10"):
            try:
                self.models[name] = load_model(name, directory=checkpoint_dir)
            except Exception:  # noqa: BLE001 - a missing or broken model is left out of the mix
                pass
        self.sampled = [m for m in self.models if dataset_available(m)[0]]  # test sets on disk
        self._datasets: dict[str, object] = {}
        self._cache: dict[tuple[str, int], tuple[str, str]] = {}

    def sample(self, name: str, index: int) -> tuple[str, str]:
        """(prediction line, loss fragment) of test-set image ``index``."""
        if (name, index) not in self._cache:
            if name not in self._datasets:
                self._datasets[name] = dataset(name, "test")
            image, label = self._datasets[name][index]
            x = preprocess(image, self.models[name][1], dataset_sample=True)
            self._cache[name, index] = self._numbers(name, x, int(label))
        return self._cache[name, index]

    def drawing(self, png: bytes) -> tuple[str, str] | None:
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
        return line, f"-log {float(trace.probs[trace.target]):.4g} = {trace.loss:.4g}"
