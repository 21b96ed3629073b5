"""cnnviz.handwork.graph against torch autograd (float64): values, gradients, the step walk, limits, bad input."""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
import math
import operator
import random
import re
import time

import pytest
import torch
from torch.testing import assert_close

from cnnviz.handwork import graph, graph_ops
from cnnviz.numbers import fmt
from cnnviz.render import dot

F64 = torch.float64


def t(value: float, grad: bool = True) -> torch.Tensor:
    return torch.tensor(float(value), dtype=F64, requires_grad=grad)


def backward_keeping(out: torch.Tensor, ops: list[torch.Tensor]) -> None:
    """out.backward(), keeping d out / d op for every intermediate result that needs a gradient."""
    for o in ops:
        if o.requires_grad:
            o.retain_grad()
    out.backward()


# --------------------------------------------------------------------------------------------- the worked example
def test_default_example_is_the_issue_numbers_and_torch_agrees():
    g = graph.build_graph(graph.DEFAULT_EXPRESSION, graph.DEFAULT_VALUES)
    # the worked example, literally (source material, corrected to z = -4)
    assert g.by_name("q").value == 3 and g.node(g.output).value == -12
    assert g.by_name("q").grad == -4 and g.by_name("z").grad == 3
    assert g.gradients() == {"x": -4, "y": -4, "z": 3}
    equations = [s.equation for s in g.steps]
    assert "q = x + y = -2 + 5 = 3" in equations
    assert "f = q * z = 3 * (-4) = -12" in equations
    assert "df/dq = z = -4" in equations and "df/dz = q = 3" in equations
    assert "df/dx = df/dq * dq/dx = -4 * 1 = -4" in equations
    assert "df/dy = df/dq * dq/dy = -4 * 1 = -4" in equations

    x, y, z = t(-2), t(5), t(-4)
    q = x + y
    q.retain_grad()
    f = q * z
    f.backward()
    assert_close(torch.tensor([g.by_name("q").value, g.node(g.output).value], dtype=F64), torch.stack([q, f]).detach())
    got = torch.tensor([g.by_name(n).grad for n in ("x", "y", "z", "q")], dtype=F64)
    assert_close(got, torch.stack([x.grad, y.grad, z.grad, q.grad]))


# --------------------------------------------------------------------------------- random expressions vs autograd
UNARY = {
    "exp": torch.exp, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
    "log": lambda a: torch.log(a * a + 0.5), "neg": lambda a: -a,
}


