"""Learn from this input: one SGD step on a private copy, shown honestly (how much each layer moved, and what it
did to held-out accuracy)."""

from __future__ import annotations

import streamlit as st

from app_pages.explorer_views.context import Ctx
from cnnviz import ui
from cnnviz.engine.capture import sgd_step
from cnnviz.numbers import fmt
from cnnviz.render import inspect as figs


def show(ctx: Ctx) -> None:
    card, trace = ctx.card, ctx.trace
    st.markdown(f"What if the network took **one SGD step** on this input, towards class "
                f"**{card.classes[trace.target]}**? Every weight moves by -lr x dL/dW. The step is applied to a "
                "private copy in eval mode (dropout off, batch norm on its running statistics): the shared model "
                "stays as it is.")
    with st.form("learn"):
        lr = st.number_input("learning rate", min_value=0.0, max_value=1e6, value=0.1, step=0.05, format="%.4g",
                             key="learn_lr")
        go_step = st.form_submit_button("Take one step", key="learn_go")
    key = ctx.cache_key("learn", float(lr))
    if go_step:
        st.session_state["learn_result"] = (key, sgd_step(ctx.model, ctx.x, trace.target, float(lr)))
    saved = st.session_state.get("learn_result")
    if saved is None:
        return
    saved_key, step = saved
    if saved_key != key:
        st.info("The model, weights, input, target or learning rate changed since the last step: take the step "
                "again.")
        return
    if step.diverged:
        st.error(f"With learning rate {fmt(step.lr)} the step diverged: the weights or the loss became inf/nan. "
                 "Try a smaller learning rate.")
        return
    m = st.columns(3)
    m[0].metric("loss before", fmt(step.loss_before, 4))
    m[1].metric("loss after", fmt(step.loss_after, 4), delta=fmt(step.loss_after - step.loss_before, 4),
                delta_color="inverse")
    m[2].metric(f"p({card.classes[step.target]})", f"{step.probs_after[step.target]:.1%}",
                delta=f"{step.probs_after[step.target] - step.probs_before[step.target]:+.1%}")
    big = [u for u in step.updates if u.relative > 0.10]
    if big:
        st.warning("This step changed " + ", ".join(f"{u.name} by {u.relative:.0%}" for u in big[:6])
                   + " of its size: far more than training ever does in one step (usually well under 1%). The "
                   "loss on this one input falls, but such a step can wreck what the network knew.")
    a, b = st.columns(2)
    a.markdown("**before**")
    a.html(figs.bars_html(step.probs_before, card.classes, int(step.probs_before.argmax()), ui.text_px(13)))
    b.markdown("**after one step**")
    b.html(figs.bars_html(step.probs_after, card.classes, int(step.probs_after.argmax()), ui.text_px(13)))
    st.table({"parameter": [u.name for u in step.updates], "||change||": [fmt(u.norm, 3) for u in step.updates],
              "change / size": [f"{u.relative:.3%}" for u in step.updates]})
    kernels = [u.name for u in step.updates if u.delta.ndim == 4]
    which = st.selectbox("weight change of a kernel", kernels, key="learn_kernel")
    upd = step.update(which)
    k = st.slider("kernel (output channel)", 0, upd.delta.shape[0] - 1, 0, key="learn_k") \
        if upd.delta.shape[0] > 1 else 0
    c = st.slider("input channel", 0, upd.delta.shape[1] - 1, 0, key="learn_c") if upd.delta.shape[1] > 1 else 0
    st.html(figs.matrix_html(upd.delta[k, c], f"change of {which}[{k},{c}] after one step", ui.text_px(14),
                             signed=True, digits=2))
