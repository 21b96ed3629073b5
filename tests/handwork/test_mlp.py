"""cnnviz.handwork.mlp against torch autograd (float64): every value, gradient and update, at several steps."""

from __future__ import annotations

import csv
import io
import math
import random
import re
from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from cnnviz.handwork import mlp
from cnnviz.numbers import fmt
from cnnviz.render import dot

F64 = torch.float64


# ------------------------------------------------------------------------------------ the reference, in torch
def torch_step(preset: str, inputs: dict, targets: dict, weights: dict):
    """Forward + backward with autograd. Returns (values, loss, grads) as python floats."""
    w = {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in weights.items()}
    inp = {k: torch.tensor(v, dtype=F64) for k, v in {**inputs, **targets}.items()}
    if preset == "relu":
        x, y = inp["x"], inp["y"]
        a = torch.relu(w["w1"] * x)
        b = torch.relu(w["w1"] * x)
        c = torch.relu(w["w2"] * a)
        e = torch.relu(w["w3"] * b)
        o = w["w4"] * c + w["w5"] * e
        loss = 0.5 * (o - y) ** 2
        nodes = {"a": a, "b": b, "c": c, "e": e, "o": o}
    else:
        i1, i2, t1, t2 = inp["i1"], inp["i2"], inp["t1"], inp["t2"]
        h1 = w["w1"] * i1 + w["w2"] * i2
        h2 = w["w3"] * i1 + w["w4"] * i2
        a_h1, a_h2 = torch.sigmoid(h1), torch.sigmoid(h2)
        o1 = w["w5"] * a_h1 + w["w6"] * a_h2
        o2 = w["w7"] * a_h1 + w["w8"] * a_h2
        a_o1, a_o2 = torch.sigmoid(o1), torch.sigmoid(o2)
        loss = 0.5 * (t1 - a_o1) ** 2 + 0.5 * (t2 - a_o2) ** 2
        nodes = {"h1": h1, "a_h1": a_h1, "h2": h2, "a_h2": a_h2, "o1": o1, "a_o1": a_o1, "o2": o2, "a_o2": a_o2}
    for n in nodes.values():
        n.retain_grad()
    loss.backward()
    values = {k: v.item() for k, v in nodes.items()}
    grads = {k: v.grad.item() for k, v in nodes.items()}
    grads.update({k: v.grad.item() for k, v in w.items()})
    return values, loss.item(), grads


def torch_train(config: mlp.MLPConfig, steps: int):
    """Plain gradient descent in torch; stops at the first non-finite number, like the backend should."""
    weights = dict(config.weights)
    records = []
    for _ in range(steps):
        values, loss, grads = torch_step(config.preset, dict(config.inputs), dict(config.targets), weights)
        with torch.no_grad():
            new = {k: (torch.tensor(v, dtype=F64) - config.learning_rate * torch.tensor(grads[k], dtype=F64)).item()
                   for k, v in weights.items()}
        records.append((dict(weights), values, loss, grads, new))
        numbers = [loss, *values.values(), *grads.values(), *new.values()]
        if not all(math.isfinite(v) for v in numbers):
            break
        weights = new
    return records


def assert_step_equals_torch(step: mlp.MLPStep, reference, equal_nan: bool = False) -> None:
    weights, values, loss, grads, new = reference

    def vec(d: dict, keys) -> torch.Tensor:
        return torch.tensor([d[k] for k in keys], dtype=F64)

    def close(a, b, what: str) -> None:
        assert_close(a, b, equal_nan=equal_nan, msg=f"{what} at step {step.step}")

    close(vec(step.weights, weights), vec(weights, weights), "weights")
    close(vec(step.values, values), vec(values, values), "values")
    close(torch.tensor(step.loss, dtype=F64), torch.tensor(loss, dtype=F64), "loss")
    assert set(step.grads) == set(grads)
    close(vec(step.grads, grads), vec(grads, grads), "gradients")
    close(vec(step.new_weights, new), vec(new, new), "updated weights")


