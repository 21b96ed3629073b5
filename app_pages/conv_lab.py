"""Convolution & pooling lab: every number of a convolution's forward and backward pass, on matrices you edit.

Thin: widgets and the link's query string -> one handwork call -> its record, drawn by cnnviz.render.conv and written
out by the record's own text methods. Only the chosen section runs; its matrices and settings live in the URL.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st

from cnnviz import ui
from cnnviz.handwork import conv_math as cm
from cnnviz.handwork import conv_nets as nets
from cnnviz.handwork import matrices as mx
from cnnviz.handwork import pooling as pl
from cnnviz.render import conv as rc

SECTIONS = {
    "forward": "1 · Convolution forward", "backward": "2 · Convolution backward", "chain": "3 · Two layers chained",
    "size": "4 · Output size", "pooling": "5 · Pooling", "relu": "6 · ReLU", "network": "7 · Conv + FC network",
    "descent": "8 · Gradient descent",
}
PX = ui.text_px()  # figure text size: 12 px or more, larger in projector mode
_linked: dict[str, tuple[str, Callable[[object], str]]] = {}  # query parameter -> (widget key, value -> link text)
_KEEP = "_conv_lab_keep"  # widget values kept while their section is not on screen


# ---------------------------------------------------------------------------------------------------------------
# The URL is the state: each input is linked to one query parameter


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ui.BadLinkValue(f"it must be a whole number from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ui.BadLinkValue(f"it must be from {lo} to {hi}")
        return value
    return parse


def _float_in(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ui.BadLinkValue(f"it must be a number from {lo:g} to {hi:g}")
        return value
    return parse


def _float_link(value: object) -> str:
    return str(float(value))  # the shortest text that reads back as the same float


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ui.BadLinkValue("it must be 1 (on) or 0 (off)")
    return raw == "1"


def linked(param: str, key: str, default, parse: Callable[[str], object], what: str | None = None,
           to_link: Callable[[object], str] = str) -> None:
    """Before a widget is made: its value from the link (once), else the value it had, else ``default``; the
    value goes back into the link as ``to_link(value)``."""
    _linked[param] = (key, to_link)
    ui.seed_from_url(param, key, parse, what)
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(_KEEP, {}).get(key, default)


def write_state(section: str) -> None:
    """The section on screen and its inputs into the address bar; every other section's parameters out of it."""
    keep = st.session_state.setdefault(_KEEP, {})
    values: dict[str, str] = {}
    for param, (key, to_link) in _linked.items():
        if key in st.session_state:
            keep[key] = st.session_state[key]
            values[param] = to_link(st.session_state[key])
    stale = {p: None for p in st.query_params if p not in values and p != "section"}
    ui.write_url(section=section, **values, **stale)


def matrix_input(label: str, key: str, param: str, default: str, max_shape: tuple[int, int] = (8, 8)
                 ) -> np.ndarray | None:
    """A text box holding a matrix, linked to ``param``; on bad text, an error saying what to fix, and None."""
    linked(param, key, default, lambda raw: mx.box_text(raw, label, max_shape), label, mx.link_text)
    rows = str(st.session_state[key]).count("\n") + 1
    text = st.text_area(f"{label} (up to {max_shape[0]}x{max_shape[1]})", key=key,
                        height=max(90, int(1.9 * PX) * rows + 40))
    try:
        return mx.parse_matrix(text, label, max_shape)
    except mx.MatrixError as exc:
        st.error(f"{exc}")
        return None


def matrix_inputs(columns, specs: list[tuple[str, str, str, str, tuple[int, int]]]) -> list[np.ndarray | None]:
    """Matrix text boxes side by side, one per column: specs are (label, key, param, default, max_shape)."""
    out = []
    for col, (label, key, param, default, max_shape) in zip(columns, specs, strict=True):
        with col:
            out.append(matrix_input(label, key, param, default, max_shape))
    return out


