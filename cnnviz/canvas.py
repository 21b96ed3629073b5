"""The drawing canvas: a small Streamlit Components v2 component of cnnviz's own (canvas.js beside this file).

It replaces streamlit-drawable-canvas, which sends a drawing 200 ms after the last change (a fixed debounce in its
bundle, not an option), half of the 400 ms the explorer has from mouse-up to the new prediction; it also loaded
412 KB of JavaScript (fabric.js) for the freehand pen, Undo and Clear that drawing a digit needs. This one sends the
canvas as a PNG data URL the moment a stroke ends (and after Undo or Clear; an empty canvas sends None).
"""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import streamlit as st
from PIL import Image

_JS = (Path(__file__).with_name("canvas.js")).read_text(encoding="utf-8")
# The buttons of cnnviz's own components (this canvas's, the copy-link field's in ui/links.py, the network view's):
# one look, Streamlit's colours
BUTTON_CSS = """
.cnnviz-button { font: inherit; font-size: 0.95rem; padding: 0.3rem 0.9rem; border-radius: 0.5rem; cursor: pointer;
                 color: var(--st-text-color, #31333f); background: var(--st-background-color, #fff);
                 border: 1px solid rgba(128, 128, 128, 0.6); }
.cnnviz-button:hover:not(:disabled) { border-color: var(--st-primary-color, #ff4b4b);
                                      color: var(--st-primary-color, #ff4b4b); }
.cnnviz-button:disabled { opacity: 0.45; cursor: default; }
"""
_CSS = BUTTON_CSS + """
.cv-wrap { display: flex; flex-direction: column; gap: 0.4rem; }
.cv-canvas { display: block; touch-action: none; cursor: crosshair; border-radius: 0.25rem;
             outline: 1px solid rgba(128, 128, 128, 0.5); }
.cv-bar { display: flex; gap: 0.5rem; }
"""
_PNG_PREFIX = "data:image/png;base64,"

_component = st.components.v2.component(
    "cnnviz.canvas", html='<div class="cv-root"></div>', css=_CSS, js=_JS, isolate_styles=True,
)


def drawing_canvas(key: str, size: int = 280, stroke_width: int = 20, stroke: str = "#FFFFFF",
                   background: str = "#000000") -> bytes | None:
    """Mount the canvas; return the drawing's PNG bytes, or None while it is empty.

    A canvas that comes back after it was not shown (the learner picked another input, or visited another page)
    comes back with its drawing: Streamlit drops an unmounted widget's state, so the last readable drawing is kept in
    ``st.session_state[kept_key(key)]`` and given to the new canvas, as its state and as the picture it paints
    (its strokes are gone: Undo then clears it).

    Args:
        key: the widget key (its state is ``st.session_state[key]["drawing"]``, a PNG data URL or None).
        size: the canvas's width and height in pixels.
    Returns:
        The PNG bytes the browser sent (unchecked: a hostile client can send anything; read it like an upload).
    Raises:
        ValueError: the value is not a base64 PNG data URL.
    """
    kept = st.session_state.get(kept_key(key))
    result = _component(  # a canvas mounted anew paints "initial"; a mounted one ignores it
        data={"size": int(size), "stroke_width": int(stroke_width), "stroke": stroke, "background": background,
              "initial": kept},
        key=key, default={"drawing": kept}, on_drawing_change=lambda: None, width="content", height="content",
    )
    value = result.get("drawing")
    try:
        drawing = png_bytes(value)
    except ValueError:
        st.session_state[kept_key(key)] = None
        raise
    st.session_state[kept_key(key)] = value
    return drawing


def kept_key(key: str) -> str:
    """Where the canvas ``key`` keeps its last drawing (a PNG data URL) while it is not shown."""
    return f"_cnnviz_canvas_kept_{key}"


def png_bytes(value: object) -> bytes | None:
    """The PNG bytes of the canvas's value (None for an empty canvas). ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(_PNG_PREFIX):
        raise ValueError("the drawing is not a PNG data URL")
    try:
        return base64.b64decode(value[len(_PNG_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the drawing's base64 is malformed") from None


def canvas_value(image: Image.Image | bytes | None, data_url: str | None = None) -> dict:
    """What the canvas sends for ``image`` (a picture or its PNG; None: the canvas is empty), or for any
    ``data_url`` payload: the value tests and benchmarks put in ``st.session_state[key]`` in the browser's place."""
    if data_url is None and image is None:
        return {"drawing": None}
    if data_url is None:
        if isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            image = buf.getvalue()
        data_url = _PNG_PREFIX + base64.b64encode(image).decode()
    return {"drawing": data_url}
