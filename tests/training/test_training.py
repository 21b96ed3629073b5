"""Issue 16 backend: the block builder (checked against torch), custom checkpoints and uploads, the shared training
loop's determinism, the CLI on it, and the training registry (one per session, a limit, a queue, pause/stop)."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnviz.engine.builder import (
    MAX_PARAMETERS,
    PRESETS,
    Block,
    BuildError,
    CustomNet,
    NetworkConfig,
    blocks_text,
    parse_blocks,
    validate,
)
from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import CheckpointError, load_path, load_uploaded_pair, save, to_bytes
from cnnviz.engine.models import MnistNet, count_parameters, new_card
from cnnviz.engine.pictures import preprocess
from cnnviz.training import jobs as tj
from cnnviz.training.child import NICE
from cnnviz.training.loop import Settings, Trainer, init_model

SHIPPED, TINY, DEEP = list(PRESETS)


def fake_data(n: int = 512, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)):
    """Learnable stand-in for MNIST: class k lights up the k-th horizontal band of a noisy picture."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    images = torch.randint(0, 60, (n, *shape), generator=gen).to(torch.uint8)
    rows = shape[1] // 10
    for i, k in enumerate(labels.tolist()):
        images[i, :, k * rows:(k + 1) * rows, 4:-4] = 230
    return images, labels


class FakeData:
    def __init__(self, n_train: int = 512, n_test: int = 200) -> None:
        self.train_x, self.train_y = fake_data(n_train, 0)
        self.test_x, self.test_y = fake_data(n_test, 1)


def fake_source(name: str, data_dir: str | None) -> FakeData:
    """A registry's ``data`` for tests: a training's child process imports this module and trains on FakeData."""
    return FakeData()


def broken_source(name: str, data_dir: str | None) -> FakeData:
    raise OSError("the disk is on fire")


def checked_source(name: str, data_dir: str | None) -> FakeData:
    """Stand-in data, refused (the training fails with the reason) unless this process is set up as a training's
    should be: one torch thread, nice 10 above the process it was forked from, the objects it shares frozen."""
    parent_nice = os.getpriority(os.PRIO_PROCESS, os.getppid())
    if torch.get_num_threads() != tj.THREADS or os.nice(0) != min(19, parent_nice + NICE) or not gc.get_freeze_count():
        raise RuntimeError(f"threads {torch.get_num_threads()}, nice {os.nice(0)} (its parent {parent_nice}), "
                           f"{gc.get_freeze_count()} frozen objects")
    return FakeData()


@pytest.fixture(autouse=True)
def one_thread():
    """Train in the test's thread with the thread count a training job uses (and fast on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(tj.THREADS)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------
# Builder: the table against what torch computes


def _leaf_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
               for n, m in model.named_modules() if next(m.children(), None) is None]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


CONFIGS = [*PRESETS.values(),
           NetworkConfig(parse_blocks("conv 4, maxpool, conv1x1 3, maxpool, maxpool, conv 5, dropout 0.2"), "tanh",
                         True, "gap", (3, 32, 32), 10),
           NetworkConfig(parse_blocks("conv 6\nmaxpool\nmaxpool\nmaxpool\nmaxpool"), "sigmoid", False, "linear",
                         (1, 28, 28), 10)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[*PRESETS, "rgb-gap-odd-sizes", "pooled-to-1x1"])
def test_table_shapes_and_parameters_match_torch(cfg):
    rows = validate(cfg)
    model = CustomNet(cfg)
    shapes = _leaf_outputs(model, torch.randn(2, *cfg.input_shape))
    assert [r.name for r in rows] == list(shapes), "one row per leaf layer, in order"
    modules = dict(model.named_modules())
    for r in rows:
        assert r.output_shape == shapes[r.name], r.name
        assert r.params == sum(p.numel() for p in modules[r.name].parameters()), r.name
    assert sum(r.params for r in rows) == count_parameters(model)
    assert all(not getattr(m, "inplace", False) for m in model.modules())


def _gradient_support(model: nn.Module, shape: tuple[int, int, int], layer: str) -> int:
    """Rows of the input that move the centre cell of ``layer``'s output: the receptive field, measured."""
    outputs = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: outputs.setdefault("y", o))
    x = torch.randn(1, *shape, dtype=torch.float64, requires_grad=True)
    try:
        model.double().eval()(x)
    finally:
        handle.remove()
    y = outputs["y"]
    cy, cx = y.shape[2] // 2, y.shape[3] // 2
    (g,) = torch.autograd.grad(y[0, :, cy, cx].sum(), x)
    rows = (g.abs().sum(dim=(0, 1, 3)) > 0).nonzero()
    return int(rows.max() - rows.min() + 1)


