"""What every explorer view needs: the model, its card, the input and the traces, computed once per input."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from cnnviz import ui
from cnnviz.engine.capture import capture
from cnnviz.engine.models import ModelCard
from cnnviz.engine.trace import Trace

KIND_NAMES = {"conv": "convolution", "batchnorm": "batch norm", "relu": "ReLU", "maxpool": "max-pool",
              "avgpool": "average pool", "flatten": "flatten", "linear": "linear", "dropout": "dropout"}
VIEWS = {"forward": "Forward pass", "backward": "Backward pass", "learn": "Learn from this input",
         "architecture": "Architecture", "card": "Model card"}


@dataclass(frozen=True)
class Ctx:
    """The explorer's state for one run: which model, which input, and the two traces of that input."""

    name: str  # registry name: mnist, cifar10 (or custom)
    stage: str  # final, epoch1, init
    model: nn.Module
    card: ModelCard
    x: torch.Tensor  # (1, C, H, W), normalised
    key_x: str  # digest of x
    label: int | None  # true class, for test samples
    description: str
    first: Trace  # the prediction's trace (target = predicted class, objective = loss)
    trace: Trace  # the chosen target and objective

    @property
    def layers(self):
        return self.trace.layers

    def cache_key(self, *parts) -> tuple:
        """Every cached result is keyed on everything it depends on (model, weights, input, target, objective)."""
        return (self.name, self.stage, self.key_x, self.trace.target, self.trace.objective, *parts)


def traces(name: str, stage: str, model: nn.Module, x: torch.Tensor, key_x: str, target: int | None,
           objective: str) -> tuple[Trace, Trace]:
    """The prediction's trace and the chosen target/objective's trace, each computed once per session."""
    first = ui.session_cached("trace", (name, stage, key_x, None, "loss"), lambda: capture(model, x))
    tgt = first.pred if target is None else target
    if tgt == first.target and objective == "loss":
        return first, first  # the same computation (capture's default target is the predicted class)
    return first, ui.session_cached("trace", (name, stage, key_x, tgt, objective),
                                     lambda: capture(model, x, target=tgt, objective=objective))


def layer_label(rec, i: int) -> str:
    return f"{i + 1}. {rec.name} ({KIND_NAMES.get(rec.kind, rec.kind)}) -> {'x'.join(map(str, rec.output.shape))}"


PICK_PREFIXES = ("fwd_conv", "fwd_relu", "fwd_pool", "fwd_bn", "fwd_gap", "bw_")  # the inspectors' cell pickers


def fresh_picks(ctx: Ctx, where: str) -> None:
    """A new input, model, target or layer opens the inspector on its default channel and cell (where the quantity
    is largest); a learner's pick lasts while they stay on this input and layer (``where``)."""
    owner = ctx.cache_key(where)
    if st.session_state.get("_picks_for") == owner:
        return
    st.session_state["_picks_for"] = owner
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(PICK_PREFIXES)]:
        del st.session_state[key]
