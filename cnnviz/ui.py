"""The only streamlit helpers: cached model loading, input pickers, per-session caches, URL state, walk-throughs
(Play), projector mode, "show your work" expanders."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
import torch
from PIL import Image
from torch import nn

from cnnviz.canvas import BUTTON_CSS, drawing_canvas, kept_key
from cnnviz.engine.checkpoints import CheckpointError, checkpoint_dir, load_model
from cnnviz.engine.datasets import DataUnavailable, dataset, dataset_available, default_data_dir
from cnnviz.engine.models import ModelCard
from cnnviz.engine.pictures import CanvasFull, ImageError, canvas_picture, load_image
from cnnviz.numbers import fmt


@st.cache_resource(show_spinner="Loading the trained model...")
def _cached_model(name: str, stage: str, directory: str | None) -> tuple[nn.Module, ModelCard]:
    return load_model(name, stage=stage, directory=directory)


def get_model(name: str, stage: str = "final") -> tuple[nn.Module, ModelCard] | None:
    """The shared, cached model, or None after showing the learner what is missing and how to fix it.

    The returned model is shared by every browser session: never train it, never call .backward() on it,
    never leave hooks on it. Use the cnnviz backend functions, which follow those rules.
    """
    try:
        return _cached_model(name, stage, str(checkpoint_dir()))
    except CheckpointError as exc:
        st.error(f"The {name} model cannot be loaded: {exc}")
        return None


def show_code(code: str, label: str = "Show the code that computed this") -> None:
    """A 'show your work' expander with the Python that produced the numbers above it."""
    with st.expander(label):
        st.code(code, language="python")


# ---------------------------------------------------------------------------------------------------------------
# Inputs: canvas, dataset sample, upload

@dataclass(frozen=True)
class PickedInput:
    image: Image.Image
    source: str  # "canvas", "sample", "upload"
    label: int | None = None  # true class for dataset samples
    description: str = ""
    index: int | None = None  # test-set index, for dataset samples (it goes into the link)


@st.cache_resource(show_spinner="Opening the test set...")
def _cached_dataset(name: str, data_dir: str):
    return dataset(name, "test", data_dir)


def test_set(name: str):
    """The cached test split, or None when it is not available (the caller explains)."""
    try:
        return _cached_dataset(name, str(default_data_dir()))
    except DataUnavailable:
        return None


def canvas_input(key: str = "canvas", size: int = 280) -> PickedInput | None:
    """A drawing canvas (white strokes on black). None while nothing is drawn, or when the drawing is unusable.

    The drawing arrives from the browser as a PNG the moment a stroke ends (cnnviz/canvas.py), and is checked like
    any upload (a hostile client could send anything). A canvas painted to its edges is refused with a message: its
    white border would read as background.
    """
    try:
        picture = canvas_picture(drawing_canvas(key, size=size, stroke_width=max(8, size // 14)))
    except CanvasFull as exc:
        st.warning(str(exc))
        return None
    except (ImageError, ValueError, OSError):  # a malformed drawing payload
        st.session_state[kept_key(key)] = None  # not painted again if the canvas comes back
        st.warning("The drawing could not be read. Clear the canvas and draw again.")
        return None
    if picture is None:
        return None
    return PickedInput(picture, "canvas", None, "your drawing")


def sample_input(name: str, classes: tuple[str, ...], key: str) -> PickedInput | None:
    """Pick a test-set sample by its index, at random, or at random from one class.

    The index lives in ``st.session_state[key + "_index"]`` (a link's ``sample`` seeds it). Explains how to enable
    the test set when the data is missing.
    """
    ds = _open_test_set(name)
    if ds is None:
        return None
    labels = _labels(ds)
    state_key = f"{key}_index"
    if state_key not in st.session_state:
        st.session_state[state_key] = int(np.random.default_rng().integers(len(labels)))
    a, b = st.columns([1, 1.2], vertical_alignment="bottom")
    wanted = a.selectbox("Class", ["any class", *classes], key=f"{key}_class")

    def new_random() -> None:
        pool = np.arange(len(labels)) if wanted == "any class" else np.flatnonzero(labels == classes.index(wanted))
        st.session_state[state_key] = int(np.random.default_rng().choice(pool))

    b.button("New random sample", key=f"{key}_new", on_click=new_random, width="stretch")
    index = st.number_input(f"test image # (0 to {len(labels) - 1})", 0, len(labels) - 1, key=state_key, step=1)
    image, label = ds[int(index)]
    return PickedInput(image, "sample", int(label), f"test image #{index} (true class: {classes[int(label)]})",
                       int(index))


def _open_test_set(name: str):
    ok, message = dataset_available(name)
    ds = test_set(name) if ok else None
    if ds is None:
        st.info(message or "The test set could not be opened.")
    return ds


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


@st.cache_resource(show_spinner=False)
def _cached_examples(name: str, stage: str, directory: str):
    from cnnviz.engine.examples import ExamplesError, load_examples

    try:
        return load_examples(name, stage, directory)
    except ExamplesError:
        return None


def examples_of(name: str, stage: str):
    """The shipped instructive examples (hard test images, mistakes) of a model and weights stage, or None."""
    return _cached_examples(name, stage, str(checkpoint_dir()))


@st.cache_resource(show_spinner="Running your model on every test image once, to find its hard images and mistakes...",
                   max_entries=8)
def _your_examples(identity: str, data_dir: str, _model: nn.Module, _card: ModelCard):
    from cnnviz.engine.examples import examples_of_model

    try:
        return examples_of_model(_model, _card, data_dir)
    except DataUnavailable:
        return None


def examples_for(name: str, stage: str, model: nn.Module, card: ModelCard):
    """The hard test images and mistakes of the explorer's model: the shipped lists, or for "Your model" (``stage``
    is then its identity) computed once per network on its card's test set. None when they cannot be had."""
    if name != "yours":
        return examples_of(name, stage)
    if not dataset_available(card.name)[0]:
        return None
    return _your_examples(stage, str(default_data_dir()), model, card)


