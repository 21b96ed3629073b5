"""Save and load checkpoints as safetensors + a JSON card. Nothing is ever unpickled.

``<dir>/<name>.safetensors`` holds the weights, ``<dir>/<name>.json`` holds
``{"arch": ..., "model_args": {...}, "card": {...}, "tensors": {name: shape}}``. ``arch`` is a registry name, or
"custom" for a network built from blocks (``model_args`` is its NetworkConfig; its card's name is its dataset's).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from cnnviz.engine.models import ARCHITECTURES, CUSTOM, REGISTRY, ModelCard, arch_of, build_model, model_args_of

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
MAX_HEADER_BYTES = 10_000_000
MAX_PARAMETERS = 50_000_000  # a card asking for a bigger model is refused before anything is allocated
MAX_UPLOAD_WEIGHTS_BYTES = 20 * 1024 * 1024  # an uploaded .safetensors (the shipped CIFAR-10 one: 4.7 MB)
MAX_UPLOAD_CARD_BYTES = 2 * 1024 * 1024  # an uploaded .json card


class CheckpointError(Exception):
    """A checkpoint file is missing, damaged or does not match its card. The message names the file."""


def checkpoint_dir() -> Path:
    return Path(os.environ.get("CNNVIZ_CHECKPOINT_DIR", CHECKPOINT_DIR))


def to_bytes(model: nn.Module, card: ModelCard) -> tuple[bytes, bytes]:
    """The checkpoint as two files' contents, (.safetensors bytes, .json card bytes), e.g. for a download.

    Args:
        model: a registry model or a network built from blocks.
        card: its card; for a registry model ``card.name`` is the registry name used to rebuild it.
    """
    arch = arch_of(model, card)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    weights = save_bytes(tensors, metadata={"format": "pt", "arch": arch})
    meta = {
        "arch": arch,
        "model_args": model_args_of(model),
        "card": card.to_json(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    return weights, (json.dumps(meta, indent=2) + "\n").encode()


def save(model: nn.Module, card: ModelCard, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and the JSON card beside it.

    Args:
        model: the model to save (any registry model, or a network built from blocks).
        card: its card; ``card.name`` is the registry name used to rebuild it (the dataset's for a custom network).
        path: target file; the suffix is forced to .safetensors.
    Returns:
        (weights path, card path).
    """
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights, card_json = to_bytes(model, card)
    path.write_bytes(weights)
    card_path = path.with_suffix(".json")
    card_path.write_bytes(card_json)
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
    if not isinstance(meta["arch"], str) or meta["arch"] not in ARCHITECTURES:
        raise CheckpointError(
            f"{card_path}: names an unknown model {meta['arch']!r:.60} (known: {', '.join(ARCHITECTURES)})"
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
    try:
        card = ModelCard.from_json(meta["card"])
        with torch.device("meta"):  # shapes only: a card asking for a huge model costs nothing
            skeleton = build_model(arch, meta.get("model_args"))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{card_path}: card cannot rebuild the model ({exc})") from None
    if arch == CUSTOM:  # a network built from blocks: its card names the dataset it was built for
        if card.name not in REGISTRY:
            raise CheckpointError(f"{card_path}: its card is for dataset {card.name!r:.40}; a custom network must "
                                  f"name one of {', '.join(REGISTRY)}")
        spec = REGISTRY[card.name]
        cfg = skeleton.cfg
        if (tuple(cfg.input_shape), cfg.num_classes) != (spec.input_shape, len(spec.classes)):
            raise CheckpointError(f"{card_path}: its network takes {tuple(cfg.input_shape)} inputs and gives "
                                  f"{cfg.num_classes} classes, which does not fit {card.name!r} "
                                  f"(input {spec.input_shape}, {len(spec.classes)} classes)")
    elif card.name != arch:
        raise CheckpointError(f"{card_path}: its card is for model {card.name!r:.60} but it names model {arch!r}")
    else:
        spec = REGISTRY[arch]
    if (tuple(card.input_shape), len(card.classes), len(card.mean), len(card.std)) != (
            spec.input_shape, len(spec.classes), spec.input_shape[0], spec.input_shape[0]):
        raise CheckpointError(
            f"{card_path}: card's input shape {tuple(card.input_shape)}, {len(card.classes)} classes and "
            f"mean/std of length {len(card.mean)}/{len(card.std)} do not fit model {arch!r} "
            f"(input {spec.input_shape}, {len(spec.classes)} classes)")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*card.mean, *card.std)) \
            or min(card.std) <= 0:
        raise CheckpointError(f"{card_path}: card's mean/std must be finite numbers, std above 0")
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
    if any(not torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise CheckpointError(f"{path}: holds inf or nan weights (a training that diverged?)")
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


def load_uploaded_pair(weights: bytes, card: bytes, weights_name: str = "upload.safetensors",
                       card_name: str = "upload.json") -> tuple[nn.Module, ModelCard]:
    """Load an uploaded checkpoint (its .safetensors bytes and .json card bytes), validated like the shipped ones.

    Nothing is unpickled; sizes are limited; the card must rebuild a known architecture whose tensors match
    the file. Errors name the uploaded files.

    Args:
        weights: the .safetensors file's bytes.
        card: the .json card's bytes.
        weights_name, card_name: the uploaded files' names, used in messages.
    Returns:
        (model in eval mode, its card).
    Raises:
        CheckpointError: with a message for the learner saying what is wrong.
    """
    if len(weights) > MAX_UPLOAD_WEIGHTS_BYTES:
        raise CheckpointError(f"{weights_name}: {len(weights):,} bytes, more than the "
                              f"{MAX_UPLOAD_WEIGHTS_BYTES // (1024 * 1024)} MB an uploaded model may have")
    if len(card) > MAX_UPLOAD_CARD_BYTES:
        raise CheckpointError(f"{card_name}: {len(card):,} bytes, more than the "
                              f"{MAX_UPLOAD_CARD_BYTES // (1024 * 1024)} MB a card may have")
    with tempfile.TemporaryDirectory(prefix="cnnviz-upload-") as folder:
        path = Path(folder) / "upload.safetensors"
        path.write_bytes(weights)
        path.with_suffix(".json").write_bytes(card)
        try:
            return load_path(path)
        except CheckpointError as exc:
            message = str(exc).replace(str(path.with_suffix(".json")), card_name).replace(str(path), weights_name)
            message = message.replace("upload.json", card_name)
            raise CheckpointError(message) from None
