"""Cached model loaders (shared by every visitor), the instructive examples and learning rate of a model, the
digit-sum caches, and "Your model": the network trained or uploaded last in this session."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from cnnviz.engine.checkpoints import CheckpointError, checkpoint_dir, load_model
from cnnviz.engine.datasets import DataUnavailable, dataset_available, default_data_dir
from cnnviz.engine.models import ModelCard
from cnnviz.ui.training import session_model, training_job


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


@st.cache_resource(show_spinner=False)
def _cached_examples(name: str, stage: str, directory: str):
    from cnnviz.engine.examples import ExamplesError, load_examples

    try:
        return load_examples(name, stage, directory)
    except ExamplesError:
        return None


def examples_of(name: str, stage: str):
    """The shipped instructive examples (hard test images, mistakes) of a model and weights stage, or None."""
    return _cached_examples(name, stage, str(checkpoint_dir()))


@st.cache_resource(show_spinner="Running your model on every test image once, to find its hard images and mistakes...",
                   max_entries=8)
def _your_examples(identity: str, data_dir: str, _model: nn.Module, _card: ModelCard):
    from cnnviz.engine.examples import examples_of_model

    try:
        return examples_of_model(_model, _card, data_dir)
    except DataUnavailable:
        return None


def examples_for(name: str, stage: str, model: nn.Module, card: ModelCard):
    """The hard test images and mistakes of the explorer's model: the shipped lists, or for "Your model" (``stage``
    is then its identity) computed once per network on its card's test set. None when they cannot be had."""
    if name != "yours":
        return examples_of(name, stage)
    if not dataset_available(card.name)[0]:
        return None
    return _your_examples(stage, str(default_data_dir()), model, card)


@st.cache_resource(show_spinner="Choosing a learning rate for this network (once per network)...", max_entries=8)
def _chosen_learn_rate(identity: str, data_dir: str, _model: nn.Module, _card: ModelCard, hard: tuple[int, ...]):
    from cnnviz.engine.learn import choose_learn_rate

    return choose_learn_rate(_model, _card, list(hard), data_dir)


def default_learn_rate(name: str, stage: str, model: nn.Module, card: ModelCard) -> float:
    """The Learn view's default rate: a shipped card's ``learn_rate``, else chosen the same way for this network
    (``learn.choose_learn_rate``) once; 0.001 when there are no test images to choose it with."""
    if name != "yours" and card.learn_rate is not None:
        return float(card.learn_rate)
    ex = examples_for(name, stage, model, card)
    if ex is None or not ex.hard:
        return 0.001
    try:
        return _chosen_learn_rate(f"{name}/{stage}", str(default_data_dir()), model, card,
                                  tuple(h.index for h in ex.hard))
    except (DataUnavailable, ValueError):
        return 0.001


@dataclass(frozen=True)
class YourModel:
    """The explorer's "Your model": the network trained or uploaded last in this session, and which one it is."""

    model: nn.Module
    card: ModelCard
    identity: str  # digest of its weights and card: every cached result of this network is keyed on it
    origin: str  # for the explorer's caption: "trained here at 20:14", "uploaded mynet.safetensors at 20:16"
    arrived: float  # time.time() when this session first had it


def model_identity(model: nn.Module, card: ModelCard) -> str:
    """A digest of a network's weights (names, shapes, values) and its card: two different networks never share it."""
    import json

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    h.update(json.dumps(card.to_json(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _clock(t: float) -> str:
    import time

    return time.strftime("%H:%M", time.localtime(t))


def _your_entry(slot: str, loaded: tuple[nn.Module, ModelCard], origin: Callable[[float], str],
                at: float | None = None) -> YourModel:
    """The session's entry for a trained or uploaded network, made once per network (its arrival time kept)."""
    import time

    entries = st.session_state.setdefault("_cnnviz_your_models", {})
    entry = entries.get(slot)
    if entry is None or entry.model is not loaded[0]:
        now = at or time.time()
        entry = YourModel(loaded[0], loaded[1], model_identity(*loaded), origin(now), now)
        entries[slot] = entry
    return entry


def add_uploaded_model(loaded: tuple[nn.Module, ModelCard], file_name: str) -> YourModel:
    """Make an uploaded pair "Your model" (it wins over an earlier training or upload)."""
    your_model()  # a training that ended before this upload is registered first, with its own end time
    st.session_state.setdefault("_cnnviz_your_models", {}).pop("uploaded", None)
    return _your_entry("uploaded", loaded, lambda t: f"uploaded {file_name} at {_clock(t)}")


def your_model() -> YourModel | None:
    """ "Your model": whichever arrived last in this session, the network trained here or the pair uploaded.

    A training that ends after an upload wins over it, and an upload after a training wins over that.
    """
    job, trained = training_job(), session_model()
    ended = getattr(job, "finished_at", None) if job is not None and job.result() is trained else None
    entries = [_your_entry("trained", trained, lambda t: f"trained here at {_clock(t)}", ended)] if trained else []
    uploaded = st.session_state.get("_cnnviz_your_models", {}).get("uploaded")
    entries += [uploaded] if uploaded is not None else []
    return max(entries, key=lambda e: e.arrived, default=None)


# ---------------------------------------------------------------------------------------------------------------
# Digit-sum


@st.cache_resource(show_spinner="Loading the MNIST test set...")
def _digit_sum_arrays(data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    from cnnviz.engine.datasets import load_arrays

    return load_arrays("mnist", "test", data_dir)


def digit_sum_test_set() -> tuple[tuple[torch.Tensor, torch.Tensor] | None, str]:
    """The MNIST test set as (uint8 images (N, 1, 28, 28), labels (N,)), cached for every visitor, and "";
    or None and the sentence saying how to get it."""
    ok, message = dataset_available("mnist")
    if not ok:
        return None, message
    try:
        return _digit_sum_arrays(str(default_data_dir())), ""
    except DataUnavailable as exc:
        return None, str(exc)


@st.cache_resource(show_spinner="Classifying every test digit once (shared by every visitor)...", max_entries=4)
def _digit_sum_predictions(_model: nn.Module, _card: ModelCard, stage: str, checkpoints: str, data_dir: str,
                           card_date: str):
    from cnnviz.engine import digit_sum

    images, labels = _digit_sum_arrays(data_dir)
    return digit_sum.predict_test_set(_model, _card, images, labels)


def digit_sum_predictions(model: nn.Module, card: ModelCard, stage: str):
    """Every MNIST test image's predicted class (``digit_sum.TestPredictions``), computed once per model snapshot
    and shared by every visitor; keyed on the snapshot, the checkpoint folder, the data folder and the card's date."""
    return _digit_sum_predictions(model, card, stage, str(checkpoint_dir()), str(default_data_dir()), card.date)
