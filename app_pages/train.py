"""Train a CNN: build a network from blocks, set the hyperparameters, watch it learn live, take it home."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from cnnviz import ui
from cnnviz.engine.builder import (
    ACTIVATIONS,
    HEADS,
    MAX_PARAMETERS,
    MAX_WEIGHT_LAYERS,
    PRESETS,
    BuildError,
    NetworkConfig,
    blocks_code,
    blocks_text,
    parse_blocks,
    parse_blocks_code,
    validate,
)
from cnnviz.engine.checkpoints import to_bytes
from cnnviz.engine.datasets import dataset_available
from cnnviz.engine.models import REGISTRY
from cnnviz.numbers import fmt
from cnnviz.render.network import tile_maps
from cnnviz.training import jobs as tj
from cnnviz.training.loop import Settings

OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "SGD + momentum", "adam": "Adam"}  # short: whole on a projector
DATASET_LABELS = {"mnist": "MNIST digits (1x28x28)", "cifar10": "CIFAR-10 photos (3x32x32)"}
STATE_WORDS = {"queued": "waiting", "starting": "starting", "running": "training", "paused": "paused",
               "finished": "finished", "stopped": "stopped", "failed": "failed"}
PRESET_IN_LINK = dict(zip(PRESETS, ("shipped", "tiny", "deep-sigmoid"), strict=True))
BATCH_SIZES = [16, 32, 64, 128, 256, 512]
SAVED = "_train_builder"  # the builder's blocks and settings, kept while the learner visits other pages


def apply_preset() -> None:
    """Fill the builder and the hyperparameters from the chosen preset."""
    name = st.session_state["train_preset"]
    cfg, settings = PRESETS[name], tj.default_settings(name)
    st.session_state.update({
        "train_blocks": blocks_text(cfg.blocks), "train_activation": cfg.activation,
        "train_bn": cfg.batch_norm, "train_head": cfg.head, "train_optimizer": settings.optimizer,
        "train_lr": settings.lr, "train_schedule": settings.schedule, "train_batch": settings.batch_size,
        "train_steps": settings.steps, "train_augment": settings.augment, "train_seed": settings.seed,
    })


def _number(low: float, high: float, whole: bool = False):
    """A link parser for a number between ``low`` and ``high``."""
    def parse(text: str) -> float | int:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise ui.BadLinkValue("it is not a whole number" if whole else "it is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ui.BadLinkValue(f"use {fmt(low)} to {fmt(high)}")
        return value
    return parse


def _switch(text: str) -> bool:
    if text not in ("0", "1"):
        raise ui.BadLinkValue("use 1 (on) or 0 (off)")
    return text == "1"


def _blocks(text: str) -> str:
    try:
        return blocks_text(parse_blocks_code(text))
    except BuildError as exc:
        raise ui.BadLinkValue(str(exc)) from None


def _preset(text: str) -> str:
    names = {v: k for k, v in PRESET_IN_LINK.items()}
    return names[ui.one_of(list(names))(text)]


def _batch(text: str) -> int:
    value = _number(BATCH_SIZES[0], BATCH_SIZES[-1], whole=True)(text)
    if value not in BATCH_SIZES:
        raise ui.BadLinkValue(f"choose one of {', '.join(map(str, BATCH_SIZES))}")
    return value


# (URL parameter, widget key, link parser, how a warning names it): the builder's state, the link's vocabulary
LINKED = (
    ("blocks", "train_blocks", _blocks, "blocks"),
    ("act", "train_activation", ui.one_of(list(ACTIVATIONS)), "activation"),
    ("bn", "train_bn", _switch, "batch norm"),
    ("head", "train_head", ui.one_of(list(HEADS)), "head"),
    ("opt", "train_optimizer", ui.one_of(list(OPTIMIZER_LABELS)), "optimizer"),
    ("lr", "train_lr", _number(1e-5, 10.0), "learning rate"),
    ("schedule", "train_schedule", ui.one_of(["constant", "onecycle"]), "schedule"),
    ("batch", "train_batch", _batch, "batch size"),
    ("steps", "train_steps", _number(1, tj.MAX_STEPS, whole=True), "steps"),
    ("augment", "train_augment", _switch, "augmentation"),
    ("seed", "train_seed", _number(0, 2**31 - 1, whole=True), "seed"),
)


def restore_builder(datasets: list[str]) -> None:
    """Before the widgets: the builder as this session left it (Streamlit forgets a widget's value once a page
    without it has run), else the first preset; then what a link says, over it."""
    if "train_preset" not in st.session_state:
        saved = st.session_state.get(SAVED)
        if saved:
            st.session_state.update(saved)
        else:
            st.session_state["train_preset"] = next(iter(PRESETS))
            apply_preset()
    if len(datasets) > 1:
        ui.seed_from_url("data", "train_dataset", ui.one_of(datasets), "data")
    if ui.seed_from_url("preset", "train_preset", _preset, "preset"):
        apply_preset()  # the preset's settings first; the link's own values below win over them
    for param, key, parse, what in LINKED:
        ui.seed_from_url(param, key, parse, what)


def keep_builder(text: str, datasets: list[str]) -> None:
    """After the widgets: keep the builder for the next visit, and write it into the address bar."""
    keys = ["train_dataset", "train_preset", *(key for _, key, _, _ in LINKED)]
    st.session_state[SAVED] = {k: st.session_state[k] for k in keys if k in st.session_state}
    try:
        code = blocks_code(parse_blocks(text))
    except BuildError:
        code = None  # blocks being edited into shape: the link keeps the last ones that could be read
    values = {"data": st.session_state.get("train_dataset") if len(datasets) > 1 else None,
              "preset": PRESET_IN_LINK[st.session_state["train_preset"]]}
    for param, key, _, _ in LINKED:
        value = st.session_state[key]
        values[param] = code if param == "blocks" else int(value) if isinstance(value, bool) else value
    if code is None:
        del values["blocks"]
    ui.write_url(**values)


st.title("Train a CNN")
st.write("Build a network from blocks, choose how it learns, and watch it learn: the loss falling, the held-out "
         "accuracy rising, the first layer's filters taking shape, and each layer's gradient over time. Then open "
         "it in the Network explorer as **Your model**, or download it.")

available = {name: dataset_available(name) for name in ("mnist", "cifar10")}
datasets = [name for name, (ok, _) in available.items() if ok]
if "mnist" not in datasets:
    st.info("Training needs the MNIST training and test images, which are not on this server. "
            + available["mnist"][1].replace("Drawing and uploading still work.", "")
            + " Then reload this page. Nothing is trained without them.")
    st.stop()
# Trainings fork from multiprocessing's fork server, which imports torch once (~3 s, in its own process, ~300 MB PSS
# for the server's life); started as soon as someone opens this page, a training then starts in a fraction of a second.
tj.start_fork_server()

restore_builder(datasets)

job = ui.training_job()
busy = job is not None and job.state in tj.ACTIVE

# ---------------------------------------------------------------------------------------------------------------
st.header("1. Build the network")
left, right = st.columns([1, 2])
with left:
    dataset = "mnist"
    if len(datasets) > 1:
        dataset = st.radio("Data", datasets, format_func=DATASET_LABELS.get, key="train_dataset", disabled=busy,
                           horizontal=True)
    st.selectbox("Start from a preset", list(PRESETS), key="train_preset", on_change=apply_preset, disabled=busy,
                 format_func=lambda name: name.replace(" architecture (18k parameters)", " (18k parameters)"))
    text = st.text_area("Blocks, one per line: conv N (3x3, N channels), conv1x1 N (a 1x1 transition), maxpool "
                        "(2x2), dropout P", key="train_blocks", height=260, disabled=busy)
    activation = st.selectbox("Activation after each convolution", list(ACTIVATIONS), key="train_activation",
                              disabled=busy)
    batch_norm = st.checkbox("Batch norm after each convolution", key="train_bn", disabled=busy)
    head = st.radio("Head", ["gap", "linear"], key="train_head", horizontal=True, disabled=busy,
                    format_func={"gap": "1x1 conv + global average pool", "linear": "flatten + linear"}.get)

spec = REGISTRY[dataset]
cfg: NetworkConfig | None = None
with right:
    try:
        cfg = NetworkConfig(parse_blocks(text), activation, batch_norm, head, spec.input_shape, len(spec.classes))
        rows = validate(cfg)
    except BuildError as exc:
        cfg = None
        st.error(f"This network cannot be trained here: {exc}. Limits: {MAX_WEIGHT_LAYERS} layers with weights, "
                 f"{fmt(MAX_PARAMETERS)} parameters, maps of at least 1x1.")
    if cfg is not None:
        table = pd.DataFrame([{"layer": r.name, "kind": r.kind, "output shape": " x ".join(map(str, r.output_shape)),
                               "parameters": r.params, "receptive field (px)": r.receptive_field}
                              for r in rows])
        if ui.projector():  # a table's text grows with the page's; a dataframe's is drawn at 14 px
            st.table(table.set_index("layer"))
        else:
            st.dataframe(table, hide_index=True, width="stretch", height=min(36 * (len(rows) + 1) + 4, 640))
        last_conv = [r for r in rows if r.kind == "conv" and r.name != "classifier"]
        st.markdown(f"**Total: {fmt(sum(r.params for r in rows))} parameters** in {len(rows)} layers. "
                    + (f"The last convolution's cells each see {fmt(last_conv[-1].receptive_field)} x "
                       f"{fmt(last_conv[-1].receptive_field)} input pixels (receptive field: r grows by (k - 1) x "
                       "jump per layer, and each max-pool doubles the jump)." if last_conv else ""))

# ---------------------------------------------------------------------------------------------------------------
st.header("2. Choose how it learns")
c1, c2, c3, c4 = st.columns(4)
optimizer = c1.selectbox("Optimizer", list(OPTIMIZER_LABELS), format_func=OPTIMIZER_LABELS.get,
                         key="train_optimizer", disabled=busy,
                         help="SGD + momentum: momentum 0.9 (Nesterov) and weight decay 1e-4.")
lr = c1.number_input("Learning rate (peak, for one-cycle)", min_value=1e-5, max_value=10.0, format="%.4f",
                     key="train_lr", disabled=busy)
schedule = c2.radio("Learning-rate schedule", ["constant", "onecycle"], key="train_schedule", disabled=busy,
                    format_func={"constant": "constant", "onecycle": "one-cycle (warm up, then anneal)"}.get)
batch_size = c2.selectbox("Batch size", BATCH_SIZES, key="train_batch", disabled=busy)
per_epoch = math.ceil(60_000 / batch_size) if dataset == "mnist" else math.ceil(50_000 / batch_size)
steps = int(c3.number_input(f"Steps (one epoch = {fmt(per_epoch)} steps; at most {fmt(tj.MAX_STEPS)})",
                            min_value=1, max_value=tj.MAX_STEPS, step=100, key="train_steps", disabled=busy))
c3.caption(f"{fmt(round(steps / per_epoch, 2))} epochs")
augment = c4.checkbox("Augmentation (small random rotation, shift and scale)" if dataset == "mnist" else
                      "Augmentation (random crop and flip)", key="train_augment", disabled=busy)
seed = int(c4.number_input("Seed (same seed and settings: identical weights)", min_value=0, max_value=2**31 - 1,
                           key="train_seed", disabled=busy))
settings = Settings(optimizer=optimizer, lr=float(lr), schedule=schedule, batch_size=int(batch_size), steps=steps,
                    augment=augment, seed=seed, weight_decay=1e-4 if optimizer == "momentum" else 0.0)
keep_builder(text, datasets)
ui.link_button("Anyone who opens this link gets this network and these settings, ready to train (the training "
               "itself and its result are not in links).")

running, waiting = tj.JOBS.counts()
st.caption(f"This server trains at most {fmt(tj.JOBS.limit)} networks at once ({fmt(running)} training, "
           f"{fmt(waiting)} waiting), one per browser session, each in a process of its own on {fmt(tj.THREADS)} CPU "
           "thread(s), at a lower priority than the pages.")
if st.button("Start training", key="train_start", type="primary", disabled=busy or cfg is None):
    try:
        job = ui.start_training(cfg, settings, dataset)
        busy = True
    except tj.JobError as exc:
        st.error(f"Training not started: {exc}")


# ---------------------------------------------------------------------------------------------------------------
def _line(points, name: str, color: str) -> dict:
    return {"type": "scatter", "mode": "lines", "x": [p[0] for p in points], "y": [p[1] for p in points],
            "name": name, "line": {"color": color, "width": 2}}


def _figure(data: list[dict], y_title: str, log_y: bool = False, height: int = 260, legend: bool = False) -> dict:
    px = ui.text_px(13)  # every text's size set here: Streamlit's chart theme would draw ticks and legend at 12
    axis = {"tickfont": {"size": px}}
    return {"data": data, "layout": {
        "height": height, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "font": {"size": px},
        "xaxis": {"title": {"text": "step", "font": {"size": px}}, **axis},
        "yaxis": {"title": {"text": y_title, "font": {"size": px}}, **axis,
                  **({"type": "log", "exponentformat": "power"} if log_y else {})},
        "showlegend": legend, "legend": {"orientation": "h", "y": -0.35, "font": {"size": px}}}}


PALETTE = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e", "#ad1457", "#283593",
           "#9e9d24"]


def show_progress(p: tj.Progress) -> None:
    """The status line (test hook), the controls, the progress bar and every live view."""
    with st.container(key="train_status"):
        accuracy = f"accuracy {p.accuracy:.1f}%" if p.accuracy is not None else "accuracy not measured yet"
        st.markdown(f"**{STATE_WORDS[p.state]}** · step {fmt(p.step)} of {fmt(p.steps)} · epoch {fmt(p.epoch)} · "
                    f"held-out {accuracy}")
    if p.state == "queued":
        st.info(f"Waiting for a free place: you are number {fmt(p.queue_position)} in the queue. Trainings of "
                "other people are using this server's places; yours starts as soon as one ends.")
    if p.state == "starting":
        st.info("Starting: your training gets a process of its own on the server, which reads the training images "
                "first (under a second; a few seconds for the first training after the server started).")
    if p.message and p.state in ("stopped", "failed"):
        (st.error if p.state == "failed" else st.info)(p.message)
    b1, b2, _ = st.columns([1, 1, 5])
    if p.state == "running" and b1.button("Pause", key="train_pause"):
        job.pause()
        st.rerun(scope="app")
    if p.state == "paused" and b1.button("Resume", key="train_resume"):
        job.resume()
        st.rerun(scope="app")
    if p.state in tj.ACTIVE and b2.button("Stop", key="train_stop"):
        job.stop()
        st.rerun(scope="app")
    left = f", about {fmt(round(p.seconds_left))} s left" if p.seconds_left is not None and p.state == "running" else ""
    st.progress(min(p.step / p.steps, 1.0),
                text=f"{fmt(p.step)} / {fmt(p.steps)} steps, {fmt(round(p.steps_per_s, 1))} steps/s{left}")
    if not p.loss:
        return
    c1, c2, c3 = st.columns(3)
    c1.plotly_chart(_figure([_line(p.loss, "training loss", PALETTE[0])], "training loss", log_y=True),
                    key="train_loss_chart")
    c2.plotly_chart(_figure([_line(p.held_out, "held-out accuracy", PALETTE[1])], "held-out accuracy (%)"),
                    key="train_acc_chart")
    c3.plotly_chart(_figure([_line(p.lr, "learning rate", PALETTE[2])], "learning rate"), key="train_lr_chart")
    st.subheader("Gradient size per layer over time")
    st.caption("||dL/dW|| of each layer with weights, log scale. When the lines of the first layers sit decades "
               "below the last ones, the gradient is vanishing on its way back (try the deep sigmoid preset).")
    lines = [_line(pts, name, PALETTE[i % len(PALETTE)]) for i, (name, pts) in enumerate(p.grad_norms.items())]
    st.plotly_chart(_figure(lines, "||dL/dW||", log_y=True, height=330, legend=True), key="train_norm_chart")
    f1, f2 = st.columns([1, 2])
    if p.filters is not None:
        filters = p.filters.mean(axis=1) if p.filters.shape[1] > 1 else p.filters[:, 0]  # (C_out, k, k)
        f1.image(tile_maps(filters, signed=True, cell_px=48), caption=f"First layer's {fmt(len(filters))} filters "
                 "(blue negative, red positive" + (", averaged over input channels)" if p.filters.shape[1] > 1
                                                   else ")"))
    if p.digit is not None and p.maps:
        names = list(p.maps)
        shown = names[:1] + names[-1:] if len(names) > 1 else names
        with f2:
            pred = int(np.argmax(p.digit_probs)) if p.digit_probs is not None else None
            st.markdown(f"A fixed test picture (true class {REGISTRY[job.dataset].classes[p.digit_label]}); the "
                        f"network says **{REGISTRY[job.dataset].classes[pred]}** with probability "
                        f"{fmt(float(p.digit_probs[pred]), 3)}.")
            for name in shown:
                st.image(tile_maps(p.maps[name], cell_px=40), caption=f"{name}: {fmt(p.maps[name].shape[0])} "
                         "feature maps of that picture, now")


if job is not None:
    st.header("3. Watch it learn")
    progress = job.progress()

    @st.fragment(run_every=1.0 if progress.state in tj.ACTIVE else None)
    def live() -> None:
        p = job.progress()
        show_progress(p)
        if busy and p.state not in tj.ACTIVE:
            st.rerun(scope="app")  # finished: redraw the page once with the result and the widgets enabled

    live()

result = ui.session_model()
if result is not None and not busy:
    model, card = result
    st.header("4. Your model")
    chance = 100 / len(card.classes)
    learned = card.test_accuracy is not None and card.test_accuracy >= 1.5 * chance
    (st.success if learned else st.warning)(
        f"Your model scores **{card.test_accuracy:.2f}%** on the {fmt(10_000)} {spec.dataset} test images after "
        f"{fmt(card.training_time_s)} s of training" + ("." if learned else
        f": about what guessing scores ({fmt(chance)}% for {len(card.classes)} classes), so it has not learned. "
        "A deep stack of sigmoids without batch norm passes back almost no gradient to its first layers: look at "
        "the gradient norms above, then try ReLU, batch norm, fewer layers or more steps.") +
        " It is in the Network explorer's model choice as **Your model** for this session.")
    weights, card_json = ui.session_cached("train_download", (id(model),), lambda: to_bytes(model, card), size=2)
    d1, d2, d3 = st.columns(3)
    d1.download_button("Download the weights (.safetensors)", weights, file_name="my_cnn.safetensors",
                       mime="application/octet-stream", key="train_download_weights")
    d2.download_button("Download its card (.json)", card_json, file_name="my_cnn.json", mime="application/json",
                       key="train_download_card")
    if d3.button("Open it in the Network explorer", key="train_open_explorer", icon=":material/draw:"):
        st.session_state["model_name"] = "yours"  # the explorer's model choice, also where a link set it before
        try:
            st.switch_page("app_pages/explorer.py", query_params={"model": "yours"})
        except StreamlitAPIException:  # the page run on its own (no navigation): say where to go
            d3.info("Open the Network explorer and choose Your model.")
    st.caption("Upload both files with the Network explorer's Load button, here or on another cnnviz server, to "
               "explore the network again.")
