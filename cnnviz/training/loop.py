"""The one training loop, used by the command line (``python -m cnnviz.train``) and the "Train a CNN" page.

The whole split is held in memory as uint8 and augmented batch by batch on tensors. Deterministic given the seed and
the number of torch threads: every random draw comes from generators seeded from ``Settings.seed``. The optimizers
and the one-cycle schedule are written out as ``torch.optim`` computes them (why: docs/design.md).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnviz.engine.builder import CustomNet, NetworkConfig
from cnnviz.engine.models import ModelCard
from cnnviz.engine.pictures import normalize

OPTIMIZERS = ("sgd", "momentum", "adam")
# Dropout and a new network's initial weights draw from torch's global generator, which every thread of a process
# shares: a training reseeds it from its own generator and draws under this lock, so trainings that share a process
# (the tests run several side by side) stay deterministic.
_GLOBAL_RNG = threading.Lock()
SCHEDULES = ("constant", "onecycle")
MOMENTUM = 0.9  # SGD's momentum and Adam's beta1 on a constant schedule (torch.optim's defaults)
ADAM_BETA2, ADAM_EPS = 0.999, 1e-8


def augment_mnist(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine on uint8 (N, 1, 28, 28) -> float pixels in [0, 1]."""
    n = images.shape[0]
    x = images.float() / 255.0
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(8)
    scale = 0.9 + torch.rand(n, generator=gen) * 0.2
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2.0 / 14.0)  # 2 px in [-1, 1] grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_cifar(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4 px reflect padding and horizontal flip on uint8 (N, 3, 32, 32) -> float [0, 1]."""
    n = images.shape[0]
    padded = F.pad(images.float() / 255.0, (4, 4, 4, 4), mode="reflect")  # (N, 3, 40, 40)
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty((n, 3, 32, 32))
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


AUGMENT = {"mnist": augment_mnist, "cifar10": augment_cifar}


