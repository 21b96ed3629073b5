"""Convolution & pooling lab: every number of a convolution's forward and backward pass, on matrices you edit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cnnviz.handwork import conv_math as cm
from cnnviz.render import conv as rc

st.title("Convolution & pooling lab")
st.markdown(
    "Small matrices you can edit, and every number a convolution, a pooling layer and a ReLU compute on them, "
    "forward and backward. Type a matrix as one row per line with the numbers separated by spaces "
    "(`1 2` / `3 4`), or as `[[1, 2], [3, 4]]`. "
    "Every matrix here is tested against PyTorch (`F.conv2d`, `F.max_pool2d`, `F.avg_pool2d` and autograd)."
)


def matrix_input(label: str, key: str, default: str, max_shape: tuple[int, int] = (8, 8)) -> np.ndarray | None:
    """A text box holding a matrix; on bad text, an error saying what to fix, and None."""
    height = max(90, 24 * (default.count("\n") + 1) + 40)
    text = st.text_area(f"{label} (up to {max_shape[0]}x{max_shape[1]})", default, key=key, height=height)
    try:
        return cm.parse_matrix(text, label, max_shape)
    except cm.MatrixError as exc:
        st.error(f"{exc}")
        return None


class Charts:
    """Draws a section's figures, each with its own stable key (section name + position in the section)."""

    def __init__(self, section: str) -> None:
        self.section, self.count = section, 0

    def __call__(self, fig) -> None:
        self.count += 1
        st.plotly_chart(fig, width="content", config={"displayModeBar": False}, key=f"{self.section}_{self.count}")


def entry_picker(label: str, shape: tuple[int, int], key: str) -> tuple[int, int]:
    """A slider over the entries of a matrix, row by row; returns (row, column)."""
    n = shape[0] * shape[1]
    if n == 1:
        return 0, 0
    k = st.slider(label, 1, n, 1, key=key, help="Entries are numbered row by row, starting at the top left.")
    return divmod(k - 1, shape[1])


def upstream_gradient(shape: tuple[int, int], key: str, options: dict[str, np.ndarray],
                      name: str = "dE/dO") -> np.ndarray | None:
    """Pick the upstream gradient from named choices or type it; a wrong shape gives a warning and None."""
    choice = st.radio(f"Upstream gradient {name}", [*options, "type your own"], key=f"{key}_choice",
                      horizontal=True)
    if choice != "type your own":
        return options[choice]
    g = matrix_input(name, f"{key}_text", cm.matrix_rows_text(np.ones(shape)), max_shape=(8, 8))
    if g is not None and g.shape != shape:
        st.warning(f"{name} must have the output's shape, {shape[0]}x{shape[1]}; you typed "
                   f"{g.shape[0]}x{g.shape[1]}. Edit it to {shape[0]} rows of {shape[1]} numbers.")
        return None
    return g


tabs = st.tabs(["1 · Convolution forward", "2 · Convolution backward", "3 · Two layers chained", "4 · Output size",
                "5 · Pooling", "6 · ReLU", "7 · Conv + FC network", "8 · Gradient descent"])