def int_slider(label: str, lo: int, hi: int, default: int, key: str, param: str, where=st, **kw) -> int:
    linked(param, key, default, _int_in(lo, hi), label)
    return int(where.slider(label, lo, hi, key=key, **kw))


def show(fig, key: str) -> None:
    st.plotly_chart(fig, width="content", config={"displayModeBar": False}, key=key)


def show_row(figures: list, key: str, widths: list[float] | None = None) -> None:
    """Figures side by side, one column each."""
    for n, (col, fig) in enumerate(zip(st.columns(widths or len(figures)), figures, strict=True)):
        with col:
            show(fig, f"{key}_{n}")


def walk(key: str, param: str, count: int, label: str, view: Callable[..., None], *args,
         format_func: Callable[[int], str] = str) -> None:
    """A walk-through over ``count`` steps (Play, speed, previous/next) and the view of the chosen step, which
    reruns alone; the step is linked to ``param``. A link's step outside 0..count-1 gets a message and step 0."""
    ui.seed_from_url(param, key, _int_in(0, count - 1), label.lower())

    @st.fragment(run_every=ui.play_interval(key))
    def part() -> None:
        k = ui.stepper(key, count, label, format_func)
        ui.write_url(**{param: k})
        view(k, *args)

    _linked[param] = (key, str)
    part()


def entry_walk(key: str, param: str, shape: tuple[int, int], label: str, view: Callable[..., None], *args) -> None:
    """A walk over the entries of a matrix, row by row, each named by its (row, column) counted from 0."""
    walk(key, param, shape[0] * shape[1], label, view, *args, format_func=lambda k: mx.entry_label(k, shape))


def upstream_gradient(shape: tuple[int, int], key: str, options: dict[str, tuple[str, np.ndarray]],
                      name: str = "dE/dO") -> np.ndarray | None:
    """Pick the upstream gradient from named choices (code -> (label, matrix)) or type it; a wrong shape gives a
    warning and None."""
    codes = [*options, "typed"]
    linked("grad", f"{key}_choice", codes[0], ui.one_of(codes), f"upstream gradient {name}")
    choice = st.radio(f"Upstream gradient {name}", codes, key=f"{key}_choice", horizontal=True,
                      format_func=lambda c: options[c][0] if c in options else "type your own")
    if choice != "typed":
        return options[choice][1]
    g = matrix_input(name, f"{key}_text", "g", mx.matrix_rows_text(np.ones(shape)),
                     max_shape=(max(8, shape[0]), max(8, shape[1])))
    if g is not None and g.shape != shape:
        st.warning(f"{name} must have the output's shape, {shape[0]}x{shape[1]}; you typed "
                   f"{g.shape[0]}x{g.shape[1]}. Edit it to {shape[0]} rows of {shape[1]} numbers.")
        return None
    return g


# ---------------------------------------------------------------------------------------------------------------
# 1 and 2: convolution forward and backward


def conv_inputs(prefix: str, padding_label: str) -> cm.ConvForward | None:
    """X, F, stride and padding as the learner sets them (keys ``<prefix>_x``, ``_f``, ``_stride``, ``_pad``) and
    their forward pass; None, after saying why, when they cannot be used."""
    *boxes, c3 = st.columns(3)
    x, f = matrix_inputs(boxes, [("Input X", f"{prefix}_x", "x", "1 2 3\n4 5 6\n7 8 9", (8, 8)),
                                 ("Filter F", f"{prefix}_f", "f", "1 0\n2 -1", (5, 5))])
    stride = int_slider("Stride S", 1, 3, 1, f"{prefix}_stride", "stride", c3)
    padding = int_slider(padding_label, 0, 2, 0, f"{prefix}_pad", "pad", c3)
    if x is None or f is None:
        return None
    try:
        return cm.conv_forward(x, f, stride, padding)
    except ValueError as exc:
        st.error(f"{exc}.")
        return None