@st.cache_resource(show_spinner="Choosing a learning rate for this network (once per network)...", max_entries=8)
def _chosen_learn_rate(identity: str, data_dir: str, _model: nn.Module, _card: ModelCard, hard: tuple[int, ...]):
    from cnnviz.engine.learn import choose_learn_rate

    return choose_learn_rate(_model, _card, list(hard), data_dir)


def default_learn_rate(name: str, stage: str, model: nn.Module, card: ModelCard) -> float:
    """The Learn view's default rate: a shipped card's ``learn_rate``, else chosen the same way for this network
    (``learn.choose_learn_rate``) once; 0.001 when there are no test images to choose it with."""
    if name != "yours" and card.learn_rate is not None:
        return float(card.learn_rate)
    ex = examples_for(name, stage, model, card)
    if ex is None or not ex.hard:
        return 0.001
    try:
        return _chosen_learn_rate(f"{name}/{stage}", str(default_data_dir()), model, card,
                                  tuple(h.index for h in ex.hard))
    except (DataUnavailable, ValueError):
        return 0.001


def teaching_sample(data: str, ex, classes: tuple[str, ...]) -> PickedInput | None:
    """The test image of dataset ``data`` shown until the learner draws: the first hard one of ``ex``, or None."""
    if ex is None or not ex.hard or not dataset_available(data)[0]:
        return None
    ds = test_set(data)
    if ds is None:
        return None
    index = ex.hard[0].index
    image, label = ds[index]
    return PickedInput(image, "sample", int(label), f"test image #{index} (true class: {classes[int(label)]})", index)


def mistake_input(data: str, ex, classes: tuple[str, ...], key: str) -> PickedInput | None:
    """Pick one of the test images of dataset ``data`` that the model gets wrong (``ex.mistakes``), listed with true
    and predicted class."""
    ds = _open_test_set(data)
    if ds is None:
        return None
    if ex is None:
        st.info("No list of mistakes for this model and weights (run `python -m cnnviz.engine.examples`).")
        return None
    if not ex.mistakes:
        st.success(f"This network gets every one of the {ex.n_test:,} test images right: there is no mistake to "
                   "show.")
        return None
    wrong = ex.mistakes
    pick = st.selectbox(f"The {len(wrong)} test images these weights get wrong (most confident first)",
                        range(len(wrong)), key=key,
                        format_func=lambda i: f"#{wrong[i].index}: a {classes[wrong[i].true]}, predicted "
                                              f"{classes[wrong[i].pred]} ({wrong[i].confidence:.0%})")
    m = wrong[pick]
    image, label = ds[m.index]
    return PickedInput(image, "sample", int(label), f"test image #{m.index} (true class: {classes[int(label)]})",
                       m.index)