class RandomExpression:
    """Builds an expression string and the same computation in torch, independently of cnnviz.handwork.graph's parser.

    ``ops`` records every operation's torch result in post-order (left operand, right operand, then the operation),
    the order in which cnnviz.handwork.graph numbers its operation nodes.
    """

    def __init__(self, rng: random.Random, names: tuple[str, ...]) -> None:
        self.rng, self.names = rng, names

    def build(self, depth: int):
        rng = self.rng
        if depth == 0 or rng.random() < 0.2:
            if rng.random() < 0.75:
                name = rng.choice(self.names)
                return name, lambda env, ops, name=name: env[name]
            c = rng.choice([0.5, 2, 3, 1.5])
            return f"{c}", lambda env, ops, c=c: torch.tensor(float(c), dtype=F64)
        kind = rng.choice(["+", "-", "*", "/", "**", "unary", "unary", "max", "min"])
        if kind == "unary":
            fn_name = rng.choice(list(UNARY))
            a_text, a_fn = self.build(depth - 1)
            if fn_name == "log":  # keep log's argument positive: log(a*a + 0.5), written out in full
                inner_text = f"log(({a_text})*({a_text}) + 0.5)"

                def run_log(env, ops, a_fn=a_fn):
                    a1 = a_fn(env, ops)
                    a2 = a_fn(env, ops)
                    sq = a1 * a2
                    ops.append(sq)
                    s = sq + 0.5
                    ops.append(s)
                    out = torch.log(s)
                    ops.append(out)
                    return out

                return inner_text, run_log
            if fn_name == "neg" and _is_number(a_text):  # "-(2)" is the constant -2, not an operation
                c = -float(a_text)
                return f"{c}", lambda env, ops, c=c: torch.tensor(c, dtype=F64)
            if fn_name == "neg":
                text = f"-({a_text})"
            else:
                text = f"{fn_name}({a_text})"

            def run_unary(env, ops, a_fn=a_fn, fn=UNARY[fn_name]):
                out = fn(a_fn(env, ops))
                ops.append(out)
                return out

            return text, run_unary
        a_text, a_fn = self.build(depth - 1)
        if kind == "**":
            p = rng.choice([2, 3])
            text = f"({a_text})**{p}"

            def run_pow(env, ops, a_fn=a_fn, p=p):
                out = a_fn(env, ops) ** float(p)
                ops.append(out)
                return out

            return text, run_pow
        b_text, b_fn = self.build(depth - 1)
        if kind in ("max", "min"):
            torch_fn = torch.maximum if kind == "max" else torch.minimum
            text = f"{kind}({a_text}, {b_text})"
        elif kind == "/":
            text = f"({a_text}) / (({b_text})**2 + 1)"

            def run_div(env, ops, a_fn=a_fn, b_fn=b_fn):
                a = a_fn(env, ops)
                b = b_fn(env, ops)
                sq = b ** 2.0
                ops.append(sq)
                den = sq + 1.0
                ops.append(den)
                out = a / den
                ops.append(out)
                return out

            return text, run_div
        else:
            torch_fn = {"+": torch.add, "-": torch.sub, "*": torch.mul}[kind]
            text = f"({a_text}) {kind} ({b_text})"

        def run_binary(env, ops, a_fn=a_fn, b_fn=b_fn, torch_fn=torch_fn):
            a = a_fn(env, ops)
            b = b_fn(env, ops)
            out = torch_fn(a, b)
            ops.append(out)
            return out

        return text, run_binary


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _random_cases(n: int, seed: int = 1234):
    rng = random.Random(seed)
    names = ("a", "b", "x", "y")
    gen = RandomExpression(rng, names)
    cases = []
    while len(cases) < n:
        text, fn = gen.build(rng.choice([2, 3, 4]))
        try:
            parsed = graph.parse_expression(text)
        except graph.GraphError:
            continue  # too long / too many nodes / no operation: not what this test is about
        values = {v: rng.uniform(-2.0, 2.0) for v in parsed.variables}
        cases.append((text, fn, values))
    return cases


@pytest.mark.parametrize("text,fn,values", _random_cases(120), ids=lambda v: v if isinstance(v, str) else "")
def test_random_expression_values_and_gradients_equal_torch(text, fn, values):
    g = graph.build_graph(text, values)
    env = {name: t(v) for name, v in values.items()}
    ops: list[torch.Tensor] = []
    backward_keeping(fn(env, ops), ops)

    op_nodes = [n for n in g.nodes if n.kind == "op"]
    assert len(op_nodes) == len(ops), text
    assert_close(torch.tensor([n.value for n in op_nodes], dtype=F64), torch.stack([o.detach() for o in ops]))
    for node, o in zip(op_nodes, ops, strict=True):
        if node.requires_grad:
            assert_close(torch.tensor(node.grad, dtype=F64), o.grad, msg=f"{text}: d/d{node.name}")
        else:
            assert node.grad is None and not o.requires_grad
    for name in g.variables:
        expected = env[name].grad if env[name].grad is not None else torch.tensor(0.0, dtype=F64)
        assert_close(torch.tensor(g.by_name(name).grad, dtype=F64), expected, msg=f"{text}: d/d{name}")


