"""Hostile inputs (issue 8): every bad upload, drawing and checkpoint gets a clear message, odd pictures just work.

Every file is made here, in the test, with PIL, numpy or plain bytes: no binary fixtures. Three levels:
the backend (``load_image``/``preprocess``, ``load_path``), the explorer page in AppTest, and a real browser
uploading through the file uploader (plus the server's own size limit).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest

from app import ALL_PAGES
from cnnviz.canvas import canvas_value, kept_key
from cnnviz.devserver import IDLE
from cnnviz.engine.checkpoints import CheckpointError, load_model, load_path, save
from cnnviz.engine.datasets import dataset_available
from cnnviz.engine.models import REGISTRY, ModelCard, build_model, new_card
from cnnviz.engine.pictures import (
    EMPTY_MESSAGE,
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    EmptyImage,
    ImageError,
    load_image,
    preprocess,
)
from tests.support import ROOT, no_exception, open_page, served

MODELS = tuple(REGISTRY)  # ("mnist", "cifar10")
EXPLORER = next(p.path for p in ALL_PAGES if p.url_path == "explorer")


# ---------------------------------------------------------------------------------------------------------------
# Making pictures and files


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def digit(h: int = 60, w: int = 60) -> np.ndarray:
    """A '1'-like bar, white (255) on black (0), uint8 (h, w)."""
    a = np.zeros((h, w), np.uint8)
    a[h // 6:h - h // 6, w // 2 - w // 12:w // 2 + w // 12] = 255
    return a


def noise_rgb(seed: int = 0, size: int = 200) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(side: int) -> bytes:
    """A real decompression bomb: a 1-bit greyscale PNG of side x side zeros, a few tens of KB on disk."""
    row = b"\x00" * (1 + math.ceil(side / 8))  # filter byte + packed bits
    z = zlib.compressobj(9)
    block = row * 1000
    parts = [z.compress(block) for _ in range(side // 1000)]
    parts += [z.compress(row * (side % 1000)), z.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def bomb_jpeg(side: int = 60000) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to declare side x side pixels."""
    data = bytearray(encode(Image.new("L", (16, 16), 128), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)  # height, width after length and precision
    return bytes(data)


def truncated_png() -> bytes:
    data = encode(noise_rgb(1))
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = encode(noise_rgb(2), "JPEG", quality=90)
    return data[: len(data) // 2]


def bad_crc_png() -> bytes:
    data = bytearray(encode(noise_rgb(3)))
    idat = data.index(b"IDAT")
    data[idat + 20] ^= 0xFF  # one flipped byte inside the compressed pixels: the chunk's CRC no longer matches
    return bytes(data)


SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
       b'<rect x="10" y="2" width="8" height="24" fill="black"/></svg>\n')
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >>"
       b" endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 10 2 moveto 10 26 lineto stroke\nshowpage\n"

# (case id, file name the learner chose, bytes, words the message must contain)
REFUSED = [
    ("empty file", "empty.png", lambda: b"", "empty (0 bytes)"),
    ("random bytes", "noise.png", lambda: np.random.default_rng(7).bytes(4096), "not a picture this app can read"),
    ("truncated PNG", "half.png", truncated_png, "damaged or cut short"),
    ("truncated JPEG", "half.jpg", truncated_jpeg, "damaged or cut short"),
    ("PNG with a broken checksum", "crc.png", bad_crc_png, "damaged or cut short"),
    ("SVG renamed .png", "drawing.png", lambda: SVG, "SVG drawing"),
    ("PDF renamed .png", "scan.png", lambda: PDF, "PDF document"),
    ("EPS renamed .png (Ghostscript must never run)", "figure.png", lambda: EPS, "PostScript"),
    ("decompression bomb PNG 400 MP", "bomb.png", lambda: bomb_png(20_000), "too large to open safely"),
    ("decompression bomb PNG 60 MP", "bomb60.png", lambda: bomb_png(7_746), "too large to open safely"),
    ("JPEG declaring 3600 MP", "bomb.jpg", bomb_jpeg, "too large to open safely"),
    ("over the upload size", "huge.png", lambda: b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES), "larger than 5 MB"),
]
REFUSED_IDS = [case[0] for case in REFUSED]


@pytest.fixture(scope="module")
def cards() -> dict[str, ModelCard]:
    """The committed checkpoints' cards when present, else fresh cards (same name, input shape, mean and std)."""
    out = {}
    for name in MODELS:
        try:
            out[name] = load_model(name)[1]
        except CheckpointError:
            out[name] = new_card(name, build_model(name))
    return out


def pixels(x: torch.Tensor, card: ModelCard) -> np.ndarray:
    """Undo the normalisation WITHOUT clipping, so an out-of-range pixel would show."""
    mean = np.asarray(card.mean).reshape(-1, 1, 1)
    std = np.asarray(card.std).reshape(-1, 1, 1)
    return x[0].numpy().astype(np.float64) * std + mean


