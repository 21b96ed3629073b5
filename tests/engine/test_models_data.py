"""Models, checkpoints, preprocessing and the shipped checkpoints' accuracy."""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnviz.engine.builder import PRESETS
from cnnviz.engine.checkpoints import CheckpointError, load_model, load_path, save
from cnnviz.engine.datasets import MNIST_FILES, dataset_available, load_arrays
from cnnviz.engine.models import REGISTRY, build_model, count_parameters, new_card
from cnnviz.engine.pictures import EmptyImage, mnist_field, preprocess
from cnnviz.engine.predict import evaluate_arrays
from cnnviz.train import augment_cifar, augment_mnist
from cnnviz.training import child, jobs
from cnnviz.training.loop import Settings
from tests.support import randomize_batchnorm

TARGETS = {"mnist": 99.4, "cifar10": 87.0}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_models_are_small_and_named(name):
    model = build_model(name)
    limit = 20_000 if name == "mnist" else 1_500_000
    assert count_parameters(model) < limit
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    names = [n for n, m in model.named_modules() if next(m.children(), None) is None]
    assert len(names) == len(set(names))
    out = model.eval()(torch.randn(2, *REGISTRY[name].input_shape))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(name)).eval()
    card = new_card(name, model)
    save(model, card, tmp_path / f"{name}.safetensors")
    loaded, loaded_card = load_model(name, directory=tmp_path)
    x = torch.randn(3, *card.input_shape)
    assert torch.equal(model(x), loaded(x))
    assert loaded_card.param_count == count_parameters(loaded) == count_parameters(model)
    assert not loaded.training


def test_damaged_checkpoints_raise_clear_errors(tmp_path):
    model = build_model("mnist")
    path, card_path = save(model, new_card("mnist", model), tmp_path / "mnist.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"mnist\.safetensors"):
        load_path(path)
    path.write_bytes(data)
    meta = json.loads(card_path.read_text())
    meta["tensors"]["block1.conv1.weight"] = [3, 1, 3, 3]
    card_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the shapes its card"):
        load_path(path)
    with pytest.raises(CheckpointError, match="missing"):
        load_model("mnist", directory=tmp_path / "nowhere")


def canvas_digit(offset=(0, 0)) -> Image.Image:
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    ox, oy = offset
    d.line([(60 + ox, 30 + oy), (60 + ox, 150 + oy)], fill=(255, 255, 255, 255), width=18)
    return img


def test_canvas_drawing_is_centred_like_mnist():
    for offset in [(0, 0), (150, 100)]:
        field = mnist_field(canvas_digit(offset))
        assert field.shape == (28, 28)
        rows, cols = np.nonzero(field > 0.1)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21)  # longer side ~20 px
        ys, xs = np.indices(field.shape)
        com = ((ys * field).sum() / field.sum(), (xs * field).sum() / field.sum())
        assert abs(com[0] - 14) <= 1 and abs(com[1] - 14) <= 1
    # the same stroke drawn anywhere gives the same network input
    assert np.allclose(mnist_field(canvas_digit((0, 0))), mnist_field(canvas_digit((150, 100))), atol=0.02)


def test_dark_ink_on_paper_is_inverted_and_empty_canvas_refused():
    paper = Image.new("L", (200, 200), 250)
    ImageDraw.Draw(paper).line([(100, 20), (100, 180)], fill=10, width=14)
    field = mnist_field(paper)
    assert field[14, 14] > 0.5 and field[0, 0] == 0.0
    with pytest.raises(EmptyImage):
        mnist_field(Image.new("RGBA", (280, 280), (0, 0, 0, 255)))


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "P", "CMYK", "I;16", "LA", "1"])
def test_preprocess_any_mode_gives_right_shape_and_range(mode):
    base = Image.new("RGB", (64, 48), (255, 255, 255))
    ImageDraw.Draw(base).ellipse([(10, 8), (50, 40)], outline=(0, 0, 0), width=5)
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    for name in REGISTRY:
        card = new_card(name, build_model(name))
        x = preprocess(img, card)
        assert x.shape == (1, *card.input_shape) and x.dtype == torch.float32
        lo = (0 - np.array(card.mean)) / np.array(card.std)
        hi = (1 - np.array(card.mean)) / np.array(card.std)
        assert float(x.min()) >= lo.min() - 1e-5 and float(x.max()) <= hi.max() + 1e-5


