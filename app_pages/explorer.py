"""Network explorer: draw a digit (or pick a photo), watch every layer compute, then walk the gradient back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cnnviz import ui
from cnnviz.engine.attribution import attribute, conv_layer_names
from cnnviz.engine.capture import capture, gradient_check, sgd_step
from cnnviz.engine.checkpoints import available_stages
from cnnviz.engine.layer_rules import (
    architecture,
    backward_rule,
    conv_cell,
    conv_weight_grad_terms,
    loss_gradient,
    pool_windows,
    relu_summary,
)
from cnnviz.engine.pictures import EmptyImage, ImageError, preprocess, unnormalize
from cnnviz.render import network as render

MODELS = {"mnist": "MNIST digits", "cifar10": "CIFAR-10 photos"}
STAGES = {"final": "fully trained", "epoch1": "after 1 epoch", "init": "random init (before training)"}
KIND_NAMES = {"conv": "convolution", "batchnorm": "batch norm", "relu": "ReLU", "maxpool": "max-pool",
              "avgpool": "average pool", "flatten": "flatten", "linear": "linear", "dropout": "dropout"}


def fmt(v: float) -> str:
    return f"{v:.4g}"


def factor(v: float) -> str:
    """A number as a factor in a written product: negatives in parentheses."""
    return f"({v:.4g})" if v < 0 else f"{v:.4g}"


st.title("Network explorer")
st.caption("Draw or pick an input, see what every layer computes, then drag the backprop slider from the loss "
           "back to the pixels. Every number here is PyTorch's own, and the hand-worked ones are tested against it.")

# ----------------------------------------------------------------------------------------------------- model + input
top = st.columns([1.1, 1, 1.2], gap="large")
with top[0]:
    name = st.radio("Model", list(MODELS), format_func=MODELS.get, horizontal=True, key="model_name")
    stages = [s for s in ("final", "epoch1", "init") if s in available_stages(name)] or ["final"]
    stage = st.radio("Weights", stages, format_func=STAGES.get, horizontal=True, key=f"stage_{name}",
                     help="Snapshots taken while the network learned: compare the same drawing's maps.") \
        if len(stages) > 1 else "final"
    loaded = ui.get_model(name, stage)
    if loaded is None:
        st.info(f"Train it with `python -m cnnviz.train {name}`, or choose the other model.")
        st.stop()
    model, card = loaded
    sources = ["Draw", "Test sample", "Upload"] if name == "mnist" else ["Test sample", "Upload"]
    source = st.segmented_control("Input", sources, default=sources[0], key=f"source_{name}") or sources[0]
    picked = None
    if source == "Draw":
        st.caption("Draw one digit, large, in the middle. The bin icon in the toolbar clears the canvas.")
        picked = ui.canvas_input("canvas")
    elif source == "Test sample":
        picked = ui.sample_input(name, card.classes, key=f"sample_{name}")
    else:
        picked = ui.upload_input(key=f"upload_{name}")

x = None
if picked is not None:
    try:
        x = preprocess(picked.image, card, dataset_sample=picked.source == "sample")  # (1, C, H, W)
    except EmptyImage:
        x = None
    except (ImageError, ValueError, OSError) as exc:
        with top[1]:
            st.error(f"This picture cannot be used: {exc}")
        st.stop()

with top[1]:
    st.markdown("**What the network receives**")
    if x is None:
        st.info("Draw a digit on the canvas (or pick a sample) to see the network's prediction."
                if source == "Draw" else "Pick an input to see the network's prediction.")
        st.stop()
    st.image(render.pixels_image(unnormalize(x[0].numpy(), card)), width=196,
             caption=f"{card.input_shape[1]}x{card.input_shape[2]} input, {picked.description}")
    if name == "mnist" and picked.source != "sample":
        st.caption("Cropped to the ink, scaled to 20 px and centred by mass in 28x28, as MNIST's digits were.")

key_x = ui.digest(x)
first = ui.session_cached("trace", (name, stage, key_x, None, "loss"), lambda: capture(model, x))
with top[2]:
    default_target = picked.label if picked.label is not None else first.pred
    target = st.selectbox("Explain class (target of the backward pass)", range(len(card.classes)),
                          index=default_target, format_func=lambda i: card.classes[i], key=f"target_{name}_{key_x}")
    objective = st.radio("Differentiate", ["loss", "logit"], horizontal=True, key="objective",
                         format_func={"loss": "cross-entropy loss", "logit": "the class's logit"}.get)
    with st.container(key="prediction"):
        p = float(first.probs[first.pred])
        verdict = ""
        if picked.label is not None:
            verdict = " (correct)" if first.pred == picked.label else f" (true: {card.classes[picked.label]})"
        st.markdown(f"### Prediction: {card.classes[first.pred]} ({p:.1%}){verdict}")
    st.plotly_chart(render.prob_bars(first.probs, card.classes, first.pred, target), key="probs",
                    config={"displayModeBar": False})

if target == first.target and objective == "loss":
    trace = first  # the same computation (capture's default target is the predicted class): kept once
else:
    trace = ui.session_cached("trace", (name, stage, key_x, target, objective),
                              lambda: capture(model, x, target=target, objective=objective))
layers = trace.layers


def layer_label(i: int) -> str:
    rec = layers[i]
    return f"{i + 1}. {rec.name} ({KIND_NAMES.get(rec.kind, rec.kind)}) -> {'x'.join(map(str, rec.output.shape))}"


def pick_cell(rec_shape: tuple[int, ...], key: str, default: tuple[int, int] | None = None) -> tuple[int, int]:
    h, w = rec_shape[-2:]
    c1, c2 = st.columns(2)
    d = default or (h // 2, w // 2)
    row = c1.slider("row", 0, h - 1, min(d[0], h - 1), key=f"{key}_row") if h > 1 else 0
    col = c2.slider("column", 0, w - 1, min(d[1], w - 1), key=f"{key}_col") if w > 1 else 0
    return row, col


def pick_channel(n: int, key: str, label: str = "channel") -> int:
    return st.slider(label, 0, n - 1, 0, key=key) if n > 1 else 0


forward_tab, backward_tab, learn_tab, arch_tab, card_tab = st.tabs(
    ["Forward pass", "Backward pass", "Learn from this input", "Architecture", "Model card"])


# ---------------------------------------------------------------------------------------------------- forward view
@st.fragment
def forward_view() -> None:
    left, right = st.columns([1, 1.3], gap="large")
    with left:
        st.markdown("**Every layer, in forward order** (one tile per channel; yellow = high, purple = low; "
                    "blue/red = negative/positive)")
        with st.container(height=640):
            for i, rec in enumerate(layers):
                st.caption(layer_label(i))
                out = rec.output if rec.output.ndim == 3 else rec.output.reshape(-1)
                st.image(render.tile_maps(out, cell_px=40 if out.ndim == 3 and out.shape[0] > 16 else 56))
    with right:
        default = next(i for i, r in enumerate(layers) if r.kind == "conv")
        i = st.selectbox("Inspect a layer", range(len(layers)), index=default, format_func=layer_label,
                         key="fwd_layer")
        rec = layers[i]
        if rec.kind == "conv":
            conv_inspector(rec)
        elif rec.kind == "relu":
            relu_inspector(rec, i)
        elif rec.kind == "maxpool":
            pool_inspector(rec)
        elif rec.kind == "batchnorm":
            bn_inspector(rec)
        else:
            vector_inspector(rec)


def conv_inspector(rec) -> None:
    o = pick_channel(rec.output.shape[0], "fwd_conv_ch", "output channel")
    row, col = pick_cell(rec.output.shape, "fwd_conv")
    st.plotly_chart(render.heatmap(rec.output[o], f"{rec.name}: channel {o}", cell=(row, col)), key="fwd_conv_map")
    cell = conv_cell(rec, o, row, col)
    c_in = cell.kernel.shape[0]
    c = st.slider("input channel to show", 0, c_in - 1, 0, key="fwd_conv_in") if c_in > 1 else 0
    m = st.columns(3)
    m[0].plotly_chart(render.small_matrix(cell.kernel[c], f"kernel W[{o},{c}]", signed=True), key="k")
    m[1].plotly_chart(render.small_matrix(cell.patch[c], f"input patch (ch {c})"), key="patch")
    m[2].plotly_chart(render.small_matrix(cell.products[c], "products", signed=True), key="prod")
    partial = cell.products.reshape(c_in, -1).sum(1)
    terms = " + ".join(f"{factor(w)}·{factor(v)}" for w, v in zip(cell.kernel[c].ravel(), cell.patch[c].ravel(),
                                                                  strict=True))
    st.markdown(f"Input channel {c}: {terms} = **{fmt(partial[c])}**")
    st.markdown(f"Sum over all {c_in} input channels = {fmt(partial.sum())}, plus bias {fmt(cell.bias)} = "
                f"**{fmt(cell.total)}**; the map holds **{fmt(cell.recorded)}**.")
    with st.expander(f"Every input channel's partial sum ({c_in})"):
        st.dataframe(pd.DataFrame({"input channel": range(c_in), "sum of products": partial}), hide_index=True)


def relu_inspector(rec, i: int) -> None:
    summary = relu_summary(rec)
    st.markdown(f"ReLU sets **{summary.zero_share:.0%}** of its {summary.units} units to zero for this input.")
    if summary.dead_channels:
        st.markdown(f"Channels zero everywhere (dead for this input): {', '.join(map(str, summary.dead_channels))}")
    if rec.output.ndim == 3:
        c = pick_channel(rec.output.shape[0], "fwd_relu_ch")
        a, b = st.columns(2)
        a.plotly_chart(render.heatmap(rec.input[c], "before ReLU", signed=True, height=300), key="pre")
        b.plotly_chart(render.heatmap(rec.output[c], "after ReLU = max(0, x)", height=300), key="post")


def pool_inspector(rec) -> None:
    c = pick_channel(rec.output.shape[0], "fwd_pool_ch")
    windows = pool_windows(rec, c)
    a, b = st.columns([1.3, 1])
    a.plotly_chart(render.pool_figure(rec.input[c], windows, f"input, channel {c}: windows and chosen cells (x)"),
                   key="pool_in")
    b.plotly_chart(render.heatmap(rec.output[c], "pooled: each window's max", height=300), key="pool_out")
    k = rec.hparams["kernel_size"]
    st.caption(f"{k}x{k} windows, stride {rec.hparams['stride']}: each output cell keeps the largest value of its "
               "window; the red x marks which cell won (ties go to the first in reading order, as in PyTorch).")


def bn_inspector(rec) -> None:
    scale, shift = rec.extra["scale"], rec.extra["shift"]
    st.markdown("In eval mode batch norm is a fixed per-channel affine map: y = scale x + shift, with "
                "scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean x scale.")
    c = pick_channel(rec.output.shape[0], "fwd_bn_ch")
    row, col = pick_cell(rec.output.shape, "fwd_bn")
    xv, yv = float(rec.input[c, row, col]), float(rec.output[c, row, col])
    st.markdown(f"Channel {c}: y = {fmt(scale[c])} x {fmt(xv)} + {fmt(shift[c])} = "
                f"**{fmt(scale[c] * xv + shift[c])}** (recorded {fmt(yv)})")
    st.dataframe(pd.DataFrame({"channel": range(len(scale)), "scale": scale, "shift": shift}), hide_index=True,
                 height=220)


def vector_inspector(rec) -> None:
    values = rec.output.reshape(-1)
    if rec is layers[-1]:
        st.markdown("The network's output: one score (logit) per class. Softmax turns them into probabilities.")
        labels = list(card.classes)
    else:
        labels = [str(k) for k in range(len(values))]
    if rec.kind == "avgpool":
        st.markdown("Global average pooling: each channel's map is averaged to one number, so the head sees "
                    "*how much* of each feature is present, wherever it is.")
    st.dataframe(pd.DataFrame({"unit": labels[:len(values)], "value": values}), hide_index=True, height=240)


# --------------------------------------------------------------------------------------------------- backward view
@st.fragment
def backward_view() -> None:
    positions = ["loss", *range(len(layers) - 1, -1, -1), "input"]

    def label(p) -> str:
        if p == "loss":
            return "loss"
        if p == "input":
            return "input pixels"
        return layers[p].name

    pos = st.select_slider("Backprop: drag from the loss back to the pixels", positions, value="loss",
                           format_func=label, key="backprop")
    norms = [float(np.linalg.norm(r.grad_output)) for r in layers]
    current = None if pos in ("loss", "input") else pos
    left, right = st.columns([1.4, 1], gap="large")
    with right:
        st.markdown("**Size of the gradient at each layer's output**")
        st.plotly_chart(render.grad_norms([r.name for r in layers], norms, current), key="norms",
                        config={"displayModeBar": False})
    with left:
        if pos == "loss":
            loss_step()
        elif pos == "input":
            input_step()
        else:
            layer_step(layers[pos])


def loss_step() -> None:
    g = loss_gradient(trace)
    if trace.objective == "loss":
        st.markdown(f"L = -log p[target] = -log {fmt(trace.probs[trace.target])} = **{fmt(trace.loss)}**. "
                    "Softmax followed by cross-entropy has the simplest gradient in deep learning: "
                    "**dL/dlogits = p - onehot(target)**.")
    else:
        st.markdown(f"Differentiating the logit of class {card.classes[trace.target]} itself: dL/dlogits is 1 "
                    "for that class and 0 for every other.")
    table = pd.DataFrame({"class": list(card.classes), "p": trace.probs,
                          "onehot": (np.arange(len(g)) == trace.target).astype(int), "dL/dlogit": g})
    st.dataframe(table, hide_index=True)
    st.caption("Recorded by autograd at the last layer: " + ", ".join(fmt(v) for v in layers[-1].grad_output))


def layer_step(rec) -> None:
    st.markdown(f"#### {rec.name}: {KIND_NAMES.get(rec.kind, rec.kind)}")
    g_out, g_in = rec.grad_output, rec.grad_input
    if g_in.ndim == 3:
        c = pick_channel(g_in.shape[0], f"bw_ch_{rec.kind}", "channel (of this layer's input)")
        cell_shape = g_in.shape
        row, col = pick_cell(cell_shape, f"bw_{rec.kind}")
        cell = (c, row, col)
    else:
        j = st.slider("unit", 0, g_in.shape[0] - 1, 0, key=f"bw_unit_{rec.kind}") if g_in.shape[0] > 1 else 0
        cell = (j,)
    rule = backward_rule(rec, cell)
    st.markdown(f"**Rule:** {rule.formula}")
    st.markdown(f"**At cell {cell}:** {rule.worked}")
    st.markdown(f"Autograd says dL/dx{list(cell)} = **{fmt(rule.recorded)}**")
    a, b = st.columns(2)
    if g_out.ndim == 3:
        a.markdown("dL/d(output), every channel")
        a.image(render.tile_maps(g_out, signed=True, cell_px=40, highlight=cell[0] if g_out.shape == g_in.shape
                                 else None))
    else:
        a.markdown("dL/d(output)")
        a.dataframe(pd.DataFrame({"dL/dy": g_out.reshape(-1)}), height=200)
    if g_in.ndim == 3:
        b.markdown("dL/d(input), passed on")
        b.image(render.tile_maps(g_in, signed=True, cell_px=40, highlight=cell[0]))
    if rec.kind == "relu" and g_in.ndim == 3:
        m1, m2 = st.columns(2)
        m1.plotly_chart(render.heatmap((rec.input[cell[0]] > 0).astype(float), "mask: input > 0", signed=False,
                                       height=280, cell=cell[1:]), key="mask")
        m2.plotly_chart(render.heatmap(g_in[cell[0]], "dL/dx = dL/dy x mask", signed=True, height=280,
                                       cell=cell[1:]), key="masked")
    elif rec.kind == "maxpool":
        windows = pool_windows(rec, cell[0])
        st.plotly_chart(render.route_figure(g_in[cell[0]], windows, "routing: each window's gradient lands on its "
                                            "argmax cell (squares); every other cell gets 0"), key="route")
    elif rec.kind == "conv":
        conv_backward(rec, cell)
    elif g_in.ndim == 3:
        st.plotly_chart(render.heatmap(g_in[cell[0]], f"dL/dx, channel {cell[0]}", signed=True, cell=cell[1:],
                                       height=300), key="gin")


def conv_backward(rec, cell) -> None:
    st.markdown("The same kernels carry the gradient back: **dX = full convolution of g with each kernel rotated "
                "180 degrees**, summed over output channels; and the kernel's own gradient is **dW = X "
                "correlated with g**.")
    o_ch, _, kh, kw = rec.weight.shape
    o = st.slider("output channel (kernel) to inspect", 0, o_ch - 1, 0, key="bw_conv_o") if o_ch > 1 else 0
    st.image(render.tile_maps(rec.weight_grad[o], signed=True, cell_px=36),
             caption=f"dL/dW for kernel {o}: one {kh}x{kw} tile per input channel")
    c = cell[0]
    u, v = kh // 2, kw // 2
    aligned, g, total = conv_weight_grad_terms(rec, o, c, u, v)
    st.markdown(f"dL/dW[{o},{c},{u},{v}] = sum over every output cell of X x g = **{fmt(total)}** "
                f"(autograd: {fmt(float(rec.weight_grad[o, c, u, v]))}) — {g.size} products")
    p1, p2 = st.columns(2)
    p1.plotly_chart(render.heatmap(aligned, f"input ch {c} seen by kernel tap ({u},{v})", height=260),
                    key="dw_x")
    p2.plotly_chart(render.heatmap(g, f"g = dL/dy, output channel {o}", signed=True, height=260), key="dw_g")
    if st.button("Check this number with finite differences", key="check_w"):
        check = gradient_check(model, x, trace.target, f"{rec.name}.weight", (o, c, u, v),
                               objective=trace.objective)
        st.markdown(f"autograd {check.autograd:.8g} vs finite difference {check.finite_difference:.8g} "
                    f"(relative error {check.relative_error:.1e}, eps {check.eps:g}, float64)")


def input_step() -> None:
    st.markdown("#### The input: dL/d(pixel)")
    st.markdown("The gradient that reached the pixels says how each pixel would change the objective: a "
                "**saliency map**. Grad-CAM and integrated gradients are two other ways to ask the same question.")
    c = pick_channel(trace.input_grad.shape[0], "bw_in_ch", "colour channel")
    row, col = pick_cell(trace.input_grad.shape, "bw_in")
    a, b = st.columns(2)
    a.plotly_chart(render.heatmap(trace.input_grad[c], "dL/dx (signed)", signed=True, cell=(row, col), height=320),
                   key="in_grad")
    method = b.selectbox("Attribution", ["saliency", "grad_cam", "integrated_gradients"], key="attr_method",
                         format_func={"saliency": "saliency |d logit/dx|", "grad_cam": "Grad-CAM",
                                      "integrated_gradients": "integrated gradients"}.get)
    layer = None
    if method == "grad_cam":
        convs = conv_layer_names(model)
        layer = b.selectbox("Grad-CAM layer", convs, index=len(convs) - 1, key="cam_layer")
    result = ui.session_cached("attr", (name, stage, key_x, trace.target, method, layer),
                               lambda: attribute(model, x, trace.target, method, layer))
    b.plotly_chart(render.heatmap(result.values, f"{method.replace('_', ' ')} for {card.classes[trace.target]}",
                                  height=320), key="attr")
    st.markdown(f"dL/dx[{c},{row},{col}] = **{fmt(float(trace.input_grad[c, row, col]))}**")
    if st.button("Check this number with finite differences", key="check_x"):
        check = gradient_check(model, x, trace.target, "input", (c, row, col), objective=trace.objective)
        st.markdown(f"autograd {check.autograd:.8g} vs finite difference {check.finite_difference:.8g} "
                    f"(relative error {check.relative_error:.1e}, float64)")


# ------------------------------------------------------------------------------------------------------- learn
def learn_view() -> None:
    st.markdown(f"What if the network took **one SGD step** on this input, towards class "
                f"**{card.classes[trace.target]}**? Every weight moves by -lr x dL/dW. The step is applied to a "
                "private copy: the shared model stays as it is.")
    with st.form("learn"):
        lr = st.number_input("learning rate", min_value=0.0, max_value=1e6, value=0.1, step=0.05, format="%.4g",
                             key="learn_lr")
        go_step = st.form_submit_button("Take one step", key="learn_go")
    if not go_step and "learn_result" not in st.session_state:
        return
    if go_step:
        st.session_state["learn_result"] = (key_x, target, sgd_step(model, x, trace.target, float(lr)))
    saved_key, saved_target, step = st.session_state["learn_result"]
    if (saved_key, saved_target) != (key_x, target):
        st.info("The input or target changed: take the step again.")
        return
    if step.diverged:
        st.error(f"With learning rate {step.lr:g} the step diverged: the weights or the loss became inf/nan. "
                 "Try a smaller learning rate.")
        return
    m = st.columns(3)
    m[0].metric("loss before", fmt(step.loss_before))
    m[1].metric("loss after", fmt(step.loss_after), delta=fmt(step.loss_after - step.loss_before),
                delta_color="inverse")
    m[2].metric(f"p({card.classes[step.target]})", f"{step.probs_after[step.target]:.1%}",
                delta=f"{step.probs_after[step.target] - step.probs_before[step.target]:+.1%}")
    a, b = st.columns(2)
    a.plotly_chart(render.prob_bars(step.probs_before, card.classes, int(step.probs_before.argmax())),
                   key="p_before")
    a.caption("before")
    b.plotly_chart(render.prob_bars(step.probs_after, card.classes, int(step.probs_after.argmax())), key="p_after")
    b.caption("after one step")
    kernels = [u.name for u in step.updates if u.delta.ndim == 4]
    which = st.selectbox("weight change of a kernel", kernels, key="learn_kernel")
    upd = step.update(which)
    k = st.slider("kernel (output channel)", 0, upd.delta.shape[0] - 1, 0, key="learn_k")
    st.image(render.tile_maps(upd.delta[k], signed=True, cell_px=36),
             caption=f"change of {which}[{k}], one tile per input channel; ||change|| of the whole layer = "
                     f"{upd.norm:.3g} ({upd.relative:.2%} of its size)")


# --------------------------------------------------------------------------------------------------- architecture
def architecture_view() -> None:
    rows = architecture(model, trace)
    table = pd.DataFrame([{"layer": r.name, "type": KIND_NAMES.get(r.kind, r.kind),
                           "output shape": " x ".join(map(str, r.output_shape)), "parameters": r.params,
                           "receptive field (px)": r.receptive_field} for r in rows])
    st.dataframe(table, hide_index=True, height=420)
    st.markdown(f"**Total: {sum(r.params for r in rows):,} parameters** in {len(rows)} layers. The receptive field "
                "is how many input pixels (per side) one cell of that layer can see, computed from kernel sizes "
                "and strides: r_out = r_in + (k - 1) x jump, jump_out = jump x stride.")
    st.markdown("- **1x1 convolution**: mixes channels at each pixel without looking at neighbours; cheap way to "
                "shrink or grow the channel count.\n"
                "- **Transition block** (1x1 conv + max-pool): squeezes the channels, then halves the map, so the "
                "next block sees a wider area for little cost.\n"
                "- **Global average pooling**: averages each channel's map to one number, so the head needs no big "
                "fully connected layer and does not care where in the image a feature is.")


def card_view() -> None:
    m = st.columns(4)
    m[0].metric("test accuracy", f"{card.test_accuracy:.2f}%" if card.test_accuracy is not None else "n/a")
    m[1].metric("parameters", f"{card.param_count:,}")
    m[2].metric("epochs", card.epochs)
    m[3].metric("training time", f"{card.training_time_s / 60:.0f} min" if card.training_time_s else "n/a")
    st.caption(f"Measured on {card.dataset}, {card.split} split. Seed {card.seed}. {card.date}")
    if card.history:
        st.plotly_chart(render.training_curve(card.history), key="curve")
    if card.notes:
        st.markdown(card.notes)


with forward_tab:
    forward_view()
with backward_tab:
    backward_view()
with learn_tab:
    learn_view()
with arch_tab:
    architecture_view()
with card_tab:
    card_view()
