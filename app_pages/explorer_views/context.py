"""What every explorer view needs: the model, its card, the input and the traces, computed once per input."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from cnnviz import ui
from cnnviz.components.network_view import network_view
from cnnviz.engine.capture import capture
from cnnviz.engine.models import ModelCard
from cnnviz.engine.trace import Trace
from cnnviz.render.network_data import backward_columns, forward_columns, pack

KIND_NAMES = {"conv": "convolution", "batchnorm": "batch norm", "relu": "ReLU", "maxpool": "max-pool",
              "avgpool": "average pool", "flatten": "flatten", "linear": "linear", "dropout": "dropout"}
VIEWS = {"forward": "Forward pass", "backward": "Backward pass", "learn": "Learn from it",
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


def view_payload(ctx: Ctx, pass_name: str) -> dict:
    """The network view's maps of one pass ("forward" or "backward"), packed once per input (model, target, ...)."""
    key = ctx.cache_key("network", pass_name)
    return ui.session_cached("network_payload", key, lambda: pack(
        forward_columns(ctx.trace, KIND_NAMES) if pass_name == "forward" else backward_columns(ctx.trace),
        pass_name, hashlib.sha1(repr(key).encode()).hexdigest()[:16], ctx.card.classes, trace=ctx.trace,
        mean=ctx.card.mean, std=ctx.card.std), size=4)


def follow_view(step_key: str, pick_key: str) -> Callable[[dict], None]:
    """The network view's ``on_event``: a click, step or Play step moves the page's position (``step_key``); a clicked
    channel or cell is kept in ``pick_key`` for the inspector (applied after ``fresh_picks``, which clears picks)."""
    def follow(event: dict) -> None:
        layer = event.get("layer")
        if not isinstance(layer, int) or isinstance(layer, bool):
            return
        st.session_state[step_key] = layer
        picked = {k: event[k] for k in ("channel", "row", "col") if isinstance(event.get(k), int)}
        st.session_state[pick_key] = {"layer": layer, **picked} if picked else None
    return follow


def apply_pick(pick_key: str, at: int, shape: tuple[int, ...], ch_key: str, cell_key: str | None) -> None:
    """Open the inspector at position ``at`` on the channel and cell clicked in the view (``follow_view`` kept them in
    ``pick_key``), clamped to a map of ``shape``: (C,) or (C, H, W)."""
    pick = st.session_state.pop(pick_key, None)
    if not pick or pick.get("layer") != at:
        return
    if "channel" in pick and len(shape) >= 1:
        st.session_state[ch_key] = min(max(pick["channel"], 0), shape[0] - 1)
    if cell_key and "row" in pick and "col" in pick and len(shape) == 3:
        st.session_state[f"{cell_key}_row"] = min(max(pick["row"], 0), shape[1] - 1)
        st.session_state[f"{cell_key}_col"] = min(max(pick["col"], 0), shape[2] - 1)


def network_panel(ctx: Ctx, pass_name: str, view_key: str, at: int, selection: tuple, step_key: str,
                  pick_key: str, shared: bool) -> None:
    """The network view of one pass at position ``at``, the inspector's (channel, cell) ``selection`` framed and
    every layer on one colour scale if ``shared``; its events move ``step_key`` and pick into ``pick_key``."""
    network_view(view_payload(ctx, pass_name), view_key, at, *selection, shared_scale=shared,
                 scale=1.5 if ui.projector() else 1.0, label_px=ui.text_px(13),
                 title="Forward pass" if pass_name == "forward" else "Backward pass", speeds=dict(ui.PLAY_SPEEDS),
                 on_event=follow_view(step_key, pick_key))
