"""Network explorer: draw a digit (or pick a photo), watch every layer compute, then walk the gradient back.

Thin: read the widgets and the URL -> one capture per input (cached per session) -> the chosen view draws it.
"""

from __future__ import annotations

import streamlit as st

from app_pages.explorer_views import backward, forward, info, learn
from app_pages.explorer_views.context import VIEWS, Ctx, traces
from cnnviz import ui
from cnnviz.engine.checkpoints import CheckpointError, available_stages, load_uploaded_pair
from cnnviz.engine.pictures import EmptyImage, ImageError, preprocess, unnormalize
from cnnviz.numbers import fmt, fmt_close_to_one
from cnnviz.render import inspect as figs
from cnnviz.render.network import pixels_image

MODELS = {"mnist": "MNIST digits", "cifar10": "CIFAR-10 photos", "yours": "Your model"}
STAGES = {"final": "fully trained", "epoch1": "after 1 epoch", "init": "random init"}
OBJECTIVES = {"loss": "cross-entropy loss", "logit": "the class's logit"}


heading, load_box, link_box = st.columns([6, 1, 1], vertical_alignment="bottom")
heading.title("Network explorer")
st.caption("Draw or pick an input, watch every layer compute, walk the gradient back to the pixels: every number "
           "is PyTorch's own.")

controls = st.columns(4, vertical_alignment="bottom")
top = st.columns([1, 1.3], gap="medium")

# ------------------------------------------------------------------------------------------------- model, weights
with load_box:
    with st.popover("Load", icon=":material/upload_file:", help="Load your own network: its weights and card"):
        st.caption("Explore a network trained elsewhere with cnnviz (the Train a CNN page or `python -m "
                   "cnnviz.train`): its .safetensors weights and .json card. Nothing is unpickled.")
        weights_file = st.file_uploader("weights (.safetensors)", type=["safetensors"], key="up_weights")
        card_file = st.file_uploader("card (.json)", type=["json"], key="up_card")
        if weights_file is not None and card_file is not None:
            pair = (weights_file.file_id, card_file.file_id)
            try:
                if st.session_state.get("_uploaded_pair") != pair:  # each new pair becomes Your model once
                    ui.add_uploaded_model(load_uploaded_pair(weights_file.getvalue(), card_file.getvalue(),
                                                             weights_file.name, card_file.name), weights_file.name)
                    st.session_state["_uploaded_pair"] = pair
                    st.session_state["model_name"] = "yours"
                st.success(f"Loaded {weights_file.name}: it is \"Your model\" now.")
            except (CheckpointError, ValueError) as exc:
                st.error(f"This checkpoint cannot be used: {exc}")
with controls[0]:
    yours = ui.your_model()
    models = [m for m in MODELS if m != "yours" or yours is not None]
    ui.seed_from_url("model", "model_name", ui.one_of(models), "model")
    name = st.selectbox("Model", models, key="model_name", format_func=MODELS.get)
stages = [s for s in ("final", "epoch1", "init") if s in available_stages(name)] if name != "yours" else []
stage = "final"
with controls[1]:
    if len(stages) > 1:
        ui.seed_from_url("weights", f"stage_{name}", ui.one_of(stages), "weights")
        stage = st.selectbox("Weights", stages, format_func=STAGES.get, key=f"stage_{name}",
                             help="Snapshots taken while the network learned: compare the same input's maps.")
    else:
        st.selectbox("Weights", ["as trained"], disabled=True, key=f"stage_{name}_only")
if name == "yours":  # its identity stands for the weights stage in every cache key: another network, other results
    loaded, stage = (yours.model, yours.card), yours.identity
else:
    loaded = ui.get_model(name, stage)
if loaded is None:
    with top[1]:
        st.info(f"Train it with `python -m cnnviz.train {name}`, or choose the other model.")
    st.stop()
model, card = loaded
is_digits = card.input_shape[0] == 1
data = card.name  # the test set the pickers read: the card's dataset (also Your model's)

