"""A CNN built from blocks: the config a learner edits, its layer table (shapes, parameters, receptive fields), checks.

A network is a list of blocks (3x3 convolution, 1x1 transition, max-pool, dropout) followed by a head (1x1
classifier + global average pool, or flatten + linear). Every convolution gets the network's activation and, when
``batch_norm`` is on, a BatchNorm before it. The config is a dataclass that travels in the checkpoint as
``model_args`` (``arch: "custom"``) and rebuilds the model on load. Every layer is a named leaf module
(``conv1``, ``bn1``, ``relu1``, ``pool1`` ...), nothing is in place, so ``capture`` records each one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from torch import nn

BLOCK_KINDS = ("conv", "conv1x1", "maxpool", "dropout")
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
HEADS = ("gap", "linear")
MAX_WEIGHT_LAYERS = 20  # convolutions and linear layers, the head's included
MAX_PARAMETERS = 1_500_000  # what this server trains in reasonable time (the shipped CIFAR-10 net: 1,176,746)
MAX_CHANNELS = 512
ALIASES = {"conv": "conv", "conv3x3": "conv", "3x3": "conv", "conv1x1": "conv1x1", "1x1": "conv1x1",
           "trans": "conv1x1", "transition": "conv1x1", "maxpool": "maxpool", "pool": "maxpool",
           "dropout": "dropout", "drop": "dropout"}


class BuildError(ValueError):
    """A network that cannot be built or trained here. The message says which block and what to change."""


@dataclass(frozen=True)
class Block:
    kind: str  # one of BLOCK_KINDS
    channels: int = 0  # conv, conv1x1: output channels
    p: float = 0.0  # dropout: probability of zeroing a channel


@dataclass(frozen=True)
class NetworkConfig:
    blocks: tuple[Block, ...]
    activation: str = "relu"
    batch_norm: bool = True
    head: str = "gap"  # "gap": 1x1 conv to the classes + global average pool; "linear": flatten + linear
    input_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    num_classes: int = 10

    def to_args(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> NetworkConfig:
        """Rebuild from JSON ``model_args``, refusing unknown keys and layer kinds with a BuildError."""
        if not isinstance(args, dict):
            raise BuildError("model_args must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(args) - known
        if unknown:
            raise BuildError(f"unknown model_args for a custom network: {sorted(unknown)}")
        raw_blocks = args.get("blocks", ())
        if not isinstance(raw_blocks, (list, tuple)):
            raise BuildError("'blocks' must be a list")
        blocks = []
        for i, b in enumerate(raw_blocks, start=1):
            if not isinstance(b, dict) or set(b) - {"kind", "channels", "p"}:
                raise BuildError(f"block {i} must be an object with 'kind', 'channels' and 'p', not {b!r:.60}")
            if b.get("kind") not in BLOCK_KINDS:
                raise BuildError(f"block {i}: unknown layer kind {b.get('kind')!r:.40} "
                                 f"(known: {', '.join(BLOCK_KINDS)})")
            channels, p = b.get("channels", 0), b.get("p", 0.0)
            if not isinstance(channels, int) or isinstance(channels, bool) or not isinstance(p, (int, float)):
                raise BuildError(f"block {i}: 'channels' must be a whole number and 'p' a number")
            blocks.append(Block(b["kind"], channels, float(p)))
        kwargs = {k: v for k, v in args.items() if k != "blocks"}
        if "input_shape" in kwargs:
            shape = kwargs["input_shape"]
            if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(
                    isinstance(d, int) and not isinstance(d, bool) for d in shape):
                raise BuildError(f"input_shape must be three whole numbers (C, H, W), not {shape!r:.60}")
            kwargs["input_shape"] = tuple(shape)
        for key, kind in (("activation", str), ("batch_norm", bool), ("head", str), ("num_classes", int)):
            if key in kwargs and not isinstance(kwargs[key], kind):
                raise BuildError(f"model_args {key!r} must be a {kind.__name__}")
        return cls(blocks=tuple(blocks), **kwargs)


@dataclass(frozen=True)
class LayerRow:
    """One row of the architecture table: a leaf layer after it has run."""

    name: str
    kind: str  # "conv", "batchnorm", activation name, "maxpool", "dropout", "avgpool", "flatten", "linear"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    receptive_field: int  # input pixels (per side) one output cell sees
    jump: int  # input pixels between neighbouring output cells


def parse_blocks(text: str) -> tuple[Block, ...]:
    """Blocks from text, one per line or comma-separated: ``conv 16``, ``conv1x1 8``, ``maxpool``, ``dropout 0.1``.

    Raises BuildError naming the line it cannot read.
    """
    blocks = []
    items = [s.strip() for s in re.split(r"[,\n;]", text) if s.strip()]
    for i, item in enumerate(items, start=1):
        words = item.lower().split()
        kind = ALIASES.get(words[0])
        if kind is None:
            raise BuildError(f"block {i} {item!r:.40}: unknown kind {words[0]!r:.20}; write conv N, conv1x1 N, "
                             "maxpool or dropout P")
        wants_arg = kind in ("conv", "conv1x1", "dropout")
        if len(words) != (2 if wants_arg else 1):
            raise BuildError(f"block {i} {item!r:.40}: write " + {"conv": "conv N (N channels)",
                             "conv1x1": "conv1x1 N (N channels)", "dropout": "dropout P (0 <= P < 1)",
                             "maxpool": "maxpool, with nothing after it"}[kind])
        try:
            if kind == "dropout":
                blocks.append(Block(kind, p=float(words[1])))
            elif wants_arg:
                blocks.append(Block(kind, channels=int(words[1])))
            else:
                blocks.append(Block(kind))
        except ValueError:
            raise BuildError(f"block {i} {item!r:.40}: {words[1]!r:.20} is not a number") from None
    return tuple(blocks)


def blocks_text(blocks: tuple[Block, ...]) -> str:
    """The text ``parse_blocks`` reads, one block per line."""
    def one(b: Block) -> str:
        if b.kind == "dropout":
            return f"dropout {b.p:g}"
        return f"{b.kind} {b.channels}" if b.kind in ("conv", "conv1x1") else b.kind
    return "\n".join(one(b) for b in blocks)


CODE_LETTERS = {"conv": "c", "conv1x1": "t", "maxpool": "p", "dropout": "d"}  # t: a 1x1 transition
MAX_CODE_CHARS = 400


def blocks_code(blocks: tuple[Block, ...]) -> str:
    """The blocks written compactly for a link: ``c16_t8_p_d0.05`` (conv 16, conv1x1 8, maxpool, dropout 0.05)."""
    def one(b: Block) -> str:
        letter = CODE_LETTERS[b.kind]
        if b.kind == "dropout":
            return f"{letter}{b.p:g}"
        return f"{letter}{b.channels}" if b.kind in ("conv", "conv1x1") else letter
    return "_".join(one(b) for b in blocks)


def parse_blocks_code(code: str) -> tuple[Block, ...]:
    """The blocks of a link's ``blocks_code``; raises BuildError naming the part it cannot read."""
    if len(code) > MAX_CODE_CHARS:
        raise BuildError(f"it is {len(code):,} characters long; at most {MAX_CODE_CHARS} are read")
    kinds = {letter: kind for kind, letter in CODE_LETTERS.items()}
    blocks = []
    for i, part in enumerate(code.split("_"), start=1):
        kind = kinds.get(part[:1])
        if kind is None:
            raise BuildError(f"part {i} {part!r:.20} does not start with c (conv), t (conv1x1), p (maxpool) or "
                             "d (dropout)")
        arg = part[1:]
        try:
            if kind == "maxpool":
                if arg:
                    raise ValueError
                blocks.append(Block(kind))
            elif kind == "dropout":
                blocks.append(Block(kind, p=float(arg)))
            else:
                blocks.append(Block(kind, channels=int(arg)))
        except ValueError:
            wanted = {"maxpool": "p alone", "dropout": "d and a probability (d0.1)",
                      "conv": "c and a channel count (c16)", "conv1x1": "t and a channel count (t8)"}[kind]
            raise BuildError(f"part {i} {part!r:.20}: write {wanted}") from None
    return tuple(blocks)