def test_augmentation_is_deterministic_given_the_seed():
    imgs = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
    a = augment_mnist(imgs, torch.Generator().manual_seed(3))
    b = augment_mnist(imgs, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c = augment_cifar(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.Generator().manual_seed(3))
    assert c.shape == (4, 3, 32, 32) and 0 <= float(c.min()) and float(c.max()) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_shipped_checkpoint_accuracy_matches_its_card(name):
    if not os.environ.get("CNNVIZ_DATA_DIR") or not dataset_available(name)[0]:
        pytest.skip("set CNNVIZ_DATA_DIR to the datasets to re-evaluate the shipped checkpoints (CI sets it)")
    model, card = load_model(name)
    images, labels = load_arrays(name, "test")
    result = evaluate_arrays(model, images, labels, card)
    assert result.count == 10_000
    assert result.accuracy == pytest.approx(card.test_accuracy, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_shipped_checkpoint_meets_its_accuracy_target(name):
    if not os.environ.get("CNNVIZ_DATA_DIR") or not dataset_available(name)[0]:
        pytest.skip("set CNNVIZ_DATA_DIR to the datasets to re-evaluate the shipped checkpoints (CI sets it)")
    model, card = load_model(name)
    images, labels = load_arrays(name, "test")
    accuracy = evaluate_arrays(model, images, labels, card).accuracy
    assert accuracy >= TARGETS[name], f"{name} scores {accuracy:.2f}%, target {TARGETS[name]}%"


# ---------------------------------------------------------------------------------------------------------------
# MNIST's idx files read without torchvision (what a training's process does)


def write_mnist(root, n_train: int = 300, n_test: int = 100, gz: bool = False) -> dict[str, tuple]:
    """Random digits and labels in torchvision's MNIST layout under ``root``; returns what each split holds."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        for name, values in zip(MNIST_FILES[split], arrays, strict=True):
            header = bytes([0, 0, 8, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
            with (gzip.open if gz else open)(raw / (f"{name}.gz" if gz else name), "wb") as f:
                f.write(header + values.tobytes())
        written[split] = arrays
    return written


@pytest.mark.parametrize("where", ["written here", "the shared data"])
def test_mnist_reader_gives_torchvisions_images_and_labels(where, tmp_path):
    import torchvision.datasets as tvd

    if where == "written here":
        root = tmp_path
        write_mnist(root)
    elif os.environ.get("CNNVIZ_DATA_DIR") and dataset_available("mnist")[0]:
        root = os.environ["CNNVIZ_DATA_DIR"]
    else:
        pytest.skip("set CNNVIZ_DATA_DIR to the datasets to compare the reader on all of MNIST (CI sets it)")
    for split in ("train", "test"):
        images, labels = load_arrays("mnist", split, root)
        reference = tvd.MNIST(str(root), train=split == "train", download=False)
        assert images.dtype == torch.uint8 and images.shape == (len(reference), 1, 28, 28)
        assert torch.equal(images[:, 0], reference.data)
        assert labels.dtype == torch.int64 and torch.equal(labels, reference.targets)


def test_mnist_reader_reads_gzipped_files_and_refuses_damaged_ones(tmp_path):
    written = write_mnist(tmp_path, gz=True)  # only the .gz files, as a download leaves them before extracting
    for split, (images, labels) in written.items():
        got_images, got_labels = load_arrays("mnist", split, tmp_path)
        assert np.array_equal(got_images[:, 0].numpy(), images) and np.array_equal(got_labels.numpy(), labels)
    raw = tmp_path / "MNIST" / "raw"
    labels_path = raw / "t10k-labels-idx1-ubyte"
    labels_path.write_bytes(gzip.decompress((raw / f"{labels_path.name}.gz").read_bytes())[:-1])  # one label short
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte does not hold the 100 values"):
        load_arrays("mnist", "test", tmp_path)
    labels_path.write_bytes(b"\x89PNG\r\n" + bytes(200))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is not an MNIST idx file"):
        load_arrays("mnist", "test", tmp_path)


def data_without_torchvision(name: str, data_dir: str | None) -> child.Data:
    """A training's data as its process reads it by default, refused if reading it imported torchvision."""
    data = child.Data(name, data_dir)
    if "torchvision" in sys.modules:
        raise RuntimeError("the training process imported torchvision")
    return data


def test_a_training_process_reads_mnist_without_torchvision(tmp_path):
    """torchvision would cost a training's process 164 MB RSS: the page's training reads MNIST's files itself."""
    write_mnist(tmp_path)
    settings = Settings(optimizer="adam", lr=0.01, schedule="constant", batch_size=32, steps=5, augment=False)
    job = jobs.JobRegistry(limit=1, data=data_without_torchvision).submit(
        "s", PRESETS["Tiny: two convolutions"], settings, data_dir=str(tmp_path))
    assert job.wait(120)
    assert job.state == "finished", job.message
    assert job.step == 5 and job.result() is not None