def forward_view(k: int, rec: cm.ConvForward) -> None:
    cell, (top, left) = rec.window(k)
    i, j = cell.at
    kh, kw = rec.f.shape
    padded = f" with padding {rec.padding}" if rec.padding else ""
    show_row([rc.matrix_figure(rec.x_padded, "X" + padded, outlines=[rc.Outline(top, left, kh, kw)],
                               pad=rec.padding, text_px=PX),
              rc.matrix_figure(rec.f, "F", text_px=PX),
              rc.matrix_figure(rec.output, f"O ({rec.output.shape[0]}x{rec.output.shape[1]})",
                               outlines=[rc.Outline(i, j)], text_px=PX)], "fwd_fig", [3, 2, 2])
    st.markdown(f"**O[{i}, {j}]** = {cell.expression()}")


def forward_section() -> None:
    st.subheader("Convolution forward: O = X ⋆ F")
    st.markdown("PyTorch's `conv2d` slides the filter over the input **without flipping it** "
                "(cross-correlation): each output entry is the sum of the products of the window with F.")
    rec = conv_inputs("fwd", "Padding P (zeros around X)")
    if rec is None:
        return
    entry_walk("fwd_pos", "pos", rec.output.shape, "Kernel position", forward_view, rec)
    st.caption(rec.summary())
    with st.expander("Every entry of O as its sum of products"):
        st.markdown(mx.cell_lines(rec.cells, "O"))


def grad_filter_view(k: int, rec: cm.ConvBackward) -> None:
    cell = rec.grad_filter_cells[k]
    fwd = rec.forward
    show_row([rc.matrix_figure(fwd.x_padded, "X" + (" padded" if fwd.padding else ""), pad=fwd.padding,
                               outlines=rc.window_outline(cell.left_positions), text_px=PX),
              rc.matrix_figure(rec.grad_output, "dE/dO", text_px=PX),
              rc.matrix_figure(rec.grad_filter, "dE/dF", outlines=[rc.Outline(*cell.at)], text_px=PX)],
             "bwd_f_fig", [3, 2, 2])
    st.markdown(f"**dE/dF[{cell.at[0]}, {cell.at[1]}]** = {cell.expression()}")


def grad_input_view(k: int, rec: cm.ConvBackward, skip: bool) -> None:
    cell = rec.grad_input_cells[k]
    kh, kw = rec.forward.f.shape
    top, left = cell.terms[0].left_at
    dilated = " and dilated" if rec.forward.stride > 1 else ""
    show_row([rc.matrix_figure(rec.grad_output_full, "dE/dO zero-padded" + dilated, digits=3, text_px=PX,
                               outlines=[rc.Outline(top, left, kh, kw)], shade=rec.inserted_zeros),
              rc.matrix_figure(rec.f_rot180, "F rotated 180°", text_px=PX),
              rc.matrix_figure(rec.grad_input, "dE/dX", outlines=[rc.Outline(*cell.at)], text_px=PX)],
             "bwd_x_fig", [3, 2, 2])
    st.markdown(f"**dE/dX[{cell.at[0]}, {cell.at[1]}]** = {cell.expression(skip_zeros=skip)}")


