"""The two tiny MLPs of the worked examples, one record per training step: forward, backward, update.

* ``relu``: one input, ReLU units, a shared weight. x = 2, y = 3, w1..w5 = 2, 1, 2, 4, 1, learning rate 0.1,
  L = 1/2 (o - y)^2 with a = ReLU(w1 x), b = ReLU(w1 x), c = ReLU(w2 a), e = ReLU(w3 b), o = w4 c + w5 e.
* ``sigmoid``: a 2-2-2 sigmoid network without biases, E_total = 1/2 (t1 - a_o1)^2 + 1/2 (t2 - a_o2)^2.

Every gradient is written out in closed form (the chain rule done by hand); the tests recompute all of them with
torch autograd. :func:`train` runs plain gradient descent and stops at the first inf/nan (divergence).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cnnviz.handwork.graph_ops import sigmoid
from cnnviz.numbers import factor, fmt

MAX_STEPS = 500
MAX_RATES = 12
WRITTEN_RTOL = 1e-4  # a written line, evaluated with its printed numbers, gives its printed result to 4 digits


class MLPError(ValueError):
    """A configuration the page cannot run; the message says what to change."""


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    inputs: tuple[tuple[str, float], ...]
    targets: tuple[tuple[str, float], ...]
    weights: tuple[tuple[str, float], ...]
    learning_rate: float
    loss_name: str  # "L" or "E_total"
    value_names: tuple[str, ...]  # forward values, in computation order
    grad_names: tuple[str, ...]  # nodes whose gradient is recorded (besides the weights)
    style: str  # number style for fmt(): "g" (integers, short decimals) or "f" (6 decimals)
    rates: tuple[float, ...]  # the learning-rate comparison's default rates: too small, good, too large


PRESETS: dict[str, Preset] = {
    "relu": Preset(
        key="relu", title="One-input ReLU network (shared weight w1)",
        inputs=(("x", 2.0),), targets=(("y", 3.0),),
        weights=(("w1", 2.0), ("w2", 1.0), ("w3", 2.0), ("w4", 4.0), ("w5", 1.0)),
        learning_rate=0.1, loss_name="L", value_names=("a", "b", "c", "e", "o"),
        grad_names=("o", "c", "e", "a", "b"), style="g",
        rates=(0.0001, 0.0005, 0.001, 0.003, 0.01),  # slow, good, fast; 0.01 kills both ReLUs at step 1
    ),
    "sigmoid": Preset(
        key="sigmoid", title="2-2-2 sigmoid network",
        inputs=(("i1", 0.05), ("i2", 0.10)), targets=(("t1", 0.01), ("t2", 0.99)),
        weights=(("w1", 0.15), ("w2", 0.20), ("w3", 0.25), ("w4", 0.30),
                 ("w5", 0.40), ("w6", 0.45), ("w7", 0.50), ("w8", 0.55)),
        learning_rate=0.5, loss_name="E_total",
        value_names=("h1", "a_h1", "h2", "a_h2", "o1", "a_o1", "o2", "a_o2"),
        grad_names=("a_o1", "a_o2", "o1", "o2", "a_h1", "a_h2", "h1", "h2"), style="f",
        rates=(0.1, 0.2, 0.5, 0.8, 1.0, 2.0),
    ),
}


@dataclass(frozen=True)
class MLPConfig:
    """Everything a run needs: the preset's network with these numbers."""

    preset: str
    inputs: Mapping[str, float]
    targets: Mapping[str, float]
    weights: Mapping[str, float]
    learning_rate: float


@dataclass(frozen=True)
class MLPStep:
    """Training step ``step``: the forward pass with ``weights``, the gradients, and the updated weights."""

    step: int
    preset: str
    inputs: Mapping[str, float]
    targets: Mapping[str, float]
    learning_rate: float
    weights: Mapping[str, float]  # before this step's update
    values: Mapping[str, float]  # forward values: a, b, c, e, o  /  h1, a_h1, ..., a_o2
    loss: float
    grads: Mapping[str, float]  # d loss / d node and d loss / d weight, keyed "o", "a_h1", "w1", ...
    new_weights: Mapping[str, float]  # weights - learning_rate * grads

    @property
    def finite(self) -> bool:
        numbers = [self.loss, *self.values.values(), *self.grads.values(), *self.new_weights.values()]
        return all(math.isfinite(v) for v in numbers)