def assert_model_ready(x: torch.Tensor, card: ModelCard) -> np.ndarray:
    assert tuple(x.shape) == (1, *card.input_shape), (card.name, tuple(x.shape))
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
    px = pixels(x, card)
    assert px.min() >= -1e-6 and px.max() <= 1 + 1e-6, (card.name, px.min(), px.max())
    return px


# ---------------------------------------------------------------------------------------------------------------
# Backend: refused uploads


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 40-80 MP: Pillow warns, we refuse
@pytest.mark.parametrize("case", REFUSED, ids=REFUSED_IDS)
def test_refused_upload_names_what_is_wrong(case):
    _, _, make, words = case
    data = make()
    start = time.perf_counter()
    with pytest.raises(ImageError) as err:
        load_image(data)
    assert words in str(err.value), str(err.value)
    assert "Upload" in str(err.value) or "upload" in str(err.value), "the message must say what to do"
    assert time.perf_counter() - start < 1.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [20_000, 7_746], ids=["400MP", "60MP"])
def test_decompression_bomb_is_refused_before_decoding(side):
    data = bomb_png(side)
    assert len(data) < 200_000 and side * side > MAX_PIXELS  # small file, huge picture
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageError, match="too large to open safely"):
            load_image(data)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, elapsed
    assert peak < 5_000_000, f"{peak / 1e6:.1f} MB of Python allocations while refusing a bomb"


_RSS_PROBE = """
import resource, sys
from pathlib import Path
import numpy as np
from cnnviz.engine.pictures import ImageError, load_image, preprocess
from cnnviz.engine.models import build_model, new_card
cards = [new_card(n, build_model(n)) for n in ("mnist", "cifar10")]
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    image = load_image(data)
    for card in cards:
        preprocess(image, card)
    outcome = "decoded"
except ImageError:
    outcome = "refused"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(outcome, (after - before) / 1024)
"""


def peak_rss_growth_mb(data: bytes, tmp_path: Path) -> tuple[str, float]:
    """Load (and preprocess for both models) ``data`` in a fresh process; (outcome, growth of its peak RSS in MB).

    A subprocess, because Pillow decodes in C (tracemalloc cannot see it) and this process's peak is already high.
    """
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    outcome, growth = out.stdout.split()
    return outcome, float(growth)


@pytest.mark.slow
def test_decompression_bomb_causes_no_memory_spike(tmp_path):
    outcome, growth = peak_rss_growth_mb(bomb_png(20_000), tmp_path)  # 400 MP: 400 MB once decoded
    assert outcome == "refused"
    assert growth < 50, f"peak RSS grew {growth:.0f} MB"


@pytest.mark.slow
def test_a_large_but_allowed_photo_is_shrunk_before_any_float_array(tmp_path):
    """39 MP of mostly white paper, 0.6 MB as a JPEG: allowed, and must cost neither seconds nor gigabytes.

    Before the fix it took 13-19 s and 1.2-2.4 GB (full-size float64 arrays) for one upload.
    """
    a = np.full((6500, 6000), 255, np.uint8)
    a[2000:4500, 2800:3200] = 0
    data = encode(Image.fromarray(a), "JPEG", quality=90)
    del a
    assert len(data) < MAX_UPLOAD_BYTES
    start = time.perf_counter()
    outcome, growth = peak_rss_growth_mb(data, tmp_path)
    assert outcome == "decoded"
    assert growth < 300, f"peak RSS grew {growth:.0f} MB"
    assert time.perf_counter() - start < 30  # includes starting python and importing torch


# ---------------------------------------------------------------------------------------------------------------
# Backend: odd but valid pictures give the right tensor for both models