@pytest.mark.parametrize("text,torch_fn", [
    ("x*y + x", lambda x, y: x * y + x),
    ("x*x*x - 2**y", lambda x, y: x * x * x - 2.0 ** y),
    ("max(x, y) * min(x, y)", lambda x, y: torch.maximum(x, y) * torch.minimum(x, y)),
    ("max(x, x) + relu(y - y)", lambda x, y: torch.maximum(x, x) + torch.relu(y - y)),  # ties and relu(0)
    ("x**y", lambda x, y: x ** y),
    ("sigmoid(x)*tanh(y)/exp(x)", lambda x, y: torch.sigmoid(x) * torch.tanh(y) / torch.exp(x)),
    ("-x**2 + -(y)", lambda x, y: -(x ** 2.0) + -y),
    ("log(x*x) + 0*y", lambda x, y: torch.log(x * x) + 0.0 * y),
])
@pytest.mark.parametrize("xv,yv", [(1.5, 0.5), (-2.0, 3.0), (0.7, 0.7)])
def test_hand_written_expressions_equal_torch(text, torch_fn, xv, yv):
    x, y = t(xv), t(yv)
    f = torch_fn(x, y)
    f.backward()
    g = graph.build_graph(text, {"x": xv, "y": yv})
    assert_close(torch.tensor(g.node(g.output).value, dtype=F64), f.detach(), equal_nan=True)
    got = torch.tensor([g.by_name("x").grad, g.by_name("y").grad], dtype=F64)
    want = torch.stack([x.grad if x.grad is not None else torch.zeros((), dtype=F64), y.grad])
    assert_close(got, want, equal_nan=True)


def test_shared_variable_gets_the_sum_of_both_paths_and_the_step_says_so():
    g = graph.build_graph("x*y + x", {"x": -2, "y": 5})
    assert g.shared == ("x",)
    x, y = t(-2), t(5)
    (x * y + x).backward()
    assert_close(torch.tensor(g.by_name("x").grad, dtype=F64), x.grad)  # y + 1 = 6
    step = next(s for s in g.backward_steps if s.node == g.by_name("x").id)
    assert "used 2 times" in " ".join(step.details)
    assert step.equation == "df/dx = df/dq * dq/dx + 1 = 1 * 5 + 1 = 6"


# ----------------------------------------------------------------------------------------------------- the walk
@pytest.mark.parametrize("text", ["(x + y) * z", "x*y + x", "sigmoid(w*x + b)", "(a*b + c)**2", "2*3 + x*exp(2)",
                                  "log(exp(x) + exp(y))", "max(x, 2) - min(x*x, y)"])
def test_steps_visit_every_node_once_per_pass_in_topological_order(text):
    g = graph.build_graph(text, {})
    position = {n.id: i for i, n in enumerate(g.nodes)}
    for n in g.nodes:  # nodes are topologically ordered
        assert all(position[i] < position[n.id] for i in n.inputs), text

    forward = [s.node for s in g.forward_steps]
    assert forward == [n.id for n in g.nodes]  # every node once, operands first
    backward = [s.node for s in g.backward_steps]
    needs_grad = [n.id for n in g.nodes if n.requires_grad]
    assert sorted(backward) == sorted(needs_grad) and len(set(backward)) == len(backward)
    assert backward[0] == g.output
    done = set()
    for node_id in backward:  # a node's gradient is complete only after all its consumers have been visited
        consumers = {e.target for e in g.edges if e.source == node_id}
        assert consumers <= done, (text, node_id)
        done.add(node_id)
    assert [s.phase for s in g.steps] == ["forward"] * len(forward) + ["backward"] * len(backward)
    assert [s.index for s in g.steps] == list(range(len(g.steps)))


def test_every_backward_equation_ends_in_the_nodes_gradient():
    g = graph.build_graph("sigmoid(w*x + b)", {"w": 0.5, "x": -2, "b": 0.1})
    for s in g.backward_steps:
        node = g.node(s.node)
        assert s.equation.startswith(f"df/d{node.name} = ")
        assert s.equation.endswith(f"= {fmt(node.grad)}") or s.equation == "df/df = 1"


def test_dot_reveals_values_and_gradients_only_when_the_walk_reaches_them():
    g = graph.build_graph(graph.DEFAULT_EXPRESSION, graph.DEFAULT_VALUES)
    first = dot.graph_dot(g, 0)
    assert first.startswith("digraph") and first.rstrip().endswith("}")
    assert ">-12<" not in first and "df/dx = ?" in first  # f not computed yet, no gradient yet
    after_forward = dot.graph_dot(g, len(g.forward_steps) - 1)
    assert ">-12<" in after_forward and "df/dx = ?" in after_forward
    everything = dot.graph_dot(g, len(g.steps) - 1)
    assert "df/dx = -4" in everything and "df/dz = 3" in everything and "?" not in everything
    # the current node is highlighted, and so are the nodes it reads
    x_step = len(g.steps) - 1  # last backward step: x
    assert g.steps[x_step].node == g.by_name("x").id
    line_of = {ln.split()[0]: ln for ln in everything.splitlines() if "[shape=" in ln}
    assert "#ffd54f" in line_of[g.by_name("x").id] and "#fff3c4" in line_of[g.by_name("q").id]
    assert everything.count(" -> ") == len(g.edges) + sum(n.kind == "op" for n in g.nodes)


