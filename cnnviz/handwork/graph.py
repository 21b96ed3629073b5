"""Expression -> computational graph: values forward, gradients backward, one node per step.

An expression such as ``(x + y) * z`` or ``sigmoid(w*x + b)`` is parsed with Python's ``ast`` against a whitelist
(never ``eval``), turned into value nodes (inputs, constants, one node per operation), evaluated in float64 and
differentiated with each operation's local rule, the way micrograd's ``Value`` does it. The result is a frozen
:class:`ComputationalGraph` whose :class:`GraphStep` records walk the forward pass and then the backward pass node by
node, each with the equation a student would write, numbers substituted. :func:`graph_dot` draws it as a DOT string.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAX_CHARS = 200
MAX_NODES = 60
MAX_CONSTANT_EXPONENT = 100.0
DEFAULT_EXPRESSION = "(x + y) * z"
DEFAULT_VALUES: dict[str, float] = {"x": -2.0, "y": 5.0, "z": -4.0}
EXAMPLES: tuple[str, ...] = ("(x + y) * z", "sigmoid(w*x + b)", "(a*b + c)**2", "x*y + x", "log(exp(x) + exp(y))")
FUNCTIONS: dict[str, int] = {"exp": 1, "log": 1, "sigmoid": 1, "tanh": 1, "relu": 1, "max": 2, "min": 2}
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
    kind: str  # "input" | "const" | "op"
    op: str = ""  # "+", "-", "*", "/", "**", "neg", "exp", "log", "sigmoid", "tanh", "relu", "max", "min"
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
    contribution: float | None  # d output / d target * local gradient: this path's share of the source's gradient


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
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

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


# --------------------------------------------------------------------------------------------------------- numbers
def fmt(value: float | None) -> str:
    """A number as a student would write it: 3, -4, 0.5, 0.731059, 1.5e+10, inf, nan."""
    if value is None:
        return ""
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if v == round(v) and abs(v) < 1e15:
        return str(round(v))
    return f"{v:.6g}"


def _num(value: float | None, first: bool = True) -> str:
    """A number inside a longer expression: negative ones after the first get parentheses."""
    s = fmt(value)
    return s if first or not s.startswith("-") else f"({s})"


def _paren(name: str) -> str:
    return f"({name})" if name.startswith("-") or " " in name else name


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


class _Builder:
    """Walks a whitelisted AST and records nodes in topological (post-)order."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.var_ids: dict[str, str] = {}

    def _add(self, **fields) -> str:
        if len(self.nodes) >= MAX_NODES:
            raise GraphError(f"This expression needs more than {MAX_NODES} nodes; shorten it.")
        node_id = f"n{len(self.nodes)}"
        self.nodes.append({"id": node_id, **fields})
        return node_id

    def const_value(self, node_id: str) -> float | None:
        node = self.nodes[int(node_id[1:])]
        return None if node["requires_grad"] else node["value"]

    def _constant(self, value: float) -> str:
        if not math.isfinite(value):
            raise GraphError(f"The constant {value} is too large; use numbers below 1e300.")
        return self._add(kind="const", name=fmt(value), op="", inputs=(), value=float(value), requires_grad=False)

    def visit(self, node: ast.AST) -> str:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise _rejected(node)
            try:
                return self._constant(float(node.value))
            except OverflowError:
                raise GraphError("That number is too large; use numbers below 1e300.") from None
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("_"):
                raise GraphError(f"Variable names cannot start with an underscore: {name[:20]!r}.")
            if name in FUNCTIONS:
                raise GraphError(f"{name} is a function: write {name}(...).")
            if len(name) > 20:
                raise GraphError("Variable names can have at most 20 characters.")
            if name not in self.var_ids:
                self.var_ids[name] = self._add(kind="input", name=name, op="", inputs=(), value=math.nan,
                                               requires_grad=True)
            return self.var_ids[name]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            if isinstance(node.op, ast.UAdd):
                return self.visit(node.operand)
            if isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)) \
                    and not isinstance(node.operand.value, bool):
                return self._constant(-float(node.operand.value))
            return self._op("neg", [self.visit(node.operand)])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op = _BINARY[type(node.op)]
            left = self.visit(node.left)
            right = self.visit(node.right)
            if op == "**":
                exponent = self.const_value(right)
                if exponent is not None and not (abs(exponent) <= MAX_CONSTANT_EXPONENT):
                    raise GraphError(
                        f"The exponent {fmt(exponent)} is too large: constant exponents must lie between "
                        f"-{fmt(MAX_CONSTANT_EXPONENT)} and {fmt(MAX_CONSTANT_EXPONENT)}."
                    )
            return self._op(op, [left, right])
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
        requires_grad = any(o["requires_grad"] for o in operands)
        value = math.nan
        if not requires_grad:  # constant subexpression: known now (used to reject huge exponents early)
            value = _apply(op, [o["value"] for o in operands])
        return self._add(kind="op", name="", op=op, inputs=tuple(inputs), value=value, requires_grad=requires_grad)


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
    raw = builder.nodes
    variables = tuple(builder.var_ids)
    if not variables:
        raise GraphError("Use at least one variable (a name such as x), so there is something to differentiate.")
    if raw[int(output[1:])]["kind"] != "op":
        raise GraphError("Write at least one operation, for example x * y.")
    taken = set(variables)
    output_name = next(n for n in _OUTPUT_NAMES if n not in taken)
    taken.add(output_name)
    pool = [n for n in _INTERMEDIATE_NAMES if n not in taken]
    pool += [f"q{i}" for i in range(1, MAX_NODES + 1) if f"q{i}" not in taken]
    names = iter(pool)
    for node in raw:
        if node["kind"] == "op":
            node["name"] = output_name if node["id"] == output else next(names)
    by_id = {n["id"]: n for n in raw}
    nodes = tuple(
        GraphNode(
            id=n["id"], name=n["name"], kind=n["kind"], op=n["op"], inputs=n["inputs"],
            formula=_formula(n["op"], [by_id[i]["name"] for i in n["inputs"]]) if n["kind"] == "op" else "",
            value=n["value"] if n["kind"] == "const" else math.nan, requires_grad=n["requires_grad"],
        )
        for n in raw
    )
    return ParsedExpression(text=text, variables=variables, nodes=nodes, output=output)