# ----------------------------------------------------------------------------------------- the worked examples
def test_relu_worked_example_numbers_from_the_issue():
    step = mlp.train(mlp.default_config("relu"), 1).steps[0]
    assert step.values["o"] == 24 and step.loss == 220.5
    assert {k: step.grads[k] for k in ("o", "c", "e", "a", "b")} == {"o": 21, "c": 84, "e": 21, "a": 84, "b": 42}
    assert {k: step.grads[k] for k in ("w1", "w2", "w3", "w4", "w5")} == \
        {"w1": 252, "w2": 336, "w3": 84, "w4": 84, "w5": 168}
    expected_new = {"w1": -23.2, "w2": -32.6, "w3": -6.4, "w4": -4.4, "w5": -15.8}
    for k, v in expected_new.items():
        assert step.new_weights[k] == pytest.approx(v, abs=1e-12)
    text = {e.symbol: e.text for e in mlp.explain_step(step)}
    assert text["dL/dw1"].startswith("dL/dw1 = da/dw1 * dL/da + db/dw1 * dL/db = 2*84 + 2*42 = 252")
    assert "shared" in text["dL/dw1"]
    assert text["o"] == "o = w4 * c + w5 * e = 4*4 + 1*8 = 24"
    assert text["L"].endswith("= 220.5")
    assert [text[f"new w{i}"].rsplit(" = ", 1)[1] for i in range(1, 6)] == ["-23.2", "-32.6", "-6.4", "-4.4", "-15.8"]


def test_sigmoid_worked_example_loss_at_step_0():
    step = mlp.train(mlp.default_config("sigmoid"), 1).steps[0]
    assert f"{step.loss:.6f}" == "0.242520"
    assert fmt(step.loss, style="f") == "0.242520"
    text = {e.symbol: e.text for e in mlp.explain_step(step)}
    assert text["E_total"].endswith("= 0.242520")
    assert text["dE/dw5"].startswith("dE/dw5 = (a_o1 - t1) * a_o1 * (1 - a_o1) * a_h1 = (0.606478 - 0.01)*0.606478*")


# ------------------------------------------------------------------------------------ training vs torch autograd
@pytest.mark.parametrize("preset", ["relu", "sigmoid"])
@pytest.mark.parametrize("rate", [0.001, 0.1, 0.5, 2.0])
def test_every_step_equals_torch(preset, rate):
    base = mlp.default_config(preset)
    config = mlp.make_config(preset, base.inputs, base.targets, base.weights, rate)
    history = mlp.train(config, 60)
    reference = torch_train(config, 60)
    assert len(history.steps) == len(reference)
    for step, ref in zip(history.steps, reference, strict=True):
        assert_step_equals_torch(step, ref)


def _random_config(preset: str, rng: random.Random) -> mlp.MLPConfig:
    p = mlp.PRESETS[preset]
    return mlp.make_config(
        preset,
        {k: rng.uniform(-1, 2) for k, _ in p.inputs}, {k: rng.uniform(-1, 3) for k, _ in p.targets},
        {k: rng.uniform(-1.5, 1.5) for k, _ in p.weights}, rng.choice([0.01, 0.05, 0.3]),
    )


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("preset", ["relu", "sigmoid"])
def test_random_networks_equal_torch(preset, seed):
    config = _random_config(preset, random.Random(seed))
    history = mlp.train(config, 25)
    reference = torch_train(config, 25)
    for step, ref in zip(history.steps, reference, strict=True):
        assert_step_equals_torch(step, ref)


@pytest.mark.parametrize("preset", ["relu", "sigmoid"])
def test_every_equation_shown_states_the_torch_value(preset):
    """The numbers at the end of each line on the page are the autograd numbers (at steps 0, 1 and 7)."""
    config = _random_config(preset, random.Random(42)) if preset == "relu" else mlp.default_config(preset)
    history = mlp.train(config, 8)
    reference = torch_train(config, 8)
    d = "dL" if preset == "relu" else "dE"
    x = config.inputs.get("x", 0.0)
    for k in (0, 1, 7):
        weights, values, loss, grads, new = reference[k]
        relu_on = {n: float(values[n] > 0) for n in values}
        expected = {**values, mlp.PRESETS[preset].loss_name: loss,
                    **{f"{d}/d{n}": g for n, g in grads.items()},
                    **{f"new {n}": v for n, v in new.items()},
                    "da/dw1": relu_on.get("a", 0.0) * x, "db/dw1": relu_on.get("b", 0.0) * x}
        equations = mlp.explain_step(history.steps[k])
        assert len(equations) >= len(values) + len(weights) * 2
        for e in equations:
            assert_close(torch.tensor(e.value, dtype=F64), torch.tensor(expected[e.symbol], dtype=F64),
                         msg=f"step {k}: {e.text}")
            assert e.text.startswith(f"{e.symbol} = ")
            assert f"= {fmt(e.value, style=mlp.PRESETS[preset].style)}" in e.text


