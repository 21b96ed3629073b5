"""Save and load checkpoints as safetensors + a JSON card. Nothing is ever unpickled.

``<dir>/<name>.safetensors`` holds the weights, ``<dir>/<name>.json`` holds
``{"arch": ..., "model_args": {...}, "card": {...}, "tensors": {name: shape}}``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cnnviz.engine.models import REGISTRY, ModelCard, build_model, model_args_of

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
MAX_HEADER_BYTES = 10_000_000
MAX_PARAMETERS = 50_000_000  # a card asking for a bigger model is refused before anything is allocated


class CheckpointError(Exception):
    """A checkpoint file is missing, damaged or does not match its card. The message names the file."""


def checkpoint_dir() -> Path:
    return Path(os.environ.get("CNNVIZ_CHECKPOINT_DIR", CHECKPOINT_DIR))


def save(model: nn.Module, card: ModelCard, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and the JSON card beside it.

    Args:
        model: the model to save (any registry model).
        card: its card; ``card.name`` is the registry name used to rebuild it.
        path: target file; the suffix is forced to .safetensors.
    Returns:
        (weights path, card path).
    """
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "arch": card.name})
    meta = {
        "arch": card.name,
        "model_args": model_args_of(model),
        "card": card.to_json(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps(meta, indent=2) + "\n")
    return path, card_path


def read_card(path: str | Path) -> dict[str, Any]:
    """Read and validate the JSON card of a checkpoint; raises CheckpointError naming the file."""
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"{card_path}: card file is missing")
    try:
        meta = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{card_path}: not a readable JSON card ({exc})") from None
    if not isinstance(meta, dict) or not {"arch", "card", "tensors"} <= meta.keys():
        raise CheckpointError(f"{card_path}: card lacks 'arch', 'card' or 'tensors'")
    if not isinstance(meta["card"], dict) or not isinstance(meta["tensors"], dict) \
            or not isinstance(meta.get("model_args") or {}, dict):
        raise CheckpointError(f"{card_path}: 'card', 'tensors' and 'model_args' must be JSON objects")
    bad = [k for k, v in meta["tensors"].items()
           if not isinstance(v, list) or not all(isinstance(d, int) and d >= 0 for d in v)]
    if bad:
        raise CheckpointError(f"{card_path}: tensor shapes must be lists of sizes, not {bad[:3]}")
    if not isinstance(meta["arch"], str) or meta["arch"] not in REGISTRY:
        raise CheckpointError(
            f"{card_path}: names an unknown model {meta['arch']!r} (known: {', '.join(REGISTRY)})"
        )
    return meta


def _check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not a safetensors file before handing it to the parser."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file is empty or truncated ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or header_len > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path}: not a safetensors file (bad header; a pickle or other format renamed .safetensors?)"
        )
    if 8 + header_len > size:
        raise CheckpointError(f"{path}: truncated safetensors file (its header alone needs {8 + header_len} bytes, "
                              f"the file has {size})")


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Load the tensors of a .safetensors file, with clear errors. Never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    _check_safetensors_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({exc})") from None


def load_path(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild a model from the card beside ``path``, load its weights and put it in eval mode.

    Every tensor's name and shape is checked against the model and the card.
    """
    path = Path(path).with_suffix(".safetensors")
    card_path = path.with_suffix(".json")
    meta = read_card(path)
    arch = meta["arch"]
    spec = REGISTRY[arch]
    try:
        card = ModelCard.from_json(meta["card"])
        with torch.device("meta"):  # shapes only: a card asking for a huge model costs nothing
            skeleton = build_model(arch, meta.get("model_args"))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{card_path}: card cannot rebuild the model ({exc})") from None
    if card.name != arch:
        raise CheckpointError(f"{card_path}: its card is for model {card.name!r} but it names model {arch!r}")
    if (tuple(card.input_shape), len(card.classes), len(card.mean), len(card.std)) != (
            spec.input_shape, len(spec.classes), spec.input_shape[0], spec.input_shape[0]):
        raise CheckpointError(
            f"{card_path}: card's input shape {tuple(card.input_shape)}, {len(card.classes)} classes and "
            f"mean/std of length {len(card.mean)}/{len(card.std)} do not fit model {arch!r} "
            f"(input {spec.input_shape}, {len(spec.classes)} classes)")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    n_params = sum(math.prod(shape) for shape in expected.values())
    if n_params > MAX_PARAMETERS:
        raise CheckpointError(f"{card_path}: model_args ask for {n_params:,} parameters, more than "
                              f"{MAX_PARAMETERS:,}; refusing to build it")
    carded = {k: tuple(v) for k, v in meta["tensors"].items()}
    state = load_state(path)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != carded:
        diff = sorted(k for k in set(got) | set(carded) if got.get(k) != carded.get(k))
        raise CheckpointError(
            f"{path}: tensors do not match the shapes its card {card_path.name} lists "
            f"(tensor: in file, in card) {[(k, got.get(k), carded.get(k)) for k in diff[:3]]}")
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise CheckpointError(
            f"{path}: does not fit model {arch!r}: missing {missing[:3]}, unexpected {extra[:3]}, "
            f"wrong shape {[(k, got[k], expected[k]) for k in wrong[:3]]}"
        )
    try:
        model = build_model(arch, meta.get("model_args"))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{card_path}: card cannot rebuild the model ({exc})") from None
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, card


def load_model(name: str, stage: str = "final", directory: str | Path | None = None) -> tuple[nn.Module, ModelCard]:
    """Load a shipped model by registry name.

    Args:
        name: "mnist" or "cifar10".
        stage: "final", or a snapshot taken while learning ("init", "epoch1").
        directory: checkpoint folder; defaults to $CNNVIZ_CHECKPOINT_DIR or the project's checkpoints/.
    Returns:
        (model in eval mode, its card).
    """
    base = Path(directory) if directory is not None else checkpoint_dir()
    stem = name if stage == "final" else f"{name}_{stage}"
    path = base / f"{stem}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint file is missing. Train it with `python -m cnnviz.train {name}`."
        )
    return load_path(path)


def available_stages(name: str, directory: str | Path | None = None) -> list[str]:
    base = Path(directory) if directory is not None else checkpoint_dir()
    stages = [s for s in ("init", "epoch1") if (base / f"{name}_{s}.safetensors").is_file()]
    if (base / f"{name}.safetensors").is_file():
        stages.append("final")
    return stages