def _layers(cfg: NetworkConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, arguments) of every leaf layer, in order. The one place the layout is decided."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    act = cfg.activation
    n_conv = n_pool = n_drop = 0
    channels = cfg.input_shape[0]
    for b in cfg.blocks:
        if b.kind in ("conv", "conv1x1"):
            n_conv += 1
            k = 3 if b.kind == "conv" else 1
            out.append((f"conv{n_conv}", "conv", {"in_channels": channels, "out_channels": b.channels,
                                                  "kernel_size": k, "padding": k // 2}))
            if cfg.batch_norm:
                out.append((f"bn{n_conv}", "batchnorm", {"num_features": b.channels}))
            out.append((f"{act}{n_conv}", act, {}))
            channels = b.channels
        elif b.kind == "maxpool":
            n_pool += 1
            out.append((f"pool{n_pool}", "maxpool", {"kernel_size": 2, "stride": 2}))
        else:
            n_drop += 1
            out.append((f"drop{n_drop}", "dropout", {"p": b.p}))
    if cfg.head == "gap":
        out += [("classifier", "conv", {"in_channels": channels, "out_channels": cfg.num_classes, "kernel_size": 1,
                                        "padding": 0}),
                ("gap", "avgpool", {}), ("flatten", "flatten", {})]
    else:
        out += [("flatten", "flatten", {}), ("fc", "linear", {"out_features": cfg.num_classes})]
    return out


def validate(cfg: NetworkConfig) -> list[LayerRow]:
    """The architecture table, computed without building anything; raises BuildError for a network refused here.

    Output size of a 3x3 convolution with padding 1 (and a 1x1 one): unchanged; of a 2x2/2 max-pool: floor(H/2).
    Receptive field: r += (k - 1) * j, then j *= stride; global pooling and a linear layer see the whole input.
    """
    if cfg.activation not in ACTIVATIONS:
        raise BuildError(f"unknown activation {cfg.activation!r:.20} (known: {', '.join(ACTIVATIONS)})")
    if cfg.head not in HEADS:
        raise BuildError(f"unknown head {cfg.head!r:.20} (known: {', '.join(HEADS)})")
    c, h, w = cfg.input_shape
    if not (1 <= c <= 4 and 1 <= h <= 256 and 1 <= w <= 256) or not 2 <= cfg.num_classes <= 1000:
        raise BuildError(f"input shape {cfg.input_shape} or {cfg.num_classes} classes is not a picture classifier")
    for i, b in enumerate(cfg.blocks, start=1):
        if b.kind not in BLOCK_KINDS:
            raise BuildError(f"block {i}: unknown layer kind {b.kind!r:.40} (known: {', '.join(BLOCK_KINDS)})")
        if b.kind in ("conv", "conv1x1") and not 1 <= b.channels <= MAX_CHANNELS:
            raise BuildError(f"block {i} ({b.kind}): {b.channels} channels; choose 1 to {MAX_CHANNELS}")
        if b.kind == "dropout" and not (math.isfinite(b.p) and 0.0 <= b.p < 1.0):
            raise BuildError(f"block {i} (dropout): p = {b.p:g}; choose 0 <= p < 1")
    weight_layers = sum(b.kind in ("conv", "conv1x1") for b in cfg.blocks) + 1
    if weight_layers > MAX_WEIGHT_LAYERS:
        raise BuildError(f"{weight_layers} layers with weights (convolutions and the head), more than "
                         f"{MAX_WEIGHT_LAYERS}; remove some convolutions")
    rows: list[LayerRow] = []
    rf, jump = 1, 1
    for name, kind, a in _layers(cfg):
        params = 0
        if kind == "conv":
            k = a["kernel_size"]
            params = a["in_channels"] * a["out_channels"] * k * k + a["out_channels"]
            c = a["out_channels"]
            rf += (k - 1) * jump
        elif kind == "batchnorm":
            params = 2 * a["num_features"]
        elif kind == "maxpool":
            if h < 2 or w < 2:
                raise BuildError(f"{name} (block {_block_index(cfg, name)}) would shrink the {h}x{w} map below 1x1; "
                                 "remove a max-pool or start from a larger input")
            h, w = h // 2, w // 2
            rf += jump
            jump *= 2
        elif kind == "avgpool":
            h = w = 1
            rf = max(rf, *cfg.input_shape[1:])
        elif kind == "linear":
            params = (c * h * w + 1) * cfg.num_classes
            c, h, w = cfg.num_classes, 0, 0
            rf = max(rf, *cfg.input_shape[1:])
        if kind == "flatten":
            shape: tuple[int, ...] = (c * h * w,)
        elif kind == "linear":
            shape = (cfg.num_classes,)
        else:
            shape = (c, h, w)
        rows.append(LayerRow(name, kind, shape, params, rf, jump))
    total = sum(r.params for r in rows)
    if total > MAX_PARAMETERS:
        raise BuildError(f"{total:,} parameters, more than this server trains ({MAX_PARAMETERS:,}); use fewer "
                         "channels, or a max-pool before a linear head")
    return rows


def _block_index(cfg: NetworkConfig, pool_name: str) -> int:
    wanted = int(pool_name[4:])
    seen = 0
    for i, b in enumerate(cfg.blocks, start=1):
        seen += b.kind == "maxpool"
        if b.kind == "maxpool" and seen == wanted:
            return i
    return 0


class CustomNet(nn.Sequential):
    """The network a NetworkConfig describes: a chain of named leaf layers."""

    def __init__(self, cfg: NetworkConfig) -> None:
        rows = validate(cfg)
        layers: list[tuple[str, nn.Module]] = []
        previous: tuple[int, ...] = tuple(cfg.input_shape)
        for (name, kind, a), row in zip(_layers(cfg), rows, strict=True):
            if kind == "conv":
                module: nn.Module = nn.Conv2d(a["in_channels"], a["out_channels"], a["kernel_size"],
                                              padding=a["padding"])
            elif kind == "batchnorm":
                module = nn.BatchNorm2d(a["num_features"])
            elif kind in ACTIVATIONS:
                module = ACTIVATIONS[kind]()  # none of these is in place
            elif kind == "maxpool":
                module = nn.MaxPool2d(2, 2)
            elif kind == "dropout":
                module = nn.Dropout2d(a["p"])
            elif kind == "avgpool":
                module = nn.AdaptiveAvgPool2d(1)
            elif kind == "flatten":
                module = nn.Flatten()
            else:  # linear
                module = nn.Linear(math.prod(previous), a["out_features"])
            layers.append((name, module))
            previous = row.output_shape
        super().__init__(OrderedDict(layers))
        self.cfg = cfg


def parameter_count(cfg: NetworkConfig) -> int:
    return sum(r.params for r in validate(cfg))


def _conv_blocks(*items: Any) -> tuple[Block, ...]:
    out = []
    for item in items:
        if item == "pool":
            out.append(Block("maxpool"))
        elif isinstance(item, float):
            out.append(Block("dropout", p=item))
        elif isinstance(item, tuple):
            out.append(Block("conv1x1", channels=item[0]))
        else:
            out.append(Block("conv", channels=item))
    return tuple(out)


PRESETS: dict[str, NetworkConfig] = {
    # The shipped MNIST layout (cnnviz.engine.models.MnistNet): 18,202 parameters.
    "Shipped MNIST architecture (18k parameters)": NetworkConfig(
        _conv_blocks(16, 32, 0.05, (16,), "pool", 16, 48, 0.05, (16,), "pool", 16), "relu", True, "gap"),
    # Two convolutions, two pools, a linear head: trains in a minute or two.
    "Tiny: two convolutions": NetworkConfig(_conv_blocks(8, "pool", 16, "pool"), "relu", True, "linear"),
    # Ten sigmoid convolutions, no batch norm: the gradient fades layer by layer on the way back (vanishing).
    "Deep plain sigmoid (no batch norm)": NetworkConfig(
        _conv_blocks(*([8] * 5), "pool", *([8] * 5), "pool"), "sigmoid", False, "linear"),
}
