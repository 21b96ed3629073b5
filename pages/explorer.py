"""Placeholder until its issue lands."""

import streamlit as st

st.title("Network explorer")
st.info("This page is being built. Its issue is open; nothing here is finished yet.")
