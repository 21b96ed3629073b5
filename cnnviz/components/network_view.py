"""The network view: every layer of one pass drawn in the browser (network_view.js) from a payload that
cnnviz/render/network_data.py packs once per input; a Streamlit Components v2 component of cnnviz's own.

The browser keeps the payloads it has drawn (by their key) and says which one it holds with every event, so a rerun
sends the maps again only when the browser lacks them (a new input, a page reload). Clicks, steps and Play are the
component's "event" trigger: {"kind": "layer" | "channel" | "cell" | "step" | "pause", "layer", "channel", "row",
"col", "seq", "have"}; ``on_event`` gets each one before the rest of the run draws, so the page follows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from cnnviz.canvas import BUTTON_CSS
from cnnviz.render.network_data import palette

_HERE = Path(__file__).parent
_component = st.components.v2.component(
    "cnnviz.network_view", html='<div class="nv-root"></div>',
    css=BUTTON_CSS + (_HERE / "network_view.css").read_text(encoding="utf-8"),
    js=(_HERE / "network_view.js").read_text(encoding="utf-8"), isolate_styles=True,
)
_PALETTES = {"signed": palette(True), "unsigned": palette(False)}
EVENT_KINDS = ("layer", "channel", "cell", "step", "pause")


def _have_key(key: str) -> str:
    return f"_cnnviz_nv_have_{key}"


def _seq_key(key: str) -> str:
    return f"_cnnviz_nv_seq_{key}"


def read_event(key: str) -> dict | None:
    """The event the browser just sent (None if none, or if it is not one of ours: a client can send anything)."""
    state = st.session_state.get(key)
    event = state.get("event") if hasattr(state, "get") else getattr(state, "event", None)
    if not isinstance(event, dict):
        return None
    st.session_state[_have_key(key)] = event.get("have") if isinstance(event.get("have"), str) else None
    seq = event.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        st.session_state[_seq_key(key)] = seq
    if event.get("kind") not in EVENT_KINDS:
        return None
    return event


def network_view(payload: dict, key: str, selected: int, channel: int | None = None,
                 cell: tuple[int, int] | None = None, shared_scale: bool = False, scale: float = 1.0,
                 label_px: int = 13, title: str = "", speeds: dict[str, float] | None = None,
                 on_event: Callable[[dict], None] | None = None) -> None:
    """Mount the view.

    Args:
        payload: ``network_data.pack(...)`` of the pass shown (its "key" names it); packed with ``trace=``, the view
            also draws the input picture and outlines a hovered cell's receptive field.
        key: the widget key.
        selected, channel, cell: the page's selection (the expanded column; the framed channel and cell).
        shared_scale: colour every column on one scale (the payload's "shared" range).
        scale: map size factor (projector mode: larger maps, not only larger text).
        label_px: text size in px.
        title: the header's title.
        speeds: Play speeds, name -> seconds per step.
        on_event: called with each valid event, before the rest of the run draws.
    """
    def changed() -> None:
        event = read_event(key)
        if event is not None and on_event is not None:
            on_event(event)

    sent = st.session_state.get(_have_key(key)) != payload["key"]
    _component(
        data={"payload": payload if sent else None, "payload_key": payload["key"], "selected": int(selected),
              "channel": None if channel is None else int(channel),
              "cell": None if cell is None else [int(cell[0]), int(cell[1])], "shared_scale": bool(shared_scale),
              "scale": float(scale), "label_px": int(label_px), "title": title, "palettes": _PALETTES,
              "speeds": list((speeds or {"slow": 2.0, "normal": 1.0, "fast": 0.4}).items()),
              "seq": int(st.session_state.get(_seq_key(key), 0))},
        key=key, on_event_change=changed, width="stretch", height="content",
    )
