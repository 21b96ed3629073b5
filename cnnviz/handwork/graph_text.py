"""The words and equations of the computational-graph walk, built from the records (tested without Streamlit).

Every equation with numbers in it is true as printed: a number is written with 6 significant digits, or with more
when 6 would make the written arithmetic give another result (``1 * (1 - 1) = 2.06115e-09`` becomes
``0.99999999793884631 * (1 - 0.99999999793884631) = 2.06115e-09``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from cnnviz.handwork.graph_ops import OPERATORS, Operator, div
from cnnviz.numbers import fmt

if TYPE_CHECKING:
    from cnnviz.handwork.graph import ComputationalGraph, GraphEdge, GraphNode

DIGITS = (6, 8, 10, 12, 14, 17)  # tried in turn until the written arithmetic gives the printed result


def exact_text(value: float) -> str:
    """A number given to the page (an input, a constant in the formula) with every digit it has: 3.14159265."""
    text = fmt(value)
    return text if float(text) == value else repr(float(value))


def paren(name: str) -> str:
    return f"({name})" if name.startswith("-") or " " in name else name


def fill(template: str, operands: Sequence[str], result: str) -> str:
    """Put names or number texts into an operator's template ({a}/{b} wrapped when needed, {A}/{B} bare)."""
    a = operands[0]
    b = operands[1] if len(operands) > 1 else ""
    return template.format(a=paren(a), b=paren(b), A=a, B=b, y=paren(result))


def formula(op: Operator, names: Sequence[str]) -> str:
    """The operation written with its operands' names: ``x + y``, ``exp(q)``."""
    return fill(op.written, names, "")


def _rounded(value: float, digits: int) -> tuple[str, float]:
    """``value`` printed with ``digits`` significant digits (every digit, shortest form, from 17 on), read back."""
    text = fmt(value, digits) if digits < 17 else exact_text(value)
    if value == 0 and math.copysign(1.0, value) < 0:
        text = "-0"  # 1 / -0 is -inf: the sign of a zero can matter, so an equation shows it
    return text, float(text)


def true_as_written(write: Callable[[int], tuple[str, float]], result: float) -> str:
    """The first text ``write(digits)`` gives whose written arithmetic (its value) prints as ``result`` does."""
    text = ""
    for digits in DIGITS:
        text, value = write(digits)
        if fmt(value) == fmt(result):
            return text
    return text


# ------------------------------------------------------------------------------------------------------ forward
def _numbers(node: GraphNode, by_id: Mapping[str, GraphNode], digits: int) -> tuple[list[str], list[float]]:
    """The operands of ``node`` as printed with ``digits`` (numbers in the formula exactly) and as read back."""
    texts, values = [], []
    for i in node.inputs:
        operand = by_id[i]
        text, value = (operand.name, operand.value) if operand.kind == "const" else _rounded(operand.value, digits)
        texts.append(text)
        values.append(value)
    return texts, values


def _scalar(node: GraphNode, by_id: Mapping[str, GraphNode]) -> bool:
    return node.op == "**" and by_id[node.inputs[1]].kind == "const"


def forward_step(node: GraphNode, by_id: Mapping[str, GraphNode]) -> tuple[str, tuple[str, ...]]:
    """``q = x + y = -2 + 5 = 3``, and a note where the value is undefined (nan) or infinite."""
    if node.kind == "input":
        return f"{node.name} = {exact_text(node.value)}   (input)", ()
    if node.kind == "const":
        return f"{node.name}   (constant)", ()
    op, scalar = OPERATORS[node.op], _scalar(node, by_id)

    def write(digits: int) -> tuple[str, float]:
        texts, values = _numbers(node, by_id, digits)
        return fill(op.written, texts, ""), op.value(values[0], values[1] if len(values) > 1 else 0.0, scalar)

    equation = _chain(node.name, node.formula, true_as_written(write, node.value), fmt(node.value))
    return equation, _undefined_note(node.value, [by_id[i].value for i in node.inputs], "value")