def backward_section() -> None:
    st.subheader("Convolution backward: dE/dF and dE/dX")
    st.markdown(
        "Given the gradient of the loss with respect to the output, dE/dO, the chain rule gives\n"
        "- **dE/dF = X ⋆ dE/dO**: slide dE/dO over the (padded) input, as if it were the filter;\n"
        "- **dE/dX = full convolution of dE/dO with F rotated 180°**: pad dE/dO with kernel−1 zeros on every side "
        "(with a stride, first put stride−1 zeros between its entries) and slide the rotated filter over it."
    )
    fwd = conv_inputs("bwd", "Padding P")
    if fwd is None:
        return
    g = upstream_gradient(fwd.output.shape, "bwd_g", {
        "ones": ("all ones (E = ΣO)", np.ones_like(fwd.output)),
        "loss": ("from E = ½ ΣO² (dE/dO = O)", cm.squared_error_grad(fwd.output, 0.0)[1])})
    if g is None:
        return
    rec = cm.conv_backward(fwd, g)
    st.markdown(f"O = {mx.matrix_text(fwd.output)}, dE/dO = {mx.matrix_text(g)}")
    st.markdown("#### dE/dF = X ⋆ dE/dO")
    entry_walk("bwd_f_pos", "fpos", rec.grad_filter.shape, "Entry of dE/dF", grad_filter_view, rec)
    if rec.stride_note():
        st.caption(rec.stride_note())
    st.markdown("#### dE/dX = full convolution of dE/dO with F rotated 180°")
    linked("skip", "bwd_skip", True, _flag, "hide products with a zero", lambda v: "1" if v else "0")
    skip = st.toggle("Hide the products with a zero factor", key="bwd_skip")
    entry_walk("bwd_x_pos", "xpos", rec.grad_input.shape, "Entry of dE/dX", grad_input_view, rec, skip)
    if rec.padding_note():
        st.caption(rec.padding_note())
    st.caption(rec.summary())


# ---------------------------------------------------------------------------------------------------------------
# 3: two layers chained


def chain_view(k: int, rec: nets.ChainRecord) -> None:
    """The whole chain stays on screen: the forward maps, the gradients found so far, and this step's work."""
    stars = rec.pooled.winners
    st.markdown("**Forward pass** (★: each pool window's maximum)")
    show_row([rc.matrix_figure(m, name, marks=stars if name.startswith("Conv2") else (), cell_px=40, text_px=PX)
              for name, m in rec.forward_maps], "ch_fwd")
    st.markdown(rec.loss_line())
    if k == 0:
        return
    done = rec.steps[:k]
    st.markdown("**Backward pass so far**: " + " → ".join(
        f"**{s.result_name}**" if n == k - 1 else s.result_name for n, s in enumerate(done)))
    show_row([rc.matrix_figure(s.result, s.result_name, cell_px=40, text_px=PX) for s in done[-4:]], "ch_done")
    s = rec.steps[k - 1]
    st.markdown(f"**Step {k}. {s.title}: {s.formula}**")
    show_row([rc.matrix_figure(m, name, marks=stars if name == "Conv2" else (), cell_px=40, text_px=PX)
              for name, m in s.inputs] + [rc.matrix_figure(s.result, s.result_name, cell_px=40, text_px=PX)],
             "ch_step_fig")
    st.caption(f"{s.result_name} = {mx.matrix_text(s.result)}")
    with st.expander(f"Every entry of {s.result_name}" + (" as its sum of products" if s.cells else
                                                          ": where its gradient comes from"), expanded=True):
        st.markdown(s.lines())


def chain_section() -> None:
    st.subheader("Two layers chained: image → conv1 → conv2 → max-pool → loss")
    st.markdown("Both convolutions have stride 1, no padding, no bias and no activation; the pool is 2x2 with "
                "stride 2 and the loss is E = ½ Σ (P − T)². Walk back one step at a time, or press Play.")
    image, f1, f2, target = matrix_inputs(st.columns([3, 2, 2, 2]), [
        ("Image", "ch_img", "image", "1 0 2 1 0 3\n0 1 3 2 1 0\n2 1 0 1 2 1\n1 3 1 0 1 2\n0 2 1 3 0 1\n1 0 2 1 2 0",
         (8, 8)),
        ("F1", "ch_f1", "f1", "1 0\n-1 2", (4, 4)), ("F2", "ch_f2", "f2", "0 1\n1 -1", (4, 4)),
        ("Target T", "ch_t", "t", "0 0\n0 0", (4, 4))])
    if image is None or f1 is None or f2 is None or target is None:
        return
    try:
        rec = nets.two_conv_chain(image, f1, f2, target)
    except ValueError as exc:
        st.error(f"{exc}. Make the image larger or the filters smaller (conv2's output must be at least 2x2), "
                 "and give T the pooled output's shape.")
        return
    names = ["Forward pass"] + [f"{k}. {s.title}" for k, s in enumerate(rec.steps, start=1)]
    walk("ch_step", "step", len(names), "Step", chain_view, rec, format_func=names.__getitem__)