def _labels(ds) -> np.ndarray:
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets)
    return np.asarray([y for _, y in ds.samples])


def upload_input(key: str) -> PickedInput | None:
    """A PNG/JPEG upload, checked by content (not by name) before it is decoded.

    Shows an error naming what is wrong with a file that is not a usable picture, and a warning for a picture of
    one flat colour (nothing in it to recognise); the rest of the page keeps working.
    """
    file = st.file_uploader("Upload a PNG or JPEG picture", type=["png", "jpg", "jpeg"], key=key)
    if file is None:
        return None
    try:
        image = load_image(file.getvalue())
        extrema = image.getextrema()
    except ImageError as exc:
        st.error(f"{file.name!r} cannot be used: {exc}")
        return None
    except (OSError, ValueError) as exc:  # decoded, but Pillow cannot read its pixels back
        st.error(f"{file.name!r} cannot be used: the picture is damaged ({exc}). Upload another one.")
        return None
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(lo == hi for lo, hi in bands):
        st.warning(f"{file.name!r} is a single flat colour ({image.width}x{image.height} pixels): there is no "
                   "digit or object in it to recognise.")
    return PickedInput(image, "upload", None, f"your upload {file.name!r}")


# ---------------------------------------------------------------------------------------------------------------
# Per-session cache of captures: moving a slider never redoes the capture


def digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().numpy().tobytes()).hexdigest()[:16]


def session_cached(kind: str, key: tuple, compute, size: int = 6):
    """Keep the last ``size`` results of ``compute()`` of each kind in this browser session, keyed by ``key``.

    Each kind has its own bounded store (traces, rendered overviews, attributions ...), freed with the session;
    the key must hold everything the result depends on (model, weights, input, target, objective, ...).
    """
    stores = st.session_state.setdefault("_cnnviz_cache", {})
    cache = stores.setdefault(kind, {})
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
        return cache[key]
    value = compute()
    cache[key] = value
    while len(cache) > size:
        cache.pop(next(iter(cache)))
    return value


# ---------------------------------------------------------------------------------------------------------------
# The URL is the state: read on load, written on change


class BadLinkValue(ValueError):
    """A query-string value that cannot be used; the message says why in words for a learner."""


def one_of(options) -> Callable[[str], str]:
    """A link parser that accepts exactly one of ``options`` (and names them when refusing)."""
    def parse(raw: str) -> str:
        if raw not in options:
            raise BadLinkValue(f"choose one of {', '.join(options)}")
        return raw
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


# ---------------------------------------------------------------------------------------------------------------
# Walk-throughs: a step slider with Play, speed, previous and next

PLAY_SPEEDS = {"normal": 1.0, "slow": 2.0, "fast": 0.4}  # seconds per step


def play_interval(key: str) -> float | None:
    """Seconds between steps while the walk-through ``key`` plays, else None.

    Pass it as ``run_every`` of the st.fragment that holds the walk-through: ``@st.fragment(run_every=...)``.
    """
    if not st.session_state.get(f"{key}__playing"):
        return None
    return PLAY_SPEEDS.get(st.session_state.get(f"{key}__speed", "normal"), 1.0)


def _shift(key: str, delta: int, count: int) -> None:
    st.session_state[key] = int(min(max(st.session_state.get(key, 0) + delta, 0), count - 1))


