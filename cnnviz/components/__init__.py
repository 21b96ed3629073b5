"""cnnviz's own Streamlit components (Components v2): HTML, CSS and JavaScript beside a small Python wrapper."""
