"""Expression -> computational graph: values forward, gradients backward, one node per step.

An expression such as ``(x + y) * z`` or ``sigmoid(w*x + b)`` is parsed with Python's ``ast`` against a whitelist
(never ``eval``) into value nodes (inputs, constants, one node per operation). :func:`build_graph` then runs three
plain passes: :func:`evaluate` (values, float64), :func:`backpropagate` (gradients, each operation's local rule from
:mod:`cnnviz.handwork.graph_ops`, exactly as torch autograd computes them) and :func:`walk` (the steps a student
follows, each an equation with the numbers put in, written with enough digits to be true). :func:`torch_code` writes
the PyTorch program that recomputes every number. ``cnnviz.render.dot.graph_dot`` draws the result.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cnnviz.handwork.graph_ops import FUNCTIONS, OPERATORS
from cnnviz.handwork.graph_text import backward_step, exact_text, fill, formula, forward_step, paren

MAX_CHARS = 200
MAX_NODES = 60
MAX_CONSTANT_EXPONENT = 100.0
DEFAULT_EXPRESSION = "(x + y) * z"
DEFAULT_VALUES: dict[str, float] = {"x": -2.0, "y": 5.0, "z": -4.0}
EXAMPLES: tuple[str, ...] = ("(x + y) * z", "sigmoid(w*x + b)", "(a*b + c)**2", "x*y + x", "log(exp(x) + exp(y))")
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_INTERMEDIATE_NAMES = ("q", "r", "s", "t", "u", "v", "g", "h", "k", "m", "n", "p")
_OUTPUT_NAMES = ("f", "F", "out", "result")


class GraphError(ValueError):
    """An expression the page cannot accept; the message says what to change."""


@dataclass(frozen=True)
class GraphNode:
    """One value in the graph: an input variable, a constant, or the result of one operation."""

    id: str
    name: str  # "x", "2", "q", "f"
    kind: str  # "input" | "const" (a number written in the formula) | "op"
    op: str = ""  # a key of graph_ops.OPERATORS
    inputs: tuple[str, ...] = ()  # operand node ids, in order
    formula: str = ""  # the operation written with its operands' names, e.g. "x + y"
    value: float = math.nan
    grad: float | None = None  # d(output)/d(this node); None for constants, which need no gradient
    requires_grad: bool = False  # depends on at least one variable


@dataclass(frozen=True)
class GraphEdge:
    """Operand ``source`` feeding operation node ``target`` (slot 0 or 1), with its local gradient."""

    source: str
    target: str
    slot: int
    local_formula: str  # d target / d source, in names: "1", "z", "q * (1 - q)"
    local_grad: float | None  # its value; None when the source is a constant
    contribution: float | None  # this path's share of the source's gradient, as torch computes it
    gated: bool = False  # torch writes an exact 0 for this path (relu off, max/min loser, zero exponent)


@dataclass(frozen=True)
class GraphStep:
    """One step of the walk: the forward pass computes ``node``'s value, the backward pass its gradient."""

    index: int
    phase: str  # "forward" | "backward"
    node: str
    involved: tuple[str, ...]  # the other nodes this step reads (operands forward; consumers backward)
    equation: str  # "q = x + y = -2 + 5 = 3" or "df/dx = df/dq * dq/dx = -4 * 1 = -4"
    details: tuple[str, ...] = ()  # local gradients and notes, e.g. "x is used 2 times: ..."