# ---------------------------------------------------------------------------------------------------------------
def conv_inputs(prefix: str, padding_label: str) -> cm.ConvForward | None:
    """X, F, stride and padding as the learner sets them (keys ``<prefix>_x``, ``_f``, ``_stride``, ``_pad``) and
    their forward pass; None, after saying why, when they cannot be used."""
    c1, c2, c3 = st.columns([2, 2, 2])
    with c1:
        x = matrix_input("Input X", f"{prefix}_x", "1 2 3\n4 5 6\n7 8 9")
    with c2:
        f = matrix_input("Filter F", f"{prefix}_f", "1 0\n2 -1", max_shape=(5, 5))
    with c3:
        stride = st.slider("Stride S", 1, 3, 1, key=f"{prefix}_stride")
        padding = st.slider(padding_label, 0, 2, 0, key=f"{prefix}_pad")
    if x is None or f is None:
        return None
    try:
        return cm.conv_forward(x, f, stride, padding)
    except ValueError as exc:
        st.error(f"{exc}.")
        return None


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def conv_forward_section() -> None:
    show = Charts("conv_forward")
    st.subheader("Convolution forward: O = X ⋆ F")
    st.markdown("PyTorch's `conv2d` slides the filter over the input **without flipping it** "
                "(cross-correlation): each output entry is the sum of the products of the window with F.")
    rec = conv_inputs("fwd", "Padding P (zeros around X)")
    if rec is None:
        return
    padding = rec.padding
    i, j = entry_picker("Kernel position", rec.output.shape, "fwd_pos")
    cell = rec.cells[i * rec.output.shape[1] + j]
    kh, kw = rec.f.shape
    top, left = cell.terms[0].left_at
    a, b, c = st.columns([3, 2, 2])
    with a:
        show(rc.matrix_figure(rec.x_padded, "X" + (f" with padding {padding}" if padding else ""),
                              outlines=[rc.Outline(top, left, kh, kw)], pad=padding))
    with b:
        show(rc.matrix_figure(rec.f, "F"))
    with c:
        show(rc.matrix_figure(rec.output, f"O ({rec.output.shape[0]}x{rec.output.shape[1]})",
                              outlines=[rc.Outline(i, j)]))
    st.markdown(f"**O[{i}, {j}]** = {cell.expression()}")
    st.caption(f"Output size: rows {rec.rows.formula()}; columns {rec.cols.formula()}. "
               f"O = {cm.matrix_text(rec.output)}")
    with st.expander("Every entry of O as its sum of products"):
        st.markdown("\n".join(f"- O[{c.at[0]}, {c.at[1]}] = {c.expression()}" for c in rec.cells))


with tabs[0]:
    conv_forward_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def conv_backward_section() -> None:
    show = Charts("conv_backward")
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
    stride, padding = fwd.stride, fwd.padding
    loss_grad = cm.squared_error_grad(fwd.output, 0.0)[1]
    g = upstream_gradient(fwd.output.shape, "bwd_g", {
        "all ones (E = ΣO)": np.ones_like(fwd.output), "from E = ½ ΣO² (dE/dO = O)": loss_grad})
    if g is None:
        return
    rec = cm.conv_backward(fwd, g)
    st.markdown(f"O = {cm.matrix_text(fwd.output)}, dE/dO = {cm.matrix_text(g)}")

    st.markdown("#### dE/dF = X ⋆ dE/dO")
    i, j = entry_picker("Entry of dE/dF", rec.grad_filter.shape, "bwd_f_pos")
    cell = rec.grad_filter_cells[i * rec.grad_filter.shape[1] + j]
    a, b, c = st.columns([3, 2, 2])
    with a:
        show(rc.matrix_figure(fwd.x_padded, "X" + (" padded" if padding else ""), pad=padding,
                              outlines=rc.window_outline(cell.left_positions)))
    with b:
        show(rc.matrix_figure(g, "dE/dO"))
    with c:
        show(rc.matrix_figure(rec.grad_filter, "dE/dF", outlines=[rc.Outline(i, j)]))
    st.markdown(f"**dE/dF[{i}, {j}]** = {cell.expression()}")
    if stride > 1:
        st.caption(f"With stride {stride}, the window's cells are {stride} apart: the same as sliding dE/dO with "
                   f"{stride - 1} zeros between its entries.")

    st.markdown("#### dE/dX = full convolution of dE/dO with F rotated 180°")
    skip = st.toggle("Hide the products with a zero factor", value=True, key="bwd_skip")
    i, j = entry_picker("Entry of dE/dX", rec.grad_input.shape, "bwd_x_pos")
    cell = rec.grad_input_cells[i * rec.grad_input.shape[1] + j]
    kh, kw = fwd.f.shape
    top, left = cell.terms[0].left_at
    a, b, c = st.columns([3, 2, 2])
    with a:
        show(rc.matrix_figure(rec.grad_output_full, "dE/dO zero-padded" + (" and dilated" if stride > 1 else ""),
                              outlines=[rc.Outline(top, left, kh, kw)], pad=0, digits=3,
                              shade=_added_zeros(rec)))
    with b:
        show(rc.matrix_figure(rec.f_rot180, "F rotated 180°"))
    with c:
        show(rc.matrix_figure(rec.grad_input, "dE/dX", outlines=[rc.Outline(i, j)]))
    st.markdown(f"**dE/dX[{i}, {j}]** = {cell.expression(skip_zeros=skip)}")
    if padding:
        st.caption(f"The full convolution gives a gradient for every cell of the padded X "
                   f"({rec.grad_input_padded.shape[0]}x{rec.grad_input_padded.shape[1]}); the padding's border "
                   f"is cut off, leaving dE/dX with the shape of X.")
    st.caption(f"dE/dF = {cm.matrix_text(rec.grad_filter)};  dE/dX = {cm.matrix_text(rec.grad_input)}")