# ---------------------------------------------------------------------------------------------------------- input
with top[0]:
    if name == "yours":  # which network "Your model" is: the one trained or uploaded last
        st.caption(f"Your model: {card.param_count:,} parameters, {yours.origin}.", width="stretch")
    sources = (["Draw"] if is_digits else []) + ["Test sample", "Mistakes", "Upload"]
    if ui.seed_from_url("sample", f"sample_{name}_index", ui.sample_index_parser(data), "sample"):
        st.session_state[f"source_{name}"] = "Test sample"  # a link's sample opens the test-sample picker
    source = st.radio("Input", sources, horizontal=True, key=f"source_{name}", label_visibility="collapsed")
    picked, note = None, None
    if source == "Draw":
        picked = ui.canvas_input("canvas", size=240)
        if picked is None:
            picked = ui.teaching_sample(data, ui.examples_for(name, stage, model, card), card.classes)
            note = "Until you draw, this is a test image the model finds hard." if picked is not None else None
    elif source == "Test sample":
        ex = ui.examples_for(name, stage, model, card)
        if f"sample_{name}_index" not in st.session_state and ex is not None and ex.hard:
            st.session_state[f"sample_{name}_index"] = ex.hard[0].index  # start on a test image the model finds hard
        picked = ui.sample_input(data, card.classes, key=f"sample_{name}")
    elif source == "Mistakes":
        picked = ui.mistake_input(data, ui.examples_for(name, stage, model, card), card.classes,
                                  key=f"mistake_{name}_{stage}")
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
    if x is None:
        st.info("Draw a digit on the canvas (or pick a sample) to see the network's prediction."
                if source == "Draw" else "Pick an input to see the network's prediction.")
        st.stop()
    key_x = ui.digest(x)
    first, _ = traces(name, stage, model, x, key_x, None, "loss")
    with st.container(key="prediction"):  # first on the page after a new input: the answer before the working
        p = float(first.probs[first.pred])
        verdict = ""
        if picked.label is not None:
            verdict = " (correct)" if first.pred == picked.label else f" (true: {card.classes[picked.label]})"
        st.markdown(f"### Prediction: {card.classes[first.pred]} ({p:.1%}){verdict}")
        sure_note = st.container()  # written once the backward target is known
    pic, bars = st.columns([1, 1.3])
    pic.image(pixels_image(unnormalize(x[0].numpy(), card), size=112), width=112)
    words = pic
    words.caption(f"What the network receives: {card.input_shape[1]}x{card.input_shape[2]}, {picked.description}."
                  + (" Cropped to the ink, scaled to 20 px and centred by mass, as MNIST's digits were."
                     if is_digits and picked.source != "sample" else ""))
    if note:
        words.caption(note)
    if source == "Draw":
        words.caption("Draw one digit, large, in the middle of the canvas (Undo and Clear are under it).")

# ------------------------------------------------------------------------------------------- target, objective
default_target = picked.label if picked.label is not None else first.pred
auto = st.session_state.get("_target_auto")  # the class the page chose, until the learner chooses one
if st.session_state.get("_target_for") != (card.classes, key_x) \
        or (auto is not None and st.session_state.get("_target") == auto != default_target):
    # a new input, or another model's prediction: its true or predicted class; a class the learner chose is kept
    # when only the model changes (to one with the same classes)
    st.session_state["_target_for"] = (card.classes, key_x)
    st.session_state["_target"] = st.session_state["target"] = st.session_state["_target_auto"] = default_target
if "target" not in st.session_state:  # Streamlit drops a widget's state after a run that did not draw it
    st.session_state["target"] = st.session_state.get("_target", default_target)