@dataclass(frozen=True)
class MLPHistory:
    config: MLPConfig
    steps: tuple[MLPStep, ...]
    diverged_at: int | None  # the first step with an inf/nan anywhere; training stopped there

    @property
    def losses(self) -> np.ndarray:
        return np.array([s.loss for s in self.steps], dtype=np.float64)  # (n_steps,)


@dataclass(frozen=True)
class Equation:
    """One line of hand-worked math: ``symbol = formula = substituted = value``."""

    phase: str  # "forward" | "backward" | "update"
    symbol: str
    substituted: str  # the formula with numbers in: evaluated as written, it gives ``value`` (see WRITTEN_RTOL)
    value: float
    text: str  # the whole line, with the note (if any) at the end

    def display(self, width: int = 64) -> str:
        """``text`` if it fits in ``width`` characters, else one ``= ...`` per line, aligned under the first ``=``."""
        if len(self.text) <= width:
            return self.text
        head, *rest = self.text.split(" = ")
        indent = " " * len(head)

        def wrap(part: str) -> str:  # a long sum: one term per line
            return part.replace(" + ", f"\n{indent} + ") if len(indent) + 3 + len(part) > width else part

        return f"{head} = {wrap(rest[0])}" + "".join(f"\n{indent} = {wrap(part)}" for part in rest[1:])


@dataclass(frozen=True)
class LRRun:
    """One learning rate's loss curve; ``losses`` stops before the first non-finite loss."""

    learning_rate: float
    losses: tuple[float, ...]
    diverged_at: int | None
    stuck_at: int | None = None  # the first step from which every gradient is 0 (e.g. a dead ReLU)


# ------------------------------------------------------------------------------------------------------- configs
def default_config(preset: str) -> MLPConfig:
    """The worked example's numbers for ``preset`` ("relu" or "sigmoid")."""
    p = preset_of(preset)
    return MLPConfig(preset=p.key, inputs=dict(p.inputs), targets=dict(p.targets), weights=dict(p.weights),
                     learning_rate=p.learning_rate)


def make_config(preset: str, inputs: Mapping[str, float], targets: Mapping[str, float],
                weights: Mapping[str, float], learning_rate: float) -> MLPConfig:
    """A validated config: every number present and finite, the learning rate >= 0.

    Raises:
        MLPError: naming the field to fix.
    """
    p = preset_of(preset)

    def clean(group: str, names: Sequence[str], given: Mapping[str, float]) -> dict[str, float]:
        out = {}
        for name in names:
            if name not in given:
                raise MLPError(f"{group} {name} is missing.")
            try:
                v = float(given[name])
            except (TypeError, ValueError):
                raise MLPError(f"{group} {name} must be a number.") from None
            if not math.isfinite(v):
                raise MLPError(f"{group} {name} must be a finite number, not {v}.")
            out[name] = v
        return out

    ins = clean("Input", [n for n, _ in p.inputs], inputs)
    tgs = clean("Target", [n for n, _ in p.targets], targets)
    ws = clean("Weight", [n for n, _ in p.weights], weights)
    try:
        lr = float(learning_rate)
    except (TypeError, ValueError):
        raise MLPError("The learning rate must be a number.") from None
    if not math.isfinite(lr) or lr < 0:
        raise MLPError(f"The learning rate must be a finite number >= 0, not {lr}.")
    return MLPConfig(preset=p.key, inputs=ins, targets=tgs, weights=ws, learning_rate=lr)