def init_model(cfg: NetworkConfig, seed: int) -> CustomNet:
    """Build the network with initial weights drawn from ``seed`` (torch's global generator, under the lock)."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CustomNet(cfg)


def _annealing_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)  # OneCycleLR's, operation for operation


def one_cycle(step: int, total: int, peak: float, pct_start: float) -> tuple[float, float]:
    """The learning rate and momentum (or Adam's beta1) of 0-based ``step`` of ``total`` on torch's OneCycleLR
    (cosine, two phases, its defaults): lr from peak / 25 up to peak over the first ``pct_start`` of the steps while
    momentum goes from 0.95 down to 0.85, then lr down to peak / 25e4 while momentum goes back up."""
    initial = peak / 25.0
    phases = ((float(pct_start * total) - 1, initial, peak, 0.95, 0.85), (total - 1, peak, initial / 1e4, 0.85, 0.95))
    start = 0.0
    for i, (end, lr_from, lr_to, m_from, m_to) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end != start else 1.0  # (OneCycleLR divides by zero there)
            return _annealing_cos(lr_from, lr_to, pct), _annealing_cos(m_from, m_to, pct)
        start = end
    raise AssertionError("unreachable: the last phase takes every step")


@dataclass(frozen=True)
class Settings:
    """Hyperparameters of one training run."""

    optimizer: str = "adam"  # "sgd", "momentum" (SGD with Nesterov momentum 0.9), "adam"
    lr: float = 0.003  # the constant rate, or one-cycle's peak
    schedule: str = "onecycle"  # "constant" or "onecycle" (warm up for pct_start of the steps, then anneal)
    batch_size: int = 128
    steps: int = 1000
    augment: bool = True
    seed: int = 0
    weight_decay: float = 0.0  # not on biases and batch norm
    label_smoothing: float = 0.0
    pct_start: float = 0.25

    def check(self) -> None:
        """Raise ValueError with a message for the learner for settings that cannot train."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ValueError("the learning rate must be above 0 and at most 10")
        if not 1 <= self.batch_size <= 1024:
            raise ValueError("the batch size must be between 1 and 1024")
        if self.steps < 1:
            raise ValueError("train for at least one step")


@dataclass
class StepStats:
    step: int  # 1-based number of the step just taken
    epoch: int  # 1-based
    loss: float
    correct: int
    count: int
    lr: float  # the rate this step used
    grad_norms: dict[str, float] | None  # per layer with weights: ||dL/dW||, before the update


class Trainer:
    """Holds a model, its data and optimiser; ``step()`` takes one optimisation step.

    Args:
        model: a freshly built model (any registry model or network built from blocks), in train mode.
        card: its card (mean and std normalise the inputs; ``card.name`` picks the augmentation).
        settings: the hyperparameters.
        train_x, train_y: the training split, uint8 (N, C, H, W) and int64 (N,).
        track_grad_norms: record each weighted layer's gradient norm every step (the page's curves).
        channels_last: run convolutions in channels-last memory format (faster on CPU for the shipped nets).
    """

    def __init__(self, model: nn.Module, card: ModelCard, settings: Settings, train_x: torch.Tensor,
                 train_y: torch.Tensor, track_grad_norms: bool = False, channels_last: bool = False) -> None:
        settings.check()
        self.model, self.card, self.settings = model, card, settings
        self.train_x, self.train_y = train_x, train_y
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.augment = AUGMENT[card.name] if settings.augment else None
        self.track_grad_norms, self.channels_last = track_grad_norms, channels_last
        if channels_last:
            self.model = model = model.to(memory_format=torch.channels_last)
        # (parameter, its weight decay: none on biases and batch norm) and the optimizer's state of each
        self.params = [(p, 0.0 if p.ndim <= 1 else settings.weight_decay) for p in model.parameters()]
        self.state: list[dict[str, Any]] = [{} for _ in self.params]
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.weighted = [(name, m) for name, m in model.named_modules()
                         if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.steps_per_epoch = math.ceil(len(train_x) / settings.batch_size)
        self.step_count = 0
        self._order: torch.Tensor | None = None

    @property
    def epoch(self) -> int:
        return self.step_count // self.steps_per_epoch + 1

    def schedule(self) -> tuple[float, float]:
        """The next step's learning rate and momentum (SGD's momentum or Adam's beta1)."""
        s = self.settings
        if s.schedule == "onecycle":
            lr, momentum = one_cycle(self.step_count, s.steps, s.lr, s.pct_start)
            return lr, momentum if s.optimizer != "sgd" else 0.0
        return s.lr, MOMENTUM if s.optimizer != "sgd" else 0.0

    def lr(self) -> float:
        return self.schedule()[0]

    @torch.no_grad()
    def update(self, lr: float, momentum: float) -> None:
        """One step of the optimizer on every parameter with a gradient, as torch.optim computes it on the CPU.

        SGD: w -= lr * (g + decay * w). Nesterov momentum: buf = momentum * buf + g (g at the first step), then
        w -= lr * (g + momentum * buf). Adam (beta1 = ``momentum``): m, v running averages of g and g^2, then
        w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
        """
        adam = self.settings.optimizer == "adam"
        for (param, decay), state in zip(self.params, self.state, strict=True):
            if param.grad is None:
                continue
            grad = param.grad if decay == 0 else param.grad.add(param, alpha=decay)
            if adam:
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
                state["step"] += 1
                t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - momentum)
                exp_avg_sq.mul_(ADAM_BETA2).addcmul_(grad, grad, value=1 - ADAM_BETA2)
                bias_correction2_sqrt = (1 - ADAM_BETA2**t) ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
                param.addcdiv_(exp_avg, denom, value=-(lr / (1 - momentum**t)))
                continue
            if momentum != 0:
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.detach().clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(grad)
                grad = grad.add(state["momentum_buffer"], alpha=momentum)
            param.add_(grad, alpha=-lr)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: a fresh shuffle at the start of each epoch, augmented, normalised."""
        b = self.step_count % self.steps_per_epoch
        if b == 0 or self._order is None:
            self._order = torch.randperm(len(self.train_x), generator=self.gen)
        bs = self.settings.batch_size
        idx = self._order[b * bs:(b + 1) * bs]
        images = self.train_x[idx]
        pixels = self.augment(images, self.gen) if self.augment is not None else images.float() / 255.0
        x = normalize(pixels, self.card)  # (N, C, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.train_y[idx]

    def step(self) -> StepStats:
        """One optimisation step on the next batch."""
        if self.step_count >= self.settings.steps:
            raise RuntimeError(f"all {self.settings.steps} steps are done")
        self.model.train()
        x, y = self.batch()
        lr, momentum = self.schedule()
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):  # dropout draws from this run's seed
            torch.manual_seed(seed)
            logits = self.model(x)  # (N, K)
        loss = self.criterion(logits, y)
        for param, _ in self.params:
            param.grad = None
        loss.backward()
        norms = None
        if self.track_grad_norms:
            norms = {name: float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0
                     for name, m in self.weighted}
        self.update(lr, momentum)
        self.step_count += 1
        correct = int((logits.detach().argmax(1) == y).sum())
        return StepStats(self.step_count, (self.step_count - 1) // self.steps_per_epoch + 1, float(loss.detach()),
                         correct, len(y), lr, norms)
