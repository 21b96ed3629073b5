"""One call records every layer's forward and backward pass.

Safety under many browser sessions: the cached model is shared by every session, each in its own thread. A
capture never registers a hook on it. It borrows a *private copy*: new module objects that share the shared
model's parameter and buffer tensors (no weights are copied), lent to one thread at a time. Each leaf module of a
copy records through its own ``forward``, replaced once when the copy is first used for a capture by a wrapper that
calls the module's own forward and, only while a capture on that copy runs (switched on inside ``try``, off in
``finally``), appends what it saw. A wrapper, not a forward hook: any hook sends every call of the module through
``nn.Module``'s slow path (registering and removing 28 hooks per call cost ~0.4 ms of a 3.7 ms MNIST capture; hooks
kept on the copy still cost ~0.1 ms). Another thread's forward pass runs other module objects, so it can neither fire
nor see this call's recording. Gradients come from ``torch.autograd.grad``, so ``param.grad`` is never written, and
the copy is put in eval mode, so the shared model's mode is never touched.
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz.engine.trace import GradientCheck, LayerRecord, LazyRecords, Trace

OBJECTIVES = ("loss", "logit")
_KINDS: tuple[tuple[type, str], ...] = (
    (nn.Conv2d, "conv"), (nn.Conv1d, "conv"), (nn.BatchNorm2d, "batchnorm"), (nn.BatchNorm1d, "batchnorm"),
    (nn.ReLU, "relu"), (nn.MaxPool2d, "maxpool"), (nn.AvgPool2d, "avgpool"), (nn.AdaptiveAvgPool2d, "avgpool"),
    (nn.Linear, "linear"), (nn.Dropout, "dropout"), (nn.Dropout2d, "dropout"), (nn.Flatten, "flatten"),
)
_MAX_POOLED_COPIES = 8
_pool_lock = threading.Lock()
_pools: weakref.WeakKeyDictionary[nn.Module, list[nn.Module]] = weakref.WeakKeyDictionary()


def layer_kind(module: nn.Module) -> str:
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return type(module).__name__.lower()


def is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def private_copy(model: nn.Module) -> nn.Module:
    """New module objects sharing ``model``'s parameter and buffer tensors, in eval mode, no in-place ops."""
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    net = copy.deepcopy(model, memo)
    for module in net.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
        if hasattr(module, "inplace"):
            module.inplace = False
    net._cnnviz_modules = list(net.modules())
    return net.eval()


def _foreign_hooks(net: nn.Module) -> bool:
    """Whether a copy holds any hook (its recorders are not hooks: see ``_leaves``), or is still recording."""
    modules = getattr(net, "_cnnviz_modules", None) or list(net.modules())  # the copy's modules, listed once
    hooks = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                for m in modules)
    recording = getattr(net, "_cnnviz_recording", None)
    return hooks or (recording is not None and recording["calls"] is not None)


@contextmanager
def borrowed(model: nn.Module) -> Iterator[nn.Module]:
    """Lend a private copy of ``model`` (see module docstring); it goes back to a small pool afterwards."""
    with _pool_lock:
        pool = _pools.setdefault(model, [])
        net = pool.pop() if pool else None
    if net is None:
        net = private_copy(model)
    try:
        yield net
    finally:
        if not _foreign_hooks(net):  # a copy that somehow kept another hook is dropped, never reused
            with _pool_lock:
                pool = _pools.setdefault(model, [])
                if len(pool) < _MAX_POOLED_COPIES:
                    pool.append(net)


_HPARAM_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "in_features", "out_features", "eps", "num_features", "output_size", "ceil_mode", "p")


