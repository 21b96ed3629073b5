"""A page with only the network view, for tests/browser/test_network_view_browser.py: ?pass=backward (default) or
forward, ?model=mnist (a drawn zero) or cifar10 (a colour gradient), ?selected=3 (the expanded column), ?scale=1.5
(projector). Packed with the trace: the view draws the input picture and receptive fields. Shows the last event."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from cnnviz.components.network_view import network_view  # noqa: E402
from cnnviz.engine.capture import capture  # noqa: E402
from cnnviz.engine.checkpoints import load_model  # noqa: E402
from cnnviz.engine.pictures import preprocess  # noqa: E402
from cnnviz.render.network_data import backward_columns, forward_columns, pack  # noqa: E402
from tests.support import model_picture  # noqa: E402

st.set_page_config(layout="wide")  # as app.py
pass_name = st.query_params.get("pass", "backward")
model_name = st.query_params.get("model", "mnist")
scale = float(st.query_params.get("scale", "1"))
key = f"payload_{model_name}_{pass_name}"
if key not in st.session_state:
    model, card = load_model(model_name)
    trace = capture(model, preprocess(model_picture(model_name), card))
    columns = backward_columns(trace) if pass_name == "backward" else forward_columns(trace)
    st.session_state[key] = pack(columns, pass_name, f"{model_name}-{pass_name}", card.classes, trace=trace,
                                 mean=card.mean, std=card.std)


def remember(event: dict) -> None:
    st.session_state["last_event"] = event
    st.session_state["selected"] = event["layer"]


network_view(st.session_state[key], f"nv_{pass_name}",
             st.session_state.get("selected", int(st.query_params.get("selected", "0"))),
             title="Backward pass" if pass_name == "backward" else "Forward pass", scale=scale,
             label_px=round(13 * scale), speeds={"fast": 0.4, "normal": 1.0}, on_event=remember)
event = st.session_state.get("last_event")
st.markdown(f"last event: {event['kind']} {event['layer']}" if event else "last event: none")