def test_torch_code_shown_on_the_page_runs_and_agrees():
    g = graph.build_graph("max(x, 2) * exp(-1) + x**2 - 2**y + -x*t", {"x": -1.5, "y": 0.5, "t": 3})
    namespace: dict = {}
    exec(compile(graph.torch_code(g), "<torch_code>", "exec"), namespace)  # the code the page shows, run as is
    out = namespace[g.output_name]
    assert_close(out.detach(), torch.tensor(g.node(g.output).value, dtype=F64))
    for v in g.variables:
        assert_close(namespace[v].grad, torch.tensor(g.by_name(v).grad, dtype=F64))


# ------------------------------------------------------------------------------------------- bad and hostile input
def test_division_by_zero_and_log_of_negative_give_inf_nan_and_a_warning_like_torch():
    g = graph.build_graph("x / (y - 5)", {"x": -2, "y": 5})
    assert g.node(g.output).value == -math.inf and g.warnings
    x, y = t(-2), t(5)
    (x / (y - 5)).backward()
    assert_close(torch.tensor([g.by_name("x").grad, g.by_name("y").grad], dtype=F64), torch.stack([x.grad, y.grad]))
    g = graph.build_graph("log(x) * y", {"x": -2, "y": 5})
    assert math.isnan(g.node(g.output).value)
    assert any("not a finite number" in w.lower() for w in g.warnings)


HOSTILE = {
    "import": "__import__('os').system('echo hacked')",
    "attribute": "x.real",
    "dunder attribute": "().__class__.__bases__[0].__subclasses__()",
    "lambda": "(lambda: 1)()",
    "bare lambda": "lambda x: x",
    "huge exponent": "9**9**9",
    "huge exponent tower": "2**2**2**2**2 * x",
    "exponent in parentheses": "x**(9**9)",
    "overflowing exponent": "10**400 * x",
    "inf literal": "1e999 * x",
    "10,000 characters": "x+" * 4999 + "x",
    "thousands of parentheses": "(" * 3000 + "x" + ")" * 3000,
    "nested within 200 characters": "-" * 150 + "x*y",
    "right-nested powers": "x" + "**x" * 60,
    "comprehension": "[x for x in y]",
    "string": "'a' * 10",
    "f-string": "f'{x}'",
    "comparison": "x < y",
    "conditional": "x if y else z",
    "walrus": "(a := x) * 2",
    "subscript": "x[0]",
    "keyword argument": "log(x=1)",
    "starred": "max(*x)",
    "unknown function": "eval('1')",
    "builtins name": "__builtins__ * x",
    "dict": "{'a': x}",
    "boolean": "True * x",
    "complex": "1j * x",
    "statement": "import os",
    "two statements": "x; y",
    "null byte": "x\x00 + y",
    "wrong arity": "exp(x, y)",
    "function as variable": "exp * x",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_is_rejected_within_100_ms(text):
    start = time.perf_counter()
    with pytest.raises(graph.GraphError) as info:
        graph.build_graph(text, {"x": 1.0, "y": 2.0})
    elapsed = time.perf_counter() - start
    assert elapsed < 0.1, f"took {elapsed * 1000:.0f} ms"
    message = str(info.value)
    assert message and "Traceback" not in message and len(message) < 400


def test_limits_are_the_documented_ones():
    at_limit = "x" + "*x" * (graph.MAX_NODES - 1)  # one variable node + MAX_NODES - 1 products
    assert len(graph.parse_expression(at_limit).nodes) == graph.MAX_NODES
    too_many = "x" + "*x" * graph.MAX_NODES
    with pytest.raises(graph.GraphError, match="nodes"):
        graph.parse_expression(too_many)
    assert graph.parse_expression("x + " + "1" * (graph.MAX_CHARS - 4))  # exactly 200 characters is fine
    with pytest.raises(graph.GraphError, match="characters"):
        graph.parse_expression("x + " + "1" * (graph.MAX_CHARS - 3))
    assert graph.parse_expression("x**100") and graph.parse_expression("x**-100")
    with pytest.raises(graph.GraphError, match="exponent"):
        graph.parse_expression("x**101")


def test_values_that_are_not_finite_numbers_are_rejected_with_the_variable_named():
    with pytest.raises(graph.GraphError, match="x"):
        graph.build_graph("x + y", {"x": math.inf, "y": 1})
    with pytest.raises(graph.GraphError, match="y"):
        graph.build_graph("x + y", {"x": 1, "y": "abc"})


# ------------------------------------------------------------------------------ each operator, defined once, vs torch
SPECIAL = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 1e-300, 710.0, -710.0, math.inf, -math.inf, math.nan]
TORCH_OPS = {
    "+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.div, "**": torch.pow, "neg": torch.neg,
    "exp": torch.exp, "log": torch.log, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
    "max": torch.maximum, "min": torch.minimum,
}


