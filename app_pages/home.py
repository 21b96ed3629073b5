"""Home: what cnnviz teaches, a suggested first lesson, a picture of the explorer, and a link to each page."""

from pathlib import Path

import streamlit as st
from PIL import Image

from app import SECTIONS
from cnnviz import ui

PICTURE = Path(__file__).resolve().parents[1] / "docs" / "explorer.png"
# The part of the screenshot shown here: the forward view's first four layers. Shown at its own size (1.5x on a
# projector), never shrunk to a column: a whole-app screenshot in half a page is a miniature nobody can read.
PICTURE_CROP = (375, 918, 980, 1190)  # (left, top, right, bottom) in docs/explorer.png's pixels
LESSON = (  # (page path, what to do there): a first lesson of about an hour, from the chain rule to a real CNN
    ("app_pages/graph.py", "Press Play on f = (x + y) z: values flow forward, then the chain rule flows back."),
    ("app_pages/mlp.py", "Step a tiny network's training: every gradient and weight update written out."),
    ("app_pages/conv_lab.py", "A convolution and a max-pool on small matrices, forward and backward, by hand."),
    ("app_pages/explorer.py", "Draw a digit: see every layer of a trained CNN, then Play the backward pass to the "
                              "pixels."),
    ("app_pages/train.py", "Train your own CNN and watch it learn; then explore it in the explorer."),
    ("app_pages/digit_sum.py", "Ten digits, one sum: what a model's mistakes add up to."),
)


@st.cache_resource(show_spinner=False)
def _picture_part(path: str, mtime: float) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB").crop(PICTURE_CROP)
    except (OSError, ValueError):
        return None


st.title("cnnviz: watch a CNN think and learn")
left, right = st.columns([1.15, 1], gap="large")
with left:
    st.markdown(
        "A convolutional neural network turns pixels into a prediction through a stack of simple steps: "
        "convolutions, ReLUs, pooling. It learns by sending the gradient of its loss back through the same steps. "
        "Here you can watch both passes, **number by number and map by map**, on real trained MNIST and CIFAR-10 "
        "models, and follow the same mechanics by hand on examples small enough to check with a pencil. "
        "Every number shown is tested against what PyTorch's autograd computes."
    )
    st.caption("Teachers: every page keeps its state in the address bar (\"Copy link to this view\"), and the "
               "sidebar's projector mode enlarges all text and folds the sidebar away.")
with right:
    st.subheader("A first lesson, in this order")
    specs = {p.path: p for pages in SECTIONS.values() for p in pages}
    for n, (path, what) in enumerate(LESSON, start=1):
        if path in specs:  # the link on a line of its own, so its whole name shows at any width
            with st.container(key=f"lesson_{n}", gap=None):
                st.page_link(path, label=f"{n}. {specs[path].title}", icon=specs[path].icon)
                st.markdown(what)

picture = _picture_part(str(PICTURE), PICTURE.stat().st_mtime) if PICTURE.is_file() else None
if picture is not None:
    with st.container(key="home_picture"):
        st.image(picture, width=round(picture.width * (1.5 if ui.projector() else 1.0)),
                 caption="The Network explorer's forward pass: every layer's feature maps at once, one tile per "
                         "channel, each with its colour scale.")

for section, pages in SECTIONS.items():
    st.subheader(section)
    cols = st.columns(len(pages))
    for col, spec in zip(cols, pages, strict=True):
        with col.container(border=True):
            st.page_link(spec.path, label=spec.title, icon=spec.icon)
            st.caption(spec.summary)
