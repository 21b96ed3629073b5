"""Backward view: the gradient at every layer at once (the network view, in the order the gradient flows: the loss,
each layer from the last, the pixels), Play walking it; the open step's local rule with real numbers, and the
gradient's size at each step."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages.explorer_views import attributions
from app_pages.explorer_views.context import KIND_NAMES, Ctx, apply_pick, fresh_picks, network_panel
from app_pages.explorer_views.forward import pick_cell
from cnnviz import ui
from cnnviz.engine.capture import gradient_check
from cnnviz.engine.layer_rules import (
    backward_rule,
    conv_weight_grad_terms,
    largest_cell,
    loss_float64,
    pool_windows,
    products_text,
    rounding_note,
    softmax_rows,
    weight_grad_cell,
)
from cnnviz.numbers import fmt, fmt_close_to_one
from cnnviz.render import inspect as figs

STEP_KEY = "backprop"


def positions(ctx: Ctx) -> list:
    """The slider's positions: "loss", then each layer from the last to the first, then "input"."""
    return ["loss", *range(len(ctx.layers) - 1, -1, -1), "input"]


def position_label(ctx: Ctx, p) -> str:
    if p == "loss":
        return "loss"
    if p == "input":
        return "input pixels"
    return ctx.layers[p].name


def url_value(ctx: Ctx, text: str) -> int:
    """The slider index of a link's ``layer`` value (a layer name, "loss" or "input")."""
    labels = [position_label(ctx, p) for p in positions(ctx)]
    wanted = "input pixels" if text == "input" else text
    if wanted not in labels:
        raise ValueError(f"this model has no layer named {text!r}")
    return labels.index(wanted)


VIEW_KEY = "network_backward"
VIEW_PICK = "_bw_view_pick"  # the channel and cell last clicked in the view, for the step's pickers


def picker_keys(ctx: Ctx, p) -> tuple[str, str | None]:
    """The step's channel (or unit) key and cell key at position ``p`` (None: the loss has no pickers)."""
    if p == "input":
        return "bw_in_ch", "bw_in"
    kind = ctx.layers[p].kind
    return (f"bw_ch_{kind}", f"bw_{kind}") if ctx.layers[p].grad_input.ndim == 3 else (f"bw_unit_{kind}", None)


def gradient_at(ctx: Ctx, p) -> np.ndarray | None:
    """What the view shows at position ``p`` and the step's pickers choose in: dL/d(the layer's input)."""
    if p == "loss":
        return None
    return ctx.trace.input_grad if p == "input" else ctx.layers[p].grad_input


def apply_view_pick(ctx: Ctx, s: int, p) -> None:
    """Open the step at position ``s`` on the channel and cell clicked in the view (clamped to the map)."""
    g = gradient_at(ctx, p)
    if g is None:
        st.session_state.pop(VIEW_PICK, None)
        return
    apply_pick(VIEW_PICK, s, g.shape, *picker_keys(ctx, p))


def view_selection(ctx: Ctx, p) -> tuple[int | None, tuple[int, int] | None]:
    """The channel and cell the step shows (its pick, else its default), for the view to frame."""
    g = gradient_at(ctx, p)
    if g is None:
        return None, None
    ch_key, cell_key = picker_keys(ctx, p)
    ch = st.session_state.get(ch_key)
    if g.ndim != 3:
        return (ch if isinstance(ch, int) else largest_cell(g)[0]), None
    if not isinstance(ch, int):
        ch = 0 if p == "input" else largest_cell(g)[0]
    row, col = (st.session_state.get(f"{cell_key}_{a}") for a in ("row", "col"))
    cell = (row, col) if isinstance(row, int) and isinstance(col, int) else largest_cell(g[ch])
    return ch, (int(cell[0]), int(cell[1]))


def show(ctx: Ctx, shared: bool = False) -> None:
    @st.fragment
    def view() -> None:
        pos = positions(ctx)
        s = st.session_state.get(STEP_KEY)
        s = st.session_state[STEP_KEY] = min(max(s, 0), len(pos) - 1) if isinstance(s, int) else 0
        p = pos[s]
        ui.write_url(layer="input" if p == "input" else position_label(ctx, p))
        fresh_picks(ctx, f"backward {s}")
        apply_view_pick(ctx, s, p)
        network_panel(ctx, "backward", VIEW_KEY, s, view_selection(ctx, p), STEP_KEY, VIEW_PICK, shared)
        left, right = st.columns([1.5, 1], gap="large")
        with right:
            st.markdown("**Size of the gradient at each step** (in the view's order; orange: the open step)")
            labels, norms = norm_rows(ctx)
            st.html(figs.norms_html(labels, norms, s, ui.text_px(13)))
        with left:
            if p == "loss":
                loss_step(ctx)
            elif p == "input":
                attributions.input_step(ctx)
            else:
                layer_step(ctx, ctx.layers[p])

    view()


