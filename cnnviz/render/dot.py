"""DOT drawings (for st.graphviz_chart): the computational graph and the step-by-step MLP networks."""

from __future__ import annotations

import html
import math
import re

from cnnviz.handwork import mlp
from cnnviz.handwork.graph import ComputationalGraph
from cnnviz.handwork.graph_ops import OPERATORS
from cnnviz.handwork.mlp import MLPStep
from cnnviz.numbers import fmt as _fmt


def dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def fmt(value: float, style: str = "g") -> str:
    return _fmt(value, style=style)


# ------------------------------------------------------------------------------------------- computational graph
_CURRENT, _INVOLVED, _PLAIN = "#ffd54f", "#fff3c4", "#ffffff"
_VALUE_COLOR, _GRAD_COLOR = "#1a7f37", "#c62828"


def graph_text_css(font_px: int = 15) -> str:
    """CSS that gives graph_dot's labels their size: Streamlit's chart styles set every SVG text to 9.6 px."""
    rules = [f'[data-testid="stGraphVizChart"] svg text[font-size="{_units(px)}.00"] {{ font-size: {_units(px)}px '
             "!important; }" for px in sorted({font_px, _small(font_px)})]
    return "<style>" + " ".join(rules) + "</style>"


def _units(px: int) -> int:
    """A size in SVG units (graphviz points, whole: HTML labels round them) that shows as about ``px`` screen
    pixels at natural size (1 pt = 4/3 px), never under 12 px (9 pt)."""
    return max(9, round(px * 0.75))


def _small(font_px: int) -> int:
    return max(12, font_px - 2)


def graph_levels(graph: ComputationalGraph) -> int:
    """The most operations on one path from an input to the output (how wide a left-to-right drawing gets)."""
    level: dict[str, int] = {}
    for n in graph.nodes:
        level[n.id] = 1 + max((level[i] for i in n.inputs), default=0) if n.kind == "op" else 0
    return max(level.values())


