"""Model definitions, a registry by name, and the ModelCard that travels with each checkpoint.

Every layer is a named leaf module (``block1.conv1``, ``block1.relu1`` ...) so the capture engine and the pages
can show each one by its qualified name in ``model.named_modules()``. Every ReLU is ``inplace=False``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnviz.engine.builder import CustomNet, NetworkConfig

MNIST_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class ModelCard:
    """What a learner (and the loader) needs to know about a trained model."""

    name: str  # registry name: "mnist" or "cifar10"; for a custom network, the dataset it was built for
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    param_count: int = 0
    dataset: str = ""  # where the reported accuracy was measured
    split: str = "test"
    test_accuracy: float | None = None  # percent
    train_accuracy: float | None = None  # percent, last epoch, with augmentation
    epochs: int = 0
    training_time_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch
    seed: int = 0
    date: str = ""
    notes: str = ""  # what changed from the textbook architecture and why
    stage: str = "final"  # "init", "epoch1", "final": snapshots taken while learning
    learn_rate: float | None = None  # the Learn view's default rate (learn.choose_learn_rate), None: not chosen yet

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelCard:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key in ("classes", "input_shape", "mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _conv_bn_relu(prefix: str, in_channels: int, out_channels: int, kernel_size: int) -> list[tuple[str, nn.Module]]:
    return [
        (f"conv{prefix}", nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)),
        (f"bn{prefix}", nn.BatchNorm2d(out_channels)),
        (f"relu{prefix}", nn.ReLU(inplace=False)),
    ]


@dataclass
class MnistConfig:
    """The worked-example MNIST net: two 3x3 blocks, each followed by a 1x1 transition and a max-pool.

    ``head_conv`` adds one 3x3 conv-BN-ReLU before the 1x1 classifier (receptive field 16 -> 24 px), and
    ``block2_out`` is 48 rather than 64 to pay for it and stay under 20,000 parameters.
    """

    block1_channels: tuple[int, int] = (16, 32)
    trans_channels: int = 16
    block2_channels: tuple[int, int] = (16, 48)
    head_conv: bool = True
    dropout: float = 0.05
    num_classes: int = 10


class MnistNet(nn.Module):
    def __init__(self, cfg: MnistConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or MnistConfig()
        self.cfg = cfg
        c1a, c1b = cfg.block1_channels
        c2a, c2b = cfg.block2_channels
        t = cfg.trans_channels
        self.block1 = nn.Sequential(OrderedDict(
            _conv_bn_relu("1", 1, c1a, 3) + _conv_bn_relu("2", c1a, c1b, 3)
            + [("drop", nn.Dropout2d(cfg.dropout))]
        ))  # (N, c1b, 28, 28)
        self.trans1 = nn.Sequential(OrderedDict(
            _conv_bn_relu("", c1b, t, 1) + [("pool", nn.MaxPool2d(2, 2))]
        ))  # (N, t, 14, 14)
        self.block2 = nn.Sequential(OrderedDict(
            _conv_bn_relu("1", t, c2a, 3) + _conv_bn_relu("2", c2a, c2b, 3)
            + [("drop", nn.Dropout2d(cfg.dropout))]
        ))  # (N, c2b, 14, 14)
        self.trans2 = nn.Sequential(OrderedDict(
            _conv_bn_relu("", c2b, t, 1) + [("pool", nn.MaxPool2d(2, 2))]
        ))  # (N, t, 7, 7)
        head: list[tuple[str, nn.Module]] = _conv_bn_relu("3x3", t, t, 3) if cfg.head_conv else []
        head += [
            ("classifier", nn.Conv2d(t, cfg.num_classes, 1)),  # (N, 10, 7, 7)
            ("gap", nn.AdaptiveAvgPool2d(1)),  # (N, 10, 1, 1)
            ("flatten", nn.Flatten()),  # (N, 10)
        ]
        self.head = nn.Sequential(OrderedDict(head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 28, 28)
        return self.head(self.trans2(self.block2(self.trans1(self.block1(x)))))


@dataclass
class CifarConfig:
    """A plain VGG-style net: conv-BN-ReLU pairs, a max-pool after each stage, global average pool, one linear."""

    widths: tuple[int, ...] = (64, 128, 256)
    convs_per_stage: int = 2
    num_classes: int = 10


class CifarNet(nn.Module):
    def __init__(self, cfg: CifarConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or CifarConfig()
        self.cfg = cfg
        in_channels = 3
        for s, width in enumerate(cfg.widths, start=1):
            layers: list[tuple[str, nn.Module]] = []
            for i in range(1, cfg.convs_per_stage + 1):
                layers += _conv_bn_relu(str(i), in_channels, width, 3)
                in_channels = width
            layers.append(("pool", nn.MaxPool2d(2, 2)))
            self.add_module(f"stage{s}", nn.Sequential(OrderedDict(layers)))
        self.head = nn.Sequential(OrderedDict([
            ("gap", nn.AdaptiveAvgPool2d(1)),  # (N, C, 1, 1)
            ("flatten", nn.Flatten()),  # (N, C)
            ("fc", nn.Linear(in_channels, cfg.num_classes)),  # (N, 10)
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 3, 32, 32)
        for s in range(1, len(self.cfg.widths) + 1):
            x = getattr(self, f"stage{s}")(x)
        return self.head(x)


@dataclass(frozen=True)
class ModelSpec:
    builder: type[nn.Module]
    config: type
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str


REGISTRY: dict[str, ModelSpec] = {
    "mnist": ModelSpec(MnistNet, MnistConfig, MNIST_CLASSES, (1, 28, 28), MNIST_MEAN, MNIST_STD, "MNIST"),
    "cifar10": ModelSpec(CifarNet, CifarConfig, CIFAR10_CLASSES, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD,
                         "CIFAR-10"),
}


CUSTOM = "custom"  # a network built from blocks (cnnviz.engine.builder); its card's name is its dataset's
ARCHITECTURES = (*REGISTRY, CUSTOM)


def config_from_args(name: str, model_args: dict[str, Any] | None) -> Any:
    """Rebuild a model's config dataclass from the JSON ``model_args`` a checkpoint carries."""
    if name == CUSTOM:
        return NetworkConfig.from_args(model_args or {})
    spec = REGISTRY[name]
    args = dict(model_args or {})
    fields = {f.name: f for f in dataclasses.fields(spec.config)}
    unknown = set(args) - set(fields)
    if unknown:
        raise ValueError(f"unknown model_args for {name!r}: {sorted(unknown)}")
    for key, value in args.items():
        if isinstance(value, list):
            args[key] = tuple(value)
    return spec.config(**args)


