"""The input step of the backward pass: dL/d(pixel), and three attribution maps laid over the picture, each drawn
large with the picture's outline and colours clipped at a stated percentile (every hovered or written number exact)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages.explorer_views.context import Ctx
from app_pages.explorer_views.forward import pick_cell
from cnnviz import ui
from cnnviz.engine.attribution import attribute, cam_layer_names, sanity_check
from cnnviz.engine.capture import gradient_check
from cnnviz.engine.layer_rules import largest_cell
from cnnviz.engine.pictures import unnormalize
from cnnviz.numbers import fmt
from cnnviz.render import inspect as figs
from cnnviz.render.network import CLIP_PERCENTILE, ink_mask, overlay

FADE = 0.8  # how far the picture under an attribution fades toward the scale's zero colour (its outline stays)
METHODS = {"saliency": "Saliency", "grad_cam": "Grad-CAM", "integrated_gradients": "Integrated gradients"}


def outline_note(pixels: np.ndarray) -> tuple[np.ndarray, str]:
    """The picture's outline mask and the words that say what the line is."""
    mask, threshold = ink_mask(pixels)
    if pixels.shape[0] == 1:
        return mask, f"magenta line: the outline of the ink (pixel value above {fmt(threshold, 2)})"
    return mask, f"magenta line: the outline of the picture's bright part (brightness above {fmt(threshold, 2)})"


def input_step(ctx: Ctx) -> None:
    trace, card = ctx.trace, ctx.card
    st.markdown("#### The input: dL/d(pixel)")
    st.markdown("The gradient that reached the input says how each pixel would change the objective. autograd "
                "differentiates the *normalised* input x = (pixel - mean) / std; per unit of pixel value (0..1) "
                "the gradient is dL/dx / std, "
                f"{' / '.join(fmt(1 / s, 3) for s in card.std)} times larger.")
    c = st.slider("colour channel", 0, trace.input_grad.shape[0] - 1, 0, key="bw_in_ch") \
        if trace.input_grad.shape[0] > 1 else 0
    row, col = pick_cell(trace.input_grad.shape, "bw_in", largest_cell(trace.input_grad[c]))
    per_pixel = trace.input_grad[c] / card.std[c]
    level, _, note = figs.colour_limit(per_pixel)
    mask, line = outline_note(unnormalize(ctx.x[0].numpy(), card))
    st.html(figs.map_html(per_pixel, f"dL/d(pixel value), channel {c} (signed)", ui.text_px(14), signed=True,
                          frames=[figs.window(row, col, 1, 1)], size_px=320, vmax=level, outline=mask,
                          note=f"{note}; {line}; hover a cell for its exact value"))
    g = float(trace.input_grad[c, row, col])
    st.markdown(f"dL/dx[{c},{row},{col}] = **{fmt(g, 4)}** with respect to the normalised input; per unit of "
                f"pixel value: {fmt(g, 4)} / {fmt(card.std[c], 4)} = **{fmt(g / card.std[c], 4)}**")
    if st.button("Check this number with finite differences", key="check_x"):
        check = gradient_check(ctx.model, ctx.x, trace.target, "input", (c, row, col), objective=trace.objective)
        st.markdown(figs.gradient_check_text(check))
    st.divider()
    attribution_panel(ctx)


def attribution_panel(ctx: Ctx) -> None:
    trace, card = ctx.trace, ctx.card
    st.markdown("#### Which pixels mattered? Three attribution methods, on the picture")
    a, b, c = st.columns([1.3, 1, 1])
    method = a.radio("Method", list(METHODS), format_func=METHODS.get, key="attr_method")
    objective = b.radio("They all explain", ["logit", "loss"], horizontal=True, key="attr_objective",
                        format_func={"logit": "the class's logit", "loss": "the loss"}.get)
    opacity = c.slider("heat-map opacity", 0.0, 1.0, 0.8, 0.05, key="attr_opacity")
    layer = None
    if method == "grad_cam":
        names = ["(default: the last layer with a non-zero map)", *cam_layer_names(ctx.model)]
        chosen = st.selectbox("Grad-CAM layer", names, key="cam_layer")
        layer = None if chosen == names[0] else chosen
    result = ui.session_cached("attr", ctx.cache_key(method, layer, objective),
                               lambda: attribute(ctx.model, ctx.x, trace.target, method, layer, objective=objective,
                                                 card=card))
    pixels = unnormalize(ctx.x[0].numpy(), card)
    signed = bool((result.values < 0).any())
    mask, line = outline_note(pixels)
    st.html(overlay_figure(pixels, result.values, opacity, signed, mask,
                           f"{METHODS[method]}{' at ' + result.layer if result.layer else ''}, over the input", line))
    st.markdown(f"**Objective:** {result.objective_text}")
    st.markdown(result.method_text)
    if result.baseline:
        st.markdown(f"**Baseline:** {result.baseline}")
    if result.layer_choice:
        st.caption(result.layer_choice)
    if result.all_zero:
        st.warning(f"This map is zero everywhere: {result.zero_reason}")
    with st.expander("Sanity check: randomise the weights (Adebayo et al. 2018)"):
        st.markdown("A map that explains the *model* must change when the model's learned weights are replaced by "
                    "random ones. If it barely changes, it shows the picture's edges, not what the network learned.")
        if st.button("Randomise the weights and compare", key="sanity_go"):
            check = ui.session_cached("sanity", ctx.cache_key(method, layer, objective),
                                      lambda: sanity_check(ctx.model, ctx.x, trace.target, method, layer,
                                                           objective=objective, card=card), size=2)
            cols = st.columns(1 + len(check.steps))
            cols[0].html(overlay_figure(pixels, check.trained.values, opacity, signed, mask, "trained", min_px=200))
            for col, step in zip(cols[1:], check.steps, strict=True):
                col.html(overlay_figure(pixels, step.attribution.values, opacity, signed, mask,
                                        f"random weights: rank correlation {fmt(step.spearman, 2)}", min_px=200))
            if check.text:
                st.caption(check.text)


def overlay_figure(pixels: np.ndarray, values: np.ndarray, opacity: float, signed: bool, mask: np.ndarray,
                   title: str, line: str = "", min_px: int = 300) -> str:
    """An attribution over the faded picture, its colours clipped at a percentile (the note says which)."""
    level, clipped, note = figs.colour_limit(values)
    if line:
        note = f"{note}; {line}; the picture is faded to {1 - FADE:.0%} so the colours read"
    else:  # a thumbnail: its bar's end says the value
        note = f"colours saturate at the {CLIP_PERCENTILE:g}th percentile of |value|" if clipped else ""
    return figs.overlay_html(overlay(pixels, values, opacity, signed, vmax=level or None, fade=FADE), title,
                             ui.text_px(14), mask, signed, level, clipped, note, min_px)