def _undefined_note(result: float, inputs: Sequence[float], what: str) -> tuple[str, ...]:
    if math.isnan(result) and not any(math.isnan(v) for v in inputs):
        return (f"undefined (nan): this {what} has no number in IEEE arithmetic (log or a fractional power of a "
                "negative number, 0/0, inf - inf or 0 * inf); torch gives nan too, and so does everything after it.",)
    if math.isinf(result) and all(math.isfinite(v) for v in inputs):
        return (f"This {what} is too large for float64 (or divides by zero): it is {fmt(result)}, as in torch.",)
    return ()


# ----------------------------------------------------------------------------------------------------- backward
def local_line(edge: GraphEdge, by_id: Mapping[str, GraphNode]) -> str:
    """``dq/dx = z = -4``: the local gradient of one edge, its rule in names, then in numbers."""
    target, source = by_id[edge.target], by_id[edge.source]
    op, scalar = OPERATORS[target.op], _scalar(target, by_id)
    exponent = by_id[target.inputs[1]].value if target.op == "**" else 0.0
    template = op.rules(scalar, exponent)[edge.slot]

    def write(digits: int) -> tuple[str, float]:
        texts, values = _numbers(target, by_id, digits)
        y_text, y = _rounded(target.value, digits)
        b = values[1] if len(values) > 1 else 0.0
        return fill(template, texts, y_text), op.local(values[0], b, y, scalar)[edge.slot]

    local = edge.local_grad if edge.local_grad is not None else math.nan
    return _chain(f"d{target.name}/d{source.name}", edge.local_formula, true_as_written(write, local), fmt(local))


def _term(edge: GraphEdge, by_id: Mapping[str, GraphNode], output: str, digits: int, first: bool) -> tuple[str, float]:
    """This path's share of the gradient as written with numbers, and the value of what is written."""
    target = by_id[edge.target]
    if edge.gated:
        return "0", 0.0
    g_text, upstream = _rounded(target.grad if target.grad is not None else math.nan, digits)
    g_text = g_text if first else paren(g_text)
    if OPERATORS[target.op].divides[edge.slot]:  # torch divides the gradient by the operand: g / b
        divisor = by_id[target.inputs[-1]]
        d_text, d = (divisor.name, divisor.value) if divisor.kind == "const" else _rounded(divisor.value, digits)
        if target.id == output:
            return f"1/{paren(d_text)}", div(1.0, d)
        return f"{g_text} / {paren(d_text)}", div(upstream, d)
    local_text, local = _rounded(edge.local_grad if edge.local_grad is not None else math.nan, digits)
    if target.id == output:
        return (local_text if first else paren(local_text)), local
    return f"{g_text} * {paren(local_text)}", upstream * local