# ------------------------------------------------------------------------------------------------- divergence
def test_absurd_learning_rate_diverges_at_the_step_torch_does():
    base = mlp.default_config("relu")
    config = mlp.make_config("relu", base.inputs, base.targets, base.weights, 1e308)
    history = mlp.train(config, 50)
    reference = torch_train(config, 50)
    assert history.diverged_at == len(reference) - 1 == 0  # 1e308 * 252 overflows in the first update
    assert not history.steps[-1].finite and math.isinf(history.steps[-1].new_weights["w1"])
    runs = mlp.compare_learning_rates(base, (0.1, 1e308), 50)
    assert runs[0].diverged_at is None and len(runs[0].losses) == 50
    assert runs[1].diverged_at == 0 and runs[1].losses == (220.5,)  # the loss was finite; the update was not


def test_overflowing_activations_diverge_like_torch():
    base = mlp.default_config("sigmoid")
    weights = {**base.weights, "w1": 100, "w2": 100, "w3": 100, "w4": 100, "w5": 1.7e308, "w6": 1.7e308}
    config = mlp.make_config("sigmoid", {"i1": 1.0, "i2": 1.0}, base.targets, weights, 0.5)  # a_h = 1: o1 = inf
    history = mlp.train(config, 10)
    reference = torch_train(config, 10)
    assert history.diverged_at == len(reference) - 1
    assert history.diverged_at == 0
    assert_step_equals_torch(history.steps[-1], reference[-1], equal_nan=True)  # the same infs and nans
    assert math.isinf(history.steps[-1].values["o1"])


def test_learning_rate_comparison_curves_equal_torch():
    config = mlp.default_config("sigmoid")
    rates = (0.1, 0.2, 0.5, 0.8, 1.0, 2.0, 10.0)
    runs = mlp.compare_learning_rates(config, rates, 40)
    assert [r.learning_rate for r in runs] == list(rates)
    for run in runs:
        ref = torch_train(mlp.make_config("sigmoid", config.inputs, config.targets, config.weights,
                                          run.learning_rate), 40)
        assert_close(torch.tensor(run.losses, dtype=F64), torch.tensor([r[2] for r in ref], dtype=F64))
    final = [r.losses[-1] for r in runs[:6]]
    assert final == sorted(final, reverse=True)  # on this problem a larger rate gets lower in 40 steps