@dataclass(frozen=True)
class ComputationalGraph:
    expression: str
    variables: tuple[str, ...]
    nodes: tuple[GraphNode, ...]  # topological order: every operand before the operation that uses it
    edges: tuple[GraphEdge, ...]
    steps: tuple[GraphStep, ...]  # forward over every node, then backward over every node that needs a gradient
    output: str  # id of the output node
    shared: tuple[str, ...]  # variables used more than once: their gradient is a sum over paths
    warnings: tuple[str, ...]  # inf/nan values or gradients, in words

    def node(self, node_id: str) -> GraphNode:
        return self._by_id()[node_id]

    def _by_id(self) -> dict[str, GraphNode]:
        return {n.id: n for n in self.nodes}

    def by_name(self, name: str) -> GraphNode:
        for n in self.nodes:
            if n.name == name and n.kind != "const":
                return n
        raise KeyError(name)

    @property
    def output_name(self) -> str:
        return self.node(self.output).name

    @property
    def forward_steps(self) -> tuple[GraphStep, ...]:
        return tuple(s for s in self.steps if s.phase == "forward")

    @property
    def backward_steps(self) -> tuple[GraphStep, ...]:
        return tuple(s for s in self.steps if s.phase == "backward")

    def gradients(self) -> dict[str, float]:
        """d output / d variable for every variable."""
        return {v: self.by_name(v).grad for v in self.variables}  # type: ignore[misc]


@dataclass(frozen=True)
class ParsedExpression:
    """The structure of an expression before any values are known."""

    text: str
    variables: tuple[str, ...]
    nodes: tuple[GraphNode, ...]  # values are NaN except for constants
    output: str


# --------------------------------------------------------------------------------------------------------- parsing
def _rejected(node: ast.AST) -> GraphError:
    what = {
        ast.Attribute: "attribute access (a dot after a name)", ast.Lambda: "lambda", ast.Subscript: "indexing",
        ast.Compare: "comparisons", ast.BoolOp: "and/or", ast.IfExp: "if/else", ast.Constant: "this constant",
        ast.JoinedStr: "f-strings", ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
        ast.NamedExpr: ":=", ast.Starred: "*args", ast.Await: "await",
    }.get(type(node), type(node).__name__)
    return GraphError(
        f"{what} is not allowed. Use numbers, variable names, + - * / **, unary minus, parentheses and "
        f"{', '.join(FUNCTIONS)}."
    )


