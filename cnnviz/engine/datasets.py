"""MNIST and CIFAR-10 from $CNNVIZ_DATA_DIR (or a torchvision download): PIL datasets and whole-split tensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

DATASETS = ("mnist", "cifar10")
SPLITS = ("train", "test")


class DataUnavailable(Exception):
    """The dataset is not on disk and could not be downloaded. The message says how to fix it."""


def default_data_dir() -> Path:
    env = os.environ.get("CNNVIZ_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnviz" / "data"


def _unavailable(name: str, root: Path, exc: BaseException) -> DataUnavailable:
    return DataUnavailable(
        f"The {name} dataset is not in {root} and could not be downloaded ({type(exc).__name__}). "
        f"Set CNNVIZ_DATA_DIR to a folder that holds it (see README), or connect to the internet once "
        f"so torchvision can download it there."
    )


def dataset(name: str, split: str, data_dir: str | Path | None = None, transform: Any = None):
    """Open a dataset of PIL images and integer labels.

    Args:
        name: "mnist" or "cifar10".
        split: "train" or "test".
        data_dir: folder holding the data; defaults to $CNNVIZ_DATA_DIR, else ~/.cache/cnnviz/data.
        transform: optional torchvision transform applied to each image.
    Returns:
        A torch Dataset whose items are (image, label).
    Raises:
        DataUnavailable: not on disk and not downloadable, with a message saying how to fix it.
    """
    import torchvision.datasets as tvd

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    train = split == "train"
    if name == "cifar10" and (root / "cifar10" / split).is_dir():  # the image-folder copy (see README: Data)
        return tvd.ImageFolder(str(root / "cifar10" / split), transform=transform)
    make, label = (tvd.MNIST, "MNIST") if name == "mnist" else (tvd.CIFAR10, "CIFAR-10")
    try:
        return make(str(root), train=train, download=False, transform=transform)
    except RuntimeError:  # not on disk: try torchvision's download
        pass
    try:
        root.mkdir(parents=True, exist_ok=True)
        return make(str(root), train=train, download=True, transform=transform)
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear message
        raise _unavailable(label, root, exc) from None


def dataset_available(name: str, data_dir: str | Path | None = None) -> tuple[bool, str]:
    """Whether the test split can be opened without a download; (ok, message for the learner).

    Pages ask this on every run, so MNIST is judged by its two test files being there (what torchvision's
    download=False checks) instead of by parsing them (13 ms a call)."""
    import torchvision.datasets as tvd

    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    try:
        if name == "mnist":
            raw = root / "MNIST" / "raw"
            if not all((raw / f).is_file() for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
                raise FileNotFoundError(raw)
        elif not (root / "cifar10" / "test").is_dir():
            tvd.CIFAR10(str(root), train=False, download=False)
    except Exception:  # noqa: BLE001
        return False, (
            f"The {'MNIST' if name == 'mnist' else 'CIFAR-10'} test set is not in {root}. "
            "Set CNNVIZ_DATA_DIR to a folder that holds it, or run "
            f"`python -m cnnviz.evaluate {name}` once with internet to download it. "
            "Drawing and uploading still work."
        )
    return True, ""


def load_arrays(name: str, split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as tensors: images uint8 (N, C, H, W) and labels int64 (N,). Used for fast training."""
    ds = dataset(name, split, data_dir)
    if name == "mnist":
        images = ds.data.unsqueeze(1).clone()  # (N, 1, 28, 28) uint8
        labels = ds.targets.clone().long()
        return images, labels
    if hasattr(ds, "data") and isinstance(ds.data, np.ndarray):  # torchvision CIFAR10
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(ds.targets, dtype=torch.long)
    n = len(ds.samples)
    images = torch.empty((n, 3, 32, 32), dtype=torch.uint8)
    for i, (path, _) in enumerate(ds.samples):
        with Image.open(path) as im:
            images[i] = torch.from_numpy(np.array(im.convert("RGB").resize((32, 32)))).permute(2, 0, 1)
    return images, torch.tensor(ds.targets, dtype=torch.long)
