"""A page with only the network view, in the backward pass's order (the explorer's backward view still draws its
HTML strip): for tests/browser/test_network_view_browser.py. Shows the last event the view sent."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from cnnviz.components.network_view import network_view  # noqa: E402
from cnnviz.engine.capture import capture  # noqa: E402
from cnnviz.engine.checkpoints import load_model  # noqa: E402
from cnnviz.engine.pictures import preprocess  # noqa: E402
from cnnviz.render.network_data import backward_columns, pack  # noqa: E402

if "payload" not in st.session_state:
    model, card = load_model("mnist")
    img = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(img).ellipse([(80, 40), (200, 240)], outline=255, width=20)
    trace = capture(model, preprocess(img, card))
    st.session_state["payload"] = pack(backward_columns(trace), "backward", "zero-backward", card.classes)


def remember(event: dict) -> None:
    st.session_state["last_event"] = event
    st.session_state["selected"] = event["layer"]


network_view(st.session_state["payload"], "nv_backward", st.session_state.get("selected", 0), title="Backward pass",
             speeds={"fast": 0.4, "normal": 1.0}, on_event=remember)
event = st.session_state.get("last_event")
st.markdown(f"last event: {event['kind']} {event['layer']}" if event else "last event: none")
