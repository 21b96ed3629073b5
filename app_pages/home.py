"""Home: what cnnviz teaches, and a link to each page."""

import streamlit as st

from app import SECTIONS

st.title("cnnviz: watch a CNN think and learn")
st.markdown(
    "A convolutional neural network turns pixels into a prediction through a stack of simple steps: "
    "convolutions, ReLUs, pooling. It learns by sending the gradient of its loss back through the same steps. "
    "Here you can watch both passes, **number by number and map by map**, on real trained MNIST and CIFAR-10 "
    "models, and follow the same mechanics by hand on examples small enough to check with a pencil. "
    "Every number shown is tested against what PyTorch's autograd computes."
)
for section, pages in SECTIONS.items():
    st.subheader(section)
    for spec in pages:
        with st.container(border=True):
            st.page_link(spec.path, label=spec.title, icon=spec.icon)
            st.caption(spec.summary)