def close(got, want, msg: str = "") -> None:
    """float64 values equal to torch's (nan where torch has nan, inf where it has inf, the sign of an inf too).

    Not bit for bit: torch's exp/log/tanh (SLEEF) and libm's differ in the last bit now and then, and 1 - tanh**2
    near saturation turns that ulp into about 1e-11 relative: 1e-9 is still far below the 6 digits a page prints.
    """
    assert_close(torch.as_tensor(got, dtype=F64), torch.as_tensor(want, dtype=F64), equal_nan=True,
                 rtol=1e-9, atol=0, msg=msg)


@pytest.mark.parametrize("key", list(graph_ops.OPERATORS))
def test_each_operator_value_and_backward_equal_torch_at_special_values(key):
    op = graph_ops.OPERATORS[key]
    pairs = [(a, b) for a in SPECIAL for b in (SPECIAL if op.arity == 2 else [0.0])]
    for (a, b), g in itertools.product(pairs, [1.0, -2.5, math.inf, math.nan]):
        scalars = [False, True] if key == "**" and math.isfinite(b) else [False]
        for scalar in scalars:
            ta = t(a)
            tb = b if scalar else t(b)
            y = TORCH_OPS[key](ta, tb) if op.arity == 2 else TORCH_OPS[key](ta)
            if y.requires_grad:
                y.backward(torch.tensor(g, dtype=F64))
            where = f"{key}({a}, {b}) scalar={scalar} g={g}"
            close(op.value(a, b, scalar), y.detach(), where)
            got = op.backward(g, a, b, y.item(), scalar)
            close(got[0], ta.grad if ta.grad is not None else 0.0, where + " d/da")
            if op.arity == 2 and not scalar:
                close(got[1], tb.grad if tb.grad is not None else 0.0, where + " d/db")


