"""Computational graph: values forward, gradients backward, one node at a time.

URL state: ``expr`` (the formula), one parameter per variable by its name (``v.<name>`` for a variable called
``expr`` or ``step``) and ``step``. A formula error leaves the last good values and step in ``SAVED``, so going back
to a valid formula finds them again (Streamlit forgets the state of widgets a run does not draw).
"""

import streamlit as st

from cnnviz import ui
from cnnviz.handwork import graph, graph_text
from cnnviz.render import dot

EXPRESSION = "graph_expression"
STEP = "graph_step"
SAVED = "graph_saved"  # {"expr": the walked formula, "step": int, "values": {name: float}, "params": [...]}


def _var_key(name: str) -> str:
    return f"graph_var_{name}"


def _saved() -> dict:
    return st.session_state.setdefault(SAVED, {"expr": None, "step": 0, "values": {}, "params": []})


def _reset() -> None:
    st.session_state[EXPRESSION] = graph.DEFAULT_EXPRESSION
    for name, value in graph.DEFAULT_VALUES.items():
        st.session_state[_var_key(name)] = value
        _saved()["values"][name] = value
    st.session_state[STEP] = 0


def _use_example(text: str) -> None:
    st.session_state[EXPRESSION] = text


def _show_result(last: int) -> None:
    st.session_state[STEP] = last
    st.session_state[f"{STEP}__playing"] = False


st.title("Computational graph")
st.markdown(
    "Any formula is a chain of small operations. The **forward pass** computes every node's value from left to "
    "right; the **backward pass** then sends the gradient of the output back from right to left. Each node "
    "multiplies the gradient arriving from above by its own *local* gradient: that is the chain rule, and it is "
    "all backpropagation does. Start with the classic f = (x + y) z, then type your own formula."
)

ui.seed_from_url("expr", EXPRESSION, graph.parse_link_expression, "formula")
st.session_state.setdefault(EXPRESSION, graph.DEFAULT_EXPRESSION)
top = st.columns([3, 1.2], vertical_alignment="bottom")
expression = top[0].text_input(
    "Expression", key=EXPRESSION,
    help=f"Numbers, variable names, + - * / **, unary minus, parentheses and {', '.join(graph.FUNCTIONS)}. "
         f"At most {graph.MAX_CHARS} characters and {graph.MAX_NODES} nodes. Press Enter to apply.",
)
top[1].button("Reset to the worked example", on_click=_reset, icon=":material/restart_alt:", width="stretch")
example_cols = st.columns(len(graph.EXAMPLES) + 1, vertical_alignment="center")
example_cols[0].caption("Examples:")
for col, text in zip(example_cols[1:], graph.EXAMPLES, strict=True):
    col.button(text, key=f"graph_example_{text}", on_click=_use_example, args=(text,), type="tertiary")

try:
    parsed = graph.parse_expression(expression)
except graph.GraphError as exc:
    st.error(f"{exc}", icon=":material/error:")
    st.caption("The values and the step of the last formula that worked are kept for when it is valid again.")
    st.stop()

saved = _saved()
defaults = graph.default_values(parsed.variables)
value_cols = st.columns(min(len(parsed.variables), 6))
values = {}
for i, name in enumerate(parsed.variables):
    key = _var_key(name)
    if key not in st.session_state:  # first use, or a run (formula error) that did not draw it
        st.session_state[key] = saved["values"].get(name, defaults[name])
    ui.seed_from_url(graph.variable_param(name), key, graph.parse_link_value, f"value of {name}")
    values[name] = value_cols[i % len(value_cols)].number_input(name, key=key, step=1.0, format="%g")
    saved["values"][name] = values[name]

try:
    g = graph.build_graph(expression, values)
except graph.GraphError as exc:
    st.error(f"{exc}", icon=":material/error:")
    st.stop()

count = len(g.steps)
if saved["expr"] != g.expression:  # a new formula: its walk starts at step 0
    st.session_state[STEP] = 0
    saved["expr"] = g.expression
elif STEP not in st.session_state:  # back from a formula error: the step it was at
    st.session_state[STEP] = min(saved["step"], count - 1)
ui.seed_from_url("step", STEP, lambda raw: graph.parse_link_step(raw, count))

params = {graph.variable_param(v): graph.exact_text(values[v]) for v in g.variables}
ui.write_url(expr=g.expression, **params, **{p: None for p in saved["params"] if p not in params})
saved["params"] = list(params)

for warning in g.warnings:
    st.warning(warning, icon=":material/warning:")
if g.shared:
    used = ", ".join(g.shared)
    st.info(f"{used} {'is' if len(g.shared) == 1 else 'are'} used more than once. A variable that feeds several "
            "operations collects a gradient along each path, and the paths **add up** (watch its backward step).",
            icon=":material/call_split:")


@st.fragment(run_every=ui.play_interval(STEP))
def walk(g: graph.ComputationalGraph, font_px: int) -> None:
    """The walk-through and everything it changes; only this part reruns when the step moves or plays."""
    last = len(g.steps) - 1
    index = ui.stepper(STEP, len(g.steps), "Step through the forward pass, then the backward pass",
                       help="Each position shows one node's value (forward) or gradient (backward).")
    _saved()["step"] = index
    ui.write_url(step=index)
    row = st.columns([3, 1.5, 1.9], vertical_alignment="center")
    row[0].markdown(f"**{graph_text.step_heading(g, index)}** (step {index} of {last})")
    row[1].button("Show the result", key="graph_show_result", on_click=_show_result, args=(last,),
                  icon=":material/fast_forward:", disabled=index == last, width="stretch")
    with row[2]:
        ui.link_button("Anyone who opens this link sees this formula, these values and this step.")
    step = g.steps[index]
    st.code(step.equation, language=None, wrap_lines=True)
    for detail in step.details:
        st.caption(detail)
    if index == last:
        st.success(graph_text.summary(g), icon=":material/functions:")
    st.html(dot.graph_text_css(font_px))
    st.graphviz_chart(dot.graph_dot(g, index, font_px), width="content")  # natural size; narrower screens shrink it
    st.caption(f"Boxes are values (green) with their gradient d{g.output_name}/d· (red); circles are operations. "
               "The highlighted box is the node of this step, the pale ones are the nodes it reads; "
               "**?** means that pass has not reached the node yet. Hover a box for its numbers.")
    forward, backward = graph_text.passes_so_far(g, index)
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Forward pass so far**")
        st.code(forward, language=None, wrap_lines=True)
    with right:
        st.markdown("**Backward pass so far** (the chain rule, numbers in)")
        st.code(backward, language=None, wrap_lines=True)


walk(g, ui.text_px(15))

with st.expander("Every node as a table"):
    st.dataframe(graph_text.table_rows(g), hide_index=True, width="stretch")
ui.show_code(graph.torch_code(g), "Check it with PyTorch autograd")
