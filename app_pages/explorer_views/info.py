"""Architecture and model card views."""

from __future__ import annotations

import streamlit as st

from app_pages.explorer_views.context import KIND_NAMES, Ctx
from cnnviz.engine.layer_rules import architecture
from cnnviz.numbers import fmt
from cnnviz.render.network import training_curve


def architecture_view(ctx: Ctx) -> None:
    rows = architecture(ctx.model, ctx.trace)
    st.table({"layer": [r.name for r in rows], "type": [KIND_NAMES.get(r.kind, r.kind) for r in rows],
              "output shape": [" x ".join(map(str, r.output_shape)) for r in rows],
              "parameters": [f"{r.params:,}" for r in rows],
              "receptive field (px)": [r.receptive_field for r in rows]})
    st.markdown(f"**Total: {sum(r.params for r in rows):,} parameters** in {len(rows)} layers. The receptive field "
                "is how many input pixels (per side) one cell of that layer can see, computed from kernel sizes "
                "and strides: r_out = r_in + (k - 1) x jump, jump_out = jump x stride.")
    st.markdown("- **1x1 convolution**: mixes channels at each pixel without looking at neighbours; cheap way to "
                "shrink or grow the channel count.\n"
                "- **Transition block** (1x1 conv + max-pool): squeezes the channels, then halves the map, so the "
                "next block sees a wider area for little cost.\n"
                "- **Global average pooling**: averages each channel's map to one number, so the head needs no big "
                "fully connected layer and does not care where in the image a feature is.")


def card_view(ctx: Ctx) -> None:
    card = ctx.card
    m = st.columns(4)
    m[0].metric("test accuracy", f"{card.test_accuracy:.2f}%" if card.test_accuracy is not None else "n/a")
    m[1].metric("parameters", f"{card.param_count:,}")
    m[2].metric("epochs", card.epochs)
    m[3].metric("training time", f"{fmt(card.training_time_s / 60, 2)} min" if card.training_time_s else "n/a")
    st.caption(f"Measured on {card.dataset}, {card.split} split. Seed {card.seed}. {card.date}")
    curve = training_curve(card.history)
    if curve is not None:
        st.plotly_chart(curve, key="curve")
    if card.notes:
        st.markdown(card.notes)