def stepper(key: str, count: int, label: str, format_func: Callable[[int], str] = str, default: int = 0,
            help: str | None = None) -> int:
    """A walk-through control: Play/Pause, previous/next, speed and a slider over steps 0..count-1.

    The chosen step lives in ``st.session_state[key]`` (seed it with ``seed_from_url`` for links). While playing,
    every run of the enclosing fragment moves one step on; the last step stops the play.

    Returns:
        The current step (0 when there is only one).
    """
    count = max(int(count), 1)
    playing_key = f"{key}__playing"
    if key not in st.session_state or not isinstance(st.session_state[key], int):
        st.session_state[key] = min(max(int(default), 0), count - 1)
    if st.session_state.get(playing_key):  # a tick of the fragment's timer: one step on
        if st.session_state[key] >= count - 1:
            st.session_state[playing_key] = False
            st.rerun()  # the whole page, so the fragment's timer stops
        st.session_state[key] += 1
    st.session_state[key] = min(max(st.session_state[key], 0), count - 1)  # a stale step of a shorter walk
    cols = st.columns([1, 1, 1.2, 1.6, 5], vertical_alignment="bottom")
    cols[0].button("", icon=":material/skip_previous:", key=f"{key}__prev", help="previous step",
                   on_click=_shift, args=(key, -1, count), disabled=st.session_state[key] <= 0)
    cols[1].button("", icon=":material/skip_next:", key=f"{key}__next", help="next step",
                   on_click=_shift, args=(key, 1, count), disabled=st.session_state[key] >= count - 1)
    playing = bool(st.session_state.get(playing_key))
    if cols[2].button("Pause" if playing else "Play", key=f"{key}__play", type="primary",
                      icon=":material/pause:" if playing else ":material/play_arrow:"):
        if not playing and st.session_state[key] >= count - 1:
            st.session_state[key] = -1  # Play at the end starts again: the next tick shows step 0
        st.session_state[playing_key] = not playing
        st.rerun()  # the whole page, so the fragment gets (or loses) its timer
    cols[3].selectbox("speed", list(PLAY_SPEEDS), key=f"{key}__speed", label_visibility="collapsed",
                      help="Play speed")
    with cols[4]:
        if count == 1:
            st.markdown(f"{label}: {format_func(0)}")
            return 0
        st.select_slider(label, options=list(range(count)), format_func=format_func, key=key, help=help)
    return int(st.session_state[key])


def expire_closed_sessions(wait_s: float = 5.0) -> bool:
    """Drop the state of browser sessions closed longer ago than ``server.disconnectedSessionTTL``, now.

    Streamlit keeps a closed session (its state: traces, figures) in a TTL cache so that a browser can reconnect,
    but that cache removes an expired entry only when another session connects or leaves. Behind HAProxy, a replica
    no one visits after a class kept every closed session's state: +245 MB on one of two replicas after 30 sessions
    (bench/load.py), while the other, which saw one more visit, went back to warm. Scheduled on the server's event
    loop (the cache is not thread-safe) and waited for up to ``wait_s``; callable from any thread. False (nothing
    done) outside a running server, or if Streamlit's internals have moved.
    """
    try:
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return False
        runtime = Runtime.instance()
        cache = runtime._session_mgr._session_storage._cache  # MemorySessionStorage's TTLCache
        loop = runtime._get_async_objs().eventloop
    except Exception:  # noqa: BLE001 - another Streamlit, another session storage: leave it to Streamlit
        return False
    done = threading.Event()

    def reap() -> None:
        try:
            cache.expire()
        finally:
            done.set()

    loop.call_soon_threadsafe(reap)
    return done.wait(wait_s)


# ---------------------------------------------------------------------------------------------------------------
# Projector mode: larger text everywhere


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


# ---------------------------------------------------------------------------------------------------------------
# Training: this session's training job and "Your model" (the explorer's API for a network trained here)

_JOB_KEY, _YOUR_MODEL_KEY = "_cnnviz_training_job", "_cnnviz_your_model"


def session_id() -> str:
    """This browser session's id (a fixed name outside a Streamlit run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def session_alive(grace_s: float = 10.0) -> Callable[[], bool] | None:
    """A check, callable from any thread, that is false once this session has been gone for ``grace_s`` seconds.

    None where there is no Streamlit server (AppTest, scripts): the training then runs until stopped.
    """
    import time

    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return None
    runtime, sid = Runtime.instance(), session_id()
    gone_since: list[float] = []

    def alive() -> bool:
        if runtime.is_active_session(sid):
            gone_since.clear()
            return True
        if not gone_since:
            gone_since.append(time.monotonic())
        return time.monotonic() - gone_since[0] < grace_s

    return alive


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


@dataclass(frozen=True)
class YourModel:
    """The explorer's "Your model": the network trained or uploaded last in this session, and which one it is."""

    model: nn.Module
    card: ModelCard
    identity: str  # digest of its weights and card: every cached result of this network is keyed on it
    origin: str  # for the explorer's caption: "trained here at 20:14", "uploaded mynet.safetensors at 20:16"
    arrived: float  # time.time() when this session first had it