def test_receptive_fields_match_the_gradients_reach():
    cfg = NetworkConfig(parse_blocks("conv 3, conv 3, maxpool, conv 3, conv1x1 2, maxpool, conv 3"), "tanh", False,
                        "gap", (1, 64, 64), 10)
    torch.manual_seed(0)
    model = CustomNet(cfg)
    rows = {r.name: r for r in validate(cfg)}
    for layer in ("conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5"):
        assert rows[layer].receptive_field == _gradient_support(model, cfg.input_shape, layer), layer
    assert rows["gap"].receptive_field >= 64


def test_shipped_preset_is_the_shipped_architecture():
    cfg = PRESETS[SHIPPED]
    custom, shipped = CustomNet(cfg), MnistNet()
    assert count_parameters(custom) == count_parameters(shipped) == 18_202
    ours = [tuple(t.shape) for t in custom.state_dict().values()]
    theirs = [tuple(t.shape) for t in shipped.state_dict().values()]
    assert ours == theirs
    assert count_parameters(CustomNet(PRESETS[TINY])) < 20_000
    deep = PRESETS[DEEP]
    assert not deep.batch_norm and deep.activation == "sigmoid"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in CustomNet(deep).modules())


def test_blocks_text_round_trips():
    for cfg in PRESETS.values():
        assert parse_blocks(blocks_text(cfg.blocks)) == cfg.blocks


@pytest.mark.parametrize("text,words", [
    ("conv 8, maxpool, maxpool, maxpool, maxpool, maxpool, maxpool", "below 1x1"),
    ("conv 512, conv 512, conv 512", "more than this server trains"),
    (", ".join(["conv 4"] * 20), "more than 20"),
    ("conv 8, resblock 4", "unknown kind 'resblock'"),
    ("conv eight", "not a number"),
    ("dropout 1.5", "0 <= p < 1"),
    ("conv 0", "channels"),
    ("maxpool 2", "nothing after it"),
], ids=["shrinks below 1x1", "too many parameters", "too many layers", "unknown kind", "not a number",
        "dropout p", "zero channels", "pool argument"])
def test_bad_builds_are_refused_with_a_message(text, words):
    with pytest.raises(BuildError, match=words):
        validate(NetworkConfig(parse_blocks(text)))


def test_parameter_limit_is_the_one_stated():
    def net(channels: int) -> NetworkConfig:  # (9c + c) conv + (784c + 1) * 10 head = 7850c + 10 parameters
        return NetworkConfig((Block("conv", channels),), "relu", False, "linear")

    assert sum(r.params for r in validate(net(191))) == 7850 * 191 + 10 <= MAX_PARAMETERS
    with pytest.raises(BuildError, match=f"{7850 * 192 + 10:,} parameters"):
        validate(net(192))


# ---------------------------------------------------------------------------------------------------------------
# Custom checkpoints: the same safetensors + JSON path, validated; uploads


def _trained_custom(cfg: NetworkConfig = PRESETS[SHIPPED]):
    torch.manual_seed(0)
    model = CustomNet(cfg)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval(), new_card("mnist", model)


def test_custom_checkpoint_round_trip_and_capture(tmp_path):
    model, card = _trained_custom()
    weights, card_path = save(model, card, tmp_path / "mine.safetensors")
    meta = json.loads(card_path.read_text())
    assert meta["arch"] == "custom" and meta["card"]["name"] == "mnist"
    loaded, loaded_card = load_path(weights)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x)) and not loaded.training
    assert loaded.cfg == model.cfg
    from PIL import Image, ImageDraw

    img = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(img).line([(50, 10), (50, 90)], fill=255, width=10)
    picture = preprocess(img, loaded_card)  # the card's name picks MNIST's preprocessing
    assert picture.shape == (1, 1, 28, 28)
    trace = capture(loaded, picture)
    names = [r.name for r in trace.layers]
    assert names[:3] == ["conv1", "bn1", "relu1"] and names[-1] == "flatten"
    assert trace.logits.shape == (10,)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(trace.logits.copy()), loaded(picture)[0])


