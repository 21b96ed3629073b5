"""Records in, figures out: plotly figures, tiled images and DOT drawings. No streamlit, no autograd."""