# ------------------------------------------------------------------------------------- issue 12: the reproducers
def run_torch_code(g: graph.ComputationalGraph) -> dict[str, float]:
    """Run the code the page prints, as printed; returns what it prints, name -> number."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(graph.torch_code(g), "<torch_code>", "exec"), {})
    printed = {}
    for line in out.getvalue().splitlines():
        name, value = line.rsplit(" = ", 1)
        printed[name] = float(value)  # a complex number here would raise
    return printed


def assert_code_reproduces_page(g: graph.ComputationalGraph) -> None:
    printed = run_torch_code(g)
    out = g.output_name
    page = {out: g.node(g.output).value}
    page.update({f"d{out}/d{n.name}": n.grad for n in g.nodes if n.requires_grad and n.id != g.output})
    assert set(printed) == set(page)
    for name, value in page.items():
        assert fmt(printed[name]) == fmt(value), (g.expression, name, printed[name], value)
        close(value, printed[name], f"{g.expression}: {name}")


@pytest.mark.parametrize("text,values", [
    ("log(2*3) * x", {"x": 1.5}),
    ("max(x, 0*(-1))", {"x": 0.25}),
    ("min(0.001*3, -q1)", {"q1": 0.5}),
    ("max(-2.5, y) + (-2.5)**2.5", {"y": 1.0}),
    ("x * 3.14159265", {"x": 1.0}),
    ("x * 1234567.5", {"x": 1.0}),
    ("2 / x + 2**x - sum + torch", {"x": 0.75, "sum": 1.0, "torch": 2.0}),
    ("-(+2) * x + exp(2*0.5)", {"x": 3.0}),
])
def test_torch_code_runs_as_printed_and_reproduces_the_page_exactly(text, values):
    g = graph.build_graph(text, values)
    assert_code_reproduces_page(g)
    code = graph.torch_code(g)
    assert "3.14159265" in code or "3.14159265" not in text  # constants with every digit
    if text == "x * 1234567.5":
        assert run_torch_code(g)["f"] == 1234567.5 == g.node(g.output).value


@pytest.mark.parametrize("text,values,expected", [
    ("relu(log(x))", {"x": -1.0}, {"x": -1.0}),  # torch's relu passes the gradient through a nan input
    ("max(log(x), y)", {"x": -1.0, "y": 2.0}, {"x": -1.0, "y": 1.0}),
    ("min(log(x), y)", {"x": -1.0, "y": 2.0}, {"x": -1.0, "y": 1.0}),
    ("log(x**2)", {"x": 0.0}, {"x": math.nan}),  # inf * 0, not 0
    ("1/x**2", {"x": 0.0}, {"x": math.nan}),
    ("tanh(c/(relu(c)*d))", {"c": 1e-300, "d": -0.7488}, None),  # a division, not a product with a reciprocal
])
def test_inf_and_nan_follow_torch(text, values, expected):
    g = graph.build_graph(text, values)
    env = {k: t(v) for k, v in values.items()}
    f = torch_eval(text, env)[0]
    f.backward()
    for name in g.variables:
        close(g.by_name(name).grad, env[name].grad, f"{text}: d/d{name}")
        if expected is not None:
            close(g.by_name(name).grad, expected[name])
    for step in g.steps:  # no finite number written where torch has nan
        value = g.node(step.node).value if step.phase == "forward" else g.node(step.node).grad
        assert step.equation.endswith(f"= {fmt(value)}") or step.equation.endswith("(input)") \
            or step.equation.endswith("(constant)") or step.equation == "df/df = 1", step.equation
    assert_code_reproduces_page(g)


FUSED = pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() == "DEFAULT",
                           reason="torch's kernels built without fused multiply-add round 1 - y*y twice")


@FUSED
def test_tanh_backward_equals_torch_bit_for_bit():
    rng = random.Random(13)
    xs = [rng.uniform(-5, 5) for _ in range(2000)] + [rng.uniform(-0.3, 0.3) for _ in range(2000)]
    gs = [rng.choice([1.0, -2.5, rng.uniform(-10, 10)]) for _ in xs]
    x = torch.tensor(xs, dtype=F64, requires_grad=True)
    y = torch.tanh(x)
    y.backward(torch.tensor(gs, dtype=F64))
    tanh = graph_ops.OPERATORS["tanh"]
    got = [tanh.backward(g, a, 0.0, v, False)[0] for g, a, v in zip(gs, xs, y.tolist(), strict=True)]
    assert_close(torch.tensor(got, dtype=F64), x.grad, rtol=0, atol=0)


@FUSED
def test_tanh_paths_that_cancel_give_torchs_exact_zero():
    # issue 21 item 13: two paths of +-3.2e299 through tanh cancel; the page said df/dc = 3.71754e+283
    text, values = "tanh(c / (relu(c) * d))", {"c": 1e-300, "d": -0.7488397846201407}
    g = graph.build_graph(text, values)
    env = {k: t(v) for k, v in values.items()}
    torch_eval(text, env)[0].backward()
    for name in g.variables:
        assert_close(torch.tensor(g.by_name(name).grad, dtype=F64), env[name].grad, rtol=0, atol=0)
    assert g.by_name("c").grad == 0.0
    assert g.steps[-1].equation.endswith("= 0"), g.steps[-1].equation
    assert run_torch_code(g)["df/dc"] == 0.0
    assert_code_reproduces_page(g)


@pytest.mark.parametrize("text", ["max(x, y)", "min(x, y)"])
def test_ties_write_the_rule_the_half_comes_from(text):
    g = graph.build_graph(text, {"x": 1.5, "y": 1.5})
    x_step = next(s for s in g.backward_steps if s.node == g.by_name("x").id)
    assert "1/2 if x == y" in x_step.equation and x_step.equation.endswith("= 0.5")
    assert "(1 if x > y else 0)" not in x_step.equation and "(1 if x < y else 0)" not in x_step.equation
    assert evaluate_written(x_step.equation.split(" = ")[-2]) == 0.5


def test_saturated_sigmoid_is_written_with_enough_digits_to_be_true():
    g = graph.build_graph("sigmoid(x) * 1", {"x": 20.0})
    line = next(d for s in g.backward_steps for d in s.details if d.startswith("dq/dx"))
    numbers, result = line.split("   (")[0].split(" = ")[-2:]
    assert numbers != "1 * (1 - 1)"
    assert fmt(evaluate_written(numbers)) == result == fmt(g.by_name("x").grad)


# --------------------------------------------------------------------- property test: hostile random formulas
FUNCS = {"exp": torch.exp, "log": torch.log, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
         "max": torch.maximum, "min": torch.minimum}
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow}


def torch_eval(text: str, env: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The formula computed with torch from Python's own ast (not cnnviz's parser), as a learner writes it in torch:
    numbers become float64 tensors, except a number exponent (``x ** 2.0``). Returns the output and every operation's
    result in post-order (operands first)."""
    ops: list[torch.Tensor] = []

    def number(node):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -float(node.operand.value)
        return float(node.value) if isinstance(node, ast.Constant) else None

    def visit(node):
        if number(node) is not None:
            return torch.tensor(number(node), dtype=F64)
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.UAdd):
                return visit(node.operand)
            result = -visit(node.operand)
        elif isinstance(node, ast.BinOp):
            left = visit(node.left)
            right = number(node.right) if isinstance(node.op, ast.Pow) and number(node.right) is not None \
                else visit(node.right)
            result = BINOPS[type(node.op)](left, right)
        else:
            result = FUNCS[node.func.id](*[visit(a) for a in node.args])
        ops.append(result)
        return result

    return visit(ast.parse(text, mode="eval").body), ops