def test_animated_gif_uses_its_first_frame(cards):
    frames = [Image.fromarray(np.roll(digit(), 12 * k, axis=1)).convert("P") for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = load_image(buf.getvalue())
    assert getattr(image, "n_frames", 1) == 3
    first = load_image(encode(frames[0].convert("L")))
    second = load_image(encode(frames[1].convert("L")))
    for card in cards.values():
        x = preprocess(image, card)
        assert_model_ready(x, card)
        torch.testing.assert_close(x, preprocess(first, card))
    # the frames really differ (for CIFAR, which keeps position), so the check above can fail
    assert not torch.allclose(preprocess(first, cards["cifar10"]), preprocess(second, cards["cifar10"]))


def test_cmyk_jpeg_reads_like_its_rgb_original(cards):
    rgb = Image.fromarray(np.stack([digit()] * 3, axis=-1))
    image = load_image(encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert image.mode == "CMYK"
    reference = load_image(encode(rgb, "PNG"))
    for card in cards.values():
        x = preprocess(image, card)
        px, ref = assert_model_ready(x, card), pixels(preprocess(reference, card), card)
        assert np.abs(px - ref).mean() < 0.03, (card.name, np.abs(px - ref).mean())


def test_sixteen_bit_png_is_scaled_by_65535(cards):
    a8 = digit()
    image = load_image(encode(Image.fromarray(a8.astype(np.uint16) * 257)))  # 0..65535
    assert image.mode.startswith("I;16") or image.mode == "I"
    reference = load_image(encode(Image.fromarray(a8)))
    for card in cards.values():
        x = preprocess(image, card)
        assert_model_ready(x, card)
        torch.testing.assert_close(x, preprocess(reference, card), atol=1e-5, rtol=0)
    dim = load_image(encode(Image.fromarray(a8.astype(np.uint16) * 40)))  # 10200 / 65535: a dark grey ...
    dim8 = Image.fromarray(np.where(a8 > 0, 40, 0).astype(np.uint8))  # ... which is 40 / 255 in 8 bits
    torch.testing.assert_close(preprocess(dim, cards["cifar10"]), preprocess(dim8, cards["cifar10"]), atol=0.02,
                               rtol=0)


def test_palette_png_with_transparency(cards):
    """A red '1' in a palette PNG whose index 0 is transparent: the digit model sees ink, the photo model white."""
    red = np.zeros((60, 60, 3), np.uint8)
    red[digit() > 0] = (220, 30, 30)
    pal = Image.fromarray(red).quantize(colors=4)
    transparent = int(pal.getpixel((0, 0)))
    image = load_image(encode(pal, transparency=transparent))
    assert image.mode == "P" and "transparency" in image.info
    mnist_ref = Image.fromarray(np.where(digit() > 0, 255, 0).astype(np.uint8))
    on_white = red.copy()
    on_white[digit() == 0] = 255
    x = preprocess(image, cards["mnist"])
    assert_model_ready(x, cards["mnist"])
    field, ref = pixels(x, cards["mnist"]), pixels(preprocess(mnist_ref, cards["mnist"]), cards["mnist"])
    assert np.abs(field - ref).max() < 0.2 and field.max() > 0.9  # the ink is there, where it should be
    x = preprocess(image, cards["cifar10"])
    assert_model_ready(x, cards["cifar10"])
    torch.testing.assert_close(x, preprocess(Image.fromarray(on_white), cards["cifar10"]), atol=2e-2, rtol=0)


def test_rgba_with_transparent_background(cards):
    """Black pen on a transparent background (a typical phone export): ink for MNIST, black on white for CIFAR."""
    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[digit() > 0] = (0, 0, 0, 255)
    image = load_image(encode(Image.fromarray(rgba)))
    assert image.mode == "RGBA"
    x = preprocess(image, cards["mnist"])
    assert_model_ready(x, cards["mnist"])
    torch.testing.assert_close(x, preprocess(Image.fromarray(digit()), cards["mnist"]))
    x = preprocess(image, cards["cifar10"])
    assert_model_ready(x, cards["cifar10"])
    torch.testing.assert_close(x, preprocess(Image.fromarray(255 - digit()).convert("RGB"), cards["cifar10"]))


@pytest.mark.parametrize("value", [0, 255])
def test_one_by_one_picture(cards, value):
    image = load_image(encode(Image.new("L", (1, 1), value)))
    with pytest.raises(EmptyImage) as err:
        preprocess(image, cards["mnist"])  # one pixel is its own background: no digit in it
    assert str(err.value) == EMPTY_MESSAGE and "upload" in EMPTY_MESSAGE
    x = preprocess(image, cards["cifar10"])
    px = assert_model_ready(x, cards["cifar10"])
    np.testing.assert_allclose(px, value / 255, atol=1e-6)  # a 32x32 field of that grey


def test_very_wide_one_by_5000_picture(cards):
    stripe = np.zeros((1, 5000), np.uint8)
    stripe[0, 2000:3000] = 255
    image = load_image(encode(Image.fromarray(stripe)))
    assert image.size == (5000, 1)
    x = preprocess(image, cards["mnist"])
    field = assert_model_ready(x, cards["mnist"])[0]
    inked = np.argwhere(field > 0.5)
    assert set(inked[:, 0]) == {14}, "a one-pixel line through the centre"
    assert 18 <= len(inked) <= 20, "scaled to 20 px long, as MNIST digits are"
    x = preprocess(image, cards["cifar10"])
    np.testing.assert_allclose(assert_model_ready(x, cards["cifar10"]), 1.0, atol=1e-6)  # the centre crop: white
    flat = load_image(encode(Image.new("L", (5000, 1), 255)))
    with pytest.raises(EmptyImage):
        preprocess(flat, cards["mnist"])


def test_exif_rotated_photo_is_turned_upright(cards):
    paper = np.full((40, 80), 255, np.uint8)  # landscape as stored: a dark bar lying on its side
    paper[16:24, 10:70] = 0
    stored = Image.fromarray(paper)
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    image = load_image(data)
    raw = Image.fromarray(np.asarray(Image.open(io.BytesIO(data))))  # the same decoded pixels, without the EXIF
    upright = raw.transpose(Image.Transpose.ROTATE_270)  # turned by hand
    assert upright.size == (40, 80)
    for card in cards.values():
        x = preprocess(image, card)
        assert_model_ready(x, card)
        torch.testing.assert_close(x, preprocess(upright, card))
    field = pixels(preprocess(image, cards["mnist"]), cards["mnist"])[0]
    rows, cols = np.nonzero(field > 0.5)
    assert np.ptp(rows) > 2 * np.ptp(cols), "upright: a standing bar (a '1'), not a lying one"


# ---------------------------------------------------------------------------------------------------------------
# Backend: canvas drawings (white strokes; the canvas background is black)


def canvas_drawing(kind: str) -> Image.Image:
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    d = ImageDraw.Draw(img)
    if kind == "dot":
        d.ellipse([(60, 200), (70, 210)], fill=(255, 255, 255, 255))
    elif kind == "full":
        d.rectangle([(0, 0), (279, 279)], fill=(255, 255, 255, 255))
    return img


def test_empty_canvas_is_empty_image(cards):
    with pytest.raises(EmptyImage, match="No digit found"):
        preprocess(canvas_drawing("empty"), cards["mnist"])


def test_single_dot_becomes_a_centred_20px_blob(cards):
    x = preprocess(canvas_drawing("dot"), cards["mnist"])
    field = assert_model_ready(x, cards["mnist"])[0]
    rows, cols = np.nonzero(field > 0.5)
    assert 16 <= np.ptp(rows) + 1 <= 20 and 16 <= np.ptp(cols) + 1 <= 20  # scaled up like an MNIST digit
    total = field.sum()
    com = ((np.arange(28)[:, None] * field).sum() / total, (np.arange(28)[None, :] * field).sum() / total)
    assert abs(com[0] - 14) < 1.5 and abs(com[1] - 14) < 1.5, com  # centred by mass, wherever it was drawn


# ---------------------------------------------------------------------------------------------------------------
# Backend: checkpoints. Each is refused with a message naming the file; nothing is unpickled or executed.


@pytest.fixture
def saved(tmp_path) -> tuple[Path, Path]:
    model = build_model("mnist").eval()
    return save(model, new_card("mnist", model), tmp_path / "mnist.safetensors")


def refused(path: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_path(path)
    message = str(err.value)
    assert str(path.parent) in message and path.stem in message, f"the message must name the file: {message}"
    for w in words:
        assert w in message, message
    return message


def test_a_saved_checkpoint_loads(saved):
    model, card = load_path(saved[0])  # the control: the cases below break exactly one thing
    assert card.name == "mnist" and not model.training


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1], ids=["0 bytes", "5 bytes", "inside header", "half", "-1 B"])
def test_truncated_safetensors(saved, keep):
    weights, _ = saved
    raw = weights.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else (len(raw) + keep if keep < 0 else keep)
    weights.write_bytes(raw[:n])
    refused(weights, "truncated", str(weights))


def test_card_whose_shapes_do_not_match_the_file(saved):
    weights, card_path = saved
    meta = json.loads(card_path.read_text())
    meta["tensors"]["block1.conv1.weight"] = [8, 1, 3, 3]
    card_path.write_text(json.dumps(meta))
    message = refused(weights, "do not match the shapes its card", "mnist.json", "block1.conv1.weight")
    assert "(16, 1, 3, 3)" in message and "(8, 1, 3, 3)" in message


def test_card_whose_model_args_build_another_shape(saved):
    weights, card_path = saved
    meta = json.loads(card_path.read_text())
    meta["model_args"]["block2_channels"] = [16, 64]
    card_path.write_text(json.dumps(meta))
    refused(weights, "does not fit model 'mnist'", "block2")


def test_card_whose_input_shape_is_another_models(saved):
    weights, card_path = saved
    meta = json.loads(card_path.read_text())
    meta["card"].update(input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.25] * 3)
    card_path.write_text(json.dumps(meta))
    refused(weights, "do not fit model 'mnist'", "(3, 32, 32)")


