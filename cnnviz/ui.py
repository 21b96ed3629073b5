"""The only streamlit helpers: cached model loading, input pickers, "show your work" expanders."""

from __future__ import annotations

import streamlit as st
from torch import nn

from cnnviz.checkpoints import CheckpointError, load_model
from cnnviz.models import ModelCard


@st.cache_resource(show_spinner="Loading the trained model...")
def _cached_model(name: str, stage: str, directory: str | None) -> tuple[nn.Module, ModelCard]:
    return load_model(name, stage=stage, directory=directory)


def get_model(name: str, stage: str = "final") -> tuple[nn.Module, ModelCard] | None:
    """The shared, cached model, or None after showing the learner what is missing and how to fix it.

    The returned model is shared by every browser session: never train it, never call .backward() on it,
    never leave hooks on it. Use the cnnviz backend functions, which follow those rules.
    """
    from cnnviz.checkpoints import checkpoint_dir

    try:
        return _cached_model(name, stage, str(checkpoint_dir()))
    except CheckpointError as exc:
        st.error(f"The {name} model cannot be loaded: {exc}")
        return None


def show_code(code: str, label: str = "Show the code that computed this") -> None:
    """A 'show your work' expander with the Python that produced the numbers above it."""
    with st.expander(label):
        st.code(code, language="python")