k = len(card.classes)
ui.seed_from_url("target", "target", lambda t: ui.index_in(t, k, "class index"), "target")
ui.seed_from_url("objective", "objective", ui.one_of(list(OBJECTIVES)), "objective")
with controls[2]:
    target = st.selectbox("Explain class", range(k), format_func=lambda i: card.classes[i], key="target",
                          help="The backward target: the class whose loss (or logit) the backward pass "
                               "differentiates.")
    st.session_state["_target"] = target
    if target != st.session_state.get("_target_auto"):
        st.session_state["_target_auto"] = None  # the learner's choice from now on
with controls[3]:
    objective = st.selectbox("Differentiate", list(OBJECTIVES), key="objective", format_func=OBJECTIVES.get)
with top[1]:
    labels = [f"{c} (target)" if i == target and target != first.pred else c for i, c in enumerate(card.classes)]
    with bars.container(key="probs"):
        st.html(figs.bars_html(first.probs, labels, first.pred, ui.text_px(13)))

first, trace = traces(name, stage, model, x, key_x, target, objective)
with sure_note:
    p_target = float(first.probs[target])
    if target == first.pred and p_target > 0.99 and objective == "loss":
        runner = int(first.probs.argsort()[-2])
        st.caption(f"p = {fmt_close_to_one(p_target)}: so sure that the loss's gradient is tiny everywhere.")
        st.button(f"Explain the runner-up instead: {card.classes[runner]}", key="runner_up",
                  on_click=lambda r=runner: st.session_state.update(target=r))
    elif target != first.pred and p > 0.99 and objective == "loss":  # a mistake, or a class the learner chose
        t = card.classes[target]
        st.caption(("Sure, and wrong: the true class " if target == picked.label else "Sure it is not ")
                   + f"{t} (p = {fmt(p_target, 3)}), so the loss for {t} is {fmt(trace.loss, 3)} and its gradient is "
                   f"large: the backward pass shows what would move the answer towards {t}.")
ctx = Ctx(name, stage, model, card, x, key_x, picked.label, picked.description, first, trace)

# ------------------------------------------------------------------------------------------------------- the view
ui.seed_from_url("view", "view", ui.one_of(list(VIEWS)), "view")
view = st.segmented_control("View", list(VIEWS), format_func=VIEWS.get, default="forward", key="view",
                            label_visibility="collapsed") or "forward"
shared = False
if view in ("forward", "backward"):
    guide, scale = st.columns([3, 1], vertical_alignment="center")
    guide.caption("Click a layer to open it below, a map to pick its channel, a cell of the large maps to pick that "
                  "cell; hover a map for its values." if view == "forward" else "The gradient flows from the loss "
                  "back to the pixels: Play walks it, a click opens a layer's rule below (blue negative, red "
                  "positive).")
    shared = scale.toggle("One colour scale", key="shared_scale" if view == "forward" else "shared_scale_bw",
                          help="Off: each layer on its own scale (see every pattern). On: one scale for every layer, "
                               "so vanishing and exploding values show as faint or saturated layers.")
layer_names = [r.name for r in ctx.layers]
if view == "forward":
    def layer_index(text: str) -> int:
        if text not in layer_names:
            raise ui.BadLinkValue(f"this model has no layer named {text!r}")
        return layer_names.index(text)

    ui.seed_from_url("layer", forward.STEP_KEY, layer_index, "layer")
elif view == "backward":
    ui.seed_from_url("layer", backward.STEP_KEY, lambda t: backward.url_value(ctx, t), "layer")
ui.write_url(model=name, weights=stage if len(stages) > 1 else None,
             sample=picked.index if picked.source == "sample" else None,
             target=target, objective=objective, view=view, layer=None if view not in ("forward", "backward") else
             st.query_params.get("layer"))
with link_box:
    ui.link_button("A drawn digit or an upload is not put in the link; a test sample is (by its index)."
                   if picked.source != "sample" else None, label="Link")

if view == "forward":
    forward.show(ctx, shared)
elif view == "backward":
    backward.show(ctx, shared)
elif view == "learn":
    learn.show(ctx)
elif view == "architecture":
    info.architecture_view(ctx)
else:
    info.card_view(ctx)