# ---------------------------------------------------------------------------------------------------------------
# 4: output size


def size_view(k: int, size: cm.AxisSize) -> None:
    show(rc.output_size_figure(size, size, (k, k), text_px=PX), "os_fig")
    st.caption("Grey: padding. Blue: input. Red: gaps the stride skips. Orange: left over at the end. Dots: the "
               f"centre of each kernel position. Kernel starts (padded index): {', '.join(map(str, size.starts))}.")


def size_section() -> None:
    st.subheader("Output size: W_out = (W − F + 2P) / S + 1")
    st.markdown("Example: a 26×26×32 stack of feature maps, max-pooled 2×2 with stride 2, gives **13×13×32**: "
                "(26 − 2 + 0) / 2 + 1 = 13, and pooling works on each of the 32 maps separately.")
    c1, c2, c3, c4, c5 = st.columns(5)
    w = int_slider("Input width W", 1, 32, 26, "os_w", "w", c1)
    k = int_slider("Kernel F", 1, 7, 2, "os_f", "k", c2)
    p = int_slider("Padding P", 0, 3, 0, "os_p", "p", c3)
    s = int_slider("Stride S", 1, 4, 2, "os_s", "s", c4)
    depth = int_slider("Channels", 1, 64, 32, "os_c", "c", c5, help="Pooling keeps the number of channels.")
    try:
        size = cm.output_size(w, k, p, s)
    except ValueError as exc:
        st.error(f"{exc}.")
        return
    st.markdown(f"W_out = {size.formula()}  →  **{w}×{w}×{depth} → {size.out}×{size.out}×{depth}**")
    level, text = size.coverage()
    (st.success if level == "success" else st.warning)(text)
    walk("os_pos", "pos", size.out, "Kernel position", size_view, size)


# ---------------------------------------------------------------------------------------------------------------
# 5 and 6: pooling and ReLU


def pool_view(n: int, rec: pl.PoolBackward) -> None:
    fwd = rec.forward
    win, k = fwd.windows[n], fwd.kernel
    window = [rc.Outline(win.top, win.left, k, k)]
    show_row([rc.matrix_figure(fwd.x, "X", marks=fwd.winners, outlines=window, text_px=PX),
              rc.matrix_figure(fwd.output, f"{fwd.mode}-pool output", outlines=[rc.Outline(*win.at)], text_px=PX)],
             "pool_fwd")
    st.markdown(win.describe())
    show_row([rc.matrix_figure(rec.grad_output, "dE/dO (upstream)", outlines=[rc.Outline(*win.at)], text_px=PX),
              rc.matrix_figure(rec.grad_input, "dE/dX", marks=rec.collectors, star_marks=False, outlines=window,
                               text_px=PX)], "pool_bwd")