@pytest.mark.parametrize("field", ["arch", "card name"])
def test_card_naming_an_unknown_model(saved, field):
    weights, card_path = saved
    meta = json.loads(card_path.read_text())
    if field == "arch":
        meta["arch"] = "resnet50"
        words = ("unknown model 'resnet50'", "known: mnist, cifar10")
    else:
        meta["card"]["name"] = "resnet50"
        words = ("card is for model 'resnet50'",)
    card_path.write_text(json.dumps(meta))
    refused(weights, "mnist.json", *words)


@pytest.mark.parametrize("args,words", [
    ({"trans_channels": -3}, "cannot rebuild"),
    ({"trans_channels": 1_000_000}, "refusing to build"),
    ({"bogus": 1}, "unknown model_args"),
], ids=["negative", "huge", "unknown key"])
def test_card_with_absurd_model_args(saved, args, words):
    weights, card_path = saved
    meta = json.loads(card_path.read_text())
    meta["model_args"].update(args)
    card_path.write_text(json.dumps(meta))
    start = time.perf_counter()
    refused(weights, words)
    assert time.perf_counter() - start < 2, "a huge model must be refused before it is allocated"


@pytest.mark.parametrize("broken", ["tensors: a string", "card: null", "not JSON"])
def test_card_of_the_wrong_json_type(saved, broken):
    weights, card_path = saved
    meta = json.loads(card_path.read_text())
    if broken == "not JSON":
        card_path.write_text('{"arch": "mnist", ')
    else:
        key, value = broken.split(": ")
        meta[key] = None if value == "null" else "x"
        card_path.write_text(json.dumps(meta))
    refused(weights, "mnist.json")