def evaluate_written(text: str) -> float:
    """The arithmetic an equation writes out (numbers, + - * / **, functions, ``a if c else b``), done in torch."""
    def visit(node):
        if isinstance(node, ast.Constant):
            return torch.tensor(float(node.value), dtype=F64)
        if isinstance(node, ast.Name):
            return torch.tensor(float(node.id), dtype=F64)  # nan, inf
        if isinstance(node, ast.UnaryOp):
            return -visit(node.operand) if isinstance(node.op, ast.USub) else visit(node.operand)
        if isinstance(node, ast.BinOp):
            return BINOPS[type(node.op)](visit(node.left), visit(node.right))
        if isinstance(node, ast.IfExp):
            return visit(node.body) if bool(visit(node.test)) else visit(node.orelse)
        if isinstance(node, ast.Compare):
            left, right = visit(node.left), visit(node.comparators[0])
            return {ast.Lt: left < right, ast.LtE: left <= right, ast.Gt: left > right, ast.GtE: left >= right,
                    ast.Eq: left == right}[type(node.ops[0])]
        if isinstance(node, ast.BoolOp):
            return all(bool(visit(v)) for v in node.values)
        return FUNCS[node.func.id](*[visit(a) for a in node.args])

    return float(visit(ast.parse(text, mode="eval").body))


NAMES = ("a", "b", "x", "y")
CONSTANTS = ("0", "1", "2", "0.5", "3", "2.5", "1e-300", "1e300", "0.1")
EXPONENTS = ("2", "3", "0.5", "-1", "-2", "0", "2.5", "-0.5", "1")
VALUES = (0.0, 1.0, -1.0, 2.0, 0.5, -2.0, 1e-300, 1e300, 800.0, -800.0, 3.0)


