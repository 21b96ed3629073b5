"""Input pickers: the drawing canvas, a test-set sample (by index, at random, the model's mistakes, the teaching
sample), an upload; each returns a PickedInput or None after telling the learner why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

from cnnviz.canvas import drawing_canvas, kept_key
from cnnviz.engine.datasets import DataUnavailable, dataset, dataset_available, default_data_dir
from cnnviz.engine.pictures import CanvasFull, ImageError, canvas_picture, load_image


@dataclass(frozen=True)
class PickedInput:
    image: Image.Image
    source: str  # "canvas", "sample", "upload"
    label: int | None = None  # true class for dataset samples
    description: str = ""
    index: int | None = None  # test-set index, for dataset samples (it goes into the link)


@st.cache_resource(show_spinner="Opening the test set...")
def _cached_dataset(name: str, data_dir: str):
    return dataset(name, "test", data_dir)


def test_set(name: str):
    """The cached test split, or None when it is not available (the caller explains)."""
    try:
        return _cached_dataset(name, str(default_data_dir()))
    except DataUnavailable:
        return None


def canvas_input(key: str = "canvas", size: int = 280) -> PickedInput | None:
    """A drawing canvas (white strokes on black). None while nothing is drawn, or when the drawing is unusable.

    The drawing arrives from the browser as a PNG the moment a stroke ends (cnnviz/canvas.py), and is checked like
    any upload (a hostile client could send anything). A canvas painted to its edges is refused with a message: its
    white border would read as background.
    """
    try:
        picture = canvas_picture(drawing_canvas(key, size=size, stroke_width=max(8, size // 14)))
    except CanvasFull as exc:
        st.warning(str(exc))
        return None
    except (ImageError, ValueError, OSError):  # a malformed drawing payload
        st.session_state[kept_key(key)] = None  # not painted again if the canvas comes back
        st.warning("The drawing could not be read. Clear the canvas and draw again.")
        return None
    if picture is None:
        return None
    return PickedInput(picture, "canvas", None, "your drawing")


def sample_input(name: str, classes: tuple[str, ...], key: str) -> PickedInput | None:
    """Pick a test-set sample by its index, at random, or at random from one class.

    The index lives in ``st.session_state[key + "_index"]`` (a link's ``sample`` seeds it). Explains how to enable
    the test set when the data is missing.
    """
    ds = _open_test_set(name)
    if ds is None:
        return None
    labels = _labels(ds)
    state_key = f"{key}_index"
    if state_key not in st.session_state:
        st.session_state[state_key] = int(np.random.default_rng().integers(len(labels)))
    a, b = st.columns([1, 1.2], vertical_alignment="bottom")
    wanted = a.selectbox("Class", ["any class", *classes], key=f"{key}_class")

    def new_random() -> None:
        pool = np.arange(len(labels)) if wanted == "any class" else np.flatnonzero(labels == classes.index(wanted))
        st.session_state[state_key] = int(np.random.default_rng().choice(pool))

    b.button("New random sample", key=f"{key}_new", on_click=new_random, width="stretch")
    index = st.number_input(f"test image # (0 to {len(labels) - 1})", 0, len(labels) - 1, key=state_key, step=1)
    image, label = ds[int(index)]
    return PickedInput(image, "sample", int(label), f"test image #{index} (true class: {classes[int(label)]})",
                       int(index))


def _open_test_set(name: str):
    ok, message = dataset_available(name)
    ds = test_set(name) if ok else None
    if ds is None:
        st.info(message or "The test set could not be opened.")
    return ds


def teaching_sample(data: str, ex, classes: tuple[str, ...]) -> PickedInput | None:
    """The test image of dataset ``data`` shown until the learner draws: the first hard one of ``ex``, or None."""
    if ex is None or not ex.hard or not dataset_available(data)[0]:
        return None
    ds = test_set(data)
    if ds is None:
        return None
    index = ex.hard[0].index
    image, label = ds[index]
    return PickedInput(image, "sample", int(label), f"test image #{index} (true class: {classes[int(label)]})", index)


def mistake_input(data: str, ex, classes: tuple[str, ...], key: str) -> PickedInput | None:
    """Pick one of the test images of dataset ``data`` that the model gets wrong (``ex.mistakes``), listed with true
    and predicted class."""
    ds = _open_test_set(data)
    if ds is None:
        return None
    if ex is None:
        st.info("No list of mistakes for this model and weights (run `python -m cnnviz.engine.examples`).")
        return None
    if not ex.mistakes:
        st.success(f"This network gets every one of the {ex.n_test:,} test images right: there is no mistake to "
                   "show.")
        return None
    wrong = ex.mistakes
    pick = st.selectbox(f"The {len(wrong)} test images these weights get wrong (most confident first)",
                        range(len(wrong)), key=key,
                        format_func=lambda i: f"#{wrong[i].index}: a {classes[wrong[i].true]}, predicted "
                                              f"{classes[wrong[i].pred]} ({wrong[i].confidence:.0%})")
    m = wrong[pick]
    image, label = ds[m.index]
    return PickedInput(image, "sample", int(label), f"test image #{m.index} (true class: {classes[int(label)]})",
                       m.index)


def _labels(ds) -> np.ndarray:
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets)
    return np.asarray([y for _, y in ds.samples])


def upload_input(key: str) -> PickedInput | None:
    """A PNG/JPEG upload, checked by content (not by name) before it is decoded.

    Shows an error naming what is wrong with a file that is not a usable picture, and a warning for a picture of
    one flat colour (nothing in it to recognise); the rest of the page keeps working.
    """
    file = st.file_uploader("Upload a PNG or JPEG picture", type=["png", "jpg", "jpeg"], key=key)
    if file is None:
        return None
    try:
        image = load_image(file.getvalue())
        extrema = image.getextrema()
    except ImageError as exc:
        st.error(f"{file.name!r} cannot be used: {exc}")
        return None
    except (OSError, ValueError) as exc:  # decoded, but Pillow cannot read its pixels back
        st.error(f"{file.name!r} cannot be used: the picture is damaged ({exc}). Upload another one.")
        return None
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(lo == hi for lo, hi in bands):
        st.warning(f"{file.name!r} is a single flat colour ({image.width}x{image.height} pixels): there is no "
                   "digit or object in it to recognise.")
    return PickedInput(image, "upload", None, f"your upload {file.name!r}")