class _Payload:
    """Unpickling this creates the file at ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle.dumps", "torch.save"])
def test_pickle_renamed_safetensors_is_never_unpickled(saved, tmp_path, monkeypatch, writer):
    weights, _ = saved
    control, marker = tmp_path / "control_marker", tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists(), "the payload works: unpickling it creates its marker file"
    if writer == "pickle.dumps":
        weights.write_bytes(pickle.dumps({"block1.conv1.weight": _Payload(marker)}))
    else:
        torch.save({"block1.conv1.weight": _Payload(marker)}, weights)

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint loader tried to unpickle")

    for target, attr in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(target, attr, forbidden)
    refused(weights, "not a safetensors file", "pickle")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model("mnist", directory=weights.parent)
    assert not marker.exists(), "the pickle's payload ran"


# ---------------------------------------------------------------------------------------------------------------
# The explorer page (AppTest): the message is in the page, and the page keeps working


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Both models with random weights, so the page tests do not depend on a training run."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name).eval()
        save(model, new_card(name, model), folder / f"{name}.safetensors")
    return folder


def explorer(monkeypatch, model_dir: Path, model: str = "mnist", source: str = "Upload") -> AppTest:
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(model_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(EXPLORER).run()
    if model != "mnist":
        at.selectbox(key="model_name").set_value(model).run()
    at.radio(key=f"source_{model}").set_value(source).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def predictions(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("### Prediction")]


def upload(at: AppTest, model: str, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key=f"upload_{model}").set_value((name, data, mime)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_still_works(at: AppTest, model: str) -> None:
    good = Image.fromarray(np.stack([digit()] * 3, axis=-1))
    upload(at, model, "good.png", encode(good))
    assert not at.error, [e.value for e in at.error]
    assert len(predictions(at)) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", REFUSED, ids=REFUSED_IDS)
def test_page_shows_the_upload_error_and_keeps_working(monkeypatch, model_dir, case):
    _, filename, make, words = case
    at = upload(explorer(monkeypatch, model_dir), "mnist", filename, make())
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and filename in errors[0] and words in errors[0], errors
    assert not predictions(at)
    page_still_works(at, "mnist")


def test_page_upload_errors_for_the_photo_model_too(monkeypatch, model_dir):
    at = explorer(monkeypatch, model_dir, model="cifar10")
    for name, data, words in (("svg.png", SVG, "SVG drawing"), ("bomb.png", bomb_png(20_000), "too large")):
        upload(at, "cifar10", name, data)
        assert any(name in e.value and words in e.value for e in at.error), [e.value for e in at.error]
    page_still_works(at, "cifar10")


def test_page_refuses_files_by_content_only_images_accepted(monkeypatch, model_dir):
    at = explorer(monkeypatch, model_dir)
    assert set(at.file_uploader(key="upload_mnist").allowed_type) == {".png", ".jpg", ".jpeg"}


@pytest.mark.parametrize("model", MODELS)
def test_page_predicts_on_odd_valid_uploads(monkeypatch, model_dir, model):
    at = explorer(monkeypatch, model_dir, model=model)
    cmyk = encode(Image.fromarray(np.stack([digit()] * 3, axis=-1)).convert("CMYK"), "JPEG")
    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[digit() > 0] = (0, 0, 0, 255)
    for name, data in (("cmyk.jpg", cmyk), ("16bit.png", encode(Image.fromarray(digit().astype(np.uint16) * 257))),
                       ("rgba.png", encode(Image.fromarray(rgba)))):
        upload(at, model, name, data, "image/jpeg" if name.endswith("jpg") else "image/png")
        assert not at.error, (name, [e.value for e in at.error])
        assert len(predictions(at)) == 1, name


def test_page_explains_a_flat_one_pixel_upload(monkeypatch, model_dir):
    at = upload(explorer(monkeypatch, model_dir), "mnist", "pixel.png", encode(Image.new("L", (1, 1), 255)))
    assert any("single flat colour" in w.value and "1x1" in w.value for w in at.warning), at.warning
    assert not predictions(at) and not at.error
    at = upload(explorer(monkeypatch, model_dir, model="cifar10"), "cifar10", "pixel.png",
                encode(Image.new("RGB", (1, 1), (30, 120, 200))))
    assert any("single flat colour" in w.value for w in at.warning)
    assert len(predictions(at)) == 1, "the photo model still classifies a plain colour"


@pytest.mark.parametrize("kind", ["empty", "dot", "full", "garbage", "bomb"])
def test_page_canvas_cases(monkeypatch, model_dir, kind):
    at = explorer(monkeypatch, model_dir, source="Draw")
    if kind == "garbage":
        value = canvas_value(None, "data:image/png;base64,bm90IGEgcGljdHVyZQ==")
    elif kind == "bomb":
        value = canvas_value(None, "data:image/png;base64," + base64.b64encode(bomb_png(20_000)).decode())
    else:
        value = canvas_value(canvas_drawing(kind))
    at.session_state["canvas"] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    kept = at.session_state[kept_key("canvas")]
    if kind == "dot":
        assert len(predictions(at)) == 1 and not warnings
        assert kept == value["drawing"], "kept for when the canvas comes back"
    elif kind == "empty":
        assert not predictions(at) and not warnings and any("Draw a digit" in i.value for i in at.info)
    elif kind == "full":
        assert not predictions(at) and any("painted right up to its edges" in w for w in warnings), warnings
    else:
        assert not predictions(at) and any("could not be read" in w for w in warnings), warnings
        assert kept is None, "an unreadable drawing is not painted again"


def test_page_with_a_broken_checkpoint_names_it_and_the_other_model_works(monkeypatch, model_dir, tmp_path):
    for name in MODELS:
        for suffix in (".safetensors", ".json"):
            (tmp_path / f"{name}{suffix}").write_bytes((model_dir / f"{name}{suffix}").read_bytes())
    (tmp_path / "mnist.safetensors").write_bytes(pickle.dumps({"w": 1}))  # a pickle renamed .safetensors
    monkeypatch.setenv("CNNVIZ_CHECKPOINT_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(EXPLORER).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(str(tmp_path / "mnist.safetensors") in e and "not a safetensors file" in e for e in errors), errors
    assert any("python -m cnnviz.train mnist" in i.value for i in at.info)
    at.selectbox(key="model_name").set_value("cifar10").run()
    at.radio(key="source_cifar10").set_value("Upload").run()
    assert not at.exception and not at.error
    page_still_works(at, "cifar10")


# ---------------------------------------------------------------------------------------------------------------
# A real browser: the file uploader, the server's size limit


@pytest.fixture(scope="module")
def server_url(model_dir):
    yield from served(env={"CNNVIZ_CHECKPOINT_DIR": str(model_dir)})


SOURCE_SHOWS = {"Upload": ".st-key-upload_{model}", "Test sample": ".st-key-sample_{model}_new",
                "Draw": ".st-key-canvas"}  # what the page shows once that input source is chosen


def choose(page, model: str, source: str) -> None:
    """Pick the model and the input source, then wait for what the page shows for them (not for the run's state
    changes, which a loaded machine can make too quick or too late to observe: CI once missed one here).
    Streamlit disables every widget while its websocket is reconnecting, which a loaded 2-core machine can make
    last longer than Playwright's default 30 s: controls get up to 2 minutes."""
    if model != "mnist":
        page.locator(".st-key-model_name input").click(timeout=120_000)
        page.get_by_role("option", name="CIFAR-10 photos").click(timeout=120_000)
        page.wait_for_selector(f".st-key-source_{model}", timeout=120_000)
    page.locator(f".st-key-source_{model} label", has_text=source).first.click(timeout=120_000)
    page.wait_for_selector(SOURCE_SHOWS[source].format(model=model), timeout=120_000)
    page.wait_for_selector(IDLE, timeout=120_000)


