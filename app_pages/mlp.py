"""Step-by-step MLP: the worked examples' tiny networks, every value, gradient and weight update, step by step.

The URL is the state: ``net`` (relu | sigmoid), every input, target and weight by its name, ``lr``, ``steps`` and
``step`` are read from a link on load and written back as they change.
"""

import streamlit as st

from cnnviz import ui
from cnnviz.handwork import mlp
from cnnviz.numbers import fmt
from cnnviz.render import dot
from cnnviz.render import handwork as render_handwork

PRESET = "mlp_preset"
LABELS = {"relu": "1-input ReLU network (worked example 1)", "sigmoid": "2-2-2 sigmoid network (worked example 2)"}
DEFAULT_STEPS = 100
ALL_NAMES = sorted({n for p in mlp.PRESETS.values() for n, _ in (*p.inputs, *p.targets, *p.weights)})


def _key(preset: str, name: str) -> str:
    return f"mlp_{preset}_{name}"


def _step_key(preset: str) -> str:
    return f"mlp_step_{preset}"


def _reset(preset: str) -> None:
    default = mlp.default_config(preset)
    for group in (default.inputs, default.targets, default.weights):
        for name, value in group.items():
            st.session_state[_key(preset, name)] = value
    st.session_state[_key(preset, "lr")] = default.learning_rate
    st.session_state[_key(preset, "steps")] = DEFAULT_STEPS
    st.session_state[_step_key(preset)] = 0


def _apply_tried_learning_rate(preset: str) -> None:
    """The learning rate a "Try learning rate" button asked for, set before the widgets of this (whole-page) run.

    The button lives in the step fragment: a widget outside it set from there would get the browser's old value back.
    """
    tried = st.session_state.pop(f"mlp_tried_{preset}", None)
    if tried is not None:
        rate, steps = tried
        st.session_state[_key(preset, "lr")] = rate
        st.session_state[_key(preset, "steps")] = max(int(st.session_state.get(_key(preset, "steps"), steps)), steps)
        st.session_state[_step_key(preset)] = 0


def _net(text: str) -> str:
    if text not in mlp.PRESETS:
        raise mlp.MLPError(f"choose {' or '.join(mlp.PRESETS)}")
    return text


def _rate(text: str) -> float:
    value = mlp.parse_link_number(text)
    if value < 0:
        raise mlp.MLPError("a learning rate is >= 0")
    return value


