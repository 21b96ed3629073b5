"""Placeholder until its issue lands."""

import streamlit as st

st.title("Computational graph")
st.info("This page is being built. Its issue is open; nothing here is finished yet.")