def preset_of(key: str) -> Preset:
    if key not in PRESETS:
        raise MLPError(f"Unknown network {key!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[key]


# -------------------------------------------------------------------------------------------- forward + backward
def _relu(z: np.float64) -> np.float64:
    return np.maximum(z, 0.0)


def relu_grad(out: np.float64) -> float:
    return 1.0 if out > 0 else 0.0  # torch: gradient where the ReLU's output is > 0, else 0


def _relu_pass(inputs: Mapping[str, float], targets: Mapping[str, float], w: Mapping[str, float]):
    f = {k: np.float64(v) for k, v in w.items()}
    x, y = np.float64(inputs["x"]), np.float64(targets["y"])
    a = _relu(f["w1"] * x)
    b = _relu(f["w1"] * x)  # the same weight w1 feeds two units: two paths back to w1
    c = _relu(f["w2"] * a)
    e = _relu(f["w3"] * b)
    o = f["w4"] * c + f["w5"] * e
    loss = 0.5 * (o - y) ** 2
    d_o = o - y
    d_c = d_o * f["w4"]
    d_e = d_o * f["w5"]
    d_a = d_c * relu_grad(c) * f["w2"]
    d_b = d_e * relu_grad(e) * f["w3"]
    grads = {
        "o": d_o, "c": d_c, "e": d_e, "a": d_a, "b": d_b,
        "w1": x * relu_grad(a) * d_a + x * relu_grad(b) * d_b,
        "w2": d_c * relu_grad(c) * a, "w3": d_e * relu_grad(e) * b, "w4": d_o * c, "w5": d_o * e,
    }
    return {"a": a, "b": b, "c": c, "e": e, "o": o}, loss, grads


def _sigmoid_pass(inputs: Mapping[str, float], targets: Mapping[str, float], w: Mapping[str, float]):
    f = {k: np.float64(v) for k, v in w.items()}
    i1, i2 = np.float64(inputs["i1"]), np.float64(inputs["i2"])
    t1, t2 = np.float64(targets["t1"]), np.float64(targets["t2"])
    h1 = f["w1"] * i1 + f["w2"] * i2
    h2 = f["w3"] * i1 + f["w4"] * i2
    a_h1, a_h2 = sigmoid(h1), sigmoid(h2)
    o1 = f["w5"] * a_h1 + f["w6"] * a_h2
    o2 = f["w7"] * a_h1 + f["w8"] * a_h2
    a_o1, a_o2 = sigmoid(o1), sigmoid(o2)
    loss = 0.5 * (t1 - a_o1) ** 2 + 0.5 * (t2 - a_o2) ** 2
    d_ao1, d_ao2 = a_o1 - t1, a_o2 - t2
    d_o1 = d_ao1 * a_o1 * (1 - a_o1)
    d_o2 = d_ao2 * a_o2 * (1 - a_o2)
    d_ah1 = d_o1 * f["w5"] + d_o2 * f["w7"]
    d_ah2 = d_o1 * f["w6"] + d_o2 * f["w8"]
    d_h1 = d_ah1 * a_h1 * (1 - a_h1)
    d_h2 = d_ah2 * a_h2 * (1 - a_h2)
    grads = {
        "a_o1": d_ao1, "a_o2": d_ao2, "o1": d_o1, "o2": d_o2, "a_h1": d_ah1, "a_h2": d_ah2, "h1": d_h1, "h2": d_h2,
        "w5": d_o1 * a_h1, "w6": d_o1 * a_h2, "w7": d_o2 * a_h1, "w8": d_o2 * a_h2,
        "w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
    }
    values = {"h1": h1, "a_h1": a_h1, "h2": h2, "a_h2": a_h2, "o1": o1, "a_o1": a_o1, "o2": o2, "a_o2": a_o2}
    return values, loss, grads


_PASSES: dict[str, Callable] = {"relu": _relu_pass, "sigmoid": _sigmoid_pass}


def training_step(config: MLPConfig, weights: Mapping[str, float], step: int = 0) -> MLPStep:
    """Forward, backward and one gradient-descent update at ``weights`` (inf/nan are kept, never raised)."""
    p = preset_of(config.preset)
    with np.errstate(all="ignore"):
        values, loss, grads = _PASSES[p.key](config.inputs, config.targets, weights)
        lr = np.float64(config.learning_rate)
        new = {k: float(np.float64(weights[k]) - lr * grads[k]) for k, _ in p.weights}
    return MLPStep(
        step=step, preset=p.key, inputs=dict(config.inputs), targets=dict(config.targets),
        learning_rate=float(config.learning_rate), weights={k: float(weights[k]) for k, _ in p.weights},
        values={k: float(values[k]) for k in p.value_names}, loss=float(loss),
        grads={**{k: float(grads[k]) for k in p.grad_names}, **{k: float(grads[k]) for k, _ in p.weights}},
        new_weights=new,
    )


def train(config: MLPConfig, steps: int) -> MLPHistory:
    """Run ``steps`` steps of gradient descent from the config's weights.

    Args:
        config: from :func:`make_config` or :func:`default_config`.
        steps: 1..MAX_STEPS.
    Returns:
        one :class:`MLPStep` per step; training stops at the first step with an inf/nan (``diverged_at``).
    """
    if not 1 <= int(steps) <= MAX_STEPS:
        raise MLPError(f"Train between 1 and {MAX_STEPS} steps, not {steps}.")
    records: list[MLPStep] = []
    weights = dict(config.weights)
    diverged_at = None
    for k in range(int(steps)):
        record = training_step(config, weights, k)
        records.append(record)
        if not record.finite:
            diverged_at = k
            break
        weights = dict(record.new_weights)
    return MLPHistory(config=config, steps=tuple(records), diverged_at=diverged_at)


def stuck_note(step: MLPStep) -> str | None:
    """A sentence when training cannot move any more (every ReLU off, every gradient 0), else None."""
    if step.preset == "relu" and step.finite and all(step.grads[k] == 0 for k, _ in PRESETS["relu"].weights):
        if step.values["a"] == 0 and step.values["b"] == 0:
            return ("Both first-layer ReLUs output 0 (w1 * x <= 0), so every gradient is 0 and the weights stop "
                    "changing: a dead ReLU.")
        return "Every gradient is 0 at this step, so the weights stop changing."
    return None


def first_stuck_step(history: MLPHistory) -> int | None:
    """The first step from which training cannot move (see :func:`stuck_note`), or None."""
    return next((s.step for s in history.steps if stuck_note(s)), None)


def _dead_relus(step: MLPStep) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """The layer whose ReLUs are all off: its name and each ReLU input's (weight, operand), else None."""
    if step.values["a"] == 0 and step.values["b"] == 0:
        return "first-layer ReLUs", (("w1", "x"),)  # a and b share w1 * x
    if step.values["c"] == 0 and step.values["e"] == 0:
        return "second-layer ReLUs", (("w2", "a"), ("w3", "b"))
    return None


def dying_relu_note(history: MLPHistory) -> str | None:
    """The dying-ReLU problem in words, for the step where it happens: which update switched which ReLUs off.

    Markdown: the arithmetic is in code spans (its ``*`` is not emphasis).

    Returns:
        None unless a whole layer of ReLUs is off at :func:`first_stuck_step` (every gradient 0 from there on).
    """
    k = first_stuck_step(history)
    if k is None or (dead := _dead_relus(history.steps[k])) is None:
        return None
    layer, units = dead
    step = history.steps[k]
    numbers = {**step.inputs, **step.values}
    products = " and ".join(f"`{w} * {n} = {fmt(step.weights[w])}*{factor(numbers[n])} = "
                            f"{fmt(step.weights[w] * numbers[n])}`" for w, n in units)
    off = (f"{products}{' are both' if len(units) > 1 else ''} <= 0, so both {layer} output 0. A ReLU whose input "
           f"is <= 0 outputs 0 and passes back a gradient of 0, so every gradient is 0: no update can change a weight")
    if k == 0:
        return (f"The network is dead before training starts: {off}, whatever the learning rate. Change the numbers "
                f"so that {' and '.join(f'`{w} * {n}`' for w, n in units)} > 0.")
    before = history.steps[k - 1]
    moves = " and ".join(f"{w} from {fmt(before.weights[w])} to {fmt(step.weights[w])} "
                         f"(`{fmt(before.weights[w])} - {fmt(before.learning_rate)}*{factor(before.grads[w])}`)"
                         for w, _ in units)
    return (f"**The dying-ReLU problem.** The update of step {k - 1} moved {moves}, a step far too large. Now {off} "
            f"again, and every later step repeats step {k}. The network has died; Play stops here.")


def learning_rate_that_learns(config: MLPConfig, steps: int = 100) -> LRRun | None:
    """The largest learning rate on the 3, 1, 0.3, 0.1, ... ladder below ``config.learning_rate`` (down to 1e-6)
    at which ``steps`` steps learn: nothing diverges or dies, and the loss ends below 1/1000 of where it started.

    Returns:
        that rate's run, or None when no rate on the ladder learns.
    """
    ladder = sorted({float(f"{m}e{e}") for e in range(-6, 7) for m in (1, 3)}, reverse=True)
    for rate in (r for r in ladder if r < config.learning_rate):
        (run,) = compare_learning_rates(config, [rate], steps)
        if run.diverged_at is None and run.stuck_at is None and run.losses[-1] < run.losses[0] / 1000:
            return run
    return None


def divergence_note(history: MLPHistory) -> str | None:
    """What overflowed first, where, and why (None when training stayed finite).

    An overflow in the forward or backward pass of step 0 happens before any update, so it is the typed numbers,
    not the learning rate; an overflowing update, or an overflow after updates, is the learning rate's.
    """
    k = history.diverged_at
    if k is None:
        return None
    step = history.steps[k]
    d = "dL" if step.preset == "relu" else "dE"
    loss_name = preset_of(step.preset).loss_name
    forward = [*step.values.items(), (loss_name, step.loss)]
    backward = [(f"{d}/d{name}", v) for name, v in step.grads.items()]
    update = [(f"new {name}", v) for name, v in step.new_weights.items()]
    lr = fmt(step.learning_rate)
    for where, numbers in (("forward pass", forward), ("backward pass", backward), ("update", update)):
        bad = next(((name, v) for name, v in numbers if not math.isfinite(v)), None)
        if bad is None:
            continue
        what = f"the {where} of step {k} gives {bad[0]} = {fmt(bad[1])}"
        if where == "update":
            return (f"Training diverged at step {k}: {what} (the gradients are finite, the step lr * gradient is "
                    f"not). The learning rate {lr} is too large for these numbers; lower it to train further.")
        if k == 0:
            return (f"The numbers overflow before any training: {what}, computed from the numbers as typed, before "
                    f"any update, so the learning rate plays no part. float64 holds numbers up to about 1.8e308; "
                    f"use smaller weights or inputs.")
        updates = "The update" if k == 1 else f"The {k} updates"
        return (f"Training diverged at step {k}: {what}. {updates} before it made the weights grow: the learning "
                f"rate {lr} is too large for these numbers; lower it to train further.")
    return None


def parse_link_number(text: str) -> float:
    """A number from a link's query string: finite, else MLPError saying why."""
    try:
        v = float(str(text).strip())
    except ValueError:
        raise MLPError("it is not a number") from None
    if not math.isfinite(v):
        raise MLPError("it is not a finite number")
    return v


def link_text(value: float) -> str:
    """A number for a link: the shortest text that reads back as exactly this float (2, 0.15, 1e-300)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


# ------------------------------------------------------------------------------------------------ learning rates
def parse_rates(text: str) -> tuple[float, ...]:
    """``"0.1, 0.2, 10"`` -> (0.1, 0.2, 10.0). Raises MLPError naming the entry that is not a rate."""
    parts = [t for t in re.split(r"[,;\s]+", str(text).strip()) if t]
    if not parts:
        raise MLPError("List at least one learning rate, e.g. 0.1, 0.5, 2.")
    if len(parts) > MAX_RATES:
        raise MLPError(f"Compare at most {MAX_RATES} learning rates at once.")
    rates = []
    for t in parts:
        if len(t) > 30:
            raise MLPError(f"{t[:30]}... is not a learning rate.")
        try:
            r = float(t)
        except ValueError:
            raise MLPError(f"{t!r} is not a number. Write learning rates separated by commas, e.g. 0.1, 0.5, 2.") \
                from None
        if not math.isfinite(r) or r < 0:
            raise MLPError(f"{t} is not a learning rate: use finite numbers >= 0.")
        rates.append(r)
    return tuple(dict.fromkeys(rates))


def compare_learning_rates(config: MLPConfig, rates: Sequence[float], steps: int) -> tuple[LRRun, ...]:
    """The loss curve of the same network and data for each learning rate; a diverging run is cut at its inf/nan."""
    runs = []
    for rate in rates:
        history = train(MLPConfig(config.preset, config.inputs, config.targets, config.weights, float(rate)), steps)
        losses = history.losses
        bad = np.flatnonzero(~np.isfinite(losses))
        finite = losses if len(bad) == 0 else losses[: bad[0]]  # the curve up to the last finite loss
        runs.append(LRRun(learning_rate=float(rate), losses=tuple(float(v) for v in finite),
                          diverged_at=history.diverged_at, stuck_at=first_stuck_step(history)))
    return tuple(runs)


# ---------------------------------------------------------------------------------------------------- equations
# Each line of hand-worked math: phase, symbol = formula = the formula with {numbers} in; "; note" at the end.
# D1 and D2 stand for the output units' deltas, (a_o - t) * a_o * (1 - a_o), written with numbers.
_EQUATIONS = {
    "relu": """
forward a = ReLU(w1 * x) = ReLU({w1}*{x})
forward b = ReLU(w1 * x) = ReLU({w1}*{x})
forward c = ReLU(w2 * a) = ReLU({w2}*{a})
forward e = ReLU(w3 * b) = ReLU({w3}*{b})
forward o = w4 * c + w5 * e = {w4}*{c} + {w5}*{e}
forward L = 1/2 (o - y)^2 = 1/2 ({o} - {y})^2
backward dL/do = o - y = {o} - {y}
backward dL/dw4 = dL/do * c = {dL/do}*{c}
backward dL/dw5 = dL/do * e = {dL/do}*{e}
backward dL/dc = dL/do * w4 = {dL/do}*{w4}
backward dL/de = dL/do * w5 = {dL/do}*{w5}
backward dL/dw2 = dL/dc * ReLU'(w2 * a) * a = {dL/dc}*{r_c}*{a}
backward dL/dw3 = dL/de * ReLU'(w3 * b) * b = {dL/de}*{r_e}*{b}
backward dL/da = dL/dc * ReLU'(w2 * a) * w2 = {dL/dc}*{r_c}*{w2}
backward dL/db = dL/de * ReLU'(w3 * b) * w3 = {dL/de}*{r_e}*{w3}
backward da/dw1 = ReLU'(w1 * x) * x = {r_a}*{x}
backward db/dw1 = ReLU'(w1 * x) * x = {r_b}*{x}
backward dL/dw1 = da/dw1 * dL/da + db/dw1 * dL/db = {da/dw1}*{dL/da} + {db/dw1}*{dL/db}; w1 is shared: its two paths add
""",
    "sigmoid": """
forward h1 = w1 * i1 + w2 * i2 = {w1}*{i1} + {w2}*{i2}
forward a_h1 = sigmoid(h1) = sigmoid({h1})
forward h2 = w3 * i1 + w4 * i2 = {w3}*{i1} + {w4}*{i2}
forward a_h2 = sigmoid(h2) = sigmoid({h2})
forward o1 = w5 * a_h1 + w6 * a_h2 = {w5}*{a_h1} + {w6}*{a_h2}
forward a_o1 = sigmoid(o1) = sigmoid({o1})
forward o2 = w7 * a_h1 + w8 * a_h2 = {w7}*{a_h1} + {w8}*{a_h2}
forward a_o2 = sigmoid(o2) = sigmoid({o2})
forward E_total = 1/2 (t1 - a_o1)^2 + 1/2 (t2 - a_o2)^2 = 1/2 ({t1} - {a_o1})^2 + 1/2 ({t2} - {a_o2})^2
backward dE/dw5 = (a_o1 - t1) * a_o1 * (1 - a_o1) * a_h1 = D1*{a_h1}
backward dE/dw6 = (a_o1 - t1) * a_o1 * (1 - a_o1) * a_h2 = D1*{a_h2}
backward dE/dw7 = (a_o2 - t2) * a_o2 * (1 - a_o2) * a_h1 = D2*{a_h1}
backward dE/dw8 = (a_o2 - t2) * a_o2 * (1 - a_o2) * a_h2 = D2*{a_h2}
backward dE/da_h1 = (a_o1 - t1) * a_o1 * (1 - a_o1) * w5 + (a_o2 - t2) * a_o2 * (1 - a_o2) * w7 = D1*{w5} + D2*{w7}
backward dE/da_h2 = (a_o1 - t1) * a_o1 * (1 - a_o1) * w6 + (a_o2 - t2) * a_o2 * (1 - a_o2) * w8 = D1*{w6} + D2*{w8}
backward dE/dw1 = dE/da_h1 * a_h1 * (1 - a_h1) * i1 = {dE/da_h1}*{a_h1}*(1 - {a_h1})*{i1}
backward dE/dw2 = dE/da_h1 * a_h1 * (1 - a_h1) * i2 = {dE/da_h1}*{a_h1}*(1 - {a_h1})*{i2}
backward dE/dw3 = dE/da_h2 * a_h2 * (1 - a_h2) * i1 = {dE/da_h2}*{a_h2}*(1 - {a_h2})*{i1}
backward dE/dw4 = dE/da_h2 * a_h2 * (1 - a_h2) * i2 = {dE/da_h2}*{a_h2}*(1 - {a_h2})*{i2}
""",
}
_DELTAS = {"D1": "({a_o1} - {t1})*{a_o1}*(1 - {a_o1})", "D2": "({a_o2} - {t2})*{a_o2}*(1 - {a_o2})"}


def explain_step(step: MLPStep) -> tuple[Equation, ...]:
    """Every forward value, gradient and update of ``step`` as a line of math with the numbers substituted."""
    p = preset_of(step.preset)
    d = "dL" if p.key == "relu" else "dE"
    v, g = step.values, step.grads
    num = {**step.inputs, **step.targets, **step.weights, **v, "lr": step.learning_rate, p.loss_name: step.loss,
           **{f"{d}/d{name}": grad for name, grad in g.items()},
           **{f"new {name}": w for name, w in step.new_weights.items()}}
    if p.key == "relu":
        num.update({f"r_{n}": relu_grad(v[n]) for n in ("a", "b", "c", "e")})
        num.update({"da/dw1": num["r_a"] * step.inputs["x"], "db/dw1": num["r_b"] * step.inputs["x"]})
    rows = _EQUATIONS[p.key].strip().splitlines()
    rows += [f"update new {w} = {w} - lr * {d}/d{w} = {{{w}}} - {{lr}}*{{{d}/d{w}}}" for w, _ in p.weights]
    out = []
    for row in rows:
        phase, rest = row.split(" ", 1)
        rest, _, note = rest.partition("; ")
        symbol, formula, template = rest.split(" = ")
        for macro, text in _DELTAS.items():
            template = template.replace(macro, text)
        value = float(num[symbol])
        substituted = _written(template, num, p.style, value)
        text = " = ".join([symbol, formula, substituted, fmt(value, style=p.style)]) + (f"   ({note})" if note else "")
        out.append(Equation(phase, symbol, substituted, value, text))
    return tuple(out)


def _substitute(template: str, numbers: Mapping[str, float], style: str, digits: int = 6) -> str:
    """Replace each ``{name}`` by its number; a negative one gets parentheses unless it opens the text or a bracket."""

    def repl(m: re.Match) -> str:
        opens = m.start() == 0 or template[m.start() - 1] == "("
        return factor(numbers[m.group(1)], digits, style, first=opens)

    return re.sub(r"\{([^{}]+)\}", repl, template)


_PRECISIONS = ((6, None), (9, "g"), (12, "g"), (17, "g"))  # (significant digits, style; None: the preset's)


def _written(template: str, numbers: Mapping[str, float], style: str, value: float) -> str:
    """The template with numbers in, with as few digits as make it evaluate to ``value`` (within WRITTEN_RTOL).

    Six digits usually do; a saturated sigmoid needs more: a_o1 = 0.99999999794 written 1.000000 would make
    "(1 - 1.000000)*40" read as 0 while the result is 8.2e-08.
    """
    used = [numbers[name] for name in re.findall(r"\{([^{}]+)\}", template)]
    text = _substitute(template, numbers, style)
    if not (math.isfinite(value) and all(math.isfinite(v) for v in used)):
        return text
    for digits, forced in _PRECISIONS:
        text = _substitute(template, numbers, forced or style, digits)
        written = evaluate_written(text)
        if written is not None and abs(written - value) <= WRITTEN_RTOL * abs(value):
            return text
    return text


_WRITTEN_FUNCTIONS = {"ReLU": lambda z: max(z, 0.0), "sigmoid": lambda z: 1.0 / (1.0 + math.exp(-z))}


def evaluate_written(text: str) -> float | None:
    """The value of a written line such as ``1/2 (24 - 3)^2`` or ``ReLU(2*(-1.5))`` (None if it overflows)."""
    code = text.replace("^", "**").replace("1/2 (", "0.5*(")
    if not re.fullmatch(r"[\d.e+\-*/() ]*", re.sub(r"ReLU|sigmoid", "", code)):
        raise MLPError(f"not a written line: {text!r}")
    try:  # the text is checked above: digits, operators, brackets, ReLU and sigmoid only
        return float(eval(code, {"__builtins__": {}}, _WRITTEN_FUNCTIONS))
    except (OverflowError, ZeroDivisionError):
        return None


# ------------------------------------------------------------------------------------------------------ tables
def history_rows(history: MLPHistory) -> list[dict[str, float]]:
    """One row per step, like a spreadsheet: step, weights, forward values, loss, gradients, learning rate."""
    p = preset_of(history.config.preset)
    d = "dL" if p.key == "relu" else "dE"
    rows = []
    for s in history.steps:
        row: dict[str, float] = {"step": s.step}
        row.update(s.weights)
        row.update(s.values)
        row[p.loss_name] = s.loss
        row.update({f"{d}/d{k}": s.grads[k] for k, _ in p.weights})
        row.update({f"{d}/d{k}": s.grads[k] for k in p.grad_names})
        row["learning rate"] = s.learning_rate
        rows.append(row)
    return rows


def lr_run_row(run: LRRun, preset: Preset) -> dict[str, str]:
    """One row of the learning-rate table: the rate, its final loss, and whether it diverged or got stuck."""
    if run.diverged_at is not None:
        status = f"diverged at step {run.diverged_at}"
    elif run.stuck_at is not None:
        status = f"stuck from step {run.stuck_at} (every gradient 0)"
    else:
        status = "finite"
    final = fmt(run.losses[-1], style=preset.style) if run.diverged_at is None and run.losses else ""
    return {"learning rate": f"{run.learning_rate:g}", f"final {preset.loss_name}": final, "status": status}


def history_csv(history: MLPHistory) -> str:
    """The history table as CSV text (full float precision)."""
    rows = history_rows(history)
    buf = io.StringIO()
    if rows:
        columns = list(rows[0])
        buf.write(",".join(columns) + "\n")
        for row in rows:
            buf.write(",".join(repr(int(row[c])) if c == "step" else repr(float(row[c])) for c in columns) + "\n")
    return buf.getvalue()
