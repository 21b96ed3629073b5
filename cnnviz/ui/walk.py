"""Walk-throughs: a step slider with Play, speed, previous and next (run by a fragment's timer); and the "show
your work" expander."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

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


def show_code(code: str, label: str = "Show the code that computed this") -> None:
    """A 'show your work' expander with the Python that produced the numbers above it."""
    with st.expander(label):
        st.code(code, language="python")
