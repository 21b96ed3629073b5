"""Placeholder until its issue lands."""

import streamlit as st

st.title("Step-by-step MLP")
st.info("This page is being built. Its issue is open; nothing here is finished yet.")
