"""The capture engine against an independent autograd computation in float64, and its safety rules."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from cnnviz.engine import capture as capture_mod
from cnnviz.engine.capture import capture, gradient_check
from cnnviz.engine.learn import learn_step
from tests.support import leaf_chain, reference_pass, shipped_or_random, small_cnn

MODELS = {
    "mnist": (lambda: shipped_or_random("mnist"), (1, 1, 28, 28)),
    "cifar10": (lambda: shipped_or_random("cifar10"), (1, 3, 32, 32)),
    "small_cnn": (small_cnn, (1, 2, 9, 9)),
}


def t(a):
    return torch.as_tensor(np.array(a))  # a copy: trace arrays are read-only views


def no_hooks(model) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_input(request):
    build, shape = MODELS[request.param]
    torch.manual_seed(123)
    return request.param, build(), torch.randn(shape)


@pytest.mark.parametrize("objective", ["loss", "logit"])
@pytest.mark.parametrize("target_choice", ["pred", "other"])
def test_every_gradient_equals_autograd_float64(model_and_input, objective, target_choice):
    _, model, x = model_and_input
    model64 = copy.deepcopy(model).double()
    x64 = x.double()
    with torch.no_grad():
        pred = int(model64(x64).argmax(1))
    target = pred if target_choice == "pred" else (pred + 3) % int(model64(x64).shape[1])
    trace = capture(model64, x64, target=None if target_choice == "pred" else target, objective=objective)
    acts, grads, param_grads, logits = reference_pass(model, x, target, objective)
    assert trace.target == target and trace.pred == pred
    assert_close(t(trace.logits), logits[0])
    assert_close(t(trace.input_grad), grads[0][0])
    chain = leaf_chain(model)
    assert [r.name for r in trace.layers] == [n for n, _ in chain]
    for i, rec in enumerate(trace.layers):
        assert_close(t(rec.input), acts[i][0].detach(), msg=f"{rec.name} input")
        assert_close(t(rec.output), acts[i + 1][0].detach(), msg=f"{rec.name} output")
        assert_close(t(rec.grad_input), grads[i][0], msg=f"{rec.name} grad_input")
        assert_close(t(rec.grad_output), grads[i + 1][0], msg=f"{rec.name} grad_output")
        if rec.weight_grad is not None:
            assert_close(t(rec.weight_grad), param_grads[f"{rec.name}.weight"], msg=f"{rec.name} weight_grad")
        if rec.bias_grad is not None:
            assert_close(t(rec.bias_grad), param_grads[f"{rec.name}.bias"], msg=f"{rec.name} bias_grad")
    expected_loss = F.cross_entropy(logits, torch.tensor([target]))
    assert trace.loss == pytest.approx(float(expected_loss), rel=1e-10)


def test_pool_indices_match_max_pool2d(model_and_input):
    _, model, x = model_and_input
    trace = capture(model, x)
    pools = [r for r in trace.layers if r.kind == "maxpool"]
    assert pools, "every test model has a max-pool"
    for rec in pools:
        hp = rec.hparams
        _, idx = F.max_pool2d(t(rec.input)[None], hp["kernel_size"], hp["stride"], hp["padding"], hp["dilation"],
                              hp["ceil_mode"], return_indices=True)
        assert np.array_equal(rec.pool_indices, idx[0].numpy())


def test_record_kinds_and_hparams():
    trace = capture(small_cnn(), torch.randn(1, 2, 9, 9))
    kinds = [r.kind for r in trace.layers]
    assert kinds == ["conv", "batchnorm", "relu", "maxpool", "conv", "relu", "avgpool", "flatten", "linear"]
    conv2 = trace.layer("conv2")
    assert conv2.hparams["kernel_size"] == (2, 2) and conv2.hparams["stride"] == (2, 2)
    assert conv2.hparams["in_channels"] == 4 and conv2.hparams["out_channels"] == 5
    bn = trace.layer("bn1")
    # BN's per-channel scale and shift reproduce its output from its input
    expected = bn.input * bn.extra["scale"][:, None, None] + bn.extra["shift"][:, None, None]
    assert_close(t(bn.output), t(expected), rtol=1e-5, atol=1e-5)


def test_unknown_module_kind_is_still_recorded():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    trace = capture(net.double(), torch.randn(1, 1, 4, 4, dtype=torch.float64))
    tanh = trace.layers[1]
    assert tanh.kind == "tanh"
    assert_close(t(tanh.grad_input), t(tanh.grad_output * (1 - tanh.output ** 2)))


def test_capture_never_changes_the_shared_model():
    model = shipped_or_random("mnist")
    classes = [type(m) for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture(model, torch.randn(1, 1, 28, 28))
    learn_step(model, torch.randn(1, 1, 28, 28), 3, lr=0.5)
    gradient_check(model, torch.randn(1, 1, 28, 28), 3, "block1.conv1.weight", (0, 0, 1, 1))
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert no_hooks(model)
    assert [type(m) for m in model.modules()] == classes  # only private copies keep their max-pool's indices


def test_a_max_pool_subclass_still_gets_its_indices():
    class Pool(torch.nn.MaxPool2d):  # not swapped for the indexed max-pool: pooled again in the hook
        pass

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), Pool(2), torch.nn.Flatten(), torch.nn.Linear(32, 3))
    x = torch.randn(1, 1, 8, 8)
    trace = capture(net, x)
    rec = trace.layers[1]
    _, idx = F.max_pool2d(torch.from_numpy(rec.input.copy())[None], 2, return_indices=True)
    assert rec.kind == "maxpool" and np.array_equal(rec.pool_indices, idx[0].numpy())


def test_no_hook_left_after_an_exception():
    model = small_cnn()
    with pytest.raises(ValueError, match="target"):
        capture(model, torch.randn(1, 2, 9, 9), target=99)  # raises after the forward pass ran with hooks
    with pytest.raises(RuntimeError):
        capture(model, torch.randn(1, 3, 9, 9))  # raises inside the forward pass
    assert no_hooks(model)
    pooled = capture_mod._pools.get(model, [])
    assert pooled, "the copy went back to the pool"
    for net in pooled:  # no hook at all, its own recorder on each leaf, and not recording
        assert not capture_mod._foreign_hooks(net) and no_hooks(net)
        assert all(isinstance(leaf.module.__dict__.get("forward"), capture_mod._Recorder)
                   for leaf in net._cnnviz_leaves)
        assert net._cnnviz_recording["calls"] is None
    # and the engine still works afterwards
    assert capture(model, torch.randn(1, 2, 9, 9)).layers


def test_the_shared_model_keeps_its_forward_and_a_deep_copy_of_a_lent_copy_runs_its_own_modules():
    model = small_cnn()
    x = torch.randn(1, 2, 9, 9)
    capture(model, x)
    assert not any("forward" in vars(m) for m in model.modules())  # the recorders live on the copies only
    (net,) = capture_mod._pools[model]
    twin = copy.deepcopy(net)  # its own weights, and its recorders must call its own modules
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(0.5)
        torch.testing.assert_close(twin(x), reference(x))
        torch.testing.assert_close(net(x), model.eval()(x))
    trace = capture(twin, x)  # and it can be captured like any model
    torch.testing.assert_close(torch.from_numpy(trace.logits.copy()), reference(x)[0].detach())


def test_a_copy_with_a_foreign_hook_is_dropped_from_the_pool():
    model = small_cnn()
    capture(model, torch.randn(1, 2, 9, 9))
    (net,) = capture_mod._pools[model]
    with capture_mod.borrowed(model) as lent:
        assert lent is net
        handle = lent[0].register_forward_hook(lambda *a: None)  # e.g. an attribution that failed to clean up
    assert capture_mod._pools[model] == []  # never lent again
    handle.remove()
    assert capture(model, torch.randn(1, 2, 9, 9)).layers  # a fresh copy does the work


def test_bad_arguments_are_refused():
    model = small_cnn()
    with pytest.raises(ValueError, match="objective"):
        capture(model, torch.randn(1, 2, 9, 9), objective="banana")
    with pytest.raises(ValueError, match="batch"):
        capture(model, torch.randn(2, 2, 9, 9))
    with pytest.raises(ValueError, match="inf or nan"):
        capture(model, torch.full((1, 2, 9, 9), float("nan")))


@pytest.mark.slow
def test_threads_never_see_each_others_tensors():
    model = shipped_or_random("mnist")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(7)
    inputs = [torch.randn(1, 1, 28, 28, generator=gen) for _ in range(8)]
    alone = [capture(model, x, target=i) for i, x in enumerate(inputs)]
    failures: list[str] = []

    def worker(i: int) -> None:
        try:
            for _ in range(200):
                tr = capture(model, inputs[i], target=i)
                ref = alone[i]
                assert_close(t(tr.logits), t(ref.logits), rtol=1e-5, atol=1e-6)
                assert_close(t(tr.input_grad), t(ref.input_grad), rtol=1e-5, atol=1e-7)
                for a, b in zip(tr.layers, ref.layers, strict=True):
                    assert_close(t(a.output), t(b.output), rtol=1e-5, atol=1e-6)
                    assert_close(t(a.grad_output), t(b.grad_output), rtol=1e-5, atol=1e-7)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"thread {i}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, failures[:3]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert no_hooks(model)


@pytest.mark.slow
def test_thousand_captures_do_not_grow_memory():
    psutil = pytest.importorskip("psutil")
    model = shipped_or_random("mnist")
    x = torch.randn(1, 1, 28, 28)
    for _ in range(50):
        capture(model, x)
    proc = psutil.Process()
    start = proc.memory_info().rss
    for _ in range(1000):
        capture(model, x)
    growth_mb = (proc.memory_info().rss - start) / 2**20
    assert growth_mb < 40, f"RSS grew {growth_mb:.1f} MB over 1000 captures"


@pytest.mark.parametrize("param_name,index", [
    ("block1.conv1.weight", (3, 0, 1, 2)), ("block2.conv2.bias", (5,)), ("head.classifier.weight", (2, 4, 0, 0)),
    ("input", (0, 14, 13)),
])
@pytest.mark.parametrize("objective", ["loss", "logit"])
def test_gradient_check_agrees_with_autograd(param_name, index, objective):
    model = shipped_or_random("mnist")
    torch.manual_seed(5)
    x = torch.randn(1, 1, 28, 28)
    result = gradient_check(model, x, 4, param_name, index, objective=objective)
    assert result.relative_error < 1e-4, result
    # and the autograd number is the one capture reports
    trace = capture(copy.deepcopy(model).double(), x.double(), target=4, objective=objective)
    if param_name == "input":
        expected = trace.input_grad[index]
    else:
        layer, kind = param_name.rsplit(".", 1)
        rec = trace.layer(layer)
        expected = (rec.weight_grad if kind == "weight" else rec.bias_grad)[index]
    assert result.autograd == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


def test_trace_arrays_are_read_only_views_so_a_page_cannot_change_the_weights():
    model = shipped_or_random("mnist")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = capture(model, torch.randn(1, 1, 28, 28))
    conv = next(r for r in trace.layers if r.kind == "conv")
    for arr in (conv.weight, conv.output, conv.grad_output, trace.input_grad, trace.probs):
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
