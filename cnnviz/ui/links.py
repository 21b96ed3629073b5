"""The URL is the state: link values read on load (seed_from_url, with parsers that say what is wrong), written
on change (write_url), and the "Copy link to this view" popover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from cnnviz.canvas import BUTTON_CSS
from cnnviz.engine.datasets import dataset_available
from cnnviz.numbers import fmt
from cnnviz.ui.inputs import test_set


class BadLinkValue(ValueError):
    """A query-string value that cannot be used; the message says why in words for a learner."""


def one_of(options) -> Callable[[str], str]:
    """A link parser that accepts exactly one of ``options`` (and names them when refusing)."""
    def parse(raw: str) -> str:
        if raw not in options:
            raise BadLinkValue(f"choose one of {', '.join(options)}")
        return raw
    return parse


def index_in(text: str, count: int, what: str = "index") -> int:
    """A link's integer in 0..count-1, or BadLinkValue saying the range."""
    try:
        value = int(text)
    except ValueError:
        raise BadLinkValue(f"{what} must be a whole number") from None
    if not 0 <= value < count:
        raise BadLinkValue(f"{what} must be between 0 and {count - 1}")
    return value


def sample_index_parser(name: str) -> Callable[[str], int]:
    """Parses a link's ``sample`` for ``name``'s test set (its size known only once the data is open)."""
    def parse(text: str) -> int:
        if not dataset_available(name)[0]:
            raise BadLinkValue("the test set is not available on this server")
        ds = test_set(name)
        return index_in(text, len(ds), "the test-image number")
    return parse


def seed_from_url(param: str, widget_key: str, parse: Callable[[str], Any], what: str | None = None) -> bool:
    """Before a widget is made: put the link's value of ``param`` into that widget's state, once per new value.

    A value this session wrote itself (by ``write_url``) is not applied again, so moving the widget wins. A bad
    value (one ``parse`` refuses with ValueError, KeyError, TypeError or OverflowError) shows a warning naming it,
    and the widget keeps its default.

    Args:
        param: the query parameter's name.
        widget_key: the key of the widget it drives.
        parse: text -> the widget's value; raise ValueError (ideally BadLinkValue) with a reason when unusable.
        what: how the warning names the parameter (default: the parameter's name).
    Returns:
        True when a new value from the link was applied in this run.
    """
    raw = st.query_params.get(param)
    seen = st.session_state.setdefault("_cnnviz_url_seen", {})
    if raw is None or seen.get(param) == raw:
        return False
    seen[param] = raw
    try:
        st.session_state[widget_key] = parse(raw)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        reason = f": {exc}" if str(exc) else ""
        st.warning(f"The link's {what or param} = {raw[:80]!r} cannot be used{reason}. Showing the default instead.")
        return False
    return True


def write_url(**params: Any) -> None:
    """Write the view's state into the address bar (None removes a parameter); only changed values are written."""
    seen = st.session_state.setdefault("_cnnviz_url_seen", {})
    for name, value in params.items():
        if value is None:
            if name in st.query_params:
                del st.query_params[name]
            seen.pop(name, None)
            continue
        text = value if isinstance(value, str) else fmt(value) if isinstance(value, float) else str(value)
        seen[name] = text
        if st.query_params.get(name) != text:
            st.query_params[name] = text


_COPY_LINK_JS = """
// The link field reads the address bar itself, when it comes into view and on Copy: the address follows every step
// and slider (st.query_params), also those a fragment reran without the rest of the page.
export default function ({ parentElement }) {
  const root = parentElement.querySelector(".cl-root");
  if (root.childElementCount) return;
  const field = document.createElement("textarea");  // the whole link in view, wrapped
  field.readOnly = true;
  field.rows = 3;
  field.className = "cl-field";
  field.setAttribute("aria-label", "The link to this view");
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "cnnviz-button cl-button";
  copy.textContent = "Copy";
  const note = document.createElement("div");
  note.className = "cl-note";
  note.setAttribute("role", "status");
  root.append(field, copy, note);
  const refresh = () => { field.value = window.location.href; };
  new IntersectionObserver((seen) => { if (seen.some((e) => e.isIntersecting)) refresh(); }).observe(field);
  field.addEventListener("focus", () => { refresh(); field.select(); });
  copy.addEventListener("click", async () => {
    refresh();
    field.select();
    let copied = false;
    try {
      await navigator.clipboard.writeText(field.value);  // a secure context (https, localhost)
      copied = true;
    } catch (error) {
      try { copied = document.execCommand("copy"); } catch (error2) { copied = false; }  // plain http in a class
    }
    note.textContent = copied ? "Copied." : "Select the link above and copy it (Ctrl+C).";
  });
  refresh();
}
"""
_COPY_LINK_CSS = BUTTON_CSS + """
.cl-root { display: grid; grid-template-columns: 1fr auto; gap: 0.4rem; min-width: 18rem; }
.cl-field { font: inherit; font-size: 0.9rem; padding: 0.35rem 0.5rem; border-radius: 0.4rem; min-width: 0;
            resize: none; word-break: break-all; line-height: 1.35;
            border: 1px solid rgba(128, 128, 128, 0.6); color: var(--st-text-color, #31333f);
            background: var(--st-secondary-background-color, #f0f2f6); }
.cl-button { align-self: start; }
.cl-note { grid-column: 1 / -1; font-size: 0.9rem; min-height: 1.2em; }
"""
_copy_link = st.components.v2.component("cnnviz.copy_link", html='<div class="cl-root"></div>', css=_COPY_LINK_CSS,
                                        js=_COPY_LINK_JS, isolate_styles=True)


def link_button(note: str | None = None, label: str = "Copy link to this view") -> None:
    """A "Copy link to this view" popover: the address bar's link (read in the browser, so always current) and Copy.
    A narrow place gives a shorter ``label`` (the popover's tooltip keeps the long one)."""
    with st.popover(label, icon=":material/link:", help=None if label == "Copy link to this view" else
                    "Copy a link to this view"):
        _copy_link(key=None, width="stretch", height="content")
        st.caption(note or "Anyone who opens this link sees this view, with these numbers.")
        st.caption("The browser's address bar holds the same link; it follows every step and slider at once.")