def _added_zeros(rec: cm.ConvBackward) -> set[tuple[int, int]]:
    """Cells of the padded, dilated dE/dO that are added zeros, not entries of dE/dO (drawn grey)."""
    s = rec.forward.stride
    kh, kw = rec.forward.f.shape
    ho, wo = rec.grad_output.shape
    real = {(kh - 1 + i * s, kw - 1 + j * s) for i in range(ho) for j in range(wo)}
    hf, wf = rec.grad_output_full.shape
    return {(i, j) for i in range(hf) for j in range(wf)} - real


with tabs[1]:
    conv_backward_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def chain_section() -> None:
    show = Charts("chain")
    st.subheader("Two layers chained: image → conv1 → conv2 → max-pool → loss")
    st.markdown("Both convolutions have stride 1, no padding, no bias and no activation; the pool is 2x2 with "
                "stride 2 and the loss is E = ½ Σ (P − T)². Walk back one step per slider position.")
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    with c1:
        image = matrix_input("Image", "ch_img", "1 0 2 1 0 3\n0 1 3 2 1 0\n2 1 0 1 2 1\n1 3 1 0 1 2\n0 2 1 3 0 1\n"
                             "1 0 2 1 2 0")
    with c2:
        f1 = matrix_input("F1", "ch_f1", "1 0\n-1 2", max_shape=(4, 4))
    with c3:
        f2 = matrix_input("F2", "ch_f2", "0 1\n1 -1", max_shape=(4, 4))
    with c4:
        target = matrix_input("Target T", "ch_t", "0 0\n0 0", max_shape=(4, 4))
    if image is None or f1 is None or f2 is None or target is None:
        return
    try:
        rec = cm.two_conv_chain(image, f1, f2, target)
    except ValueError as exc:
        st.error(f"{exc}. Make the image larger or the filters smaller (conv2's output must be at least 2x2), "
                 "and give T the pooled output's shape.")
        return
    names = ["Forward pass"] + [f"{k}. {s.title}" for k, s in enumerate(rec.steps, start=1)]
    step = st.select_slider("Step", names, key="ch_step")
    k = names.index(step)
    if k == 0:
        cols = st.columns(4)
        for col, (name, m) in zip(cols, [("image", image), ("Conv1 = image ⋆ F1", rec.conv1.output),
                                         ("Conv2 = Conv1 ⋆ F2", rec.conv2.output), ("P = maxpool(Conv2)",
                                                                                   rec.pooled.output)], strict=True):
            with col:
                marks = [w.winner for w in rec.pooled.windows] if name.startswith("Conv2") else []
                show(rc.matrix_figure(m, name, marks=marks, cell_px=40))
        st.markdown(f"E = ½ Σ (P − T)² = **{cm.fmt(rec.loss)}**; the ★ marks each pool window's maximum.")
        return
    s = rec.steps[k - 1]
    st.markdown(f"**{s.formula}**")
    cols = st.columns(len(s.inputs) + 1)
    for col, (name, m) in zip(cols, s.inputs, strict=False):
        with col:
            marks = [w.winner for w in rec.pooled.windows] if name == "Conv2" else []
            show(rc.matrix_figure(m, name, marks=marks, cell_px=40))
    with cols[-1]:
        show(rc.matrix_figure(s.result, s.result_name, cell_px=40))
    st.caption(f"{s.result_name} = {cm.matrix_text(s.result)}")
    if s.cells:
        with st.expander(f"Every entry of {s.result_name} as its sum of products", expanded=True):
            st.markdown("\n".join(f"- {s.result_name}[{c.at[0]}, {c.at[1]}] = {c.expression(skip_zeros=True)}"
                                  for c in s.cells))
    if s.routes:
        with st.expander("Where each cell's gradient comes from", expanded=True):
            st.markdown("\n".join(f"- {s.result_name}[{c.at[0]}, {c.at[1]}] = {c.expression()} "
                                  f"(from window{'s' if len(c.sources) > 1 else ''} "
                                  f"{', '.join(str(w) for w, _ in c.sources)})" for c in s.routes if c.sources)
                        + "\n- every other cell: 0")