def norm_rows(ctx: Ctx) -> tuple[list[str], list[float]]:
    """||dL/dlogits|| at the loss, then ||dL/d(input)|| each layer passes on, in the slider's order."""
    labels = ["loss: dL/dlogits"]
    norms = [float(np.linalg.norm(ctx.layers[-1].grad_output))]
    for rec in reversed(ctx.layers):
        labels.append(rec.name)
        norms.append(float(np.linalg.norm(rec.grad_input)))
    labels.append("input pixels")
    norms.append(float(np.linalg.norm(ctx.trace.input_grad)))
    return labels, norms


def loss_step(ctx: Ctx) -> None:
    trace, classes = ctx.trace, ctx.card.classes
    rows, shift, total = softmax_rows(trace, classes)
    t = trace.target
    st.markdown(f"**Softmax** turns the logits z into probabilities: p_i = e^(z_i) / sum_j e^(z_j). With the real "
                f"logits (shifted by max z = {fmt(shift, 4)} so nothing overflows; the ratios are unchanged): sum of "
                f"e^(z_j - max z) = {fmt(total, 6)}.")
    p_t = float(trace.probs[t])  # the float32 p the loss beside it was computed from, so the line is true
    if trace.objective == "loss":
        st.markdown(f"**Loss** L = -log p[target] = -log {fmt_close_to_one(p_t)} = **{fmt(trace.loss, 4)}** "
                    f"(target: {classes[t]}).")
        if p_t > 0.999:
            st.caption(f"float32 gives a loss this small only a few correct digits: recomputed in float64 from "
                       f"the same logits it is {fmt(loss_float64(trace), 4)}.")
        st.markdown("Softmax followed by cross-entropy has the simplest gradient in deep learning: "
                    "**dL/dlogits = p - onehot(target)**.")
        if p_t > 0.99:
            st.info(f"The model gives {classes[t]} p = {fmt_close_to_one(p_t)}, so p - onehot is almost 0 "
                    "everywhere and every gradient behind it is tiny. Pick another class to explain (or a harder "
                    "input) to see the backward pass at work.")
    else:
        st.markdown(f"Differentiating the logit of class {classes[t]} itself: dL/dlogits is 1 for that class and 0 "
                    "for every other.")
    g = np.asarray(ctx.layers[-1].grad_output, dtype=np.float64).reshape(-1)
    onehot = (np.arange(len(rows)) == t).astype(int)
    st.table({"class": [r.label for r in rows], "logit z": [fmt(r.logit, 4) for r in rows],
              "e^(z - max z)": [fmt(r.exp, 4) for r in rows], "p": [fmt(r.prob, 4) for r in rows],
              "onehot": onehot.tolist(), "dL/dlogit (autograd)": [fmt(v, 4) for v in g]})


def layer_step(ctx: Ctx, rec) -> None:
    st.markdown(f"#### {rec.name}: {KIND_NAMES.get(rec.kind, rec.kind)}")
    g_out, g_in = rec.grad_output, rec.grad_input
    default = largest_cell(g_in)
    if g_in.ndim == 3:
        n = g_in.shape[0]
        c = st.slider("channel (of this layer's input)", 0, n - 1, default[0], key=f"bw_ch_{rec.kind}") \
            if n > 1 else 0
        row, col = pick_cell(g_in.shape, f"bw_{rec.kind}", largest_cell(g_in[c]))
        cell = (c, row, col)
    else:
        j = st.slider("unit", 0, g_in.shape[0] - 1, default[0], key=f"bw_unit_{rec.kind}") \
            if g_in.shape[0] > 1 else 0
        cell = (j,)
    rule = backward_rule(rec, cell)
    st.markdown(f"**Rule:** {rule.formula}")
    st.markdown(f"**At cell {cell}:** {rule.worked}")
    st.markdown(f"Autograd says dL/dx{list(cell)} = **{fmt(rule.recorded, 4)}**")
    px = ui.text_px(14)
    note = rounding_note(rule.value, rule.recorded, rule.magnitude, str(g_in.dtype))
    if note:
        st.caption(f"The rule's sum above is written in float64; autograd's number is the network's own, in "
                   f"{g_in.dtype}. {note}")
    if rec.kind == "relu" and g_in.ndim == 3:
        frame = [figs.window(cell[1], cell[2], 1, 1)]
        st.html(figs.row_html(figs.map_html((rec.input[cell[0]] > 0).astype(float), "mask: input > 0", px,
                                            signed=False, frames=frame),
                              figs.map_html(g_in[cell[0]], "dL/dx = dL/dy x mask", px, signed=True, frames=frame),
                              gap_px=48))
    elif rec.kind == "maxpool":
        pool_routing(rec, cell, px)
    elif rec.kind == "conv":
        conv_backward(ctx, rec, cell, px)
    elif g_in.ndim == 3:
        st.html(figs.map_html(g_in[cell[0]], f"dL/dx, channel {cell[0]}", px, signed=True,
                              frames=[figs.window(cell[1], cell[2], 1, 1)]))
    elif g_out.ndim == 1 and len(g_out) <= 64:
        st.table({"unit": list(range(len(g_out))), "dL/dy": [fmt(v, 4) for v in g_out]})