def _number(node: ast.AST) -> float | None:
    """The value of a number literal, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        try:
            return float(node.value)
        except OverflowError:
            raise GraphError("That number is too large; use numbers below 1e300.") from None
    return None


class _Builder:
    """Walks a whitelisted AST and records nodes in topological (post-)order."""

    def __init__(self) -> None:
        self.nodes: list[GraphNode] = []
        self.var_ids: dict[str, str] = {}

    def _add(self, **fields) -> str:
        if len(self.nodes) >= MAX_NODES:
            raise GraphError(f"This expression needs more than {MAX_NODES} nodes; shorten it.")
        node_id = f"n{len(self.nodes)}"
        self.nodes.append(GraphNode(id=node_id, **fields))
        return node_id

    def _constant(self, value: float) -> str:
        if not math.isfinite(value):
            raise GraphError(f"The constant {value} is too large; use numbers below 1e300.")
        return self._add(kind="const", name=exact_text(value), value=value)

    def _variable(self, name: str) -> str:
        if name.startswith("_"):
            raise GraphError(f"Variable names cannot start with an underscore: {name[:20]!r}.")
        if name in FUNCTIONS:
            raise GraphError(f"{name} is a function: write {name}(...).")
        if len(name) > 20:
            raise GraphError("Variable names can have at most 20 characters.")
        if name not in self.var_ids:
            self.var_ids[name] = self._add(kind="input", name=name, requires_grad=True)
        return self.var_ids[name]

    def visit(self, node: ast.AST) -> str:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            value = _number(node)
            if value is None:
                raise _rejected(node)
            return self._constant(value)
        if isinstance(node, ast.Name):
            return self._variable(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            if isinstance(node.op, ast.UAdd):
                return self.visit(node.operand)
            value = _number(node.operand)
            return self._constant(-value) if value is not None else self._op("neg", [self.visit(node.operand)])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return self._op(_BINARY[type(node.op)], [self.visit(node.left), self.visit(node.right)])
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                called = node.func.id if isinstance(node.func, ast.Name) else "that"
                raise GraphError(f"Unknown function {called[:20]!r}: use one of {', '.join(FUNCTIONS)}.")
            name = node.func.id
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise GraphError(f"{name}() takes plain arguments only.")
            if len(node.args) != FUNCTIONS[name]:
                raise GraphError(f"{name}() takes {FUNCTIONS[name]} argument(s), not {len(node.args)}.")
            return self._op(name, [self.visit(a) for a in node.args])
        raise _rejected(node)

    def _op(self, op: str, inputs: list[str]) -> str:
        operands = [self.nodes[int(i[1:])] for i in inputs]
        requires_grad = any(o.requires_grad for o in operands)
        if op == "**" and not operands[1].requires_grad:  # a constant exponent: known now
            exponent = self._constant_value(operands[1])
            if not abs(exponent) <= MAX_CONSTANT_EXPONENT:
                raise GraphError(f"The exponent {exact_text(exponent)} is too large: constant exponents must lie "
                                 f"between -{MAX_CONSTANT_EXPONENT:g} and {MAX_CONSTANT_EXPONENT:g}.")
        return self._add(kind="op", name="", op=op, inputs=tuple(inputs), requires_grad=requires_grad)

    def _constant_value(self, node: GraphNode) -> float:
        """The value of a node that depends on no variable (a constant sub-expression)."""
        if node.kind == "const":
            return node.value
        operands = [self.nodes[int(i[1:])] for i in node.inputs]
        return _apply(node, operands, [self._constant_value(o) for o in operands])


def parse_expression(text: str) -> ParsedExpression:
    """Parse ``text`` against the whitelist, without evaluating anything.

    Args:
        text: an expression over named variables, e.g. ``"sigmoid(w*x + b)"``.
    Returns:
        the nodes in topological order (names assigned: intermediates q, r, s, ...; the output f).
    Raises:
        GraphError: with a message saying what to change.
    """
    if not isinstance(text, str):
        raise GraphError("The expression must be text.")
    text = text.strip()
    if not text:
        raise GraphError("Type an expression, for example (x + y) * z.")
    if len(text) > MAX_CHARS:
        raise GraphError(f"The expression has {len(text)} characters; the limit is {MAX_CHARS}. Shorten it.")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise GraphError(f"This is not a valid expression ({exc.msg}). Example: (x + y) * z") from None
    except (ValueError, RecursionError, MemoryError):
        raise GraphError("This is not a valid expression. Example: (x + y) * z") from None
    builder = _Builder()
    try:
        output = builder.visit(tree)
    except RecursionError:
        raise GraphError("The expression is nested too deeply; simplify it.") from None
    variables = tuple(builder.var_ids)
    if not variables:
        raise GraphError("Use at least one variable (a name such as x), so there is something to differentiate.")
    if builder.nodes[int(output[1:])].kind != "op":
        raise GraphError("Write at least one operation, for example x * y.")
    taken = set(variables)
    output_name = next(n for n in _OUTPUT_NAMES if n not in taken)
    pool = iter([n for n in _INTERMEDIATE_NAMES if n not in taken | {output_name}]
                + [f"q{i}" for i in range(1, MAX_NODES + 1) if f"q{i}" not in taken])
    named: dict[str, GraphNode] = {}
    for n in builder.nodes:
        if n.kind == "op":
            name = output_name if n.id == output else next(pool)
            n = replace(n, name=name, formula=formula(OPERATORS[n.op], [named[i].name for i in n.inputs]))
        named[n.id] = n
    return ParsedExpression(text=text, variables=variables, nodes=tuple(named.values()), output=output)


# ---------------------------------------------------------------------------------------------- the three passes
def _apply(node: GraphNode, operands: list[GraphNode], args: list[float]) -> float:
    scalar = node.op == "**" and operands[1].kind == "const"  # torch: tensor ** number takes its fast paths
    return OPERATORS[node.op].value(args[0], args[1] if len(args) > 1 else 0.0, scalar)


def evaluate(parsed: ParsedExpression, values: Mapping[str, float]) -> dict[str, float]:
    """Forward pass: every node's value in float64, inf/nan as torch gives them.

    Args:
        parsed: from :func:`parse_expression`.
        values: a finite number for every variable (missing ones take :func:`default_values`).
    Returns:
        node id -> value.
    Raises:
        GraphError: a value that is not a finite number, with the variable named.
    """
    defaults = default_values(parsed.variables)
    value: dict[str, float] = {}
    by_id = {n.id: n for n in parsed.nodes}
    for n in parsed.nodes:
        if n.kind == "input":
            try:
                v = float(values.get(n.name, defaults[n.name]))
            except (TypeError, ValueError, OverflowError):
                raise GraphError(f"The value of {n.name} must be a number.") from None
            if not math.isfinite(v):
                raise GraphError(f"The value of {n.name} must be a finite number.")
            value[n.id] = v
        elif n.kind == "const":
            value[n.id] = n.value
        else:
            value[n.id] = _apply(n, [by_id[i] for i in n.inputs], [value[i] for i in n.inputs])
    return value


@dataclass(frozen=True)
class Backward:
    """What the backward pass found: gradients and, per (operation, slot), the local gradient and the path's share."""

    grad: dict[str, float]
    local: dict[tuple[str, int], float]
    share: dict[tuple[str, int], float]
    gated: dict[tuple[str, int], bool]