# ------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("text,expected", [
    ("0.1, 0.2, 0.5, 0.8, 1.0, 2.0", (0.1, 0.2, 0.5, 0.8, 1.0, 2.0)),
    ("10", (10.0,)), ("0.1 0.5;2", (0.1, 0.5, 2.0)), ("1e-3, 1e-3", (0.001,)),
])
def test_parse_rates(text, expected):
    assert mlp.parse_rates(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0.1, x", "-1", "inf", "nan", "1e999", "0.1," * 20, "9" * 40])
def test_bad_rates_are_rejected_with_a_message(text):
    with pytest.raises(mlp.MLPError) as info:
        mlp.parse_rates(text)
    assert str(info.value)


@pytest.mark.parametrize("field,kwargs", [
    ("learning rate", {"learning_rate": -0.1}), ("learning rate", {"learning_rate": math.inf}),
    ("w3", {"weights": {"w1": 1, "w2": 1, "w3": math.nan, "w4": 1, "w5": 1}}),
    ("w5", {"weights": {"w1": 1, "w2": 1, "w3": 1, "w4": 1}}),
    ("x", {"inputs": {"x": "two"}}),
])
def test_bad_config_names_the_field(field, kwargs):
    base = mlp.default_config("relu")
    args = {"inputs": base.inputs, "targets": base.targets, "weights": base.weights, "learning_rate": 0.1, **kwargs}
    with pytest.raises(mlp.MLPError, match=field):
        mlp.make_config("relu", **args)
    with pytest.raises(mlp.MLPError):
        mlp.train(base, mlp.MAX_STEPS + 1)


# ----------------------------------------------------------------------------------------------- table and DOT
def test_history_csv_has_one_row_per_step_with_the_exact_numbers():
    history = mlp.train(mlp.default_config("sigmoid"), 30)
    rows = list(csv.DictReader(io.StringIO(mlp.history_csv(history))))
    assert len(rows) == 30
    for row, step in zip(rows, history.steps, strict=True):
        assert int(row["step"]) == step.step
        assert float(row["E_total"]) == step.loss
        assert all(float(row[k]) == v for k, v in step.weights.items())
        assert all(float(row[f"dE/d{k}"]) == step.grads[k] for k in step.weights)


def test_network_dot_shows_values_weights_and_gradients():
    step = mlp.train(mlp.default_config("relu"), 1).steps[0]
    text = dot.network_dot(step)
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    for wanted in ("o = 24", "L = 220.5", "dL/do = 21", "dL/da = 84", "dL/db = 42", "w1 = 2", "this path: 168",
                   "this path: 84", "dL/dw2 = 336", "dL/dw5 = 168"):
        assert wanted in text, wanted


def test_dead_relu_is_explained():
    history = mlp.train(mlp.default_config("relu"), 5)
    assert mlp.first_stuck_step(history) == 1  # w1 = -23.2 switches both first-layer ReLUs off
    assert "dead ReLU" in mlp.stuck_note(history.steps[1])
    assert mlp.stuck_note(history.steps[0]) is None


def test_dying_relu_is_named_at_the_step_where_it_happens_with_the_update_that_caused_it():
    """Issue 21, item 5: the worked example dies at step 1; the note says so with torch's numbers."""
    config = mlp.default_config("relu")
    history = mlp.train(config, 100)
    reference = torch_train(config, 2)
    w1_before, grad, w1_after = reference[0][0]["w1"], reference[0][3]["w1"], reference[0][4]["w1"]
    assert all(reference[1][3][w] == 0 for w in config.weights)  # torch: every weight gradient 0 at step 1
    note = mlp.dying_relu_note(history)
    assert note.startswith("**The dying-ReLU problem.** The update of step 0 moved w1")
    assert f"from {fmt(w1_before)} to {fmt(w1_after)} (`{fmt(w1_before)} - 0.1*{fmt(grad)}`)" in note
    assert f"`w1 * x = {fmt(w1_after)}*2 = {fmt(w1_after * 2)}` <= 0" in note and "repeats step 1" in note
    dead = mlp.make_config("relu", config.inputs, config.targets, {**config.weights, "w1": -1.0}, 0.1)
    assert "dead before training starts" in mlp.dying_relu_note(mlp.train(dead, 3))
    assert mlp.dying_relu_note(mlp.train(mlp.default_config("sigmoid"), 3)) is None


def test_the_learning_rate_offered_after_a_dying_relu_learns_like_torch():
    config = mlp.default_config("relu")
    run = mlp.learning_rate_that_learns(config, 100)
    assert run.learning_rate == 0.003  # the largest of 0.03, 0.01, 0.003, ... that learns
    for rate in (0.03, 0.01):
        assert mlp.first_stuck_step(mlp.train(replace(config, learning_rate=rate), 100)) == 1
    reference = torch_train(replace(config, learning_rate=run.learning_rate), 100)
    assert len(reference) == 100 and all(any(r[3][w] != 0 for w in config.weights) for r in reference)
    losses = torch.tensor([r[2] for r in reference], dtype=F64)
    assert_close(torch.tensor(run.losses, dtype=F64), losses)
    assert losses[-1] < losses[0] / 1000
    assert mlp.learning_rate_that_learns(replace(config, learning_rate=1e-6), 100) is None


@pytest.mark.parametrize("weights", [
    {"w1": 2, "w2": -1, "w3": 2, "w4": 4, "w5": 1},  # c's ReLU off: no gradient reaches w2 or a
    {"w1": 2, "w2": 1, "w3": -0.5, "w4": 4, "w5": 1},  # e's ReLU off
    {"w1": -1, "w2": 1, "w3": 2, "w4": 4, "w5": 1},  # both first-layer ReLUs off
    {"w1": 0, "w2": 1, "w3": 2, "w4": 4, "w5": 1},  # ReLU exactly at 0: torch's gradient there is 0
])
def test_relu_gates_block_the_gradient_like_torch(weights):
    base = mlp.default_config("relu")
    config = mlp.make_config("relu", base.inputs, base.targets, weights, 0.01)
    for step, ref in zip(mlp.train(config, 5).steps, torch_train(config, 5), strict=True):
        assert_step_equals_torch(step, ref)


# ------------------------------------------------------------------------- every shown number, random networks
NUMBER = r"-?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|inf)|nan"


def printed_tolerance(text: str) -> float:
    """Half a unit in the last digit a printed number shows: "0.242520" -> 5e-7, "2.04054e-09" -> 5e-15."""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0)) * (1 + 1e-9)


