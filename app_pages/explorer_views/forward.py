"""Forward view: every layer at once (the network view, drawn in the browser), then one layer's inspector with its
working written out."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages.explorer_views.context import Ctx, apply_pick, fresh_picks, layer_label, network_panel
from cnnviz import ui
from cnnviz.engine.layer_rules import (
    batchnorm_cell,
    conv_cell,
    global_average,
    largest_cell,
    pool_windows,
    products_text,
    relu_summary,
    rounding_note,
)
from cnnviz.numbers import digits_for_sum, factor, fmt
from cnnviz.render import inspect as figs

STEP_KEY = "fwd_layer"


VIEW_KEY = "network_forward"
VIEW_PICK = "_fwd_view_pick"  # the channel and cell last clicked in the view, for the inspector to open on
PICKERS = {"conv": ("fwd_conv_ch", "fwd_conv"), "relu": ("fwd_relu_ch", None), "maxpool": ("fwd_pool_ch", "fwd_pool"),
           "batchnorm": ("fwd_bn_ch", "fwd_bn"), "avgpool": ("fwd_gap_ch", None)}  # inspector keys, by layer kind


def apply_view_pick(rec, i: int) -> None:
    """Open the inspector of layer ``i`` on the channel and cell clicked in the view (clamped to the layer)."""
    keys = PICKERS.get(rec.kind)
    if keys is None:
        st.session_state.pop(VIEW_PICK, None)
        return
    apply_pick(VIEW_PICK, i, rec.input.shape if rec.kind == "avgpool" else rec.output.shape, *keys)


def default_channel(rec) -> int:
    """The channel an inspector opens on: the one with the largest |value| (batch norm: channel 0)."""
    if rec.kind == "batchnorm":
        return 0
    if rec.kind == "avgpool":
        return int(np.abs(rec.output.reshape(-1)).argmax())
    return int(np.abs(rec.output).reshape(rec.output.shape[0], -1).max(1).argmax())


def view_selection(rec) -> tuple[int | None, tuple[int, int] | None]:
    """The channel and cell the inspector shows (its pick, else its default), for the view to frame."""
    keys = PICKERS.get(rec.kind)
    if keys is None:
        return None, None
    ch = st.session_state.get(keys[0])
    ch = ch if isinstance(ch, int) else default_channel(rec)
    if not keys[1] or rec.output.ndim != 3:
        return ch, None
    row, col = (st.session_state.get(f"{keys[1]}_{a}") for a in ("row", "col"))
    cell = (row, col) if isinstance(row, int) and isinstance(col, int) else largest_cell(rec.output[ch])
    return ch, (int(cell[0]), int(cell[1]))


def show(ctx: Ctx, shared: bool = False) -> None:
    @st.fragment
    def view() -> None:
        layers = ctx.layers
        if not isinstance(st.session_state.get(STEP_KEY), int):
            st.session_state[STEP_KEY] = next(i for i, r in enumerate(layers) if r.kind == "conv")
        i = st.session_state[STEP_KEY] = min(max(st.session_state[STEP_KEY], 0), len(layers) - 1)
        ui.write_url(layer=layers[i].name)
        fresh_picks(ctx, f"forward {i}")
        rec = layers[i]
        apply_view_pick(rec, i)
        network_panel(ctx, "forward", VIEW_KEY, i, view_selection(rec), STEP_KEY, VIEW_PICK, shared)
        st.markdown(f"#### {layer_label(rec, i)}")
        inspector = {"conv": conv_inspector, "relu": relu_inspector, "maxpool": pool_inspector,
                     "batchnorm": bn_inspector, "avgpool": avgpool_inspector, "dropout": dropout_inspector}
        inspector.get(rec.kind, vector_inspector)(ctx, rec, i)

    view()


def pick_channel(n: int, key: str, label: str = "channel", default: int = 0) -> int:
    return st.slider(label, 0, n - 1, min(default, n - 1), key=key) if n > 1 else 0


def pick_cell(shape: tuple[int, ...], key: str, default: tuple[int, int], cols=None) -> tuple[int, int]:
    """Row and column sliders, in ``cols`` (two of st.columns) or in two new columns."""
    h, w = shape[-2:]
    c1, c2 = cols if cols is not None else st.columns(2)
    row = c1.slider("row", 0, h - 1, min(default[0], h - 1), key=f"{key}_row") if h > 1 else 0
    col = c2.slider("column", 0, w - 1, min(default[1], w - 1), key=f"{key}_col") if w > 1 else 0
    return row, col


def normalisation_note(ctx: Ctx) -> None:
    mean, std = ctx.card.mean, ctx.card.std

    def per_channel(values) -> str:  # one number for a grey picture, (r, g, b) for a colour one
        text = ", ".join(fmt(v, 4) for v in values)
        return text if len(values) == 1 else f"({text})"

    zero = per_channel([(0 - m) / s for m, s in zip(mean, std, strict=True)])
    st.caption(f"The first layer sees *normalised* pixels, x = (pixel - mean) / std with mean {per_channel(mean)} and "
               f"std {per_channel(std)} "
               f"(the training set's statistics), so a black pixel is {zero}, not 0. Normalised inputs keep the "
               "first layer's sums in a range where training works well.")


def conv_inspector(ctx: Ctx, rec, i: int) -> None:
    px = ui.text_px(14)
    c_in = rec.input.shape[0]
    pickers = st.columns(4 if c_in > 1 else 3)  # one row: the cell (the view frames it), then the input channel
    with pickers[0]:
        o = pick_channel(rec.output.shape[0], "fwd_conv_ch", "output channel", default_channel(rec))
    row, col = pick_cell(rec.output.shape, "fwd_conv", largest_cell(rec.output[o]), cols=pickers[1:3])
    cell = conv_cell(rec, o, row, col)
    partial = cell.partials  # float64, as every written sum
    c = 0
    if c_in > 1:
        c = pickers[3].slider("input channel", 0, c_in - 1, int(np.abs(partial).argmax()), key="fwd_conv_in")
    kh, kw = cell.kernel.shape[1:]
    top, left = cell.top, cell.left
    title_in = "input (normalised)" if i == 0 else f"input channel {c}"
    st.html(figs.row_html(
        figs.map_html(rec.input[c], f"{title_in}: the window", px, frames=[figs.window(top, left, kh, kw)],
                      size_px=168),
        figs.matrix_html(cell.kernel[c], f"kernel W[{o},{c}]", px, signed=True),
        figs.matrix_html(cell.patch[c], f"input patch (channel {c})", px, row0=top, col0=left),
        figs.matrix_html(cell.products[c], "products W x patch", px, signed=True), gap_px=28))
    terms = products_text(zip(cell.kernel[c].ravel(), cell.patch[c].ravel(), strict=True), limit=None, times="·")
    st.markdown(f"Input channel {c}: {terms} = **{fmt(partial[c], 4)}**")
    d = digits_for_sum(cell.total, (cell.products_sum, cell.bias))  # enough digits to show what is left
    over = f"Sum over all {c_in} input channels" if c_in > 1 else "Sum"
    st.markdown(f"{over} (in float64) = {fmt(cell.products_sum, d)}, plus bias {fmt(cell.bias, d)} = "
                f"**{fmt(cell.total, 4)}**; the map holds **{fmt(cell.recorded, 4)}** (the network's own sum, in "
                f"{rec.output.dtype}).")
    note = rounding_note(cell.total, cell.recorded, cell.magnitude, str(rec.output.dtype))
    if note:
        st.caption(note)
    if i == 0:
        normalisation_note(ctx)
    if c_in > 1:
        with st.expander(f"Every input channel's partial sum ({c_in})"):
            st.table({"input channel": list(range(c_in)), "sum of products": [fmt(v, 4) for v in partial]})


def relu_inspector(ctx: Ctx, rec, i: int) -> None:
    summary = relu_summary(rec)
    st.markdown(f"ReLU = max(0, x) sets **{summary.zero_share:.0%}** of its {summary.units} units to zero for this "
                "input.")
    if summary.dead_channels:
        st.markdown(f"Channels zero everywhere (dead for this input): {', '.join(map(str, summary.dead_channels))}")
    if rec.output.ndim == 3:
        px = ui.text_px(14)
        c = pick_channel(rec.output.shape[0], "fwd_relu_ch", default=default_channel(rec))
        st.html(figs.row_html(figs.map_html(rec.input[c], f"before ReLU, channel {c}", px, signed=True),
                              figs.map_html(rec.output[c], "after ReLU = max(0, x)", px, signed=False), gap_px=48))


def pool_inspector(ctx: Ctx, rec, i: int) -> None:
    px = ui.text_px(14)
    c = pick_channel(rec.output.shape[0], "fwd_pool_ch", default=default_channel(rec))
    windows = {(w.out_row, w.out_col): w for w in pool_windows(rec, c)}
    row, col = pick_cell(rec.output.shape, "fwd_pool", largest_cell(rec.output[c]))
    win = windows[(row, col)]
    k = win.height
    pad = 2 * k
    h, w = rec.input.shape[-2:]
    top, left = max(win.top - pad, 0), max(win.left - pad, 0)
    bottom, right = min(win.top + k + pad, h), min(win.left + k + pad, w)
    crop = rec.input[c, top:bottom, left:right]
    g0t, g0l = top + (win.top - top) % k, left + (win.left - left) % k
    a, b = st.columns([1.3, 1])
    a.html(figs.matrix_html(crop, f"input channel {c} around window ({row},{col})", px, row0=top, col0=left,
                            marks={(win.arg_row - top, win.arg_col - left): figs.CHOSEN}, digits=2,
                            window=(win.top - top, win.left - left, k, k), grid=(g0t - top, g0l - left, k)))
    b.html(figs.map_html(rec.output[c], "pooled: each window's max", px, frames=[figs.window(row, col, 1, 1)],
                         size_px=196))  # fits its column at 1024x768
    values = rec.input[c, win.top:win.top + k, win.left:win.left + k].ravel()
    st.markdown(f"Window ({row},{col}) covers rows {win.top}-{win.top + k - 1}, columns {win.left}-{win.left + k - 1}: "
                f"max({', '.join(fmt(v, 4) for v in values)}) = **{fmt(win.value, 4)}**, taken from cell "
                f"({win.arg_row},{win.arg_col}) (orange). Ties go to the first in reading order, as in PyTorch.")
    st.caption(f"{k}x{k} windows (grid lines), stride {rec.hparams['stride']}: each output cell keeps the largest "
               "value of its window; in the backward pass only that cell receives the window's gradient.")


def bn_inspector(ctx: Ctx, rec, i: int) -> None:
    scale, shift = rec.extra["scale"], rec.extra["shift"]
    st.markdown("In eval mode batch norm is a fixed per-channel affine map: **y = scale x + shift**, with "
                "scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean x scale (the running "
                "statistics were gathered during training).")
    c = pick_channel(rec.output.shape[0], "fwd_bn_ch")
    row, col = pick_cell(rec.output.shape, "fwd_bn", largest_cell(rec.output[c]))
    cell = batchnorm_cell(rec, c, row, col)
    st.markdown(f"Channel {c} at ({row},{col}): y = {fmt(cell.scale, 4)} x {factor(cell.x, 4)} + "
                f"{factor(cell.shift, 4)} = **{fmt(cell.total, 4)}** (in float64; the network's own output, in "
                f"{rec.output.dtype}: {fmt(cell.recorded, 4)})")
    st.table({"channel": list(range(len(scale))), "scale": [fmt(v, 4) for v in scale],
              "shift": [fmt(v, 4) for v in shift]})


def avgpool_inspector(ctx: Ctx, rec, i: int) -> None:
    if rec.input.ndim != 3 or rec.output.reshape(-1).shape[0] != rec.input.shape[0]:
        return vector_inspector(ctx, rec, i)
    st.markdown("Global average pooling: each channel's map is averaged to one number, so the head sees *how much* "
                "of each feature is present, wherever it is.")
    c = pick_channel(rec.input.shape[0], "fwd_gap_ch", default=default_channel(rec))
    cell = global_average(rec, c)
    h, w = cell.values.shape
    shown = " + ".join(fmt(v, 3) for v in cell.values.ravel()[:12])
    more = f" + ... ({h * w - 12} more)" if h * w > 12 else ""
    st.markdown(f"Channel {c}: ({shown}{more}) / {h * w} = **{fmt(cell.mean, 4)}** (recorded {fmt(cell.recorded, 4)})")
    st.html(figs.matrix_html(cell.values, f"channel {c}: the {h}x{w} map being averaged", ui.text_px(14), digits=2))


def dropout_inspector(ctx: Ctx, rec, i: int) -> None:
    same = bool(np.array_equal(rec.input, rec.output))
    st.markdown(f"Dropout (p = {rec.hparams.get('p', '?')}) is the **identity at inference**: it only zeroes random "
                "channels while training, to keep the network from relying on any single one. Here the output "
                f"{'equals' if same else 'differs from'} the input, element for element.")


def vector_inspector(ctx: Ctx, rec, i: int) -> None:
    values = rec.output.reshape(-1)
    if rec is ctx.layers[-1]:
        st.markdown("The network's output: one score (logit) per class. Softmax turns them into probabilities "
                    "(the Backward pass view writes it out at the loss).")
        labels = list(ctx.card.classes)
    elif rec.kind == "flatten":
        st.markdown(f"Flatten only reshapes: {'x'.join(map(str, rec.input.shape))} -> {values.shape[0]} numbers, "
                    "the same values in reading order.")
        labels = [str(k) for k in range(len(values))]
    else:
        labels = [str(k) for k in range(len(values))]
    if len(values) <= 64:
        st.table({"unit": labels[:len(values)], "value": [fmt(v, 4) for v in values]})
    else:
        st.caption(f"{len(values)} values; the overview above shows them all.")
