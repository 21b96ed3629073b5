"""The one training loop, used by the command line (``python -m cnnviz.train``) and the "Train a CNN" page.

The whole split is held in memory as uint8 and augmented batch by batch on tensors (random affine for MNIST,
random crop + flip for CIFAR-10), which on a 2-core CPU is much faster than a PIL DataLoader. Deterministic given
the seed and the number of torch threads: every random draw (the shuffle, the augmentation, dropout, the initial
weights) comes from generators seeded from ``Settings.seed``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

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
        decay, no_decay = [], []
        for _, p in model.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if settings.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=settings.lr)
        else:
            momentum = 0.9 if settings.optimizer == "momentum" else 0.0
            self.optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=momentum, nesterov=momentum > 0)
        self.scheduler = None
        if settings.schedule == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=settings.lr, total_steps=settings.steps, pct_start=settings.pct_start,
                cycle_momentum=settings.optimizer != "sgd")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.weighted = [(name, m) for name, m in model.named_modules()
                         if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.steps_per_epoch = math.ceil(len(train_x) / settings.batch_size)
        self.step_count = 0
        self._order: torch.Tensor | None = None

    @property
    def epoch(self) -> int:
        return self.step_count // self.steps_per_epoch + 1

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

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
        lr = self.lr()
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):  # dropout draws from this run's seed
            torch.manual_seed(seed)
            logits = self.model(x)  # (N, K)
        loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms = None
        if self.track_grad_norms:
            norms = {name: float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0
                     for name, m in self.weighted}
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        correct = int((logits.detach().argmax(1) == y).sum())
        return StepStats(self.step_count, (self.step_count - 1) // self.steps_per_epoch + 1, float(loss.detach()),
                         correct, len(y), lr, norms)