with tabs[2]:
    chain_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def output_size_section() -> None:
    show = Charts("output_size")
    st.subheader("Output size: W_out = (W − F + 2P) / S + 1")
    st.markdown("Example: a 26×26×32 stack of feature maps, max-pooled 2×2 with stride 2, gives **13×13×32**: "
                "(26 − 2 + 0) / 2 + 1 = 13, and pooling works on each of the 32 maps separately.")
    c1, c2, c3, c4, c5 = st.columns(5)
    w = c1.slider("Input width W", 1, 32, 26, key="os_w")
    k = c2.slider("Kernel F", 1, 7, 2, key="os_f")
    p = c3.slider("Padding P", 0, 3, 0, key="os_p")
    s = c4.slider("Stride S", 1, 4, 2, key="os_s")
    depth = c5.slider("Channels", 1, 64, 32, key="os_c", help="Pooling keeps the number of channels.")
    try:
        size = cm.output_size(w, k, p, s)
    except ValueError as exc:
        st.error(f"{exc}.")
        return
    st.markdown(f"W_out = {size.formula()}  →  **{w}×{w}×{depth} → {size.out}×{size.out}×{depth}**")
    if not size.whole:
        rem = size.numerator % s
        rows = ", ".join(str(r) for r in size.uncovered_input)
        what = (f"input rows/columns {rows} (counting from 0) are never covered: the kernel never sees them"
                if size.uncovered_input else "only padding is left out, so every input row is still seen")
        st.warning(f"The division is not whole: ({w} − {k} + 2·{p}) / {s} = {cm.fmt(size.quotient)}. PyTorch floors "
                   f"it, so there are {size.out} positions and the last {rem} row(s)/column(s) of the padded "
                   f"input are left over: {what}.")
    elif size.uncovered_input:
        st.warning(f"The stride ({s}) is larger than the kernel ({k}): the kernel jumps over input rows/columns "
                   f"{', '.join(str(r) for r in size.uncovered_input)}, which are never covered.")
    else:
        st.success("The division is whole: the kernel's positions cover every row and column of the padded input.")
    position = st.slider("Show the window at kernel position", 1, size.out, 1, key="os_pos")
    show(rc.output_size_figure(size, size, (position - 1, position - 1)))
    st.caption("Grey: padding. Blue: input. Red: never covered. Dots: the centre of each kernel position. "
               f"Kernel starts (padded index): {', '.join(str(v) for v in size.starts)}.")


