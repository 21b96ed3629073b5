"""Computational graph: values forward, gradients backward, one node at a time."""

import streamlit as st

from cnnviz.handwork import graph
from cnnviz.render import dot
from cnnviz.ui import show_code

EXPRESSION = "graph_expression"


def _var_key(name: str) -> str:
    return f"graph_var_{name}"


def _reset() -> None:
    st.session_state[EXPRESSION] = graph.DEFAULT_EXPRESSION
    for name, value in graph.DEFAULT_VALUES.items():
        st.session_state[_var_key(name)] = value


def _use_example(text: str) -> None:
    st.session_state[EXPRESSION] = text


def _move(key: str, delta: int, last: int) -> None:
    st.session_state[key] = max(0, min(last, st.session_state.get(key, last) + delta))


st.title("Computational graph")
st.markdown(
    "Any formula is a chain of small operations. The **forward pass** computes every node's value from left to "
    "right; the **backward pass** then sends the gradient of the output back from right to left. Each node "
    "multiplies the gradient arriving from above by its own *local* gradient: that is the chain rule, and it is "
    "all backpropagation does. Start with the classic f = (x + y) z, then type your own formula."
)

st.session_state.setdefault(EXPRESSION, graph.DEFAULT_EXPRESSION)
top = st.columns([3, 1.2], vertical_alignment="bottom")
expression = top[0].text_input(
    "Expression", key=EXPRESSION,
    help=f"Numbers, variable names, + - * / **, unary minus, parentheses and {', '.join(graph.FUNCTIONS)}. "
         f"At most {graph.MAX_CHARS} characters and {graph.MAX_NODES} nodes. Press Enter to apply.",
)
top[1].button("Reset to the worked example", on_click=_reset, icon=":material/restart_alt:",
              width="stretch")
example_cols = st.columns(len(graph.EXAMPLES) + 1, vertical_alignment="center")
example_cols[0].caption("Examples:")
for col, text in zip(example_cols[1:], graph.EXAMPLES, strict=True):
    col.button(text, key=f"graph_example_{text}", on_click=_use_example, args=(text,), type="tertiary")

try:
    parsed = graph.parse_expression(expression)
except graph.GraphError as exc:
    st.error(f"{exc}", icon=":material/error:")
    st.stop()

value_cols = st.columns(min(len(parsed.variables), 6))
values = {}
for i, name in enumerate(parsed.variables):
    st.session_state.setdefault(_var_key(name), graph.default_value(name))
    values[name] = value_cols[i % len(value_cols)].number_input(name, key=_var_key(name), step=1.0, format="%g")

try:
    g = graph.build_graph(expression, values)
except graph.GraphError as exc:
    st.error(f"{exc}", icon=":material/error:")
    st.stop()

for warning in g.warnings:
    st.warning(warning, icon=":material/warning:")
if g.shared:
    used = ", ".join(g.shared)
    st.info(f"{used} {'is' if len(g.shared) == 1 else 'are'} used more than once. A variable that feeds several "
            "operations collects a gradient along each path, and the paths **add up** (watch its backward step).",
            icon=":material/call_split:")
out = g.output_name
result = ", ".join(f"d{out}/d{v} = {graph.fmt(g.by_name(v).grad)}" for v in g.variables)
st.success(f"{out} = {graph.fmt(g.node(g.output).value)}  ·  {result}", icon=":material/functions:")


@st.fragment
def walk(g: graph.ComputationalGraph) -> None:
    """The step slider and everything it changes; only this part reruns when it moves."""
    last = len(g.steps) - 1
    key = f"graph_step::{g.expression}::{last}"
    st.session_state.setdefault(key, last)
    index = st.slider(
        "Step through the forward pass, then the backward pass", 0, last, key=key,
        help="Drag to 0 to start from the first input; every position shows one node's value or gradient.",
    )
    step = g.steps[index]
    n_forward = len(g.forward_steps)
    if step.phase == "forward":
        heading = f"Forward pass: node {index + 1} of {n_forward}"
    else:
        heading = f"Backward pass: node {index - n_forward + 1} of {len(g.backward_steps)}"
    row = st.columns([1, 1, 10], vertical_alignment="center")
    row[0].button(":material/chevron_left:", key="graph_prev", on_click=_move, args=(key, -1, last),
                  help="Previous step", disabled=index == 0)
    row[1].button(":material/chevron_right:", key="graph_next", on_click=_move, args=(key, 1, last),
                  help="Next step", disabled=index == last)
    row[2].markdown(f"**{heading}** (step {index} of {last})")
    st.code(step.equation, language=None, wrap_lines=True)
    for detail in step.details:
        st.caption(detail)
    # small graphs at their natural size (stretching a 5-node graph makes it huge), larger ones fit the page
    st.graphviz_chart(dot.graph_dot(g, index), width="stretch" if len(g.nodes) > 8 else "content")
    st.caption("Boxes are values (green) with their gradient d" + out + "/d· (red); circles are operations. "
               "The highlighted box is the node of this step, the pale ones are the nodes it reads; "
               "**?** means that pass has not reached the node yet. Hover a box for its numbers.")
    done = g.steps[: index + 1]
    forward = [s.equation for s in done if s.phase == "forward"]
    backward = [s.equation for s in done if s.phase == "backward"]
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Forward pass so far**")
        st.code("\n".join(forward), language=None, wrap_lines=True)
    with right:
        st.markdown("**Backward pass so far** (the chain rule, numbers in)")
        st.code("\n".join(backward) if backward else "(starts after the forward pass)", language=None,
                wrap_lines=True)


walk(g)

with st.expander("Every node as a table"):
    st.dataframe(
        [{"node": n.name, "kind": n.kind, "computed as": n.formula, "value": n.value,
          f"d{out}/d(node)": n.grad} for n in g.nodes],
        hide_index=True, width="stretch",
    )
show_code(graph.torch_code(g), "Check it with PyTorch autograd")