def _hparams(module: nn.Module) -> dict[str, Any]:
    attrs = vars(module)  # plain attributes; hasattr() would go through nn.Module.__getattr__ (slow on a miss)
    out = {}
    for key in _HPARAM_KEYS:
        if key in attrs:
            value = attrs[key]
            out[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def _np(t: torch.Tensor | None, batch: bool = True) -> np.ndarray | None:
    """A read-only numpy view (no copy) of a CPU tensor, batch dimension removed.

    No copy is needed: activations and gradients are fresh tensors this call made and nothing writes to them
    afterwards (the private copy has no in-place ops), and the shared model's parameters are never changed in
    place (``learn.learn_step`` trains a full copy). Read-only, so a page that tried to edit a trace would fail loudly
    instead of changing the weights.
    """
    if t is None:
        return None
    if not t.is_cpu:
        t = t.cpu()
    arr = t.detach().numpy()
    if batch:
        arr = arr[0]  # numpy's indexing: a view, and cheaper than the tensor's
    arr.flags.writeable = False
    return arr


def _objective(logits: torch.Tensor, target: int, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.cross_entropy(logits, torch.tensor([target], device=logits.device))
    return (loss if objective == "loss" else logits[0, target]), loss


class _Leaf:
    """What a capture needs of one leaf module of a private copy, worked out once per copy (copies are pooled).

    Parameter arrays are views of the parameters' own memory; BatchNorm's folded scale/shift are computed values,
    kept with the tensors' version counters, so an in-place change of the shared weights (never done by the app)
    would still be seen."""

    __slots__ = ("_cache", "bias", "bias_view", "hparams", "is_bn", "kind", "module", "name", "weight", "weight_view")

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module, self.kind = name, module, layer_kind(module)
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        self.weight = weight if isinstance(weight, torch.Tensor) else None
        self.bias = bias if isinstance(bias, torch.Tensor) else None
        # views of the parameters' own memory, so always current: made once per copy
        self.weight_view, self.bias_view = _np(self.weight, False), _np(self.bias, False)
        self.hparams = _hparams(module)
        self.is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None
        self._cache: dict[str, tuple[tuple[int, ...], Any]] = {}

    def _versions(self) -> tuple[int, ...]:
        tensors = (self.weight, self.bias, getattr(self.module, "running_mean", None),
                   getattr(self.module, "running_var", None))
        return tuple(t._version if isinstance(t, torch.Tensor) else -1 for t in tensors)

    def _cached(self, key: str, make):
        versions = self._versions()
        hit = self._cache.get(key)
        if hit is None or hit[0] != versions:
            hit = self._cache[key] = (versions, make())
        return hit[1]

    def extra(self) -> dict[str, np.ndarray]:
        if not self.is_bn:
            return {}
        return dict(self._cached("extra", self._bn_extra))

    def _bn_extra(self) -> dict[str, np.ndarray]:
        m = self.module
        with torch.no_grad():
            scale = torch.rsqrt(m.running_var + m.eps)
            if self.weight is not None:
                scale = scale * self.weight
            shift = -m.running_mean * scale + (self.bias if self.bias is not None else 0)
        return {"scale": _np(scale, False), "shift": _np(shift, False),
                "running_mean": _np(m.running_mean.clone(), False), "running_var": _np(m.running_var.clone(), False)}


Call = tuple["_Leaf", "torch.Tensor | None", torch.Tensor, "torch.Tensor | None"]  # leaf, input, output, indices


class _Recorder:
    """A leaf's replacement ``forward``: the module's own forward, and while a capture records, one appended
    (leaf, input, output, max-pool indices). A plain object, not a closure, so a deep copy of a copy's module records
    for that new module (``copy.deepcopy`` copies the bound method and the leaf with the module)."""

    __slots__ = ("forward", "leaf", "recording")

    def __init__(self, recording: dict[str, list[Call] | None], leaf: _Leaf) -> None:
        self.recording, self.leaf, self.forward = recording, leaf, leaf.module.forward  # the class's bound method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self.forward(*args, **kwargs)
        calls = self.recording["calls"]
        if calls is None:  # an attribution or other forward pass on this copy: nothing to record
            return output
        module = self.leaf.module
        inp = next((a for a in args if isinstance(a, torch.Tensor)), None)
        out = output if isinstance(output, torch.Tensor) else output[0]
        indices = None
        if isinstance(module, nn.MaxPool2d) and inp is not None:  # a subclass, or one returning its indices
            with torch.no_grad():
                _, indices = F.max_pool2d(inp, module.kernel_size, module.stride, module.padding,
                                          module.dilation, module.ceil_mode, return_indices=True)
        calls.append((self.leaf, inp, out, indices))
        return output


class _PoolRecorder(_Recorder):
    """A plain ``nn.MaxPool2d``'s: pools once, with the argmax indices (the op PyTorch runs anyway when the input
    needs a gradient), instead of pooling again for them."""

    __slots__ = ()

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        m = self.leaf.module
        out, indices = F.max_pool2d(input, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode,
                                    return_indices=True)
        calls = self.recording["calls"]
        if calls is not None:
            calls.append((self.leaf, input, out, indices))
        return out


def _leaves(net: nn.Module) -> list[_Leaf]:
    """The copy's leaf modules, worked out once per copy, each recording through its ``forward`` (see the module
    docstring)."""
    leaves = getattr(net, "_cnnviz_leaves", None)
    if leaves is None:
        leaves = [_Leaf(name, module) for name, module in net.named_modules() if is_leaf(module)]
        recording: dict[str, list[Call] | None] = {"calls": None}
        for leaf in leaves:
            plain_pool = type(leaf.module) is nn.MaxPool2d and not leaf.module.return_indices
            # an instance attribute, so nn.Module's fast path calls it; the class's forward stays as it is
            leaf.module.forward = (_PoolRecorder if plain_pool else _Recorder)(recording, leaf)
        net._cnnviz_leaves, net._cnnviz_recording = leaves, recording  # a private copy's own attributes
    return leaves


def _check_inputs(model: nn.Module, x: torch.Tensor, objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != 1:
        raise ValueError(f"x must be a tensor with a batch dimension of 1, got shape {tuple(getattr(x, 'shape', ()))}")
    if not torch.isfinite(x).all():
        raise ValueError("the input contains inf or nan")


def capture(model: nn.Module, x: torch.Tensor, target: int | None = None, objective: str = "loss") -> Trace:
    """Run one forward and one backward pass and record every leaf module's tensors.

    Args:
        model: any nn.Module of standard layers (shared models are safe: see the module docstring).
        x: input of shape (1, C, H, W), as ``cnnviz.engine.pictures.preprocess`` returns it.
        target: class index to explain; None means the predicted class.
        objective: "loss" differentiates the cross-entropy of ``target``; "logit" differentiates its logit.
    Returns:
        A Trace of numpy arrays (batch dimension removed), layers in forward order.
    """
    _check_inputs(model, x, objective)
    calls: list[Call] = []
    with borrowed(model) as net:
        _leaves(net)
        recording = net._cnnviz_recording
        recording["calls"] = calls
        try:
            x_in = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                logits = net(x_in)  # (1, K)
                k = logits.shape[1]
                pred = int(logits.argmax(1))
                tgt = pred if target is None else int(target)
                if not 0 <= tgt < k:
                    raise ValueError(f"target {tgt} is not a class index (0..{k - 1})")
                obj, loss = _objective(logits, tgt, objective)
                wrt: dict[int, torch.Tensor] = {id(x_in): x_in}
                for leaf, inp, out, _ in calls:
                    for t in (inp, out, leaf.weight, leaf.bias):
                        if t is not None and t.requires_grad:
                            wrt.setdefault(id(t), t)
                keys = list(wrt)
                grads = torch.autograd.grad(obj, [wrt[i] for i in keys], allow_unused=True)
        finally:
            recording["calls"] = None
    grad_of = {i: g for i, g in zip(keys, grads, strict=True)}
    arrays: dict[int, tuple[torch.Tensor, np.ndarray]] = {}  # one view per tensor: layer i's output is i+1's input

    def view(t: torch.Tensor | None) -> np.ndarray | None:
        if t is None:
            return None
        hit = arrays.get(id(t))
        if hit is None:
            hit = arrays[id(t)] = (t, _np(t))  # the tensor is kept, so its id stays unique during this call
        return hit[1]

    def grad(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        g = grad_of.get(id(t))
        return torch.zeros_like(t) if g is None else g

    seen_calls: dict[str, int] = {}
    plan = []  # what each record needs, gathered now (cheap); the numpy records are built when first read
    for index, (leaf, inp, out, indices) in enumerate(calls):
        name = leaf.name
        call = seen_calls.get(name, 0)
        seen_calls[name] = call + 1
        plan.append((index, name, call, leaf, inp, out, indices, leaf.extra()))

    def build(i: int) -> LayerRecord:
        index, name, call, leaf, inp, out, indices, extra = plan[i]
        weight, bias = leaf.weight, leaf.bias
        return LayerRecord(
            name=name, kind=leaf.kind, index=index, call=call,
            input=view(inp), output=view(out), grad_output=view(grad(out)), grad_input=view(grad(inp)),
            weight=leaf.weight_view, bias=leaf.bias_view,
            weight_grad=_np(grad(weight), False) if weight is not None else None,
            bias_grad=_np(grad(bias), False) if bias is not None else None,
            hparams=dict(leaf.hparams), pool_indices=_np(indices), extra=extra,
        )

    probs = torch.softmax(logits.detach(), dim=1)
    return Trace(
        logits=_np(logits), probs=_np(probs), pred=pred, target=tgt, objective=objective,
        loss=float(loss.detach()), objective_value=float(obj.detach()),
        input=view(x_in), input_grad=view(grad_of[id(x_in)]), layers=LazyRecords(len(plan), build),
    )


def gradient_check(
    model: nn.Module, x: torch.Tensor, target: int, param_name: str, index: tuple[int, ...],
    eps: float = 1e-6, objective: str = "loss",
) -> GradientCheck:
    """Compare autograd's derivative of the objective with a central finite difference, in float64.

    Also the two one-sided slopes: where they differ (a ReLU whose input is exactly 0, a max-pool window with a tie)
    the objective has no derivative at this point, autograd gives PyTorch's convention and the central difference
    the mean of the two slopes, so a large relative error there is no fault of either. A kink is reported when the
    slopes differ by more than 1e-3 of the larger and by more than the rounding noise, and differ by about as much
    (0.5x to 3x) at a 10x larger step: for a smooth objective the gap grows with the step (10x).

    Args:
        param_name: a name from ``model.named_parameters()``, or "input" for a pixel of x.
        index: the element's index within that tensor (without the batch dimension for "input").
        eps: the finite-difference step.
    Returns:
        GradientCheck(autograd, finite_difference, relative_error, eps, left_slope, right_slope, kink).
    """
    _check_inputs(model, x, objective)
    net = copy.deepcopy(model).double().eval()
    x64 = x.detach().double().clone()
    if param_name == "input":
        tensor, index = x64, (0, *tuple(index))
    else:
        named = dict(net.named_parameters())
        if param_name not in named:
            raise KeyError(f"no parameter {param_name!r}")
        tensor = named[param_name]

    def f() -> torch.Tensor:
        return _objective(net(x64), target, objective)[0]

    with torch.enable_grad():
        leaf = tensor.requires_grad_(True) if param_name == "input" else tensor
        (g,) = torch.autograd.grad(f(), [leaf])
    auto = float(g[index])
    with torch.no_grad():
        original = float(tensor[index])

        def at(step: float) -> float:
            tensor[index] = original + step
            return float(f())

        try:
            f0 = at(0.0)
            scale = max(1.0, abs(f0), float(net(x64).abs().max()))  # the objective's rounding is that of the logits
            (f_minus, f_plus), (f_minus_wide, f_plus_wide) = ((at(-h), at(h)) for h in (eps, 10 * eps))
        finally:
            tensor[index] = original
    fd = (f_plus - f_minus) / (2 * eps)
    rel = abs(auto - fd) / max(abs(auto), abs(fd), 1e-10)
    left, right = (f0 - f_minus) / eps, (f_plus - f0) / eps
    gap, gap_wide = right - left, (f_plus_wide - 2 * f0 + f_minus_wide) / (10 * eps)
    noise = 10 * np.finfo(np.float64).eps * scale / eps
    kink = abs(gap) > max(1e-3 * max(abs(left), abs(right)), noise) and 0.5 * abs(gap) < abs(gap_wide) < 3 * abs(gap)
    return GradientCheck(auto, fd, rel, eps, left, right, bool(kink))