def uploader_input(page, model: str):
    return page.locator(f".st-key-upload_{model} [data-testid='stFileUploaderDropzoneInput']")


def page_state(page, tmp_path: Path, name: str) -> str:
    """A screenshot under tmp_path and the page's text, for a failure message."""
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    return page.inner_text("body")[-2000:]


def wait_for_run_end(page, tmp_path: Path, name: str) -> None:
    """Wait until the page has rendered its run's end, failing at once (with what the page shows) if it has lost
    its connection instead: a dead page disables every widget, the file uploader silently drops a file, and the
    next wait would time out on a page that can never answer."""
    dead = page.get_by_text("Connection error")
    page.locator(IDLE).or_(dead).first.wait_for(timeout=60_000)
    assert dead.count() == 0, f"the page lost its connection ({name}): {page_state(page, tmp_path, name)}"


def busy_server_replacements(page, model: str) -> list[str]:
    """Route the page's websocket so that replacing an uploaded file goes as it can on a busy server.

    Replacing a file asks for two runs: the old file's removal (A), then the new file (B). On a busy server the two
    requests can be read together (one run, B) or B can be read only once A has ended, the page having sent B before
    A's start reached it (seen in a loaded run: B sent, then A's start, A's end, B's start). The replacements
    alternate between the two. Returns a list that gets one entry per replacement, so a test can check they happened.
    """
    crossings: list[str] = []
    modes = ("together", "late start")

    def uploaded(msg: BackMsg) -> list[str] | None:
        for widget in msg.rerun_script.widget_states.widgets:
            if widget.id.endswith(f"upload_{model}") and widget.WhichOneof("value") == "file_uploader_state_value":
                return [f.name for f in widget.file_uploader_state_value.uploaded_file_info]
        return None

    def route(ws) -> None:
        server = ws.connect_to_server()
        state = {"last": None, "mode": None, "held_a": None, "held_b": None, "to_page": [], "a_ended": False}

        def from_page(data: bytes) -> None:
            msg = BackMsg()
            msg.ParseFromString(data)
            if msg.WhichOneof("type") == "rerun_script":
                files, last, mode = uploaded(msg), state["last"], state["mode"]
                state["last"] = files
                if mode == "together":  # B: both requests reach the server now
                    crossings.append(f"{mode}: {files}")
                    server.send(state["held_a"])
                    state["mode"] = state["held_a"] = None
                elif mode == "late start":  # B, sent before the page saw A start
                    crossings.append(f"{mode}: {files}")
                    for held in state["to_page"]:
                        ws.send(held)
                    state["mode"], state["to_page"] = None, []
                    if not state["a_ended"]:  # the server reads B once A has ended
                        state["held_b"] = data
                        return
                elif files == [] and last:  # A
                    state["mode"], state["a_ended"] = modes[len(crossings) % 2], False
                    if state["mode"] == "together":
                        state["held_a"] = data
                        return
            server.send(data)

        def from_server(data: bytes) -> None:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            finished = msg.WhichOneof("type") == "script_finished"
            if state["mode"] == "late start":  # A's messages reach the page after it has sent B
                state["to_page"].append(data)
                state["a_ended"] |= finished
                return
            ws.send(data)
            if finished and state["held_b"] is not None:
                server.send(state["held_b"])
                state["held_b"] = None

        ws.on_message(from_page)
        server.on_message(from_server)

    page.route_web_socket("**/_stcore/stream", route)
    return crossings


