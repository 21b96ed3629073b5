"""Pencil-and-paper math on floats and numpy for the hand-worked pages. Imports neither torch nor streamlit."""