def pool_routing(rec, cell, px: int) -> None:
    c, r, col = cell
    windows = pool_windows(rec, c)
    win = next((w for w in windows if w.top <= r < w.top + w.height and w.left <= col < w.left + w.width), None)
    if win is None:
        return
    k = win.height
    crop = rec.grad_input[c, win.top:win.top + k, win.left:win.left + k]
    a, b = st.columns(2)
    chosen = {(win.arg_row - win.top, win.arg_col - win.left): figs.CHOSEN}
    a.html(figs.matrix_html(rec.input[c, win.top:win.top + k, win.left:win.left + k],
                            f"forward: the window holding ({r},{col})", px, row0=win.top, col0=win.left,
                            marks=chosen, digits=3))
    g = fmt(float(rec.grad_output[c, win.out_row, win.out_col]), 4)
    b.html(figs.matrix_html(crop, f"backward: dL/dx in that window (g = {g})", px, row0=win.top, col0=win.left,
                            signed=True, marks=chosen, digits=3))
    st.caption("The window's gradient g goes to the cell that won the max (orange); the other cells of the window "
               "get 0.")


def conv_backward(ctx: Ctx, rec, cell, px: int) -> None:
    st.markdown("The same kernels carry the gradient back: **dX = full convolution of g with each kernel rotated "
                "180 degrees**, summed over output channels; and the kernel's own gradient is **dW = X correlated "
                "with g**.")
    o_ch = rec.weight.shape[0]
    o_default = int(np.abs(rec.weight_grad).reshape(o_ch, -1).max(1).argmax())
    o = st.slider("output channel (kernel) to inspect", 0, o_ch - 1, o_default, key="bw_conv_o") if o_ch > 1 else 0
    c, u, v = weight_grad_cell(rec, o)
    a, b = st.columns(2)
    a.html(figs.matrix_html(rec.weight[o, c], f"kernel W[{o},{c}]", px, signed=True))
    b.html(figs.matrix_html(rec.weight_grad[o, c], f"its gradient dL/dW[{o},{c}]", px, signed=True,
                            marks={(u, v): figs.MARK}))
    aligned, g, total = conv_weight_grad_terms(rec, o, c, u, v)
    pairs = [(float(xv), float(gv)) for xv, gv in zip(aligned.ravel(), g.ravel(), strict=True) if xv and gv]
    listed = products_text(pairs, 3, 10, "·", "more non-zero products")
    recorded = float(rec.weight_grad[o, c, u, v])
    st.markdown(f"dL/dW[{o},{c},{u},{v}] (the largest of this kernel) = sum over every output cell of X x g = "
                f"{listed or '0'} = **{fmt(total, 4)}** (summed in float64; autograd, in {rec.weight_grad.dtype}: "
                f"{fmt(recorded, 4)}; {g.size} products, {g.size - len(pairs)} of them 0)")
    note = rounding_note(total, recorded, float(np.abs(np.asarray(aligned, np.float64) * g).sum()),
                         str(rec.weight_grad.dtype))
    if note:
        st.caption(note)
    if st.button("Check this number with finite differences", key="check_w"):
        check = gradient_check(ctx.model, ctx.x, ctx.trace.target, f"{rec.name}.weight", (o, c, u, v),
                               objective=ctx.trace.objective)
        st.markdown(figs.gradient_check_text(check))