def model_identity(model: nn.Module, card: ModelCard) -> str:
    """A digest of a network's weights (names, shapes, values) and its card: two different networks never share it."""
    import json

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    h.update(json.dumps(card.to_json(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _clock(t: float) -> str:
    import time

    return time.strftime("%H:%M", time.localtime(t))


def _your_entry(slot: str, loaded: tuple[nn.Module, ModelCard], origin: Callable[[float], str],
                at: float | None = None) -> YourModel:
    """The session's entry for a trained or uploaded network, made once per network (its arrival time kept)."""
    import time

    entries = st.session_state.setdefault("_cnnviz_your_models", {})
    entry = entries.get(slot)
    if entry is None or entry.model is not loaded[0]:
        now = at or time.time()
        entry = YourModel(loaded[0], loaded[1], model_identity(*loaded), origin(now), now)
        entries[slot] = entry
    return entry


def add_uploaded_model(loaded: tuple[nn.Module, ModelCard], file_name: str) -> YourModel:
    """Make an uploaded pair "Your model" (it wins over an earlier training or upload)."""
    your_model()  # a training that ended before this upload is registered first, with its own end time
    st.session_state.setdefault("_cnnviz_your_models", {}).pop("uploaded", None)
    return _your_entry("uploaded", loaded, lambda t: f"uploaded {file_name} at {_clock(t)}")


def your_model() -> YourModel | None:
    """ "Your model": whichever arrived last in this session, the network trained here or the pair uploaded.

    A training that ends after an upload wins over it, and an upload after a training wins over that.
    """
    job, trained = training_job(), session_model()
    ended = getattr(job, "finished_at", None) if job is not None and job.result() is trained else None
    entries = [_your_entry("trained", trained, lambda t: f"trained here at {_clock(t)}", ended)] if trained else []
    uploaded = st.session_state.get("_cnnviz_your_models", {}).get("uploaded")
    entries += [uploaded] if uploaded is not None else []
    return max(entries, key=lambda e: e.arrived, default=None)


# ---------------------------------------------------------------------------------------------------------------
# Digit-sum
# (imports inside the functions: this section is appended by the digit-sum page's owner, the import block is shared)


@st.cache_resource(show_spinner="Loading the MNIST test set...")
def _digit_sum_arrays(data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    from cnnviz.engine.datasets import load_arrays

    return load_arrays("mnist", "test", data_dir)


def digit_sum_test_set() -> tuple[tuple[torch.Tensor, torch.Tensor] | None, str]:
    """The MNIST test set as (uint8 images (N, 1, 28, 28), labels (N,)), cached for every visitor, and "";
    or None and the sentence saying how to get it."""
    ok, message = dataset_available("mnist")
    if not ok:
        return None, message
    try:
        return _digit_sum_arrays(str(default_data_dir())), ""
    except DataUnavailable as exc:
        return None, str(exc)


@st.cache_resource(show_spinner="Classifying every test digit once (shared by every visitor)...", max_entries=4)
def _digit_sum_predictions(_model: nn.Module, _card: ModelCard, stage: str, checkpoints: str, data_dir: str,
                           card_date: str):
    from cnnviz.engine import digit_sum

    images, labels = _digit_sum_arrays(data_dir)
    return digit_sum.predict_test_set(_model, _card, images, labels)


def digit_sum_predictions(model: nn.Module, card: ModelCard, stage: str):
    """Every MNIST test image's predicted class (``digit_sum.TestPredictions``), computed once per model snapshot
    and shared by every visitor; keyed on the snapshot, the checkpoint folder, the data folder and the card's date."""
    return _digit_sum_predictions(model, card, stage, str(checkpoint_dir()), str(default_data_dir()), card.date)