def operand_values(node: GraphNode, value: Mapping[str, float]) -> tuple[float, float, float]:
    """(a, b, y) of an operation node; b is 0 for a unary one."""
    args = [value[i] for i in node.inputs]
    return args[0], args[1] if len(args) > 1 else 0.0, value[node.id]


def scalar_exponent(node: GraphNode, by_id: Mapping[str, GraphNode]) -> bool:
    """A ``**`` whose exponent is a number written in the formula (torch: ``tensor ** number``)."""
    return node.op == "**" and by_id[node.inputs[1]].kind == "const"


def backpropagate(parsed: ParsedExpression, value: Mapping[str, float]) -> Backward:
    """Backward pass in reverse topological order, each path's share computed with torch's backward formula."""
    by_id = {n.id: n for n in parsed.nodes}
    grad: dict[str, float] = {parsed.output: 1.0}
    local: dict[tuple[str, int], float] = {}
    share: dict[tuple[str, int], float] = {}
    gated: dict[tuple[str, int], bool] = {}
    for n in reversed(parsed.nodes):
        if n.kind != "op":
            continue
        op, scalar = OPERATORS[n.op], scalar_exponent(n, by_id)
        a, b, y = operand_values(n, value)
        locals_, gates = op.local(a, b, y, scalar), op.gated(a, b, y, scalar)
        shares = op.backward(grad[n.id], a, b, y, scalar) if n.requires_grad else ()
        for slot, i in enumerate(n.inputs):
            local[(n.id, slot)], gated[(n.id, slot)] = locals_[slot], gates[slot]
            if n.requires_grad and by_id[i].requires_grad:
                share[(n.id, slot)] = shares[slot]
                grad[i] = shares[slot] if i not in grad else grad[i] + shares[slot]
    return Backward(grad=grad, local=local, share=share, gated=gated)