def assert_printed(text: str, expected: float, what: str) -> None:
    """A printed number is the float64 torch value rounded to the digits it shows (inf and nan as torch has them)."""
    shown = float(text)
    if not math.isfinite(expected) or not math.isfinite(shown):
        assert (math.isnan(shown) and math.isnan(expected)) or shown == expected, f"{what}: {text} vs {expected}"
        return
    tol = printed_tolerance(text) + 1e-12 * abs(expected)  # 1e-12: torch and numpy may differ in the last bit
    assert abs(shown - expected) <= tol, f"{what}: printed {text}, torch {expected!r}"


def evaluate_in_torch(written: str) -> float:
    """Evaluate a written line ("(0.606478 - 0.01)*0.606478*(1 - 0.606478)") with float64 torch, independently."""
    code = written.replace("^", "**").replace("1/2 (", "0.5*(")
    code = re.sub(r"(?<![\w.])(\d+(?:\.\d*)?(?:e[+-]?\d+)?)", r"T(\1)", code)
    assert re.fullmatch(r"[T\d.e+\-*/() ]*", code.replace("ReLU", "").replace("sigmoid", "")), code
    env = {"T": lambda v: torch.tensor(v, dtype=F64), "ReLU": torch.relu, "sigmoid": torch.sigmoid}
    return float(eval(code, {"__builtins__": {}}, env))


def expected_numbers(preset: str, config: mlp.MLPConfig, reference) -> dict[str, float]:
    """Every symbol the page writes at one step, from the torch reference: values, loss, gradients, updates."""
    _weights, values, loss, grads, new = reference
    d = "dL" if preset == "relu" else "dE"
    x = config.inputs.get("x", 0.0)
    return {**values, mlp.PRESETS[preset].loss_name: loss, **{f"{d}/d{n}": g for n, g in grads.items()},
            **{f"new {n}": v for n, v in new.items()},
            "da/dw1": float(values.get("a", 0.0) > 0) * x, "db/dw1": float(values.get("b", 0.0) > 0) * x}


def assert_equation_lines(lines: list[str], expected: dict[str, float], where: str) -> int:
    """Each written line ends with the torch value as printed; the numbers written into it give that value."""
    checked = 0
    for line in lines:
        line = line.split("   (")[0]  # the note at the end
        symbol, *middle, result = line.split(" = ")
        assert_printed(result, expected[symbol], f"{where}: {line}")
        written = middle[-1]
        if all(math.isfinite(float(v)) for v in re.findall(NUMBER, written)) and math.isfinite(expected[symbol]):
            value = evaluate_in_torch(written)
            assert_close(torch.tensor(value, dtype=F64), torch.tensor(expected[symbol], dtype=F64), rtol=1e-4,
                         atol=0, msg=f"{where}: the written line {line!r} gives {value!r}")
        checked += 1
    return checked


