"""Placeholder until its issue lands."""

import streamlit as st

st.title("Convolution & pooling lab")
st.info("This page is being built. Its issue is open; nothing here is finished yet.")
