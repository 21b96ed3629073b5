"""This session's training job on the server's registry, and the network it trained."""

from __future__ import annotations

import streamlit as st
from torch import nn

from cnnviz.engine.datasets import default_data_dir
from cnnviz.engine.models import ModelCard
from cnnviz.ui.session import session_alive

_JOB_KEY, _YOUR_MODEL_KEY = "_cnnviz_training_job", "_cnnviz_your_model"


def training_job():
    """This session's latest training job (``cnnviz.training.jobs.TrainingJob``), or None."""
    return st.session_state.get(_JOB_KEY)


def start_training(cfg, settings, dataset: str = "mnist"):
    """Queue a training for this session on the server's registry; raises jobs.JobError with a message.

    The previous job's model stays "Your model" until the new one has a result.
    """
    import uuid

    from cnnviz.training.jobs import JOBS

    owner = st.session_state.setdefault("_cnnviz_training_owner", uuid.uuid4().hex)  # one training per session
    # the data folder the page checked, named here: the fork server's environment is the one it started with
    job = JOBS.submit(owner, cfg, settings, dataset=dataset, data_dir=str(default_data_dir()), alive=session_alive())
    previous = training_job()
    if previous is not None and previous.result() is not None:
        st.session_state[_YOUR_MODEL_KEY] = previous.result()
    st.session_state[_JOB_KEY] = job
    return job


def session_model() -> tuple[nn.Module, ModelCard] | None:
    """The network this session trained on the "Train a CNN" page, as (model, card), or None.

    The model is in eval mode and never changes again (the next training builds a new one); treat it like a shared
    model (capture, learn_step and the attributions all work on it). Its card's ``name`` is the dataset it was
    trained on ("mnist" or "cifar10").
    """
    job = training_job()
    if job is not None and job.result() is not None:
        return job.result()
    return st.session_state.get(_YOUR_MODEL_KEY)