def assert_drawing_numbers(text: str, step_ref, preset: str, config: mlp.MLPConfig, where: str) -> int:
    """Every "name = number" in the DOT drawing equals torch's number for that name, as printed."""
    weights, values, loss, grads, _new = step_ref
    d = "dL" if preset == "relu" else "dE"
    known = {**values, **weights, **config.inputs, **config.targets, mlp.PRESETS[preset].loss_name: loss,
             **{f"{d}/d{n}": g for n, g in grads.items()}}
    text = text.replace("\\n", "\n")  # DOT's line breaks in edge labels
    found = re.findall(rf"([A-Za-z_][\w/]*) = ({NUMBER})(?![\d./])", text)  # not the title's "L = 1/2 (o - y)^2"
    for name, printed in found:
        assert_printed(printed, known[name], f"{where}: {name} in the drawing")
    if preset == "relu":
        x = config.inputs["x"]
        shares = re.findall(rf"this path: ({NUMBER})", text)
        for printed, node in zip(shares, ("a", "b"), strict=True):  # w1's two edges, x -> a and x -> b
            assert_printed(printed, x * float(values[node] > 0) * grads[node], f"{where}: w1's share via {node}")
    assert len({n for n, _ in found}) >= len(values) + len(weights)
    return len(found)


def random_config(preset: str, rng: random.Random) -> mlp.MLPConfig:
    """Numbers of every size a learner might type: ordinary, tiny, large, exact zeros, saturating sigmoids."""

    def number() -> float:
        kind = rng.random()
        if kind < 0.45:
            return rng.uniform(-2, 2)
        if kind < 0.55:
            return 0.0
        if kind < 0.8:
            return rng.choice([-1, 1]) * 10 ** rng.uniform(-4, 1.5)
        return rng.choice([-1, 1]) * rng.uniform(8, 60)  # saturates a sigmoid: a = 0.99999999...

    p = mlp.PRESETS[preset]
    return mlp.make_config(preset, {k: number() for k, _ in p.inputs}, {k: number() for k, _ in p.targets},
                           {k: number() for k, _ in p.weights}, rng.choice([0.0, 0.001, 0.1, 0.5, 2.0]))


@pytest.mark.parametrize("preset", ["relu", "sigmoid"])
def test_property_every_number_written_or_drawn_equals_torch(preset):
    """Hundreds of random networks: every step equals autograd, and at a random step every line of math (its
    printed result, and the value of the numbers written into it) and every number of the drawing."""
    rng = random.Random(1234 if preset == "relu" else 4321)
    lines = drawn = 0
    for trial in range(250):
        config = random_config(preset, rng)
        steps = rng.randint(1, 6)
        history = mlp.train(config, steps)
        reference = torch_train(config, steps)
        assert len(history.steps) == len(reference)
        for step, ref in zip(history.steps, reference, strict=True):
            assert_step_equals_torch(step, ref, equal_nan=True)
        k = rng.randrange(len(history.steps))
        where = f"trial {trial}, step {k}, {config}"
        text = [e.text for e in mlp.explain_step(history.steps[k])]
        lines += assert_equation_lines(text, expected_numbers(preset, config, reference[k]), where)
        drawn += assert_drawing_numbers(dot.network_dot(history.steps[k]), reference[k], preset, config, where)
    assert lines > 250 * 20 and drawn > 250 * 10


def test_saturated_sigmoid_lines_show_enough_digits():
    """Issue 12: a_o1 = sigmoid(20) = 0.99999999794 was written 1.000000, so "(1 - 1.000000)*..." read as 0."""
    config = mlp.make_config("sigmoid", {"i1": 1, "i2": 1}, {"t1": 0.01, "t2": 0.99},
                             {f"w{i}": 10.0 for i in range(1, 9)}, 0.5)
    step = mlp.train(config, 1).steps[0]
    text = {e.symbol: e.text for e in mlp.explain_step(step)}
    assert "(1 - 1.000000)" not in text["dE/dw5"]
    assert "(1 - 0.999999997939)" in text["dE/dw5"] and text["dE/dw5"].endswith("= 2.04054e-09")
    assert_equation_lines(list(text.values()), expected_numbers("sigmoid", config, torch_train(config, 1)[0]),
                          "saturated")


def test_cancelling_subtraction_shows_enough_digits():
    """o and y equal to six digits: "1.33918 - 1.34299" would not give the printed dL/do."""
    config = mlp.make_config("relu", {"x": 1.0}, {"y": 1.0000001}, {"w1": 1, "w2": 1, "w3": 1, "w4": 0.5,
                                                                     "w5": 0.5}, 0.1)
    text = {e.symbol: e.text for e in mlp.explain_step(mlp.train(config, 1).steps[0])}
    assert text["dL/do"] == "dL/do = o - y = 1 - 1.0000001 = -1e-07"