def graph_dot(graph: ComputationalGraph, step: int | None = None, font_px: int = 15, rankdir: str | None = None) -> str:
    """The graph as a DOT string: value boxes (name, value, gradient) and operation circles, left to right.

    Args:
        graph: from :func:`build_graph`.
        step: index into ``graph.steps``; values appear once the forward pass reaches them, gradients once the
            backward pass does, and the step's node and the nodes it reads are highlighted. None shows everything.
        font_px: label size in screen pixels at natural size (``ui.text_px()``); gradients 2 px smaller, >= 12.
            Show it with :func:`graph_text_css` on the page, which makes the browser use these sizes.
        rankdir: "LR" or "TB"; by default left to right up to 3 operations deep, top to bottom beyond.
    Returns:
        DOT source for ``st.graphviz_chart``.
    """
    last = len(graph.steps) - 1 if step is None else max(0, min(step, len(graph.steps) - 1))
    reached_value, reached_grad = set(), set()
    for s in graph.steps[: last + 1]:
        (reached_value if s.phase == "forward" else reached_grad).add(s.node)
    current = graph.steps[last] if step is not None and graph.steps else None
    involved = set(current.involved) if current else set()
    out_name = graph.output_name

    lines = [
        "digraph G {",
        f'  rankdir={rankdir or ("LR" if graph_levels(graph) <= 3 else "TB")}; bgcolor="transparent"; '
        'nodesep=0.25; ranksep=0.3;',
        f'  node [fontname="Helvetica", fontsize={_units(font_px)}, style="filled", fillcolor="#ffffff", '
        'color="#555555", margin="0.08,0.04"];',
        '  edge [color="#777777", arrowsize=0.7];',
    ]
    for n in graph.nodes:
        fill = _CURRENT if current and n.id == current.node else _INVOLVED if n.id in involved else _PLAIN
        value = fmt(n.value) if n.id in reached_value else "?"
        rows = [f"<b>{html.escape(n.name)}</b>" if n.kind != "const" else html.escape(n.name)]
        if n.kind != "const":
            rows.append(f'<font color="{_VALUE_COLOR}">{html.escape(value)}</font>')
        if n.requires_grad:
            g = fmt(n.grad) if n.id in reached_grad else "?"
            rows.append(f'<font color="{_GRAD_COLOR}" point-size="{_units(_small(font_px))}">d{html.escape(out_name)}/d'
                        f'{html.escape(n.name)} = {html.escape(g)}</font>')
        tip = f"{n.name} = {n.formula} = {value}" if n.kind == "op" else f"{n.name} = {value}"
        if n.requires_grad and n.id in reached_grad:
            tip += f"; d{out_name}/d{n.name} = {fmt(n.grad)}"
        shape = "box" if n.kind != "const" else "plaintext"
        style = '"rounded,filled"' if n.kind == "input" else '"filled"'
        pen = ' penwidth=2.2 color="#b26a00"' if fill == _CURRENT else ""
        lines.append(f'  {n.id} [shape={shape} style={style} fillcolor="{fill}"{pen} '
                     f'label=<{"<br/>".join(rows)}> tooltip="{dot_escape(tip)}"];')
        if n.kind == "op":
            op_fill = _INVOLVED if current and (
                (current.phase == "forward" and current.node == n.id) or
                (current.phase == "backward" and n.id in involved)) else "#eef2f7"
            symbol = OPERATORS[n.op].symbol
            lines.append(f'  op_{n.id} [shape=circle fixedsize=true width={0.03 * font_px + 0.05:.2f} '
                         f'fontsize={_units(font_px)} fillcolor="{op_fill}" '
                         f'label="{dot_escape(symbol)}" tooltip="{dot_escape(n.formula)}"];')
            lines.append(f"  op_{n.id} -> {n.id};")
    for e in graph.edges:
        hot = current is not None and (
            (current.phase == "forward" and current.node == e.target) or
            (current.phase == "backward" and current.node == e.source and e.target in involved))
        attrs = ' [color="#e08a00" penwidth=2.4]' if hot else ""
        lines.append(f"  {e.source} -> op_{e.target}{attrs};")
    lines.append("}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ MLP networks
def network_dot(step: MLPStep, font_px: int = 14, rankdir: str = "LR") -> str:
    """The network of ``step`` as DOT: values and d loss/d value on the nodes, each weight with d loss/d weight.

    The ReLU network's edges do not cross, so its weights label the edges. The sigmoid network's edges cross, so
    each weight is a small box on its own edge, named with the two units it joins ("w5: h1 → o1").

    Args:
        step: from :func:`cnnviz.handwork.mlp.train`.
        font_px: text size in graphviz points (ui.text_px() on a page). At its natural size a point is 4/3 px;
            a diagram wider than the page is scaled down to fit it.
        rankdir: "LR" (left to right, the default) or "TB" (top to bottom: about half as wide, so on a projector's
            1280-pixel screen its text is not scaled down under the projector size).
    """
    if rankdir not in ("LR", "TB"):
        raise ValueError(f"rankdir must be LR or TB, not {rankdir!r}")
    p = mlp.preset_of(step.preset)
    s = p.style
    d = "dL" if p.key == "relu" else "dE"
    v, g, w = step.values, step.grads, step.weights

    def num(value: float) -> str:
        return _fmt(value, style=s)

    def node(node_id: str, title: str, rows: list[str], fill: str = "#ffffff", shape: str = "box") -> str:
        label = f"<b>{html.escape(title)}</b>" + "".join(f"<br/>{r}" for r in rows)
        tip = re.sub(r"<[^>]+>", "", " | ".join([title, *rows]))
        return (f'  {node_id} [shape={shape} style="rounded,filled" fillcolor="{fill}" label=<{label}> '
                f'tooltip="{html.unescape(tip)}"];')

    def val(name: str) -> str:
        return f'<font color="#1a7f37">{html.escape(name)} = {num(v[name])}</font>'

    def grad(name: str) -> str:
        return f'<font color="#c62828">{d}/d{html.escape(name)} = {num(g[name])}</font>'

    def edge(src: str, dst: str, weight: str, share: float | None = None) -> str:
        second = f"{d}/d{weight} = {num(g[weight])}" if share is None else f"this path: {num(share)}"
        tip = f"{weight} = {num(w[weight])}; {d}/d{weight} = {num(g[weight])}"
        return f'  {src} -> {dst} [label="{weight} = {num(w[weight])}\\n{second}" tooltip="{tip}" fontcolor="#333333"];'

    def weight_box(src: str, dst: str, weight: str) -> str:
        rows = [f"{weight} = {num(w[weight])}", f'<font color="#c62828">{d}/d{weight} = {num(g[weight])}</font>']
        box = node(f"wt_{weight}", f"{weight}: {src} → {dst}", rows, "#f3f6fb")
        return f"{box}\n  {src} -> wt_{weight} [arrowhead=none];\n  wt_{weight} -> {dst};"

    lines = ["digraph MLP {", f'  rankdir={rankdir}; bgcolor="transparent"; nodesep=0.15; ranksep=0.3;',
             f'  node [fontname="Helvetica", fontsize={font_px}, color="#555555", margin="0.08,0.04"];',
             f'  edge [fontname="Helvetica", fontsize={font_px}, color="#777777", arrowsize=0.7];']
    if p.key == "relu":
        x, y = step.inputs["x"], step.targets["y"]
        loss_fill = "#fde2e2" if not math.isfinite(step.loss) else "#fff3c4"
        lines += [
            node("x", "x (input)", [f'<font color="#1a7f37">{num(x)}</font>'], "#e8f0fe"),
            node("a", "a = ReLU(w1 x)", [val("a"), grad("a")]),
            node("b", "b = ReLU(w1 x)", [val("b"), grad("b")]),
            node("c", "c = ReLU(w2 a)", [val("c"), grad("c")]),
            node("e", "e = ReLU(w3 b)", [val("e"), grad("e")]),
            node("o", "o = w4 c + w5 e", [val("o"), grad("o")]),
            node("y", "y (target)", [f'<font color="#1a7f37">{num(y)}</font>'], "#e8f0fe"),
            node("L", "L = 1/2 (o - y)^2", [f'<font color="#1a7f37">L = {num(step.loss)}</font>'], loss_fill),
            edge("x", "a", "w1", x * mlp.relu_grad(v["a"]) * g["a"]),
            edge("x", "b", "w1", x * mlp.relu_grad(v["b"]) * g["b"]),
            edge("a", "c", "w2"), edge("b", "e", "w3"), edge("c", "o", "w4"), edge("e", "o", "w5"),
            "  o -> L; y -> L [style=dashed];",
        ]
    else:
        lines += [
            node("i1", "i1 (input)", [f'<font color="#1a7f37">{num(step.inputs["i1"])}</font>'], "#e8f0fe"),
            node("i2", "i2 (input)", [f'<font color="#1a7f37">{num(step.inputs["i2"])}</font>'], "#e8f0fe"),
            node("h1", "h1", [val("h1"), val("a_h1"), grad("a_h1")]),
            node("h2", "h2", [val("h2"), val("a_h2"), grad("a_h2")]),
            node("o1", "o1", [val("o1"), val("a_o1"), grad("a_o1")]),
            node("o2", "o2", [val("o2"), val("a_o2"), grad("a_o2")]),
            node("E", "E_total", [f'<font color="#1a7f37">{num(step.loss)}</font>', f't1 = {num(step.targets["t1"])}',
                                  f't2 = {num(step.targets["t2"])}'], "#fff3c4"),
            weight_box("i1", "h1", "w1"), weight_box("i2", "h1", "w2"),
            weight_box("i1", "h2", "w3"), weight_box("i2", "h2", "w4"),
            weight_box("h1", "o1", "w5"), weight_box("h2", "o1", "w6"),
            weight_box("h1", "o2", "w7"), weight_box("h2", "o2", "w8"),
            "  o1 -> E; o2 -> E;",
        ]
    lines.append("}")
    return "\n".join(lines)