with tabs[3]:
    output_size_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def pooling_section() -> None:
    show = Charts("pooling")
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
        x = matrix_input("Input X", "pool_x", "1 3 2 2\n4 9 1 0\n2 0 5 6\n1 7 3 3")
    with c2:
        mode = st.radio("Pooling", ["max", "avg"], key="pool_mode", horizontal=True,
                        format_func=lambda m: {"max": "max-pool", "avg": "average-pool"}[m])
        k = st.slider("Kernel (window size)", 1, 4, 2, key="pool_k")
        s = st.slider("Stride", 1, 4, 2, key="pool_s")
    if x is None:
        return
    try:
        fwd = cm.pool(x, k, s, mode)
    except ValueError as exc:
        st.error(f"{exc}.")
        return
    numbered = np.arange(1.0, fwd.output.size + 1).reshape(fwd.output.shape)
    g = upstream_gradient(fwd.output.shape, "pool_g", {"1, 2, 3, … (one number per window)": numbered,
                                                        "all ones": np.ones_like(fwd.output)})
    if g is None:
        return
    rec = cm.pool_backward(fwd, g)
    i, j = entry_picker("Window", fwd.output.shape, "pool_pos")
    win = fwd.windows[i * fwd.output.shape[1] + j]
    marks = [w.winner for w in fwd.windows] if mode == "max" else []
    a, b = st.columns(2)
    with a:
        show(rc.matrix_figure(x, "X", marks=marks, outlines=[rc.Outline(win.top, win.left, k, k)]))
    with b:
        show(rc.matrix_figure(fwd.output, f"{mode}-pool output", outlines=[rc.Outline(i, j)]))
    if mode == "max":
        st.markdown(f"Window ({i}, {j}) = {cm.matrix_text(win.values)}: its maximum is {cm.fmt(win.value)} at "
                    f"X[{win.winner[0]}, {win.winner[1]}].")
    else:
        st.markdown(f"Window ({i}, {j}) = {cm.matrix_text(win.values)}: its mean is {cm.fmt(win.value)}.")
    if fwd.overlapping:
        st.info(f"Stride {s} < kernel {k}: the windows overlap.")
    for t in (w for w in fwd.windows if len(w.maxima) > 1):
        st.markdown(f"Tie in window {t.at}: the maximum {cm.fmt(t.value)} sits at "
                    f"{', '.join(f'X[{r}, {c}]' for r, c in t.maxima)}; PyTorch (and this lab) picks the first, "
                    f"X[{t.winner[0]}, {t.winner[1]}].")
    a, b = st.columns(2)
    with a:
        show(rc.matrix_figure(g, "dE/dO (upstream)", outlines=[rc.Outline(i, j)]))
    with b:
        many = [c.at for c in rec.cells if len(c.sources) > 1] if mode == "max" else []
        show(rc.matrix_figure(rec.grad_input, "dE/dX", marks=many, star_marks=False,
                              outlines=[rc.Outline(win.top, win.left, k, k)]))
    lines = [f"- dE/dX[{c.at[0]}, {c.at[1]}] = {c.expression()}  (from window{'s' if len(c.sources) > 1 else ''} "
             f"{', '.join(str(w) for w, _ in c.sources)})" for c in rec.cells if c.sources]
    if mode == "max":
        lines.append("- every other cell: 0 (it won no window)")
        if many:
            st.markdown(f"Cells outlined in red won several windows and collect the sum: "
                        f"{', '.join(str(c) for c in many)}.")
    st.markdown("\n".join(lines))
    st.caption(f"output = {cm.matrix_text(fwd.output)};  dE/dX = {cm.matrix_text(rec.grad_input)}")


with tabs[4]:
    pooling_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def relu_section() -> None:
    show = Charts("relu")
    st.subheader("ReLU on a matrix")
    st.markdown("Forward, ReLU(x) = max(0, x) entry by entry. Backward, the gradient passes where x > 0 and is "
                "stopped (0) elsewhere: it is multiplied by the mask [x > 0]. At exactly 0, PyTorch uses 0.")
    c1, c2 = st.columns(2)
    with c1:
        x = matrix_input("Input X", "relu_x", "-478 494\n460 -477")
    if x is None:
        return
    with c2:
        g = upstream_gradient(x.shape, "relu_g", {"all ones": np.ones_like(x)}, name="dE/dY")
    if g is None:
        return
    rec = cm.relu(x, g)
    cols = st.columns(4)
    for col, (name, m) in zip(cols, [("X", rec.x), ("ReLU(X)", rec.output), ("mask [X > 0]", rec.mask),
                                      ("dE/dX = dE/dY · mask", rec.grad_input)], strict=True):
        with col:
            show(rc.matrix_figure(m, name))
    st.markdown(f"ReLU({cm.matrix_text(rec.x)}) = {cm.matrix_text(rec.output)}")
    st.markdown(f"Backward: dE/dY = {cm.matrix_text(rec.grad_output)} times the mask {cm.matrix_text(rec.mask)} "
                f"gives dE/dX = {cm.matrix_text(rec.grad_input)}")