# ------------------------------------------------------------------------------------------- operations and rules
def _apply(op: str, args: list[float]) -> float:
    """One operation in float64, with inf/nan (not exceptions) for division by zero, log(-1), overflow."""
    a = np.float64(args[0])
    b = np.float64(args[1]) if len(args) > 1 else np.float64(0.0)
    with np.errstate(all="ignore"):
        result = {
            "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: np.divide(a, b),
            "**": lambda: np.power(a, b), "neg": lambda: -a, "exp": lambda: np.exp(a), "log": lambda: np.log(a),
            "sigmoid": lambda: 1.0 / (1.0 + np.exp(-a)), "tanh": lambda: np.tanh(a),
            "relu": lambda: np.maximum(a, 0.0), "max": lambda: np.maximum(a, b), "min": lambda: np.minimum(a, b),
        }[op]()
    return float(result)


def _formula(op: str, names: list[str]) -> str:
    a = _paren(names[0])
    b = _paren(names[1]) if len(names) > 1 else ""
    if op in ("+", "-", "*", "/"):
        return f"{a} {op} {b}"
    if op == "**":
        return f"{a}**{b}"
    if op == "neg":
        return f"-{a}"
    if op in ("max", "min"):
        return f"{op}({names[0]}, {names[1]})"
    return f"{op}({names[0]})"


def _substituted(op: str, values: list[float]) -> str:
    if op in ("+", "-", "*", "/"):
        return f"{_num(values[0])} {op} {_num(values[1], first=False)}"
    if op == "**":
        return f"{_num(values[0], first=False)}**{_num(values[1], first=False)}"
    if op == "neg":
        return f"-{_num(values[0], first=False)}"
    return f"{op}({', '.join(fmt(v) for v in values)})"


