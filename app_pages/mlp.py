"""Step-by-step MLP: the worked examples' tiny networks, every value, gradient and weight update, step by step."""

import streamlit as st

from cnnviz.handwork import mlp
from cnnviz.render import dot
from cnnviz.render import handwork as render_handwork

PRESET = "mlp_preset"
LABELS = {"relu": "1-input ReLU network (worked example 1)", "sigmoid": "2-2-2 sigmoid network (worked example 2)"}


def _key(preset: str, name: str) -> str:
    return f"mlp_{preset}_{name}"


def _reset(preset: str) -> None:
    default = mlp.default_config(preset)
    for group in (default.inputs, default.targets, default.weights):
        for name, value in group.items():
            st.session_state[_key(preset, name)] = value
    st.session_state[_key(preset, "lr")] = default.learning_rate
    st.session_state[_key(preset, "steps")] = 100


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

preset = st.segmented_control("Network", list(LABELS), format_func=LABELS.get, key=PRESET, default="relu",
                              required=True)
spec = mlp.PRESETS[preset]
default = mlp.default_config(preset)

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
        st.session_state.setdefault(_key(preset, "steps"), 100)
        learning_rate = st.number_input("learning rate", key=_key(preset, "lr"), min_value=0.0, step=0.05,
                                        format="%g")
        n_steps = st.number_input("training steps", key=_key(preset, "steps"), min_value=1,
                                  max_value=mlp.MAX_STEPS, step=10)

try:
    config = mlp.make_config(preset, inputs, targets, weights, learning_rate)
    history = mlp.train(config, int(n_steps))
except mlp.MLPError as exc:
    st.error(f"{exc}", icon=":material/error:")
    st.stop()

if history.diverged_at is not None:
    st.error(
        f"Training diverged at step {history.diverged_at}: a value became inf or nan (the learning rate "
        f"{mlp.fmt(learning_rate)} is too large for these numbers). The steps up to there are shown; lower the "
        "learning rate to train further.",
        icon=":material/trending_up:",
    )
stuck = mlp.first_stuck_step(history)
if stuck is not None:
    st.info(f"From step {stuck} on, training is stuck: {mlp.stuck_note(history.steps[stuck])}", icon=":material/block:")


@st.fragment
def step_view(history: mlp.MLPHistory) -> None:
    """Everything the step slider changes; only this part reruns when it moves."""
    p = mlp.PRESETS[history.config.preset]
    last = len(history.steps) - 1
    if last > 0:
        k = st.slider("Training step", 0, last, value=0, key=f"mlp_step::{p.key}::{last}",
                      help="Step 0 is the worked example. Each step: forward, backward, update.")
    else:
        k = 0
    step = history.steps[k]
    s = p.style
    d = "dL" if p.key == "relu" else "dE"
    summary, curve = st.columns([1, 1.7], gap="large", vertical_alignment="center")
    with summary:
        top, bottom = st.columns(2), st.columns(2)
        top[0].metric("step", k)
        top[1].metric(p.loss_name, mlp.fmt(step.loss, s))
        bottom[0].metric(f"{p.loss_name} at step {last}", mlp.fmt(history.steps[-1].loss, s))
        bottom[1].metric("status", "diverged" if not step.finite else "finite")
        note = mlp.stuck_note(step)
        if note:
            st.info(note, icon=":material/block:")
    with curve:
        st.plotly_chart(render_handwork.loss_curve_figure(history.losses, k, p.loss_name, history.diverged_at,
                                                          height=280), width="stretch", key=f"mlp_loss_curve::{p.key}")

    st.graphviz_chart(dot.network_dot(step), width="stretch")
    st.caption(f"Green: values of the forward pass. Red: gradients {d}/d(node) of the backward pass. Edges carry "
               f"the weight and {d}/d(weight)" + (" (for the shared w1: this path's share of it)." if p.key == "relu"
                                                  else ". Hover a node or edge for its numbers."))
    equations = mlp.explain_step(step)

    def block(phase: str, title: str, width: int) -> None:
        st.markdown(f"**{title}**")
        st.code("\n".join(e.display(width) for e in equations if e.phase == phase), language=None, wrap_lines=True)

    block("forward", f"Forward pass at step {k}", 100)
    block("backward", "Backward pass (the chain rule, numbers in)", 100)
    block("update", f"Update (learning rate {mlp.fmt(step.learning_rate)})", 100)


step_view(history)

st.subheader("History, one row per step")
rows = mlp.history_rows(history)
st.dataframe(rows, hide_index=True, width="stretch", height=260)
st.download_button("Download the history as CSV", mlp.history_csv(history), file_name=f"mlp_{preset}_history.csv",
                   mime="text/csv", icon=":material/download:")


@st.fragment
def lr_comparison(config: mlp.MLPConfig, n_steps: int) -> None:
    """Loss curves for several learning rates; only this part reruns when its inputs change."""
    st.subheader("Learning-rate comparison")
    st.caption("The same network, data and starting weights, trained with each learning rate. A run whose numbers "
               "become inf or nan is marked diverged and stops there.")
    cols = st.columns([3, 1], vertical_alignment="bottom")
    text = cols[0].text_input("Learning rates (comma separated)", value=", ".join(f"{r:g}" for r in mlp.DEFAULT_RATES),
                              key=f"mlp_rates_{config.preset}", help="Add e.g. 10 to see what too large does.")
    log_y = cols[1].toggle("log scale", key=f"mlp_rates_log_{config.preset}")
    try:
        rates = mlp.parse_rates(text)
    except mlp.MLPError as exc:
        st.error(f"{exc}", icon=":material/error:")
        return
    runs = mlp.compare_learning_rates(config, rates, n_steps)
    p = mlp.PRESETS[config.preset]
    st.plotly_chart(render_handwork.lr_comparison_figure(runs, p.loss_name, log_y=log_y), width="stretch",
                    key=f"mlp_lr_chart::{config.preset}")
    st.dataframe(
        [{"learning rate": f"{r.learning_rate:g}",
          f"final {p.loss_name}": mlp.fmt(r.losses[-1], p.style) if r.diverged_at is None else "",
          "status": "finite" if r.diverged_at is None else f"diverged at step {r.diverged_at}"} for r in runs],
        hide_index=True, width="stretch",
    )
    for r in runs:
        if r.diverged_at is not None:
            st.warning(f"lr = {r.learning_rate:g}: diverged at step {r.diverged_at} (inf or nan); its curve stops "
                       "at the last finite loss.", icon=":material/trending_up:")


lr_comparison(config, int(n_steps))