@pytest.mark.browser
@pytest.mark.slow
def test_browser_bad_uploads_show_errors_and_the_page_keeps_working(page, server_url, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    open_page(page, f"{server_url}/explorer")
    choose(page, "mnist", "Upload")
    good = tmp_path / "good.png"
    good.write_bytes(encode(Image.fromarray(digit())))
    cases = [("noise.png", REFUSED[1][2](), "not a picture this app can read"),
             ("drawing.png", SVG, "SVG drawing"),
             ("bomb.png", bomb_png(20_000), "too large to open safely")]
    for name, data, words in cases:
        path = tmp_path / name
        path.write_bytes(data)
        uploader_input(page, "mnist").set_input_files(str(path))
        # Wait for what the upload's run shows, then for the run's end (which removes the last prediction). Not
        # for a change of the app's script state: a busy browser can render a quick run's "running" and its end
        # in one go, leaving no change to see (a fresh server's first upload on a loaded machine: the wait timed
        # out with the error already on screen). A page showing this alert has rendered its run's start, so it
        # reads "notRunning" again only once it has rendered the run's end.
        alert = page.locator("[data-testid='stAlert']", has_text=name)
        try:
            alert.first.wait_for(timeout=60_000)
        except PlaywrightTimeout:
            raise AssertionError(f"no alert naming {name}: {page_state(page, tmp_path, f'no_alert_{name}')}") from None
        wait_for_run_end(page, tmp_path, name)
        assert words in alert.first.inner_text(), alert.first.inner_text()
        no_exception(page)
        assert page.locator(".st-key-prediction").count() == 0
        # a good picture right after: the page works again (waiting for what it shows, not for the run's state
        # changes, which a loaded machine can make too quick or too late to observe)
        uploader_input(page, "mnist").set_input_files(str(good))
        try:
            page.wait_for_selector(".st-key-prediction", timeout=120_000)
        except PlaywrightTimeout:
            raise AssertionError(f"no prediction after the good upload that followed {name}: "
                                 f"{page_state(page, tmp_path, f'no_prediction_after_{name}')}") from None
        no_exception(page)
    page.screenshot(path=str(tmp_path / "after_bad_uploads.png"), full_page=True)
    if dataset_available("mnist")[0] and os.environ.get("CNNVIZ_DATA_DIR"):
        choose(page, "mnist", "Test sample")
        page.wait_for_selector(".st-key-prediction")
        no_exception(page)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_replacing_an_upload_on_a_busy_server_keeps_the_page_connected(page, server_url, tmp_path):
    """Replacing an upload asks for two runs, which a busy server can read and start late.

    Streamlit's message cache in the browser drops an entry at a run's end, while the server answers a request with
    references to what the page held when it sent it. A picture's run after a refused file's, its request sent
    before the removal's run started: that run's end drops the picture's big elements, the server refers to them,
    and the page meets a reference to a message it no longer has ("Cached ForwardMsg MISS"): "Connection error",
    every widget disabled for good (the bad-uploads test under load: the next upload silently dropped, its alert
    never shown). The app keeps no such cache (global.minCachedMessageSize in .streamlit/config.toml); with
    Streamlit's default this failed at the third upload, 3 runs of 3.
    """
    crossings = busy_server_replacements(page, "mnist")
    open_page(page, f"{server_url}/explorer")
    choose(page, "mnist", "Upload")
    good, bad = tmp_path / "good.png", tmp_path / "noise.png"
    good.write_bytes(encode(Image.fromarray(digit())))
    bad.write_bytes(REFUSED[1][2]())
    for step, path in enumerate([good, bad, good, bad, good]):
        uploader_input(page, "mnist").set_input_files(str(path))
        shows = ".st-key-prediction" if path == good else "[data-testid='stAlert']:has-text('noise.png')"
        page.locator(shows).or_(page.get_by_text("Connection error")).first.wait_for(timeout=60_000)
        wait_for_run_end(page, tmp_path, f"step {step}, {path.name}")
        assert page.locator(shows).count() >= 1, page_state(page, tmp_path, f"step_{step}")
        no_exception(page)
    assert len(crossings) == 4, crossings  # every replacement went as on a busy server


@pytest.mark.browser
@pytest.mark.slow
def test_browser_upload_over_the_size_limit_is_refused_by_the_server(page, server_url, tmp_path):
    """The uploader refuses a 6 MB file in the page, and the server itself answers 413 to a direct PUT of it."""
    limit_mb = 5
    assert f"maxUploadSize = {limit_mb}" in (ROOT / ".streamlit" / "config.toml").read_text()
    open_page(page, f"{server_url}/explorer")
    choose(page, "mnist", "Upload")
    requests = []
    page.on("request", lambda r: requests.append(r) if "/_stcore/upload_file/" in r.url and r.method == "PUT" else None)
    small = tmp_path / "small.png"
    small.write_bytes(encode(Image.fromarray(digit())))
    uploader_input(page, "mnist").set_input_files(str(small))
    page.wait_for_selector(".st-key-prediction", timeout=120_000)  # what the upload's run shows
    assert requests, "the browser did not upload through /_stcore/upload_file/"
    put = requests[-1]
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes((limit_mb + 1) * 1024 * 1024))
    before = len(requests)
    uploader_input(page, "mnist").set_input_files(str(big))  # refused in the page: no upload, no run
    page.wait_for_function("() => /MB/.test(document.querySelector('.st-key-upload_mnist').innerText)",
                           timeout=30_000)
    text = page.inner_text(".st-key-upload_mnist")
    assert "5" in text and "MB" in text, text  # the uploader's own "File must be 5.0MB or smaller."
    assert len(requests) == before, "the page sent a file over the limit"
    no_exception(page)
    headers = {k: v for k, v in put.headers.items() if k.lower() == "x-xsrftoken"}
    url = put.url.rsplit("/", 1)[0] + "/hostile-test-file"
    too_big = page.request.put(url, headers=headers, multipart={
        "file": {"name": "big.png", "mimeType": "image/png", "buffer": big.read_bytes()}})
    assert too_big.status == 413, (too_big.status, too_big.text()[:300])
    fine = page.request.put(url, headers=headers, multipart={
        "file": {"name": "small.png", "mimeType": "image/png", "buffer": small.read_bytes()}})
    assert fine.status in (200, 204), (fine.status, fine.text()[:300])  # same route, same token: only size differs
    no_exception(page)