def backward_step(node: GraphNode, uses: Sequence[GraphEdge], by_id: Mapping[str, GraphNode],
                  output: str) -> tuple[str, tuple[str, ...]]:
    """``df/dx = df/dq * dq/dx = -4 * 1 = -4`` (one term per use of ``node``), and the local gradients in words."""
    out = by_id[output].name
    symbol = f"d{out}/d{node.name}"
    if node.id == output:
        return f"{symbol} = 1", (f"The backward pass starts at the output: the gradient of {out} with respect to "
                                 "itself is 1.",)
    details = [f"{local_line(e, by_id)}   (local gradient of {by_id[e.target].name} = {by_id[e.target].formula})"
               for e in uses]
    gated = [e for e in uses if e.gated]
    if gated:
        details.append("A path marked 0 carries no gradient at all (torch writes an exact 0 there, so even an inf "
                       f"or nan arriving from above stops): {', '.join(_gate_reason(e, by_id) for e in gated)}.")
    if len(uses) > 1:
        details.append(f"{node.name} is used {len(uses)} times, so its gradient is the sum of the gradients along "
                       f"all {len(uses)} paths.")
    grad = node.grad if node.grad is not None else math.nan
    if len(uses) == 1 and uses[0].target == output:  # d out/d out = 1: the local rule is the whole answer
        equation = local_line(uses[0], by_id)
    else:
        terms = [(paren(e.local_formula) if len(uses) > 1 else e.local_formula) if e.target == output
                 else f"d{out}/d{by_id[e.target].name} * d{by_id[e.target].name}/d{node.name}" for e in uses]

        def write(digits: int) -> tuple[str, float]:
            parts = [_term(e, by_id, output, digits, first=i == 0) for i, e in enumerate(uses)]
            total = parts[0][1]
            for _, value in parts[1:]:
                total += value
            return " + ".join(text for text, _ in parts), total

        equation = _chain(symbol, " + ".join(terms), true_as_written(write, grad), fmt(grad))
    inputs = [by_id[e.target].grad or 0.0 for e in uses] + [e.local_grad or 0.0 for e in uses]
    return equation, (*details, *_undefined_note(grad, inputs, "gradient"))


def _gate_reason(edge: GraphEdge, by_id: Mapping[str, GraphNode]) -> str:
    target = by_id[edge.target]
    names = [by_id[i].name for i in target.inputs]
    if target.op == "relu":
        return f"relu passes nothing back where its input {names[0]} <= 0"
    if target.op == "**":
        return f"{names[1]} = 0, so {target.name} = {names[0]}**0 = 1 does not depend on {names[0]}"
    return f"{names[edge.slot]} is not the {'larger' if target.op == 'max' else 'smaller'} operand of {target.op}"


def _chain(*parts: str) -> str:
    """Join ``a = b = c``, dropping empty parts and any part that repeats the previous one."""
    kept: list[str] = []
    for part in parts:
        if not part:
            continue
        if kept and _bare(part) == _bare(kept[-1]):
            kept[-1] = part  # the later spelling wins: "z = (-4)" then "-4" gives "z = -4"
        else:
            kept.append(part)
    return " = ".join(kept)


def _bare(text: str) -> str:
    return text[1:-1] if text.startswith("(") and text.endswith(")") and text.count("(") == 1 else text


# --------------------------------------------------------------------------------------------- what the page shows
def summary(graph: ComputationalGraph) -> str:
    """The result line: ``f = -12  ·  df/dx = -4, df/dy = -4, df/dz = 3``."""
    out = graph.output_name
    grads = ", ".join(f"d{out}/d{v} = {fmt(graph.by_name(v).grad)}" for v in graph.variables)
    return f"{out} = {fmt(graph.node(graph.output).value)}  ·  {grads}"


def step_heading(graph: ComputationalGraph, index: int) -> str:
    """``Forward pass: node 1 of 5`` or ``Backward pass: node 2 of 4``."""
    n_forward = len(graph.forward_steps)
    if graph.steps[index].phase == "forward":
        return f"Forward pass: node {index + 1} of {n_forward}"
    return f"Backward pass: node {index - n_forward + 1} of {len(graph.backward_steps)}"


def passes_so_far(graph: ComputationalGraph, index: int) -> tuple[str, str]:
    """Every equation up to step ``index``: the forward pass's, and the backward pass's (or where it starts)."""
    done = graph.steps[: index + 1]
    backward = [s.equation for s in done if s.phase == "backward"]
    return ("\n".join(s.equation for s in done if s.phase == "forward"),
            "\n".join(backward) if backward else "(starts after the forward pass)")


def table_rows(graph: ComputationalGraph) -> list[dict[str, object]]:
    """One row per node: name, kind, how it is computed, value and gradient (as numbers, for a sortable table)."""
    return [{"node": n.name, "kind": n.kind, "computed as": n.formula, "value": n.value,
             f"d{graph.output_name}/d(node)": n.grad} for n in graph.nodes]