def _local_rules(op: str, names: list[str], out: str) -> list[str]:
    """d out / d operand for each operand, written with names."""
    a = _paren(names[0])
    b = _paren(names[1]) if len(names) > 1 else ""
    rules = {
        "+": ["1", "1"], "-": ["1", "-1"], "*": [b, a], "/": [f"1/{b}", f"-{a}/{b}**2"],
        "**": [f"{b} * {a}**({b} - 1)", f"{out} * log({a})"], "neg": ["-1"], "exp": [f"exp({a})"],
        "log": [f"1/{a}"], "sigmoid": [f"{out} * (1 - {out})"], "tanh": [f"1 - {out}**2"],
        "relu": [f"(1 if {a} > 0 else 0)"],
        "max": [f"(1 if {a} > {b} else 0)", f"(1 if {b} > {a} else 0)"],
        "min": [f"(1 if {a} < {b} else 0)", f"(1 if {b} < {a} else 0)"],
    }[op]
    return rules


def _local_substituted(op: str, args: list[float], out: float) -> list[str]:
    """The local rules of :func:`_local_rules` with the numbers put in."""
    a = _num(args[0], first=False)
    b = _num(args[1], first=False) if len(args) > 1 else ""
    y = _num(out, first=False)
    return {
        "+": ["1", "1"], "-": ["1", "-1"], "*": [b, a], "/": [f"1/{b}", f"-{a}/{b}**2"],
        "**": [f"{b} * {a}**({b} - 1)", f"{y} * log({a})"], "neg": ["-1"], "exp": [f"exp({a})"],
        "log": [f"1/{a}"], "sigmoid": [f"{y} * (1 - {y})"], "tanh": [f"1 - {y}**2"], "relu": [""],
        "max": ["", ""], "min": ["", ""],
    }[op]


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


def _local_grads(op: str, args: list[float], out: float) -> list[float]:
    """d out / d operand for each operand, following torch's backward formulas (ties and zeros included)."""
    a = np.float64(args[0])
    b = np.float64(args[1]) if len(args) > 1 else np.float64(0.0)
    y = np.float64(out)
    with np.errstate(all="ignore"):
        if op == "+":
            grads = [1.0, 1.0]
        elif op == "-":
            grads = [1.0, -1.0]
        elif op == "*":
            grads = [b, a]
        elif op == "/":
            grads = [np.divide(1.0, b), -np.divide(np.divide(a, b), b)]
        elif op == "**":
            d_base = 0.0 if b == 0 else b * np.power(a, b - 1.0)
            d_exp = 0.0 if (a == 0 and b >= 0) else y * np.log(a)
            grads = [d_base, d_exp]
        elif op == "neg":
            grads = [-1.0]
        elif op == "exp":
            grads = [y]
        elif op == "log":
            grads = [np.divide(1.0, a)]
        elif op == "sigmoid":
            grads = [(1.0 - y) * y]
        elif op == "tanh":
            grads = [1.0 - y * y]
        elif op == "relu":
            grads = [1.0 if y > 0 else 0.0]
        elif op in ("max", "min"):
            first_wins = a > b if op == "max" else a < b
            second_wins = b > a if op == "max" else b < a
            grads = [0.5, 0.5] if a == b else [float(first_wins), float(second_wins)]
        else:  # pragma: no cover - the parser only creates the ops above
            raise GraphError(f"unknown operation {op}")
    return [float(g) for g in grads]


def _contribution(op: str, upstream: float, local: float) -> float:
    """upstream * local, except where torch masks (relu, max, min, zero exponent): a masked path adds exactly 0."""
    if local == 0.0 and op in ("relu", "max", "min", "**"):
        return 0.0
    with np.errstate(all="ignore"):
        return float(np.float64(upstream) * np.float64(local))


