"""cnnviz: watch a convolutional neural network think and learn.  Run with `streamlit run app.py`.

The page registry (SECTIONS) and st.navigation inside run(). Page files live in app_pages/, not pages/: a pages/
folder makes a fresh server serve a deep link as a legacy page, bypassing st.navigation (docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    url_path: str
    summary: str


HOME = PageSpec("app_pages/home.py", "Home", ":material/home:", "home", "What cnnviz teaches.")

SECTIONS: dict[str, tuple[PageSpec, ...]] = {
    "Explore a trained CNN": (
        PageSpec("app_pages/explorer.py", "Network explorer", ":material/draw:", "explorer",
                 "Draw a digit (or pick a photo) and watch every layer of a trained CNN compute, then walk the "
                 "gradient back from the loss to the pixels with one slider."),
        PageSpec("app_pages/digit_sum.py", "Digit-sum challenge", ":material/functions:", "digit_sum",
                 "Classify ten test digits and compare the sum of the predictions with the true sum."),
        PageSpec("app_pages/train.py", "Train a CNN", ":material/model_training:", "train",
                 "Build a CNN from blocks, watch it learn live (loss, accuracy, filters, gradients), then explore "
                 "it or take it home."),
    ),
    "Backprop by hand": (
        PageSpec("app_pages/graph.py", "Computational graph", ":material/account_tree:", "graph",
                 "f = (x + y) z and your own expressions: values forward, gradients backward, one node at a time."),
        PageSpec("app_pages/mlp.py", "Step-by-step MLP", ":material/hub:", "mlp",
                 "Tiny networks from the worked examples: every value, gradient and weight update, step by step."),
        PageSpec("app_pages/conv_lab.py", "Convolution & pooling lab", ":material/grid_on:", "conv_lab",
                 "Convolution, pooling and ReLU forward and backward on small matrices you can edit."),
    ),
}

ALL_PAGES: tuple[PageSpec, ...] = (HOME,) + tuple(p for pages in SECTIONS.values() for p in pages)

# torch's intra-op threads per server process. One: on a single picture a second thread saves little time and doubles
# the CPU a capture costs (OpenMP's waiting threads spin). A class's cores are used by several server processes
# (cnnviz.serve), and trainings run in processes of their own. Figures: docs/performance.md.
TORCH_THREADS = 1


def run() -> None:
    import streamlit as st
    import torch

    from cnnviz import heap_trim, nodelay, ui

    # freed memory goes back to the system after a class leaves, closed sessions' state included (cnnviz/heap_trim.py)
    heap_trim.start(before_collect=ui.expire_closed_sessions)
    nodelay.enable()  # each websocket message leaves when written, not after the browser's delayed ACK
    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)

    st.set_page_config(page_title="cnnviz", page_icon=":material/visibility:", layout="wide")

    def page(spec: PageSpec, default: bool = False):
        return st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=default)

    navigation = {"": [page(HOME, default=True)]}
    navigation.update({section: [page(p) for p in pages] for section, pages in SECTIONS.items()})
    current = st.navigation(navigation)
    st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 2.2rem; padding-bottom: 3rem;}</style>")
    ui.projector_toggle()
    if st.context.cookies.get("CNNVIZ_MOVED") and not st.session_state.get("_cnnviz_moved_told"):
        st.session_state["_cnnviz_moved_told"] = True  # HAProxy's cookie: this browser's server stopped (see deploy/)
        st.toast("The server you were on stopped, so you are now on another one. Pick your input again if it "
                 "is gone; everything else works as before.", icon=":material/sync:")
    current.run()


if __name__ == "__main__":
    run()
