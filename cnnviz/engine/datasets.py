"""MNIST and CIFAR-10 from $CNNVIZ_DATA_DIR (or a torchvision download): PIL datasets and whole-split tensors.

MNIST's whole splits (``load_arrays``) are read straight from torchvision's folder layout by ``read_idx``, without
importing torchvision: a training's process (``cnnviz.training.child``) then never loads it (164 MB RSS).
torchvision still opens the PIL datasets and downloads what is missing.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

DATASETS = ("mnist", "cifar10")
SPLITS = ("train", "test")
# MNIST's files per split (images, labels) in <data dir>/MNIST/raw, as torchvision lays them out
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DataUnavailable(Exception):
    """The dataset is not on disk and could not be downloaded. The message says how to fix it."""


def default_data_dir() -> Path:
    env = os.environ.get("CNNVIZ_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnviz" / "data"


def data_root(data_dir: str | Path | None) -> Path:
    """The data folder: ``data_dir`` when given, else ``default_data_dir()``."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


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
    root = data_root(data_dir)
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

    root = data_root(data_dir)
    try:
        if name == "mnist":
            raw = root / "MNIST" / "raw"
            if not all((raw / f).is_file() for f in MNIST_FILES["test"]):
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


def read_idx(path: Path) -> np.ndarray:
    """One file in the idx format MNIST comes in (gzipped when its name ends in .gz): a big-endian header, then the
    values as unsigned bytes.

    Returns:
        The values, shaped as the header says: (N, 28, 28) for images, (N,) for labels (uint8, writable).
    Raises:
        ValueError: the file is not an idx file of unsigned bytes, or its length does not match its header.
    """
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:3] != b"\0\0\x08" or not 1 <= magic[3] <= 4:
            raise ValueError(f"{path} is not an MNIST idx file of unsigned bytes")
        header = f.read(4 * magic[3])
        if len(header) < 4 * magic[3]:
            raise ValueError(f"{path} ends inside its header")
        values = np.empty(struct.unpack(f">{magic[3]}I", header), dtype=np.uint8)
        if f.readinto(values.reshape(-1)) != values.size or f.read(1):
            raise ValueError(f"{path} does not hold the {values.size:,} values its header announces")
    return values


def _mnist_files(root: Path, split: str) -> list[Path] | None:
    """The split's two idx files under ``root`` (each uncompressed, else .gz), or None when one is missing."""
    raw = root / "MNIST" / "raw"
    paths = [raw / f if (raw / f).is_file() else raw / f"{f}.gz" for f in MNIST_FILES[split]]
    return paths if all(p.is_file() for p in paths) else None


def load_arrays(name: str, split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as tensors: images uint8 (N, C, H, W) and labels int64 (N,). Used for fast training.

    MNIST is read from its idx files when they are on disk (no torchvision: same images and labels as
    ``torchvision.datasets.MNIST``); otherwise torchvision opens or downloads the dataset.
    """
    if name == "mnist" and split in SPLITS:
        root = data_root(data_dir)
        paths = _mnist_files(root, split)
        if paths is not None:
            images, labels = (read_idx(p) for p in paths)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise ValueError(f"MNIST's {split} files in {paths[0].parent} do not fit together: images "
                                 f"{images.shape}, labels {labels.shape}")
            return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()  # (N, 1, 28, 28), (N,)
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
