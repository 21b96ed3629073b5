"""The Network explorer's views: each takes the explorer's context (model, card, input, traces) and draws one view.

Only the chosen view runs (a segmented control, not st.tabs, which runs every tab)."""
