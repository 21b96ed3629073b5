"""Projector mode: the sidebar switch, larger text everywhere, figure text sizes; and long labels that wrap."""

from __future__ import annotations

import streamlit as st


def projector() -> bool:
    """Whether the sidebar's projector mode is on."""
    return bool(st.session_state.get("projector", False))


def text_px(base: int = 14) -> int:
    """Figure and diagram text size in px: at least 12 normally, at least 18 in projector mode."""
    return max(base, 18) if projector() else max(base, 12)


PROJECTOR_CSS = """<style>
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li, [data-testid="stCaptionContainer"],
[data-testid="stWidgetLabel"] p, [data-testid="stTable"] td,
[data-testid="stTable"] th { font-size: 1.3rem !important; }
[data-testid="stCode"] code { font-size: 1.1rem !important; }
/* a metric is the number a lesson points at: larger than without projector mode (2.25rem), never smaller */
[data-testid="stMetricValue"], [data-testid="stMetricValue"] [data-testid="stMarkdownContainer"] p {
  font-size: 2.75rem !important; line-height: 1.2 !important; }
/* what a learner types, picks or slides */
[data-testid="stMain"] input:not([type="checkbox"]):not([type="radio"]), [data-testid="stMain"] textarea,
[role="listbox"] [role="option"], [data-testid="stSliderThumbValue"] p,
[data-testid="stSliderTickBarMin"], [data-testid="stSliderTickBarMax"] { font-size: 1.3rem !important; }
/* charts: the tick labels Streamlit's theme draws at 12 px (a label grows from its anchor, away from the plot) */
.js-plotly-plot .xtick text, .js-plotly-plot .ytick text, .js-plotly-plot .g-xtitle text,
.js-plotly-plot .g-ytitle text { font-size: 18px !important; }
</style>"""
# On every page, projector mode or not: a label too long for its place (a button, a link, a metric, a checkbox)
# wraps onto another line instead of ending in "...".
LABEL_CSS = """<style>
.stMarkdownEllipsis, .stMarkdownEllipsis p, [data-testid="stMetricValue"] p {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: break-word; }
</style>"""


def _projector_switched() -> None:
    st.session_state["_cnnviz_projector_switched"] = True


def projector_toggle() -> None:
    """The sidebar switch for projector mode, and its style when on (called by app.py on every page); on every page,
    too, the style that wraps a long label instead of cutting it.

    Turning projector mode on also collapses the sidebar (its arrow brings it back): on a projector's 1280 pixels,
    the sidebar's 300 would squeeze every page.
    """
    st.sidebar.toggle("Projector mode", key="projector", on_change=_projector_switched,
                      help="Larger text everywhere, for a classroom projector; the sidebar folds away (its arrow, "
                           "top left, brings it back).")
    if st.session_state.pop("_cnnviz_projector_switched", False):
        st.set_page_config(initial_sidebar_state="collapsed" if projector() else "expanded")
    st.html(LABEL_CSS + (PROJECTOR_CSS if projector() else ""))