def _count(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise mlp.MLPError("it is not a whole number") from None
    if not low <= value <= high:
        raise mlp.MLPError(f"use {low} to {high}")
    return value


def _number_fields(preset: str, title: str, names: dict[str, float], columns: int) -> dict[str, float]:
    st.markdown(f"**{title}**")
    cols = st.columns(columns)
    out = {}
    for i, (name, default) in enumerate(names.items()):
        key = _key(preset, name)
        st.session_state.setdefault(key, default)
        out[name] = cols[i % columns].number_input(name, key=key, step=0.05, format="%g")
    return out


st.title("Step-by-step MLP")
st.markdown(
    "Two networks small enough to follow with a pencil. Each training step runs the **forward pass** (values), "
    "the **backward pass** (the chain rule, one gradient at a time) and the **update** "
    "w ← w − learning rate × dLoss/dw. Every number below is written out with the values substituted, and every "
    "one is checked against PyTorch autograd. Change anything; *Reset* brings the worked example back."
)

ui.seed_from_url("net", PRESET, _net, "network")
st.session_state.setdefault(PRESET, "relu")
preset = st.segmented_control("Network", list(LABELS), format_func=LABELS.get, key=PRESET, required=True)
default = mlp.default_config(preset)
for name in (*default.inputs, *default.targets, *default.weights):
    ui.seed_from_url(name, _key(preset, name), mlp.parse_link_number)
ui.seed_from_url("lr", _key(preset, "lr"), _rate, "learning rate")
_apply_tried_learning_rate(preset)
ui.seed_from_url("steps", _key(preset, "steps"), lambda t: _count(t, 1, mlp.MAX_STEPS), "training steps")

with st.container(border=True):
    st.button("Reset to the worked example", on_click=_reset, args=(preset,), icon=":material/restart_alt:",
              key=f"mlp_reset_{preset}")
    cols = st.columns([1, 1, 3, 1.2])
    with cols[0]:
        inputs = _number_fields(preset, "Inputs", dict(default.inputs), 1)
    with cols[1]:
        targets = _number_fields(preset, "Targets", dict(default.targets), 1)
    with cols[2]:
        weights = _number_fields(preset, "Weights", dict(default.weights), 4 if preset == "sigmoid" else 3)
    with cols[3]:
        st.markdown("**Training**")
        st.session_state.setdefault(_key(preset, "lr"), default.learning_rate)
        st.session_state.setdefault(_key(preset, "steps"), DEFAULT_STEPS)
        learning_rate = st.number_input("learning rate", key=_key(preset, "lr"), min_value=0.0, step=0.05,
                                        format="%g")
        n_steps = st.number_input("training steps", key=_key(preset, "steps"), min_value=1,
                                  max_value=mlp.MAX_STEPS, step=10)

numbers = {**inputs, **targets, **weights}
ui.write_url(net=preset, **{n: mlp.link_text(numbers[n]) if n in numbers else None for n in ALL_NAMES},
             lr=mlp.link_text(learning_rate), steps=str(int(n_steps)))

try:
    config = mlp.make_config(preset, inputs, targets, weights, learning_rate)
    history = mlp.train(config, int(n_steps))
except mlp.MLPError as exc:
    st.error(f"{exc}", icon=":material/error:")
    st.stop()

diverged = mlp.divergence_note(history)
if diverged:
    st.error(f"{diverged} The steps up to there are shown.", icon=":material/trending_up:")
stuck = mlp.first_stuck_step(history)
if stuck is not None:
    st.info(f"From step {stuck} on, every gradient is 0 and the weights no longer change: Play stops at step "
            f"{stuck}, where the walk says why.", icon=":material/block:")

STEP_KEY = _step_key(preset)
last = len(history.steps) - 1
ui.seed_from_url("step", STEP_KEY, lambda t: _count(t, 0, last), "training step")


@st.fragment(run_every=ui.play_interval(STEP_KEY))
def step_view(history: mlp.MLPHistory) -> None:
    """Everything the step control changes; only this part reruns when it moves (or plays)."""
    p = mlp.PRESETS[history.config.preset]
    k = ui.stepper(STEP_KEY, len(history.steps), "Training step", format_func=lambda i: f"step {i}",
                   help="Step 0 is the worked example. Each step: forward, backward, update.")
    stuck = mlp.first_stuck_step(history)
    arrived = st.session_state.get(f"{STEP_KEY}__shown") == k - 1  # a tick of Play moved it here
    st.session_state[f"{STEP_KEY}__shown"] = k
    if k == stuck and arrived and st.session_state.get(f"{STEP_KEY}__playing"):
        st.session_state[f"{STEP_KEY}__playing"] = False  # Play stops where training gets stuck; Play again goes on
        st.rerun()  # the whole page, so the fragment's timer stops
    ui.write_url(step=k)
    ui.link_button()
    step = history.steps[k]
    s = p.style
    d = "dL" if p.key == "relu" else "dE"
    metrics = st.columns(4)  # one row: a six-decimal loss needs the width of a quarter page
    metrics[0].metric("step", k)
    metrics[1].metric(p.loss_name, fmt(step.loss, style=s))
    metrics[2].metric(f"{p.loss_name} at step {last}", fmt(history.steps[-1].loss, style=s))
    metrics[3].metric("status", "diverged" if not step.finite else "finite")
    if stuck is not None and k >= stuck:
        stuck_here(history, k)
    st.plotly_chart(render_handwork.loss_curve_figure(history.losses, k, p.loss_name, history.diverged_at,
                                                      height=260, font_px=ui.text_px()),
                    width="stretch", key=f"mlp_loss_curve::{p.key}")

    with st.container(key="mlp_diagram"):
        # Streamlit's own CSS sets diagram text to 9.6 px, over the DOT's font size: set it back to the DOT's
        st.html(f"<style>.st-key-mlp_diagram svg text {{ font-size: {ui.text_px()}px !important; }}</style>")
        # Never enlarged; on a projector drawn top to bottom, narrow enough for its text to keep its size at 1280 px
        st.graphviz_chart(dot.network_dot(step, font_px=ui.text_px(), rankdir="TB" if ui.projector() else "LR"),
                          width="content")
    if p.key == "relu":
        st.caption("Green: values of the forward pass. Red: gradients dL/d(node) of the backward pass. Edges carry "
                   "the weight and dL/d(weight); for the shared w1, each edge shows its path's share of it.")
    else:
        st.caption("Green: values of the forward pass. Red: gradients dE/d(node) of the backward pass. Each weight "
                   "is a box on its own edge, named with the units it joins (w5: h1 → o1), with dE/d(weight).")
    equations = mlp.explain_step(step)

    def block(phase: str, title: str) -> None:
        st.markdown(f"**{title}**")
        st.code("\n".join(e.display(100) for e in equations if e.phase == phase), language=None, wrap_lines=True)

    block("forward", f"Forward pass at step {k}")
    block("backward", f"Backward pass (the chain rule, numbers in; {d} for d{p.loss_name})")
    block("update", f"Update (learning rate {fmt(step.learning_rate)})")


def stuck_here(history: mlp.MLPHistory, k: int) -> None:
    """Why training cannot move at step ``k`` and, when a smaller learning rate learns, a button that sets it."""
    stuck = mlp.first_stuck_step(history)
    dying = mlp.dying_relu_note(history)
    repeat = f"Step {k} repeats step {stuck}. " if k > stuck else ""
    st.warning(repeat + (dying or mlp.stuck_note(history.steps[stuck])), icon=":material/block:")
    rescue = mlp.learning_rate_that_learns(history.config, DEFAULT_STEPS) if dying and stuck > 0 else None
    if rescue is None:
        return
    p = mlp.PRESETS[history.config.preset]
    cols = st.columns([1, 3], vertical_alignment="center")
    if cols[0].button(f"Try learning rate {rescue.learning_rate:g}", key=f"mlp_try_lr_{p.key}",
                      icon=":material/healing:"):
        st.session_state[f"mlp_tried_{p.key}"] = (rescue.learning_rate, len(rescue.losses))
        st.rerun()  # the whole page: the learning rate and the training live outside this fragment
    cols[1].caption(f"With learning rate {rescue.learning_rate:g} the same network learns: {p.loss_name} falls from "
                    f"{fmt(rescue.losses[0], style=p.style)} to {fmt(rescue.losses[-1], style=p.style)} in "
                    f"{len(rescue.losses)} steps, and no ReLU dies.")


step_view(history)

st.subheader("History, one row per step")
st.dataframe(mlp.history_rows(history), hide_index=True, width="stretch", height=260)
st.download_button("Download the history as CSV", mlp.history_csv(history), file_name=f"mlp_{preset}_history.csv",
                   mime="text/csv", icon=":material/download:")


@st.fragment
def lr_comparison(config: mlp.MLPConfig, n_steps: int) -> None:
    """Loss curves for several learning rates; only this part reruns when its inputs change."""
    p = mlp.PRESETS[config.preset]
    st.subheader("Learning-rate comparison")
    st.caption("The same network, data and starting weights, trained with each learning rate. A run whose numbers "
               "become inf or nan is marked diverged and stops there; a run whose gradients all become 0 is stuck.")
    cols = st.columns([3, 1], vertical_alignment="bottom")
    text = cols[0].text_input("Learning rates (comma separated)", value=", ".join(f"{r:g}" for r in p.rates),
                              key=f"mlp_rates_{config.preset}", help="Add e.g. 10 to see what too large does.")
    log_y = cols[1].toggle("log scale", key=f"mlp_rates_log_{config.preset}")
    try:
        rates = mlp.parse_rates(text)
    except mlp.MLPError as exc:
        st.error(f"{exc}", icon=":material/error:")
        return
    runs = mlp.compare_learning_rates(config, rates, n_steps)
    st.plotly_chart(render_handwork.lr_comparison_figure(runs, p.loss_name, log_y=log_y, font_px=ui.text_px()),
                    width="stretch", key=f"mlp_lr_chart::{config.preset}")
    st.dataframe([mlp.lr_run_row(r, p) for r in runs], hide_index=True, width="stretch")
    for r in runs:
        if r.diverged_at is not None:
            st.warning(f"lr = {r.learning_rate:g}: diverged at step {r.diverged_at} (inf or nan); its curve stops "
                       "at the last finite loss.", icon=":material/trending_up:")


lr_comparison(config, int(n_steps))