def pooling_section() -> None:
    st.subheader("Pooling, forward and backward")
    st.markdown(
        "**Max-pool** keeps each window's largest entry (★ marks it); backward, it sends each window's gradient to "
        "that cell and 0 to the rest. **Average-pool** keeps the mean; backward, it splits each window's gradient "
        "equally over its cells. When windows overlap (try kernel 3, stride 1) a cell can win several windows: it "
        "collects the **sum** of their gradients. Ties: when a window holds its maximum twice, PyTorch picks the "
        "first one in reading order (row by row), and so does this lab."
    )
    c1, c2 = st.columns([2, 3])
    with c1:
        x = matrix_input("Input X", "pool_x", "x", "1 3 2 2\n4 9 1 0\n2 0 5 6\n1 7 3 3")
    with c2:
        linked("mode", "pool_mode", "max", ui.one_of(["max", "avg"]), "pooling")
        mode = st.radio("Pooling", ["max", "avg"], key="pool_mode", horizontal=True,
                        format_func=lambda m: {"max": "max-pool", "avg": "average-pool"}[m])
        k = int_slider("Kernel (window size)", 1, 4, 2, "pool_k", "k")
        s = int_slider("Stride", 1, 4, 2, "pool_s", "s")
    if x is None:
        return
    try:
        fwd = pl.pool(x, k, s, mode)
    except ValueError as exc:
        st.error(f"{exc}.")
        return
    numbered = np.arange(1.0, fwd.output.size + 1).reshape(fwd.output.shape)
    g = upstream_gradient(fwd.output.shape, "pool_g", {"numbered": ("1, 2, 3, … (one number per window)", numbered),
                                                       "ones": ("all ones", np.ones_like(fwd.output))})
    if g is None:
        return
    rec = pl.pool_backward(fwd, g)
    entry_walk("pool_pos", "pos", fwd.output.shape, "Window", pool_view, rec)
    if fwd.overlapping:
        st.info(f"Stride {s} < kernel {k}: the windows overlap.")
    for tie in fwd.ties():
        st.markdown(tie)
    if rec.collectors:
        st.markdown(f"Cells outlined in red won several windows and collect the sum: "
                    f"{', '.join(f'({i}, {j})' for i, j in rec.collectors)}.")
    st.markdown(pl.route_lines(rec.cells, "dE/dX", max_pool=mode == "max"))
    st.caption(rec.summary())


def relu_section() -> None:
    st.subheader("ReLU on a matrix")
    st.markdown("Forward, ReLU(x) = max(0, x) entry by entry. Backward, the gradient passes where x > 0 and is "
                "stopped (0) elsewhere: it is multiplied by the mask [x > 0]. At exactly 0, PyTorch uses 0.")
    c1, c2 = st.columns(2)
    with c1:
        x = matrix_input("Input X", "relu_x", "x", "-478 494\n460 -477")
    if x is None:
        return
    with c2:
        g = upstream_gradient(x.shape, "relu_g", {"ones": ("all ones", np.ones_like(x))}, name="dE/dY")
    if g is None:
        return
    rec = pl.relu(x, g)
    show_row([rc.matrix_figure(m, name, text_px=PX) for name, m in [
        ("X", rec.x), ("ReLU(X)", rec.output), ("mask [X > 0]", rec.mask), ("dE/dX = dE/dY · mask", rec.grad_input)]],
        "relu_fig")
    for line in rec.lines():
        st.markdown(line)


# ---------------------------------------------------------------------------------------------------------------
# 7 and 8: a tiny network and gradient descent


def network_section() -> None:
    st.subheader("One conv + sigmoid + fully connected + sigmoid")
    st.markdown("A tiny image X, one filter f, a sigmoid, a fully connected layer with one weight per activation "
                "(W) and a bias b, another sigmoid, and the squared error against the target y'.")
    *boxes, c4 = st.columns(4)
    x, f, w = matrix_inputs(boxes, [("Image X", "net_x", "x", "1 0 1\n0 1 0\n1 1 0", (6, 6)),
                                    ("Filter f", "net_f", "f", "0.5 -0.5\n0.25 0.5", (4, 4)),
                                    ("Weights W (shape of Z1)", "net_w", "w", "0.3 -0.2\n0.1 0.4", (6, 6))])
    with c4:
        linked("b", "net_b", 0.1, _float_in(-10.0, 10.0), "bias b", _float_link)
        b = st.number_input("Bias b", -10.0, 10.0, step=0.1, key="net_b")
        linked("y", "net_y", 1.0, _float_in(0.0, 1.0), "target y'", _float_link)
        y = st.number_input("Target y'", 0.0, 1.0, step=0.1, key="net_y")
    if x is None or f is None or w is None:
        return
    try:
        rec = nets.conv_sigmoid_fc(x, f, w, b, y)
    except ValueError as exc:
        st.error(f"{exc}. W needs one weight per entry of Z1 = X ⋆ f.")
        return
    a, b_ = st.columns(2)
    with a:
        st.markdown("#### Forward")
        st.markdown(nets.step_list(rec.forward_steps))
    with b_:
        st.markdown("#### Backward")
        st.markdown(nets.step_list(rec.backward_steps))
    show_row([rc.matrix_figure(m, name, digits=3, text_px=PX) for name, m in [
        ("X", rec.x), ("dE/dZ1", rec.grad_z1), ("dE/df = X ⋆ dE/dZ1", rec.grad_f), ("dE/dW", rec.grad_w)]],
        "net_fig")
    with st.expander("Every entry of dE/df as its sum of products"):
        st.markdown(mx.cell_lines(rec.grad_f_cells, "dE/df"))