def test_uploaded_pair_loads_like_a_checkpoint():
    model, card = _trained_custom(PRESETS[TINY])
    weights, card_json = to_bytes(model, card)
    loaded, loaded_card = load_uploaded_pair(weights, card_json, "mine.safetensors", "mine.json")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), loaded(x)) and loaded_card.name == "mnist"
    shipped = MnistNet().eval()  # a shipped architecture's pair uploads too
    loaded, _ = load_uploaded_pair(*to_bytes(shipped, new_card("mnist", shipped)))
    assert isinstance(loaded, MnistNet)


def _edit(card_json: bytes, change) -> bytes:
    meta = json.loads(card_json)
    change(meta)
    return json.dumps(meta).encode()


def _nan_weights(weights: bytes, card_json: bytes) -> bytes:
    model, card = _trained_custom(PRESETS[TINY])
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = float("nan")
    return to_bytes(model, card)[0]


BAD_UPLOADS = {
    "pickle renamed": (lambda w, c: (pickle.dumps({"conv1.weight": [1.0]}), c), "not a safetensors file"),
    "torch.save": (lambda w, c: (_torch_save_bytes(), c), "not a safetensors file"),
    "truncated": (lambda w, c: (w[: len(w) // 2], c), "truncated"),
    "empty": (lambda w, c: (b"", c), "empty"),
    "card not JSON": (lambda w, c: (w, b"{nope"), "mine.json"),
    "unknown layer kind": (lambda w, c: (w, _edit(c, lambda m: m["model_args"]["blocks"].append(
        {"kind": "attention", "channels": 4, "p": 0.0}))), "unknown layer kind 'attention'"),
    "unknown arch": (lambda w, c: (w, _edit(c, lambda m: m.update(arch="resnet50"))), "unknown model 'resnet50'"),
    "shapes unlike card": (lambda w, c: (w, _edit(c, lambda m: m["tensors"].update({"conv1.weight": [9, 1, 3, 3]}))),
                           "do not match the shapes its card"),
    "blocks unlike file": (lambda w, c: (w, _edit(c, lambda m: m["model_args"]["blocks"].__setitem__(
        0, {"kind": "conv", "channels": 9, "p": 0.0}))), "does not fit"),
    "cifar card, mnist net": (lambda w, c: (w, _edit(c, lambda m: m["card"].update(
        name="cifar10", input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.2] * 3))), "does not fit 'cifar10'"),
    "huge": (lambda w, c: (b"\0" * (21 * 1024 * 1024), c), "more than the 20 MB"),
    "nan weights": (lambda w, c: (_nan_weights(w, c), c), "inf or nan"),
}


def _torch_save_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_are_refused_with_a_message(case, monkeypatch):
    model, card = _trained_custom(PRESETS[TINY])
    weights, card_json = to_bytes(model, card)
    load_uploaded_pair(weights, card_json)  # the control: each case below breaks one thing

    def forbidden(*args, **kwargs):
        raise AssertionError("an upload was unpickled")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    make, words = BAD_UPLOADS[case]
    bad_weights, bad_card = make(weights, card_json)
    with pytest.raises(CheckpointError, match=words) as err:
        load_uploaded_pair(bad_weights, bad_card, "mine.safetensors", "mine.json")
    assert "mine." in str(err.value) and "/tmp" not in str(err.value), "the message names the uploaded file"


# ---------------------------------------------------------------------------------------------------------------
# The shared loop: determinism, settings


def _train(cfg: NetworkConfig, settings: Settings, data: FakeData | None = None) -> nn.Module:
    data = data or FakeData()
    model = init_model(cfg, settings.seed)
    trainer = Trainer(model, new_card("mnist", model), settings, data.train_x, data.train_y, track_grad_norms=True)
    for _ in range(settings.steps):
        trainer.step()
    return model


DROPOUT_NET = NetworkConfig(parse_blocks("conv 4, dropout 0.3, maxpool, conv 6, maxpool"), "relu", True, "linear")


@pytest.mark.slow
def test_same_seed_and_settings_give_identical_weights():
    settings = Settings(optimizer="momentum", lr=0.05, schedule="onecycle", batch_size=32, steps=12, augment=True,
                        seed=7)
    a, b = _train(DROPOUT_NET, settings), _train(DROPOUT_NET, settings)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    c = _train(DROPOUT_NET, dataclasses.replace(settings, seed=8))
    assert not torch.equal(a.conv1.weight, c.conv1.weight), "another seed gives other weights"
    torch.manual_seed(123)  # the global generator is not this training's source of randomness
    d = _train(DROPOUT_NET, settings)
    assert torch.equal(a.fc.weight, d.fc.weight)


@pytest.mark.slow
def test_trainings_in_child_processes_are_deterministic():
    """Two trainings at once, each in its own process, give the weights of the same training run here, bit for bit."""
    settings = Settings(optimizer="adam", lr=0.01, schedule="constant", batch_size=32, steps=30, augment=True, seed=3)
    alone = _train(DROPOUT_NET, settings, FakeData())
    registry = tj.JobRegistry(limit=2, data=fake_source)
    jobs = [registry.submit(owner, DROPOUT_NET, settings) for owner in ("a", "b")]
    for job in jobs:
        assert job.wait(120), job.progress()
    pids = {job.process.pid for job in jobs}
    assert len(pids) == 2 and os.getpid() not in pids, "each training ran in a process of its own"
    for job in jobs:
        model, _ = job.result()
        for (name, t1), t2 in zip(model.state_dict().items(), alone.state_dict().values(), strict=True):
            assert torch.equal(t1, t2), name


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,schedule", [("sgd", "constant"), ("momentum", "onecycle"), ("adam", "onecycle")])
def test_optimizers_and_schedules_learn(optimizer, schedule):
    data = FakeData()
    lr = {"sgd": 0.1, "momentum": 0.05, "adam": 0.01}[optimizer]
    settings = Settings(optimizer=optimizer, lr=lr, schedule=schedule, batch_size=32, steps=40, augment=False)
    model = init_model(PRESETS[TINY], 0)
    trainer = Trainer(model, new_card("mnist", model), settings, data.train_x, data.train_y)
    stats = [trainer.step() for _ in range(settings.steps)]
    assert sum(s.loss for s in stats[-5:]) < sum(s.loss for s in stats[:5]) * 0.7
    lrs = [s.lr for s in stats]
    if schedule == "constant":
        assert lrs == [lr] * len(lrs)
    else:  # one-cycle: warms up to the peak, then anneals far below it
        peak = max(range(len(lrs)), key=lrs.__getitem__)
        assert 0 < peak < len(lrs) - 1 and lrs[peak] == pytest.approx(lr, rel=0.05) and lrs[-1] < lr / 100


class TorchOptimTrainer(Trainer):
    """The reference: the same loop stepping torch.optim's optimizer and OneCycleLR instead of Trainer.update."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        groups = [{"params": [p for p, _ in self.params if p.ndim > 1], "weight_decay": s.weight_decay},
                  {"params": [p for p, _ in self.params if p.ndim <= 1], "weight_decay": 0.0}]
        if s.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=s.lr)
        else:
            momentum = 0.9 if s.optimizer == "momentum" else 0.0
            self.optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=momentum, nesterov=momentum > 0)
        self.scheduler = None
        if s.schedule == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=s.lr, total_steps=s.steps, pct_start=s.pct_start,
                cycle_momentum=s.optimizer != "sgd")

    def update(self, lr: float, momentum: float) -> None:
        group = self.optimizer.param_groups[0]
        assert (lr, momentum) == (group["lr"], group["betas"][0] if "betas" in group else group["momentum"])
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,schedule,weight_decay", [
    ("sgd", "constant", 0.0), ("sgd", "onecycle", 1e-3), ("momentum", "constant", 0.0),
    ("momentum", "onecycle", 1e-3), ("adam", "constant", 1e-3), ("adam", "onecycle", 0.0)])
def test_written_out_optimizers_give_torch_optims_weights(optimizer, schedule, weight_decay):
    """The loop's own SGD, Nesterov momentum, Adam and one-cycle schedule (no torch.optim: it imports torch._dynamo)
    take the steps torch.optim takes: same learning rates and momenta, same weights."""
    lr = {"sgd": 0.1, "momentum": 0.05, "adam": 0.01}[optimizer]
    settings = Settings(optimizer=optimizer, lr=lr, schedule=schedule, batch_size=32, steps=25, augment=True, seed=1,
                        weight_decay=weight_decay)
    data = FakeData()
    runs = []
    for loop in (Trainer, TorchOptimTrainer):
        model = init_model(DROPOUT_NET, 0)
        trainer = loop(model, new_card("mnist", model), settings, data.train_x, data.train_y)
        runs.append((model, [trainer.step().lr for _ in range(settings.steps)]))
    (ours, our_lrs), (reference, reference_lrs) = runs
    assert our_lrs == reference_lrs
    for (name, ta), tb in zip(ours.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(ta, tb, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(ours.fc.weight, init_model(DROPOUT_NET, 0).fc.weight), "it learned something"


TRAIN_IN_A_FRESH_PROCESS = """
import sys
import torch
from cnnviz.engine.builder import PRESETS
from cnnviz.engine.models import new_card
from cnnviz.training.loop import Settings, Trainer, init_model
x, y = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (64,))
for optimizer in ("sgd", "momentum", "adam"):
    model = init_model(PRESETS["Tiny: two convolutions"], 0)
    trainer = Trainer(model, new_card("mnist", model), Settings(optimizer=optimizer, steps=2, batch_size=32), x, y)
    trainer.step(), trainer.step()
print(sorted(name for name in ("torch._dynamo", "sympy", "triton") if name in sys.modules))
"""


@pytest.mark.slow
def test_the_loop_does_not_load_torch_dynamo():
    """Every torch.optim optimizer imports torch._dynamo, sympy and triton (80-150 MB in a training's process)."""
    out = subprocess.run([sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_one_cycle_with_no_warm_up_step_trains():
    """Four one-cycle steps give a warm-up of 0 steps (torch's OneCycleLR divides by zero there): the peak first."""
    data = FakeData()
    model = init_model(PRESETS[TINY], 0)
    settings = Settings(optimizer="adam", lr=0.01, schedule="onecycle", batch_size=32, steps=4, augment=False)
    trainer = Trainer(model, new_card("mnist", model), settings, data.train_x, data.train_y)
    lrs = [trainer.step().lr for _ in range(4)]
    assert lrs[0] == 0.01 and lrs[0] > lrs[1] > lrs[2] > lrs[3] == pytest.approx(0.01 / 25e4)


def test_bad_settings_are_refused():
    for bad in (Settings(lr=0), Settings(lr=float("inf")), Settings(batch_size=0), Settings(steps=0),
                Settings(optimizer="rmsprop"), Settings(schedule="cosine")):
        with pytest.raises(ValueError):
            bad.check()


def test_vanishing_gradient_preset_shows_it():
    data = FakeData()
    model = init_model(PRESETS[DEEP], 0)
    settings = tj.default_settings(DEEP)
    trainer = Trainer(model, new_card("mnist", model), dataclasses.replace(settings, steps=3), data.train_x,
                      data.train_y, track_grad_norms=True)
    norms = trainer.step().grad_norms
    assert norms["conv1"] < norms["conv10"] / 100, norms  # two decades smaller at the first layer


@pytest.mark.slow
def test_cli_trains_through_the_shared_loop(tmp_path, monkeypatch):
    from cnnviz import train as cli

    data = FakeData(n_train=256, n_test=100)
    calls = []

    def fake_arrays(name, split, data_dir=None):
        calls.append((name, split))
        return (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)

    monkeypatch.setattr(cli, "load_arrays", fake_arrays)
    monkeypatch.setattr(cli.Trainer, "step", _counting(cli.Trainer.step, counter := []))
    assert cli.main(["mnist", "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert len(counter) == 2, "256 images at batch 128: two steps of the shared loop"
    model, card = load_path(tmp_path / "mnist.safetensors")
    assert isinstance(model, MnistNet) and card.epochs == 1 and len(card.history) == 1
    assert (tmp_path / "mnist_init.safetensors").is_file() and (tmp_path / "mnist_epoch1.safetensors").is_file()


def _counting(step, counter: list):
    def wrapped(self):
        counter.append(1)
        return step(self)
    return wrapped


# ---------------------------------------------------------------------------------------------------------------
# Registry: one per session, a server-wide limit with a queue, pause/resume/stop, the owner leaving; each training
# in a child process that ends with it (never an orphan), and a clear message when that process fails. Each test
# starts such processes, seconds each (they import torch): all are marked slow.


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie its new parent has not reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


SLOW = Settings(optimizer="adam", lr=0.01, schedule="constant", batch_size=32, steps=5000, augment=False)


@pytest.mark.slow
def test_limit_of_one_queues_the_second_session():
    registry = tj.JobRegistry(limit=1, data=fake_source)
    first = registry.submit("session-a", PRESETS[TINY], SLOW)
    assert first.progress().state == "starting", "its process loads torch first (seconds)"
    second = registry.submit("session-b", PRESETS[TINY], dataclasses.replace(SLOW, steps=20))
    _wait(lambda: first.progress().step > 0)
    assert first.progress().state == "running"
    p = second.progress()
    assert (p.state, p.queue_position, p.step) == ("queued", 1, 0)
    third = registry.submit("session-c", PRESETS[TINY], SLOW)
    assert third.progress().queue_position == 2 and registry.counts() == (1, 2)
    with pytest.raises(tj.JobError, match="one per session"):
        registry.submit("session-a", PRESETS[TINY], SLOW)
    third.stop()  # leaving the queue moves nobody else
    assert third.progress().state == "stopped" and second.progress().queue_position == 1
    first.stop()
    _wait(second.done)
    assert second.progress().state == "finished" and second.progress().step == 20
    assert first.progress().state == "stopped" and first.result() is not None, "a stopped training keeps its model"
    assert registry.counts() == (0, 0)
    registry.submit("session-a", PRESETS[TINY], SLOW)  # a new one is fine
    registry.stop_all()


@pytest.mark.slow
def test_pause_resume_and_the_step_budget():
    registry = tj.JobRegistry(limit=1, data=fake_source)
    job = registry.submit("s", PRESETS[TINY], SLOW)
    _wait(lambda: job.progress().step >= 3)
    job.pause()
    _wait(lambda: job.progress().state == "paused")
    time.sleep(0.3)
    held = job.progress().step
    time.sleep(0.5)
    assert job.progress().step == held, "no step while paused"
    job.resume()
    _wait(lambda: job.progress().step > held + 2)
    job.stop()
    _wait(job.done)
    p = job.progress()
    assert p.state == "stopped" and p.loss and p.lr and p.grad_norms and p.filters is not None and p.maps
    with pytest.raises(tj.JobError, match="more than"):
        registry.submit("s", PRESETS[TINY], dataclasses.replace(SLOW, steps=tj.MAX_STEPS + 1))
    with pytest.raises(tj.JobError, match="below 1x1"):
        registry.submit("s", NetworkConfig(parse_blocks("maxpool, " * 6)), SLOW)


@pytest.mark.slow
def test_a_training_stops_when_its_session_ends():
    registry = tj.JobRegistry(limit=1, data=fake_source)
    session_open = [True]
    job = registry.submit("s", PRESETS[TINY], SLOW, alive=lambda: session_open[0])
    queued = registry.submit("t", PRESETS[TINY], SLOW, alive=lambda: session_open[0])
    _wait(lambda: job.progress().step > 0)
    session_open[0] = False
    _wait(job.done, timeout=15)
    assert job.progress().state == "stopped" and "session ended" in job.progress().message
    assert _gone(job.process.pid), "the training's process has ended"
    _wait(queued.done, timeout=10)
    assert queued.progress().state == "stopped" and queued.progress().step == 0 and queued.process is None
    assert registry.counts() == (0, 0)


@pytest.mark.slow
def test_stop_all_ends_every_child_process():
    registry = tj.JobRegistry(limit=1, data=fake_source)
    job = registry.submit("a", PRESETS[TINY], SLOW)
    queued = registry.submit("b", PRESETS[TINY], SLOW)
    _wait(lambda: job.progress().step > 0)
    registry.stop_all()
    assert job.done() and queued.done() and registry.counts() == (0, 0)
    assert _gone(job.process.pid) and queued.process is None, "no process left, none started from the queue"
    for j in (job, queued):
        assert j.progress().state == "stopped" and "shutting down" in j.progress().message


@pytest.mark.slow
def test_a_killed_or_failing_child_gives_a_failed_state_and_a_message():
    registry = tj.JobRegistry(limit=1, data=fake_source)
    job = registry.submit("a", PRESETS[TINY], SLOW)
    _wait(lambda: job.progress().step > 0)
    os.kill(job.process.pid, signal.SIGKILL)  # what the kernel does when memory runs out
    assert job.wait(30)
    p = job.progress()
    assert p.state == "failed" and "its process ended unexpectedly (killed by signal SIGKILL)" in p.message, p
    assert job.result() is None and registry.counts() == (0, 0)
    broken = tj.JobRegistry(limit=1, data=broken_source).submit("a", PRESETS[TINY], SLOW)
    assert broken.wait(60)
    p = broken.progress()
    assert (p.state, p.message) == ("failed", "training failed: OSError: the disk is on fire")


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def _status(pid: int, field: str) -> str:
    return _proc(pid, "status").split(f"\n{field}:")[1].split()[0]


@pytest.mark.slow
def test_a_training_process_is_forked_from_the_fork_server_and_shares_its_torch():
    """The fork server (a child of the server, single-threaded, torch loaded) forks each training's process, which
    shares its pages: a spawned one imported torch itself (about 280 MB of its own) and shared no written page."""
    registry = tj.JobRegistry(limit=1, data=checked_source)
    job = registry.submit("s", PRESETS[TINY], SLOW)
    _wait(lambda: job.progress().step > 0 or job.done())
    assert job.progress().state == "running", job.progress().message
    child = job.process.pid
    fork_server = int(_status(child, "PPid"))
    assert fork_server != os.getpid() and int(_status(fork_server, "PPid")) == os.getpid()
    assert "multiprocessing.forkserver" in _proc(fork_server, "cmdline")
    assert _status(fork_server, "Threads") == "1", "forked from a process with one thread: no lock held by another"
    assert "libtorch_cpu" in _proc(fork_server, "maps")
    shared = int(_status(child, "RssAnon")) - int(_proc(child, "smaps_rollup").split("Private_Dirty:")[1].split()[0])
    assert shared > 100 * 1024, f"{shared} kB of its anonymous memory shared with the fork server"
    registry.stop_all()


SERVER_KILLED_MID_TRAINING = """
import time
from cnnviz.training import jobs as tj
from tests.training.test_training import PRESETS, SLOW, TINY, fake_source
started = time.perf_counter()
job = tj.JobRegistry(limit=1, data=fake_source).submit("s", PRESETS[TINY], SLOW)
submit_s = time.perf_counter() - started
while job.progress().step == 0 and not job.done():
    time.sleep(0.1)
print(job.process.pid if not job.done() else job.progress(), submit_s, flush=True)
time.sleep(300)
"""


@pytest.mark.slow
def test_a_child_does_not_outlive_a_killed_server():
    """Neither the training's process nor the fork server it was forked from; and the server's first training
    (which starts the fork server: seconds of imports) did not hold up the page that asked for it."""
    server = subprocess.Popen([sys.executable, "-c", SERVER_KILLED_MID_TRAINING], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        line = server.stdout.readline().split()
        assert line and line[0].isdigit(), line
        child, submit_s = int(line[0]), float(line[1])
        fork_server = int(_status(child, "PPid"))
        assert "multiprocessing.forkserver" in _proc(fork_server, "cmdline")
    finally:
        server.kill()
        server.wait()
    assert submit_s < 1.0, f"submit() took {submit_s:.1f} s"
    _wait(lambda: _gone(child), timeout=30)
    _wait(lambda: _gone(fork_server), timeout=30)


@pytest.mark.slow
def test_finished_job_gives_a_model_for_the_explorer():
    registry = tj.JobRegistry(limit=1, data=fake_source)
    job = registry.submit("s", PRESETS[TINY], dataclasses.replace(SLOW, steps=60))
    assert job.wait(120)
    p = job.progress()
    assert p.state == "finished" and p.accuracy is not None and p.accuracy > 50, p.accuracy  # the bands are learnable
    model, card = job.result()
    assert not model.training and card.test_accuracy == pytest.approx(p.held_out[-1][1], abs=0.01)
    assert "conv 8" in card.notes and card.history and card.history[-1]["step"] == 60
    loaded, _ = load_uploaded_pair(*to_bytes(model, card))
    x = torch.randn(1, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
