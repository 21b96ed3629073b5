"""Digit-sum challenge: classify ten MNIST test digits and compare the sum of the predictions with the true sum."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from cnnviz import ui
from cnnviz.engine import digit_sum as ds
from cnnviz.engine.checkpoints import available_stages
from cnnviz.render import digit_sum as render_ds
from cnnviz.render import network as render_network

CANVAS_PX = 140
DIGIT_PX = 84  # a 28x28 digit shown 3x, never stretched to the column
MAX_SEED = 1_000_000
MODE_IN_LINK = {"one of each": "one-of-each", "random": "random"}


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("it is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"use 0 to {MAX_SEED:,}")
    return value


def _mode(text: str) -> str:
    modes = {v: k for k, v in MODE_IN_LINK.items()}
    if text not in modes:
        raise ValueError(f"choose {' or '.join(modes)}")
    return modes[text]


st.title("Digit-sum challenge")
st.markdown(
    "Take ten handwritten digits from the MNIST **test** set, let the trained network classify each one, and add "
    "up its answers. Compare that with the sum of the true labels (45 when the digits are 0 to 9). "
    "If every digit is right the sums agree, but they can also agree when two mistakes cancel out."
)
st.info(
    "**What this does and does not measure.** A predicted sum above or below the true sum is **not** a sign of "
    "over- or under-fitting: one wrong digit moves the sum by the gap between two labels (a 7 read as a 1 "
    "gives −6), two wrong digits can cancel, and ten digits are far too few to judge a model by. "
    "Over- and under-fitting are read from the model's **accuracy on the 10,000 test images** and the **gap "
    "between its training and test accuracy**, shown below from the model card: high training accuracy with much "
    "lower test accuracy is over-fitting; both low is under-fitting.",
    icon=":material/info:",
)

stages = available_stages("mnist")
stage = "final"
if stages:  # a link's snapshot (one this server lacks gets a message)
    ui.seed_from_url("weights", "ds_stage", ui.one_of(stages[::-1]), "model snapshot")
if len(stages) > 1 or (stages and "final" not in stages):
    labels = {"final": "trained (final)", "epoch1": "after 1 epoch", "init": "untrained (random weights)"}
    stage = st.radio("Model snapshot", stages[::-1], key="ds_stage", horizontal=True,
                     format_func=lambda s: labels.get(s, s),
                     help="Snapshots taken while the model learned: try the untrained one to see a sum by chance.")
    ui.write_url(weights=stage)
loaded = ui.get_model("mnist", stage)
if loaded is None:
    st.info("This page needs the trained MNIST model. Train it with `python -m cnnviz.train mnist`, or set "
            "CNNVIZ_CHECKPOINT_DIR to a folder holding `mnist.safetensors` and its `mnist.json` card.")
    st.stop()
model, card = loaded

# ---------------------------------------------------------------------------------------------------------------
st.subheader("What does measure fitting: the model card")
fit = ds.fit_report(card)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Test accuracy", "unknown" if fit.test_accuracy is None else f"{fit.test_accuracy:.2f}%",
          help=f"Measured on the {card.dataset or 'MNIST'} {card.split} split.")
m2.metric("Training accuracy", "unknown" if fit.train_accuracy is None else f"{fit.train_accuracy:.2f}%",
          help="Last epoch, measured while training (with augmentation and dropout on).")
m3.metric("Gap (train − test)", "unknown" if fit.gap is None else f"{fit.gap:+.2f} points")
m4.metric("Epochs", fit.epochs)
st.markdown(fit.summary)
history = render_network.training_curve(fit.history)
if history is not None:
    px = ui.text_px()  # set where Streamlit's chart theme would otherwise draw 12 px, larger in projector mode
    history.update_layout(font_size=px, legend_font_size=px, xaxis_tickfont_size=px, yaxis_tickfont_size=px,
                          xaxis_title_font_size=px, yaxis_title_font_size=px)
    with st.expander("Accuracy per epoch"):
        st.plotly_chart(history, config={"displayModeBar": False}, key="ds_history")


def digit_row(draw: ds.DigitDraw) -> None:
    """The digits with their true and predicted labels (true → predicted), ten columns wide, each digit at most
    84 px wide (one drawn digit is not stretched to the page)."""
    cols = st.columns(ds.DIGITS)
    for k, (index, img, true, pred, conf) in enumerate(zip(draw.indices, draw.images, draw.true_labels,
                                                           draw.predicted, draw.confidence, strict=True)):
        with cols[k % ds.DIGITS]:
            st.image(render_ds.upscale((np.clip(img, 0, 1) * 255).astype(np.uint8), 3), width=DIGIT_PX)
            mark = "✓" if pred == true else "✗"
            st.markdown(f"{true} → **{pred}** {mark}", help="true label → the network's answer")
            st.caption(f"{conf:.0%} sure" + (f", test #{index}" if index >= 0 else ""))


def sums(draw: ds.DigitDraw) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("True sum", draw.true_sum)
    c2.metric("Predicted sum", draw.predicted_sum)
    c3.metric("Difference", f"{draw.difference:+d}")
    c4.metric("Wrong digits", draw.wrong)
    if draw.errors_cancel:
        st.warning(f"The sums agree, yet {draw.wrong} digit{'s are' if draw.wrong > 1 else ' is'} wrong: "
                   "the mistakes cancelled out. The sum alone would have hidden them.")
    elif draw.difference == 0:
        st.success("Every digit is right, so the sums agree.")
    else:
        st.info(f"The predicted sum is {abs(draw.difference)} {'above' if draw.difference > 0 else 'below'} the "
                f"true sum because {draw.wrong} digit{'s were' if draw.wrong > 1 else ' was'} misread. This says "
                "which digits were misread, not whether the model over- or under-fits.")


# ---------------------------------------------------------------------------------------------------------------
@st.fragment
def ten_digits_section(images, labels) -> None:
    st.markdown("Draw ten digits from the test set, one of each class (true sum 45) or ten at random.")
    c1, c2, c3 = st.columns([2, 1, 1])
    mode = c1.radio("Which ten", ds.MODES, key="ds_mode", horizontal=True)
    seed = c2.number_input("Set number (seed)", 0, MAX_SEED, key="ds_seed", step=1)
    c3.button("Draw a new set", key="ds_new", icon=":material/casino:",
              on_click=lambda: st.session_state.update(ds_seed=(int(seed) + 1) % (MAX_SEED + 1)))
    ui.write_url(seed=int(seed), mode=MODE_IN_LINK[mode])
    ui.link_button("Anyone who opens this link sees these ten test digits, classified by the same model snapshot. "
                   "Drawings are not put in links.")
    try:
        draw = ds.draw_and_classify(model, card, images, labels, mode, int(seed))
    except ValueError as exc:
        st.error(f"Cannot draw ten digits: {exc}.")
        return
    digit_row(draw)
    sums(draw)


@st.fragment
def trials_section() -> None:
    st.markdown("Repeat the challenge many times with new digits each time, and count how the difference "
                "between the sums is spread.")
    c1, c2, c3 = st.columns([2, 2, 1])
    trials = c1.slider("Trials", 100, 5000, 1000, 100, key="ds_trials")
    mode = c2.radio("Which ten", ds.MODES, key="ds_trials_mode", horizontal=True)
    seed = c3.number_input("Seed", 0, 1_000_000, 0, key="ds_trials_seed")
    if not st.session_state.get("ds_trials_on"):  # set by the button's callback, before the run it starts
        st.button(f"Run {trials:,} trials", key="ds_run", type="primary", icon=":material/play_arrow:",
                  on_click=st.session_state.update, kwargs={"ds_trials_on": True})
        st.caption("The first run classifies every test digit once; after that, trials are instant.")
        return
    preds = ui.digit_sum_predictions(model, card, stage)
    try:
        stats = ds.run_trials(preds, trials, mode, int(seed))
    except ValueError as exc:
        st.error(f"Cannot run the trials: {exc}.")
        return
    values, counts = stats.histogram
    st.plotly_chart(render_ds.difference_histogram(values, counts, font_px=ui.text_px()),
                    config={"displayModeBar": False}, key="ds_hist")
    st.caption("The count axis is logarithmic, so the few trials far from 0 stay visible beside the tall bar at 0; "
               "each bar is labelled with its count.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Sums agree", f"{stats.sums_agree_rate:.1%}")
    c2.metric("All ten right", f"{stats.all_correct_rate:.1%}",
              help=f"With {stats.accuracy:.2f}% accuracy, accuracy¹⁰ = {stats.expected_all_correct:.1%} is expected.")
    c3.metric("Sums agree, a digit wrong", f"{stats.cancel_rate:.1%}",
              help="Errors cancelling: the sum is exact although at least one digit was misread.")
    c4.metric("Accuracy on these digits", f"{stats.accuracy:.2f}%")
    st.markdown(
        f"In {stats.trials:,} trials the sums agreed {stats.sums_agree_rate:.1%} of the time: "
        f"{stats.all_correct_rate:.1%} because all ten digits were right, and **{stats.cancel_rate:.1%} although a "
        f"digit was wrong** (errors cancelling). The spread of the histogram comes from which digits get confused "
        f"with which, not from over- or under-fitting: for that, look at the test accuracy and the train/test gap "
        f"above."
    )


@st.fragment
def draw_your_own_section() -> None:
    st.markdown("Draw each digit in its box (white on black, as in MNIST). The network reads each drawing after it "
                "has been cropped, scaled to 20 pixels and centred in 28×28, as MNIST's digits were.")
    pictures: list[Image.Image | None] = []
    for row in range(2):
        cols = st.columns(5)
        for k, col in enumerate(cols):
            digit = row * 5 + k
            with col:
                st.markdown(f"Draw a **{digit}**")
                picked = ui.canvas_input(key=f"ds_canvas_{digit}", size=CANVAS_PX)
                pictures.append(None if picked is None else picked.image)
    draw = ds.classify_pictures(model, card, pictures)
    if len(draw.true_labels) == 0:
        st.info("Nothing is drawn yet: draw a digit in each box and the sums appear here.")
        return
    if draw.missing:
        st.caption(f"Not drawn yet: {', '.join(str(d) for d in draw.missing)}. The sums below count only the "
                   f"{len(draw.true_labels)} digit{'s' if len(draw.true_labels) > 1 else ''} drawn.")
    digit_row(draw)
    sums(draw)


# ---------------------------------------------------------------------------------------------------------------
arrays, data_message = ui.digit_sum_test_set()
if arrays is not None:
    ui.seed_from_url("seed", "ds_seed", _seed, "set number (seed)")
    ui.seed_from_url("mode", "ds_mode", _mode, "which ten")
    tab_ten, tab_trials, tab_draw = st.tabs(["Ten test digits", "Many trials", "Draw your own ten"])
    with tab_ten:
        ten_digits_section(*arrays)
    with tab_trials:
        trials_section()
    with tab_draw:
        draw_your_own_section()
else:
    st.info(f"{data_message} Meanwhile, draw your own ten digits below.", icon=":material/dataset:")
    st.subheader("Draw your own ten digits")
    draw_your_own_section()