def descent_section() -> None:
    st.subheader("Gradient descent on a curve")
    st.markdown("One parameter a, a loss curve L(a), and the rule **a ← a − lr · slope**. A small learning rate "
                "walks down slowly; a larger one jumps over the bottom and back (oscillation); too large and every "
                "jump lands higher than the last (divergence).")
    c1, c2, c3, c4 = st.columns(4)
    linked("curve", "gd_curve", "parabola", ui.one_of(list(nets.CURVES)), "curve")
    curve = c1.selectbox("Curve", list(nets.CURVES), key="gd_curve",
                         format_func=lambda n: f"{n}: {nets.CURVES[n].formula}")
    linked("a0", "gd_start", -2.0, _float_in(-3.0, 3.0), "start a₀", _float_link)
    start = c2.slider("Start a₀", -3.0, 3.0, step=0.1, key="gd_start")
    linked("lr", "gd_lr", 0.1, _float_in(0.0, 1.5), "learning rate", _float_link)
    lr = c3.slider("Learning rate lr", 0.0, 1.5, step=0.01, key="gd_lr")
    steps = int_slider("Steps", 1, 50, 10, "gd_steps", "steps", c4)
    rec = nets.gradient_descent(curve, start, lr, steps)
    kind = {"diverges": st.error, "oscillates without settling": st.warning}.get(rec.verdict, st.success)
    kind(f"**{rec.verdict.capitalize()}.** {rec.explanation}")
    if rec.curve == "parabola":
        st.caption("On this parabola each step multiplies the distance to the bottom by (1 − 2·lr): below lr = 0.5 "
                   "a walks straight down, between 0.5 and 1 it oscillates and settles, at 1 it bounces forever, "
                   "above 1 it diverges.")
    st.plotly_chart(rc.descent_figure(rec, text_px=PX), width="stretch", config={"displayModeBar": False},
                    key="gd_fig")
    st.dataframe(pd.DataFrame(rec.table()), hide_index=True, width="stretch")


# ---------------------------------------------------------------------------------------------------------------

VIEWS = {"forward": forward_section, "backward": backward_section, "chain": chain_section, "size": size_section,
         "pooling": pooling_section, "relu": relu_section, "network": network_section, "descent": descent_section}

st.title("Convolution & pooling lab")
st.markdown(
    "Small matrices you can edit, and every number a convolution, a pooling layer and a ReLU compute on them, "
    "forward and backward. Type a matrix as one row per line with the numbers separated by spaces "
    "(`1 2` / `3 4`), or as `[[1, 2], [3, 4]]`. "
    "Every matrix here is tested against PyTorch (`F.conv2d`, `F.max_pool2d`, `F.avg_pool2d` and autograd)."
)
ui.seed_from_url("section", "cl_section", lambda raw: SECTIONS[ui.one_of(list(SECTIONS))(raw)])
st.session_state.setdefault("cl_section", SECTIONS["forward"])
top = st.columns([6, 1.4], vertical_alignment="bottom")
label = top[0].radio("Section", list(SECTIONS.values()), key="cl_section", horizontal=True,
                     label_visibility="collapsed")
chosen = next(code for code, name in SECTIONS.items() if name == label)
VIEWS[chosen]()
write_state(chosen)
with top[1]:
    ui.link_button()
