"""Learn from this input: one SGD step on a private copy, shown honestly (how much each layer moved, and what it
did to the accuracy on test images the step never saw)."""

from __future__ import annotations

import streamlit as st

from app_pages.explorer_views.context import Ctx
from cnnviz import ui
from cnnviz.engine.datasets import DataUnavailable, default_data_dir
from cnnviz.engine.learn import LR_GRID, heldout_batch, heldout_score, learn_step
from cnnviz.numbers import fmt
from cnnviz.render import inspect as figs


@st.cache_resource(show_spinner=False)
def _heldout(name: str, data_dir: str):
    try:
        return heldout_batch(name)
    except (DataUnavailable, ValueError):  # no test set here, or a dataset cnnviz does not know
        return None


def show(ctx: Ctx) -> None:
    card, trace = ctx.card, ctx.trace
    st.markdown(f"What if the network took **one SGD step** on this input, towards class "
                f"**{card.classes[trace.target]}**? Every weight moves by -lr x dL/dW. The step is applied to a "
                "private copy: the shared model stays as it is.")
    default = ui.default_learn_rate(ctx.name, ctx.stage, ctx.model, card)
    if st.session_state.get("_learn_lr_for") != (ctx.name, ctx.stage):  # another network: its own default
        st.session_state["_learn_lr_for"] = (ctx.name, ctx.stage)
        st.session_state["learn_lr"] = default
    with st.form("learn"):
        lr = st.number_input("learning rate", min_value=0.0, max_value=1e6, step=default, format="%.4g",
                             key="learn_lr")
        go_step = st.form_submit_button("Take one step", key="learn_go")
    st.caption(f"The default, {fmt(default)}, is the largest of {', '.join(fmt(r) for r in LR_GRID)} at which one "
               "step on any of this model's hard test images keeps its held-out accuracy within a point. Larger "
               "steps overshoot: try them.")
    bigger = st.columns(3)
    for col, factor in zip(bigger, (10, 100, 1000), strict=True):
        col.button(f"{factor}x: {fmt(default * factor)}", key=f"learn_x{factor}", width="stretch",
                   on_click=lambda f=factor: st.session_state.update(learn_lr=default * f))
    key = ctx.cache_key("learn", float(lr))
    if go_step:
        batch = _heldout(card.name, str(default_data_dir()))  # the card's dataset: Your model's too
        hx = batch.normalized(card) if batch is not None else None
        before = None
        if batch is not None:
            before = ui.session_cached("heldout", (ctx.name, ctx.stage), lambda: heldout_score(ctx.model, hx,
                                                                                               batch.labels), size=3)
        st.session_state["learn_result"] = (key, learn_step(
            ctx.model, ctx.x, trace.target, float(lr), hx, batch.labels if batch is not None else None, before,
            heldout_text=batch.text if batch is not None else ""))
    saved = st.session_state.get("learn_result")
    if saved is None:
        return
    saved_key, step = saved
    if saved_key != key:
        st.info("The model, weights, input, target or learning rate changed since the last step: take the step "
                "again.")
        return
    st.caption(step.mode_text)
    if step.diverged:
        st.error(f"With learning rate {fmt(step.lr)} the step diverged: the weights or the loss became inf/nan. "
                 "Try a smaller learning rate.")
        return
    m = st.columns(4)
    m[0].metric("loss before", fmt(step.loss_before, 4))
    m[1].metric("loss after", fmt(step.loss_after, 4), delta=fmt(step.loss_after - step.loss_before, 4),
                delta_color="inverse")
    m[2].metric(f"p({card.classes[step.target]})", f"{step.probs_after[step.target]:.1%}",
                delta=f"{step.probs_after[step.target] - step.probs_before[step.target]:+.1%}")
    if step.heldout_before is not None and step.heldout_after is not None:
        m[3].metric("held-out accuracy", f"{step.heldout_after.accuracy:.1%}",
                    delta=f"{step.heldout_after.accuracy - step.heldout_before.accuracy:+.1%}")
        st.caption(f"Held-out accuracy: {step.heldout_text}, never used by the step: {step.heldout_before.correct} "
                   f"-> {step.heldout_after.correct} of {step.heldout_after.n} right; mean loss "
                   f"{fmt(step.heldout_before.mean_loss, 4)} -> {fmt(step.heldout_after.mean_loss, 4)}.")
    if step.warning:
        st.warning(step.warning)
    a, b = st.columns(2)
    a.markdown("**before**")
    a.html(figs.bars_html(step.probs_before, card.classes, int(step.probs_before.argmax()), ui.text_px(13)))
    b.markdown("**after one step**")
    b.html(figs.bars_html(step.probs_after, card.classes, int(step.probs_after.argmax()), ui.text_px(13)))
    st.table({"layer": [c.layer for c in step.layers], "||W||": [fmt(c.size, 3) for c in step.layers],
              "||change||": [fmt(c.change, 3) for c in step.layers],
              "change / size": [f"{c.relative:.3%}" + (" (large)" if c.large else "") for c in step.layers]})
    kernels = [u.name for u in step.params if u.delta.ndim == 4]
    which = st.selectbox("weight change of a kernel", kernels, key="learn_kernel")
    upd = next(u for u in step.params if u.name == which)
    k = st.slider("kernel (output channel)", 0, upd.delta.shape[0] - 1, 0, key="learn_k") \
        if upd.delta.shape[0] > 1 else 0
    c = st.slider("input channel", 0, upd.delta.shape[1] - 1, 0, key="learn_c") if upd.delta.shape[1] > 1 else 0
    st.html(figs.matrix_html(upd.delta[k, c], f"change of {which}[{k},{c}] after one step", ui.text_px(14),
                             signed=True, digits=2))