def build_model(name: str, model_args: dict[str, Any] | None = None) -> nn.Module:
    """Build a fresh model by registry name.

    Args:
        name: "mnist", "cifar10", or "custom" (a NetworkConfig's fields in ``model_args``).
        model_args: fields of the model's config dataclass; defaults where missing.
    Returns:
        The nn.Module, in train mode, randomly initialised.
    """
    if name == CUSTOM:
        return CustomNet(config_from_args(name, model_args))
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(ARCHITECTURES)}")
    return REGISTRY[name].builder(config_from_args(name, model_args))


def arch_of(model: nn.Module, card: ModelCard) -> str:
    """The architecture name a checkpoint records: "custom" for a network built from blocks, else the card's."""
    return CUSTOM if isinstance(model, CustomNet) else card.name


def model_args_of(model: nn.Module) -> dict[str, Any]:
    return dataclasses.asdict(model.cfg)  # type: ignore[arg-type]


def new_card(name: str, model: nn.Module) -> ModelCard:
    """A fresh card for ``model`` trained on dataset ``name`` ("mnist" or "cifar10"), custom networks included."""
    spec = REGISTRY[name]
    return ModelCard(
        name=name, classes=spec.classes, input_shape=spec.input_shape, mean=spec.mean, std=spec.std,
        param_count=count_parameters(model), dataset=spec.dataset,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