with tabs[5]:
    relu_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def tiny_net_section() -> None:
    show = Charts("tiny_net")
    st.subheader("One conv + sigmoid + fully connected + sigmoid")
    st.markdown("A tiny image X, one filter f, a sigmoid, a fully connected layer with one weight per activation "
                "(W) and a bias b, another sigmoid, and the squared error against the target y'.")
    c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
    with c1:
        x = matrix_input("Image X", "net_x", "1 0 1\n0 1 0\n1 1 0", max_shape=(6, 6))
    with c2:
        f = matrix_input("Filter f", "net_f", "0.5 -0.5\n0.25 0.5", max_shape=(4, 4))
    with c3:
        w = matrix_input("Weights W (shape of Z1)", "net_w", "0.3 -0.2\n0.1 0.4", max_shape=(6, 6))
    with c4:
        b = st.number_input("Bias b", -10.0, 10.0, 0.1, 0.1, key="net_b")
        y = st.number_input("Target y'", 0.0, 1.0, 1.0, 0.1, key="net_y")
    if x is None or f is None or w is None:
        return
    try:
        rec = cm.conv_sigmoid_fc(x, f, w, b, y)
    except ValueError as exc:
        st.error(f"{exc}. W needs one weight per entry of Z1 = X ⋆ f.")
        return
    a, b_ = st.columns(2)
    with a:
        st.markdown("#### Forward")
        st.markdown("\n".join(f"{n}. **{s.label}**: {s.detail}" for n, s in enumerate(rec.forward_steps, 1)))
    with b_:
        st.markdown("#### Backward")
        st.markdown("\n".join(f"{n}. **{s.label}**: {s.detail}" for n, s in enumerate(rec.backward_steps, 1)))
    cols = st.columns(4)
    for col, (name, m) in zip(cols, [("X", rec.x), ("dE/dZ1", rec.grad_z1), ("dE/df = X ⋆ dE/dZ1", rec.grad_f),
                                      ("dE/dW", rec.grad_w)], strict=True):
        with col:
            show(rc.matrix_figure(m, name, digits=3))
    with st.expander("Every entry of dE/df as its sum of products"):
        st.markdown("\n".join(f"- dE/df[{c.at[0]}, {c.at[1]}] = {c.expression()}" for c in rec.grad_f_cells))


with tabs[6]:
    tiny_net_section()


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def descent_section() -> None:
    show = Charts("descent")
    st.subheader("Gradient descent on a curve")
    st.markdown("One parameter a, a loss curve L(a), and the rule **a ← a − lr · slope**. A small learning rate "
                "walks down slowly; a larger one jumps over the bottom and back (oscillation); too large and every "
                "jump lands higher than the last (divergence).")
    c1, c2, c3, c4 = st.columns(4)
    curve = c1.selectbox("Curve", list(cm.CURVES), key="gd_curve",
                         format_func=lambda n: f"{n}: {cm.CURVES[n].formula}")
    start = c2.slider("Start a₀", -3.0, 3.0, -2.0, 0.1, key="gd_start")
    lr = c3.slider("Learning rate lr", 0.0, 1.5, 0.1, 0.01, key="gd_lr")
    steps = c4.slider("Steps", 1, 50, 10, key="gd_steps")
    rec = cm.gradient_descent(curve, start, lr, steps)
    kind = {"diverges": st.error, "oscillates without settling": st.warning}.get(rec.verdict, st.success)
    kind(f"**{rec.verdict.capitalize()}.** {rec.explanation}")
    if rec.curve == "parabola":
        st.caption("On this parabola each step multiplies the distance to the bottom by (1 − 2·lr): below lr = 0.5 "
                   "a walks straight down, between 0.5 and 1 it oscillates and settles, at 1 it bounces forever, "
                   "above 1 it diverges.")
    show(rc.descent_figure(rec))
    rows = [{"step": n, "a": cm.fmt(a), "L(a)": cm.fmt(loss), "slope L'(a)": cm.fmt(slope),
             "next a = a − lr·slope": (f"{cm.fmt(a)} − {cm.fmt(lr)}·{_par(slope)} = {cm.fmt(rec.positions[n + 1])}"
                                       if n + 1 < len(rec.positions) else "")}
            for n, (a, loss, slope) in enumerate(zip(rec.positions, rec.losses, rec.slopes, strict=True))]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _par(v: float) -> str:
    return f"({cm.fmt(v)})" if v < 0 else cm.fmt(v)


with tabs[7]:
    descent_section()
