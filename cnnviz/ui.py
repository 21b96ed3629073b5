"""The only streamlit helpers: cached model loading, input pickers, "show your work" expanders."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch
from PIL import Image
from torch import nn

from cnnviz.engine.checkpoints import CheckpointError, checkpoint_dir, load_model
from cnnviz.engine.datasets import DataUnavailable, dataset, dataset_available, default_data_dir
from cnnviz.engine.models import ModelCard
from cnnviz.engine.pictures import CanvasFull, ImageError, canvas_picture, load_image


@st.cache_resource(show_spinner="Loading the trained model...")
def _cached_model(name: str, stage: str, directory: str | None) -> tuple[nn.Module, ModelCard]:
    return load_model(name, stage=stage, directory=directory)


def get_model(name: str, stage: str = "final") -> tuple[nn.Module, ModelCard] | None:
    """The shared, cached model, or None after showing the learner what is missing and how to fix it.

    The returned model is shared by every browser session: never train it, never call .backward() on it,
    never leave hooks on it. Use the cnnviz backend functions, which follow those rules.
    """
    try:
        return _cached_model(name, stage, str(checkpoint_dir()))
    except CheckpointError as exc:
        st.error(f"The {name} model cannot be loaded: {exc}")
        return None


def show_code(code: str, label: str = "Show the code that computed this") -> None:
    """A 'show your work' expander with the Python that produced the numbers above it."""
    with st.expander(label):
        st.code(code, language="python")


# ---------------------------------------------------------------------------------------------------------------
# Inputs: canvas, dataset sample, upload

@dataclass(frozen=True)
class PickedInput:
    image: Image.Image
    source: str  # "canvas", "sample", "upload"
    label: int | None = None  # true class for dataset samples
    description: str = ""


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

    The drawing arrives from the browser as a PNG, which is checked like any upload (a hostile client could send
    anything). A canvas painted to its edges is refused with a message: its white border would read as background.
    """
    from streamlit_drawable_canvas import st_canvas

    st.write("")  # room for the canvas's toolbar, which appears above it on hover and would cover a label
    result = st_canvas(
        stroke_width=max(8, size // 14), stroke_color="#FFFFFF", background_color="#000000", width=size,
        height=size, drawing_mode="freedraw", key=key, return_image_data=True, update_streamlit=True,
    )
    try:
        picture = canvas_picture(result.image_bytes)
    except CanvasFull as exc:
        st.warning(str(exc))
        return None
    except (ImageError, ValueError, OSError):  # a malformed drawing payload
        st.warning("The drawing could not be read. Clear the canvas and draw again.")
        return None
    if picture is None:
        return None
    return PickedInput(picture, "canvas", None, "your drawing")


def sample_input(name: str, classes: tuple[str, ...], key: str) -> PickedInput | None:
    """Pick a test-set sample at random or by class. Explains how to enable it when the data is missing."""
    ok, message = dataset_available(name)
    if not ok:
        st.info(message)
        return None
    ds = test_set(name)
    if ds is None:
        st.info(message or "The test set could not be opened.")
        return None
    labels = _labels(ds)
    wanted = st.selectbox("Class", ["any class", *classes], key=f"{key}_class")
    state_key = f"{key}_index"
    if st.button("New random sample", key=f"{key}_new") or state_key not in st.session_state:
        pool = np.arange(len(labels)) if wanted == "any class" else np.flatnonzero(labels == classes.index(wanted))
        st.session_state[state_key] = int(np.random.default_rng().choice(pool))
    index = st.session_state[state_key]
    if wanted != "any class" and labels[index] != classes.index(wanted):
        pool = np.flatnonzero(labels == classes.index(wanted))
        index = st.session_state[state_key] = int(np.random.default_rng().choice(pool))
    image, label = ds[index]
    return PickedInput(image, "sample", int(label), f"test image #{index} (true class: {classes[int(label)]})")


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


# ---------------------------------------------------------------------------------------------------------------
# Per-session cache of captures: moving a slider never redoes the capture


def digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().numpy().tobytes()).hexdigest()[:16]


def session_cached(kind: str, key: tuple, compute, size: int = 6):
    """Keep the last few results of ``compute()`` in this browser session, keyed by ``(kind, key)``."""
    cache = st.session_state.setdefault("_cnnviz_cache", {})
    full_key = (kind, *key)
    if full_key in cache:
        cache[full_key] = cache.pop(full_key)  # most recently used last
        return cache[full_key]
    value = compute()
    cache[full_key] = value
    while len(cache) > size:
        cache.pop(next(iter(cache)))
    return value