# --------------------------------------------------------------------------------------------------------- graph
def build_graph(text: str, values: Mapping[str, float]) -> ComputationalGraph:
    """Parse ``text``, evaluate it at ``values`` and backpropagate, recording one step per node and pass.

    Args:
        text: the expression, e.g. ``"(x + y) * z"``.
        values: a number for every variable; missing ones default to 1.
    Returns:
        the graph with values, gradients, edges (local gradients) and the forward-then-backward steps.
    Raises:
        GraphError: for an expression outside the whitelist or limits, or a value that is not a number.
    """
    parsed = parse_expression(text)
    value: dict[str, float] = {}
    for n in parsed.nodes:
        if n.kind == "input":
            raw = values.get(n.name, 1.0)
            try:
                v = float(raw)
            except (TypeError, ValueError):
                raise GraphError(f"The value of {n.name} must be a number.") from None
            if not math.isfinite(v):
                raise GraphError(f"The value of {n.name} must be a finite number.")
            value[n.id] = v
        elif n.kind == "const":
            value[n.id] = n.value
        else:
            value[n.id] = _apply(n.op, [value[i] for i in n.inputs])

    by_id = {n.id: n for n in parsed.nodes}
    out_id = parsed.output
    out_name = by_id[out_id].name
    consumers: dict[str, list[tuple[str, int]]] = {n.id: [] for n in parsed.nodes}
    for n in parsed.nodes:
        for slot, i in enumerate(n.inputs):
            consumers[i].append((n.id, slot))

    # backward: reverse topological order; every consumer of a node comes later in forward order
    grad: dict[str, float] = {out_id: 1.0}
    local: dict[tuple[str, int], tuple[str, str, float]] = {}  # (rule in names, rule in numbers, value)
    contribution: dict[tuple[str, int], float] = {}
    for n in reversed(parsed.nodes):
        if n.kind != "op":
            continue
        names = [by_id[i].name for i in n.inputs]
        rules = _local_rules(n.op, names, n.name)
        args = [value[i] for i in n.inputs]
        grads = _local_grads(n.op, args, value[n.id])
        numbers = _local_substituted(n.op, args, value[n.id])
        for slot, i in enumerate(n.inputs):
            local[(n.id, slot)] = (rules[slot], numbers[slot], grads[slot])
            if n.requires_grad and by_id[i].requires_grad:
                share = _contribution(n.op, grad[n.id], grads[slot])
                contribution[(n.id, slot)] = share
                grad[i] = share if i not in grad else float(np.float64(grad[i]) + np.float64(share))

    nodes = tuple(
        GraphNode(id=n.id, name=n.name, kind=n.kind, op=n.op, inputs=n.inputs, formula=n.formula,
                  value=value[n.id], grad=grad.get(n.id) if n.requires_grad else None,
                  requires_grad=n.requires_grad)
        for n in parsed.nodes
    )
    edges = tuple(
        GraphEdge(source=i, target=n.id, slot=slot, local_formula=local[(n.id, slot)][0],
                  local_grad=local[(n.id, slot)][2] if by_id[i].requires_grad else None,
                  contribution=contribution.get((n.id, slot)))
        for n in parsed.nodes for slot, i in enumerate(n.inputs)
    )
    node_of = {n.id: n for n in nodes}

    steps: list[GraphStep] = []
    for n in nodes:  # forward
        if n.kind == "input":
            eq = f"{n.name} = {fmt(n.value)}   (input)"
        elif n.kind == "const":
            eq = f"{n.name}   (constant)"
        else:
            eq = f"{n.name} = {n.formula} = {_substituted(n.op, [node_of[i].value for i in n.inputs])} = {fmt(n.value)}"
        steps.append(GraphStep(index=len(steps), phase="forward", node=n.id, involved=n.inputs, equation=eq))

    shared = tuple(v for v in parsed.variables if len(consumers[_variable_id(parsed, v)]) > 1)
    for n in reversed(nodes):  # backward
        if not n.requires_grad:
            continue
        sym = f"d{out_name}/d{n.name}"
        if n.id == out_id:
            steps.append(GraphStep(
                index=len(steps), phase="backward", node=n.id, involved=(), equation=f"{sym} = 1",
                details=(f"The backward pass starts at the output: the gradient of {out_name} with respect to "
                         "itself is 1.",),
            ))
            continue
        sym_terms, num_terms, details = [], [], []
        uses = consumers[n.id]
        for target, slot in uses:
            t = node_of[target]
            rule, rule_numbers, lg = local[(target, slot)]
            local_line = _chain(f"d{t.name}/d{n.name}", rule, rule_numbers, fmt(lg))
            if target == out_id:  # d out/d out = 1, so this path's factor is the local gradient itself
                sym_terms.append(_paren(rule) if len(uses) > 1 else rule)
                num_terms.append(_num(lg, first=not num_terms))
            else:
                sym_terms.append(f"d{out_name}/d{t.name} * d{t.name}/d{n.name}")
                num_terms.append(f"{_num(t.grad, first=not num_terms)} * {_num(lg, first=False)}")
            details.append(f"{local_line}   (local gradient of {t.name} = {t.formula})")
        if len(uses) > 1:
            details.append(f"{n.name} is used {len(uses)} times, so its gradient is the sum of the gradients along "
                           f"all {len(uses)} paths.")
        if len(uses) == 1 and uses[0][0] == out_id:
            equation = _chain(sym, sym_terms[0], local[(out_id, uses[0][1])][1], fmt(n.grad))
        else:
            equation = _chain(sym, " + ".join(sym_terms), " + ".join(num_terms), fmt(n.grad))
        steps.append(GraphStep(index=len(steps), phase="backward", node=n.id,
                               involved=tuple(dict.fromkeys(t for t, _ in uses)), equation=equation,
                               details=tuple(details)))

    warnings = []
    bad_values = [n.name for n in nodes if not math.isfinite(n.value)]
    if bad_values:
        warnings.append(f"Not a finite number: {', '.join(bad_values)} (division by zero, log of a negative or "
                        "zero number, or overflow). The result shows inf or nan; change the inputs.")
    bad_grads = [n.name for n in nodes if n.grad is not None and not math.isfinite(n.grad)]
    if bad_grads:
        warnings.append(f"The gradient is not a finite number at: {', '.join(bad_grads)}.")
    return ComputationalGraph(
        expression=parsed.text, variables=parsed.variables, nodes=nodes, edges=edges, steps=tuple(steps),
        output=out_id, shared=shared, warnings=tuple(warnings),
    )