@pytest.mark.parametrize("weights,lr,where,learning_rate_blamed", [
    ({"w1": 1e308}, 0.1, "forward pass of step 0 gives a = inf", False),  # issue 12: 2 * 1e308 overflows
    ({"w4": 1e300, "w5": 1e300}, 0.1, "forward pass of step 0 gives L = inf", False),  # o = 1.2e301, o^2 = inf
    ({}, 1e308, "update of step 0 gives new w1 = -inf", True),  # 1e308 * 252
])
def test_divergence_note_says_where_the_overflow_is(weights, lr, where, learning_rate_blamed):
    base = mlp.default_config("relu")
    config = mlp.make_config("relu", base.inputs, base.targets, {**base.weights, **weights}, lr)
    history = mlp.train(config, 50)
    assert history.diverged_at == len(torch_train(config, 50)) - 1
    note = mlp.divergence_note(history)
    assert where in note, note
    assert ("too large" in note) == learning_rate_blamed, note
    if not learning_rate_blamed:
        assert "before any update" in note and "learning rate plays no part" in note
    assert mlp.divergence_note(mlp.train(base, 5)) is None


def test_divergence_after_updates_blames_the_learning_rate():
    """Finite at step 0; the update made w1 so large that step 1's forward pass overflows."""
    base = mlp.default_config("relu")
    config = mlp.make_config("relu", base.inputs, base.targets, base.weights, 0.1)
    first = mlp.training_step(config, base.weights, 0)
    second = mlp.training_step(config, {**base.weights, "w1": 1e308}, 1)
    note = mlp.divergence_note(mlp.MLPHistory(config, (first, second), diverged_at=1))
    assert "step 1" in note and "forward pass" in note and "a = inf" in note
    assert "The update before it made the weights grow" in note and "learning rate 0.1 is too large" in note


def test_relu_learning_rates_show_the_lesson():
    """Issue 15: the ReLU comparison's default rates were six identical flat curves at 4.5; now they differ and
    include the 0.001 the page recommends, with the too-large one marked stuck (dead ReLU)."""
    p = mlp.PRESETS["relu"]
    assert 0.001 in p.rates
    runs = mlp.compare_learning_rates(mlp.default_config("relu"), p.rates, 100)
    finals = [round(r.losses[-1], 6) for r in runs]
    assert len(set(finals)) >= 3, finals
    curves = {tuple(round(v, 9) for v in r.losses[:20]) for r in runs}
    assert len(curves) == len(runs)  # no two curves alike
    good = runs[p.rates.index(0.001)]
    assert good.losses[-1] < 1e-3 and good.stuck_at is None
    assert any(r.stuck_at is not None for r in runs)
    assert mlp.lr_run_row(runs[-1], p)["status"].startswith("stuck from step 1")
    ref = torch_train(mlp.make_config("relu", dict(p.inputs), dict(p.targets), dict(p.weights), 0.001),
                      100)
    assert_close(torch.tensor(good.losses, dtype=F64), torch.tensor([r[2] for r in ref], dtype=F64))


@pytest.mark.parametrize("text,ok", [("0.5", 0.5), ("-2", -2.0), ("1e-300", 1e-300), (" 3 ", 3.0), ("abc", None),
                                     ("inf", None), ("nan", None), ("1e999", None), ("", None)])
def test_link_numbers(text, ok):
    if ok is None:
        with pytest.raises(mlp.MLPError):
            mlp.parse_link_number(text)
    else:
        assert mlp.parse_link_number(text) == ok
        assert float(mlp.link_text(ok)) == ok


def test_link_text_round_trips_every_float():
    rng = random.Random(0)
    for v in [0.15, 2.0, -23.2, 1e-300, 1.7976931348623157e308, 5e-324] + [rng.uniform(-1, 1) for _ in range(200)]:
        assert float(mlp.link_text(v)) == v
    assert mlp.link_text(2.0) == "2" and mlp.link_text(0.15) == "0.15"