def hostile_formula(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(NAMES) if rng.random() < 0.75 else rng.choice(CONSTANTS)
    kind = rng.choice(["+", "-", "*", "/", "**", "neg", "f", "f", "max", "min"])
    a = hostile_formula(rng, depth - 1)
    if kind == "neg":
        return f"-({a})"
    if kind == "f":
        return f"{rng.choice(['exp', 'log', 'sigmoid', 'tanh', 'relu'])}({a})"
    if kind == "**" and rng.random() < 0.7:
        return f"({a})**{rng.choice(EXPONENTS)}"
    b = hostile_formula(rng, depth - 1)
    return f"{kind}({a}, {b})" if kind in ("max", "min") else f"({a}) {kind} ({b})"


def hostile_cases(n: int, seed: int = 2026) -> list[tuple[str, dict[str, float]]]:
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        text = hostile_formula(rng, rng.choice([2, 3, 4]))
        try:
            parsed = graph.parse_expression(text)
        except graph.GraphError:
            continue
        values = {v: rng.choice(VALUES) if rng.random() < 0.6 else round(rng.uniform(-3, 3), 3)
                  for v in parsed.variables}
        if len(values) > 1 and rng.random() < 0.3:  # a tie between two variables
            first, second = rng.sample(sorted(values), 2)
            values[second] = values[first]
        cases.append((text, values))
    return cases


HOSTILE_CASES = hostile_cases(300)


def test_hostile_cases_reach_nan_inf_ties_and_zeros():
    reached = {"nan": 0, "inf": 0, "tie": 0, "zero grad": 0}
    for text, values in HOSTILE_CASES:
        g = graph.build_graph(text, values)
        numbers = [n.value for n in g.nodes] + [n.grad for n in g.nodes if n.grad is not None]
        reached["nan"] += any(math.isnan(v) for v in numbers)
        reached["inf"] += any(math.isinf(v) for v in numbers)
        reached["tie"] += any(e.local_grad == 0.5 for e in g.edges if g.node(e.target).op in ("max", "min"))
        reached["zero grad"] += any(v == 0 for v in g.gradients().values())
    assert all(count >= 10 for count in reached.values()), reached


@pytest.mark.parametrize("text,values", HOSTILE_CASES, ids=[c[0] for c in HOSTILE_CASES])
def test_random_hostile_formulas_every_number_equals_torch(text, values):
    g = graph.build_graph(text, values)
    env = {name: t(v) for name, v in values.items()}
    out, ops = torch_eval(text, env)
    backward_keeping(out, ops)
    op_nodes = [n for n in g.nodes if n.kind == "op"]
    assert len(op_nodes) == len(ops), text
    for node, o in zip(op_nodes, ops, strict=True):
        close(node.value, o.detach(), f"{text}: {node.name}")
        if node.requires_grad:
            close(node.grad, o.grad, f"{text}: d/d{node.name}")
    for name in g.variables:
        close(g.by_name(name).grad, env[name].grad, f"{text}: d/d{name}")
    assert_code_reproduces_page(g)
    for step in g.steps:  # every equation is true as written: its arithmetic gives the number it ends with
        for line in (step.equation, *[d.split("   (")[0] for d in step.details if d.startswith("d")]):
            parts = line.split(" = ")
            if len(parts) >= 3 and only_numbers(parts[-2]):
                assert fmt(evaluate_written(parts[-2])) == parts[-1], (text, line)


def only_numbers(written: str) -> bool:
    """Whether ``written`` is arithmetic on numbers (not a rule in names such as ``-q``, which equals the next part)."""
    names = {n.id for n in ast.walk(ast.parse(written, mode="eval")) if isinstance(n, ast.Name)}
    return names <= {"nan", "inf"}


@pytest.mark.parametrize("font_px,least", [(15, 12), (12, 12), (18, 16)])  # normal, smallest, projector mode
def test_dot_label_sizes_are_readable_and_the_page_css_covers_each(font_px, least):
    g = graph.build_graph("sigmoid(w1*x1 + w2*x2 + b)", {})
    source = dot.graph_dot(g, len(g.steps) - 1, font_px)
    sizes = {float(v) for v in re.findall(r'(?:fontsize|point-size)="?([0-9.]+)', source)}
    css = dot.graph_text_css(font_px)
    for units in sizes:
        assert units * 4 / 3 >= least, (units, source)  # 1 pt = 4/3 px at natural size
        assert f'text[font-size="{units:.2f}"]' in css and f"font-size: {units:g}px" in css
    for name in g.variables:  # every variable, x2 included, is drawn as a box with its name
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{g.by_name(name).id} ["))
        assert "shape=box" in line and f"<b>{name}</b>" in line