def build_graph(text: str, values: Mapping[str, float]) -> ComputationalGraph:
    """Parse ``text``, evaluate it at ``values`` and backpropagate, recording one step per node and pass.

    Args:
        text: the expression, e.g. ``"(x + y) * z"``.
        values: a number for every variable; missing ones take :func:`default_values`.
    Returns:
        the graph with values, gradients, edges (local gradients) and the forward-then-backward steps.
    Raises:
        GraphError: for an expression outside the whitelist or limits, or a value that is not a number.
    """
    parsed = parse_expression(text)
    value = evaluate(parsed, values)
    back = backpropagate(parsed, value)
    nodes = tuple(replace(n, value=value[n.id], grad=back.grad.get(n.id) if n.requires_grad else None)
                  for n in parsed.nodes)
    by_id = {n.id: n for n in nodes}
    edges = tuple(
        GraphEdge(source=i, target=n.id, slot=slot,
                  local_formula=rule_text(n, slot, by_id), local_grad=back.local[(n.id, slot)]
                  if by_id[i].requires_grad else None,
                  contribution=back.share.get((n.id, slot)), gated=back.gated[(n.id, slot)])
        for n in nodes for slot, i in enumerate(n.inputs)
    )
    steps = walk(nodes, edges, parsed.output)
    uses = {n.name: sum(e.source == n.id for e in edges) for n in nodes if n.kind == "input"}
    warnings = []
    bad_values = [n.name for n in nodes if not math.isfinite(n.value)]
    if bad_values:
        warnings.append(f"Not a finite number: {', '.join(bad_values)} (division by zero, log of a negative or "
                        "zero number, or overflow). The page shows inf or nan where torch does; change the inputs.")
    bad_grads = [n.name for n in nodes if n.grad is not None and not math.isfinite(n.grad)]
    if bad_grads:
        warnings.append(f"The gradient is not a finite number at: {', '.join(bad_grads)} (torch gives the same).")
    return ComputationalGraph(
        expression=parsed.text, variables=parsed.variables, nodes=nodes, edges=edges, steps=steps,
        output=parsed.output, shared=tuple(v for v in parsed.variables if uses[v] > 1), warnings=tuple(warnings),
    )


def rule_text(node: GraphNode, slot: int, by_id: Mapping[str, GraphNode]) -> str:
    """d node / d operand ``slot`` as a rule in names, e.g. ``"z"`` or ``"f * (1 - f)"``."""
    op = OPERATORS[node.op]
    exponent = by_id[node.inputs[1]].value if node.op == "**" else 0.0
    names = [by_id[i].name for i in node.inputs]
    return fill(op.rules(scalar_exponent(node, by_id), exponent)[slot], names, node.name)


def walk(nodes: tuple[GraphNode, ...], edges: tuple[GraphEdge, ...], output: str) -> tuple[GraphStep, ...]:
    """The steps: forward over every node in order, then backward over every node that needs a gradient."""
    by_id = {n.id: n for n in nodes}
    steps = [GraphStep(index=i, phase="forward", node=n.id, involved=n.inputs, equation=eq, details=details)
             for i, n in enumerate(nodes) for eq, details in [forward_step(n, by_id)]]
    for n in reversed(nodes):
        if n.requires_grad:
            uses = tuple(e for e in edges if e.source == n.id)
            equation, details = backward_step(n, uses, by_id, output)
            steps.append(GraphStep(index=len(steps), phase="backward", node=n.id,
                                   involved=tuple(dict.fromkeys(e.target for e in uses)), equation=equation,
                                   details=details))
    return tuple(steps)


# ------------------------------------------------------------------------------------------------ starting values
_VARIABLE_DEFAULTS: dict[str, float] = {**DEFAULT_VALUES, "w": 0.5, "b": 0.1, "a": 2.0, "c": -1.0}
_SPARE_VALUES = (1.5, -0.5, 2.5, -1.5, 0.75, 3.0, -2.5, 1.25, -0.75, 2.0, 0.5, -3.0)