def _variable_id(parsed: ParsedExpression, name: str) -> str:
    """The node id of variable ``name``."""
    return next(n.id for n in parsed.nodes if n.kind == "input" and n.name == name)


# ------------------------------------------------------------------------------------------------------- helpers
_VARIABLE_DEFAULTS: dict[str, float] = {**DEFAULT_VALUES, "w": 0.5, "b": 0.1, "a": 2.0, "c": -1.0}


def default_value(name: str) -> float:
    """The starting value of a variable field: the worked example's x, y, z; a few familiar names; else 1."""
    return _VARIABLE_DEFAULTS.get(name, 1.0)


_TORCH_FUNCTIONS = {"exp": "torch.exp", "log": "torch.log", "sigmoid": "torch.sigmoid", "tanh": "torch.tanh",
                    "relu": "torch.relu", "max": "torch.maximum", "min": "torch.minimum"}


def torch_code(graph: ComputationalGraph) -> str:
    """PyTorch code that recomputes this graph's values and gradients with autograd (what the tests check)."""
    node_of = {n.id: n for n in graph.nodes}
    lines = ["import torch", ""]
    for v in graph.variables:
        lines.append(f"{v} = torch.tensor({graph.by_name(v).value!r}, dtype=torch.float64, requires_grad=True)")

    def operand(node_id: str, in_function: bool) -> str:
        n = node_of[node_id]
        if n.kind != "const":
            return n.name
        return f"torch.tensor({n.value!r}, dtype=torch.float64)" if in_function else _paren(n.name)

    for n in graph.nodes:
        if n.kind != "op":
            continue
        if n.op in _TORCH_FUNCTIONS:
            expr = f"{_TORCH_FUNCTIONS[n.op]}({', '.join(operand(i, True) for i in n.inputs)})"
        elif n.op == "neg":
            expr = f"-{operand(n.inputs[0], False)}"
        else:
            expr = (" ** " if n.op == "**" else f" {n.op} ").join(operand(i, False) for i in n.inputs)
        lines.append(f"{n.name} = {expr}")
    intermediates = [n.name for n in graph.nodes if n.kind == "op" and n.requires_grad and n.id != graph.output]
    if intermediates:
        lines.append(f"for _t in ({', '.join(intermediates)},):")
        lines.append("    _t.retain_grad()  # keep d(output)/d(intermediate) too")
    out = graph.output_name
    lines += [f"{out}.backward()", "", f"print('{out} =', {out}.item())"]
    lines += [f"print('d{out}/d{name} =', {name}.grad.item())" for name in [*graph.variables, *intermediates]]
    return "\n".join(lines)