def default_values(variables: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Distinct starting values: the worked example's x, y, z, a few familiar names, then 1.5, -0.5, 2.5, ...

    Distinct values keep gradients apart: with every input at 1, sigmoid(w1*x1 + w2*x2 + b) has equal gradients.
    """
    chosen: dict[str, float] = {}
    for name in variables:
        if name in _VARIABLE_DEFAULTS and _VARIABLE_DEFAULTS[name] not in chosen.values():
            chosen[name] = _VARIABLE_DEFAULTS[name]
    spare = (v for v in _SPARE_VALUES + tuple(4.0 + i for i in range(len(variables))) if v not in chosen.values())
    return {name: chosen[name] if name in chosen else next(spare) for name in variables}


# ------------------------------------------------------------------------------------------------------ links
LINK_PARAMS = ("expr", "step")  # the page's own query parameters; a variable of that name uses "v.<name>"


def variable_param(name: str) -> str:
    """The query parameter that holds variable ``name`` in a link: its name (``v.step`` for a variable "step")."""
    return f"v.{name}" if name in LINK_PARAMS else name


def parse_link_expression(text: str) -> str:
    """A link's formula, if the page accepts it. Raises GraphError (a ValueError) saying what is wrong."""
    parse_expression(text)
    return text


def parse_link_value(text: str) -> float:
    """A link's variable value: any finite float64. Raises ValueError for text, nan, inf or a number beyond 1.8e308."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError("it is not a number") from None
    if not math.isfinite(value):
        raise ValueError("it is not a finite number (float64 reaches about 1.8e308)")
    return value


def parse_link_step(text: str, count: int) -> int:
    """A link's step: a whole number from 0 to count - 1. Raises ValueError saying the range."""
    try:
        step = int(text)
    except (TypeError, ValueError):
        raise ValueError("it is not a whole number") from None
    if not 0 <= step < count:
        raise ValueError(f"this formula has steps 0 to {count - 1}")
    return step


# ------------------------------------------------------------------------------------------------ the torch check
_RESERVED = set(dir(builtins)) | set(keyword.kwlist) | {"torch"}


def torch_code(graph: ComputationalGraph) -> str:
    """PyTorch code that recomputes this graph's values and gradients with autograd, as printed on the page.

    Numbers are written with ``repr`` (every digit); a number that must be a tensor (inside a function, as a
    numerator or a base, or when no operand is one yet) is written as a float64 tensor, so the code runs as printed
    and takes the same kernels as the page: ``2 / x`` as a division, ``x ** 2`` as torch's ``tensor ** number``.
    """
    by_id = {n.id: n for n in graph.nodes}
    py: dict[str, str] = {}
    for n in graph.nodes:
        if n.kind != "const":
            name = n.name
            while name in _RESERVED or name in py.values():
                name += "_"  # a variable called "sum" or "torch" must not hide Python's or torch's
            py[n.id] = name
    lines = ["import torch", ""]
    for v in graph.variables:
        node = graph.by_name(v)
        lines.append(f"{py[node.id]} = torch.tensor({node.value!r}, dtype=torch.float64, requires_grad=True)")
    for n in graph.nodes:
        if n.kind == "op":
            lines.append(f"{py[n.id]} = {_torch_expression(n, by_id, py)}")
    intermediates = [n for n in graph.nodes if n.kind == "op" and n.requires_grad and n.id != graph.output]
    if intermediates:
        lines.append(f"for _t in ({', '.join(py[n.id] for n in intermediates)},):")
        lines.append("    _t.retain_grad()  # keep d(output)/d(intermediate) too")
    out = py[graph.output]
    lines += [f"{out}.backward()", "", f"print('{graph.output_name} =', {out}.item())"]
    for n in [graph.by_name(v) for v in graph.variables] + intermediates:
        lines.append(f"print('d{graph.output_name}/d{n.name} =', {py[n.id]}.grad.item())")
    return "\n".join(lines)


def _torch_expression(n: GraphNode, by_id: Mapping[str, GraphNode], py: Mapping[str, str]) -> str:
    op = OPERATORS[n.op]
    operands = [by_id[i] for i in n.inputs]
    any_tensor = any(o.kind != "const" for o in operands)

    def text(slot: int) -> str:
        o = operands[slot]
        if o.kind != "const":
            return py[o.id]
        as_tensor = op.is_function or (slot == 0 and (n.op in ("/", "**", "neg") or not any_tensor))
        if as_tensor:
            return f"torch.tensor({o.value!r}, dtype=torch.float64)"
        return paren(repr(o.value))

    if op.is_function:
        return f"{op.torch}({', '.join(text(s) for s in range(op.arity))})"
    if op.arity == 1:
        return f"{op.torch}{text(0)}"
    return op.torch.join(text(s) for s in range(2))
