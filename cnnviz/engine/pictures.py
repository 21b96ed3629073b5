"""Pictures in: uploaded or drawn bytes -> PIL image -> the normalised tensor a model expects.

One normalisation for the whole app (``normalize``), used by the pages, evaluation, training and digit-sum.
"""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnviz.engine.models import ModelCard

# Refuse decompression bombs before decoding: Pillow checks this on open, from the header alone.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
# Formats tried on upload, by content. Pillow's other plugins (EPS runs Ghostscript, PDF, ICO, ...) are never tried.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Pictures are shrunk to at most this many pixels a side before any float array is made (models see 28/32 px).
WORK_SIDE = 1024


class ImageError(Exception):
    """An uploaded or drawn picture cannot be used. The message says why, in words for a learner."""


class EmptyImage(ImageError):
    """The picture has no ink (an empty canvas, a blank upload)."""


class CanvasFull(ImageError):
    """The canvas is painted to its edges: no digit shape is left against the background."""


EMPTY_MESSAGE = ("No digit found: nothing in the picture stands out from its background. Draw a digit on the "
                 "canvas, or upload a picture of one.")


def _sniff_document(data: bytes) -> str | None:
    """Name the non-picture formats people most often rename to .png (vector drawings and documents)."""
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"%!PS"):
        return "a PostScript file"
    lowered = head.lower()
    if b"<svg" in lowered or (lowered.startswith(b"<?xml") and b"svg" in lowered):
        return "an SVG drawing"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "a web page (HTML)"
    return None


def load_image(data: bytes) -> Image.Image:
    """Decode uploaded bytes into a PIL image, refusing what is not a usable picture.

    Only the formats in ``IMAGE_FORMATS`` are tried, judged by content (never by file name). The size check runs
    on the header, before any pixel is decoded, so a decompression bomb costs nothing; large JPEGs are decoded
    at a reduced scale (at least ``WORK_SIDE`` px), since the models see 28 or 32 px.

    Args:
        data: the uploaded file's bytes.
    Returns:
        The decoded image (the first frame of an animation), any mode.
    Raises:
        ImageError: with a message for the learner saying what is wrong and what to do.
    """
    if not data:
        raise ImageError("The file is empty (0 bytes). Upload a PNG or JPEG picture.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB. Upload a smaller picture.")
    try:
        # No warnings.catch_warnings here: it is not thread-safe, and every browser session runs in its own thread.
        # Pillow raises DecompressionBombError above 2 x MAX_IMAGE_PIXELS; the explicit check below refuses the rest.
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(f"The picture is {width}x{height} pixels, too large to open safely "
                             f"(at most {MAX_PIXELS // 1_000_000} million pixels). Upload a smaller picture.")
        if width < 1 or height < 1:
            raise ImageError("The picture has no pixels.")
        image.seek(0)  # animated images: the first frame
        if image.format == "JPEG":
            image.draft(image.mode, (WORK_SIDE, WORK_SIDE))  # decode at 1/2, 1/4 or 1/8 scale when that suffices
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"The picture declares more than {2 * MAX_PIXELS // 1_000_000} million pixels: too large to "
                         "open safely (a decompression bomb?). Upload a smaller picture.") from None
    except UnidentifiedImageError:
        kind = _sniff_document(data)
        if kind is not None:
            raise ImageError(f"This file is {kind}, not a picture made of pixels. Export it as PNG or JPEG and "
                             "upload that.") from None
        raise ImageError("This file is not a picture this app can read (PNG, JPEG, GIF, BMP, WEBP or TIFF). "
                         "Upload a PNG or JPEG picture.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(f"The picture is damaged or cut short ({exc}). Upload another one.") from None
    return image


_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def _upright_and_small(image: Image.Image) -> tuple[Image.Image, bool]:
    """Undo the EXIF rotation and box-shrink to at most WORK_SIDE px a side, BEFORE any float array is made.

    Returns (image in an 8-bit mode, "I" or "F", whether it came from a 16-bit mode). Shrinking first keeps a
    40-megapixel upload from costing gigabytes of float64 arrays.
    """
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the rotation
        orientation = None
    sixteen = image.mode.startswith("I;16")
    if sixteen:
        image = image.convert("I")
    elif image.mode in ("P", "PA", "LA"):
        image = image.convert("RGBA")  # palette indices must not be averaged
    elif image.mode == "1":
        image = image.convert("L")
    factor = math.ceil(max(image.size) / WORK_SIDE)
    if factor > 1:
        image = image.reduce(factor)
    if orientation in _EXIF_TRANSPOSE:
        image = image.transpose(_EXIF_TRANSPOSE[orientation])
    return image, sixteen


def _to_float_array(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any PIL mode -> (RGB float array in [0, 1] of shape (H, W, 3), alpha in [0, 1] or None)."""
    image, sixteen = _upright_and_small(image)
    mode = image.mode
    alpha = None
    if mode in ("I", "F"):
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if sixteen:
            hi = 65535.0
        else:
            hi = 255.0 if arr.max() <= 255 else max(float(arr.max()), 1.0)
        gray = np.clip(arr / hi, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2), None
    if mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")  # CMYK, YCbCr, ...
    if image.mode == "RGBA":
        arr = np.asarray(image, dtype=np.float64) / 255.0
        alpha = arr[..., 3]
        if alpha.min() >= 1.0:
            alpha = None
        return arr[..., :3], alpha
    if image.mode == "L":
        gray = np.asarray(image, dtype=np.float64) / 255.0
        return np.repeat(gray[..., None], 3, axis=2), None
    return np.asarray(image, dtype=np.float64) / 255.0, None


def ink_map(image: Image.Image) -> np.ndarray:
    """MNIST convention: bright ink on a dark background, float (H, W) in [0, 1].

    Transparent pixels count as background. A dark-on-light picture (pen on paper) is inverted, judged by
    its border: MNIST's background is its border.
    """
    rgb, alpha = _to_float_array(image)
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    if alpha is not None:
        opaque = alpha > 0.5
        dark_ink = opaque.any() and float(np.median(lum[opaque])) < 0.5 and (~opaque).any()
        return (1.0 - lum if dark_ink else lum) * alpha
    border = np.concatenate([lum[0, :], lum[-1, :], lum[:, 0], lum[:, -1]])
    if float(np.median(border)) > 0.5:
        lum = 1.0 - lum
    return lum


def mnist_field(image: Image.Image, ink_threshold: float = 0.1) -> np.ndarray:
    """Do to a picture what MNIST did to its digits: float (28, 28) in [0, 1].

    Crop to the ink's bounding box, scale the longer side to 20 px keeping the aspect ratio, and paste it so
    the centre of mass lands at the centre of a 28x28 field. Raises EmptyImage when there is no ink.
    """
    ink = ink_map(image)
    peak = float(ink.max()) if ink.size else 0.0
    mask = ink > max(ink_threshold, 0.25 * peak) if peak > 0 else np.zeros_like(ink, dtype=bool)
    if peak < ink_threshold or not mask.any():
        raise EmptyImage(EMPTY_MESSAGE)
    rows, cols = np.nonzero(mask)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    crop_img = Image.fromarray((np.clip(crop / peak, 0, 1) * 255).astype(np.uint8), mode="L")
    small = np.asarray(crop_img.resize((new_w, new_h), Image.LANCZOS), dtype=np.float64) / 255.0
    total = small.sum()
    if total <= 0:
        raise EmptyImage(EMPTY_MESSAGE)
    ys, xs = np.indices(small.shape)
    com_y, com_x = float((ys * small).sum() / total), float((xs * small).sum() / total)
    top = int(np.clip(round(14 - com_y), 0, 28 - new_h))
    left = int(np.clip(round(14 - com_x), 0, 28 - new_w))
    field = np.zeros((28, 28), dtype=np.float64)
    field[top:top + new_h, left:left + new_w] = small
    return np.clip(field, 0.0, 1.0)


def cifar_field(image: Image.Image) -> np.ndarray:
    """Resize the shorter side to 32 and centre-crop: float (32, 32, 3) in [0, 1]. Transparency becomes white."""
    rgb, alpha = _to_float_array(image)
    if alpha is not None:
        rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), mode="RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((32, 32), Image.BICUBIC)
    return np.asarray(img, dtype=np.float64) / 255.0


def to_pixels(image: Image.Image, card: ModelCard) -> np.ndarray:
    """What the network sees before normalisation: (C, H, W) float in [0, 1]."""
    if card.name == "mnist":
        return mnist_field(image)[None]
    return cifar_field(image).transpose(2, 0, 1)


def normalize(pixels: np.ndarray | torch.Tensor, card: ModelCard) -> torch.Tensor:
    """The one normalisation: (x - mean) / std per channel, with the card's mean and std.

    Args:
        pixels: (C, H, W) or (N, C, H, W); floats in [0, 1], or uint8 in 0..255.
        card: the model's card.
    Returns:
        A float32 tensor (N, C, H, W), N = 1 for a single picture.
    """
    x = pixels if isinstance(pixels, torch.Tensor) else torch.as_tensor(np.asarray(pixels))
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(0)  # (1, C, H, W)
    mean = torch.tensor(card.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(card.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std  # (N, C, H, W)


def canvas_picture(png: bytes | None) -> Image.Image | None:
    """The drawing canvas's PNG (white strokes on black, transparent = black) -> an RGBA picture, or None.

    None when nothing is drawn (no payload, or no ink). The payload is checked like any upload (a hostile client
    could send anything). Raises ImageError for a payload that is not a picture, and ``CanvasFull`` for a canvas
    painted to its edges, whose white border would read as background.
    """
    if png is None:
        return None
    arr = np.asarray(load_image(png).convert("RGBA"))
    if arr.ndim != 3 or not arr[..., :3].any():
        return None
    edge = np.concatenate([arr[0, :], arr[-1, :], arr[:, 0], arr[:, -1]])  # (border pixels, RGBA)
    border = edge[:, :3].max(axis=1) / 255.0 * (edge[:, 3] / 255.0)  # their ink: white on black, transparent = black
    if float(np.median(border)) > 0.5:
        raise CanvasFull("The canvas is painted right up to its edges, so no digit shape is left to see. Clear it "
                         "(the Clear button under it) and draw one digit in the middle.")
    return Image.fromarray(arr)


def preprocess(image: Image.Image, card: ModelCard, dataset_sample: bool = False) -> torch.Tensor:
    """Any PIL image -> (1, C, H, W) tensor normalised with the card's mean/std.

    Args:
        image: any PIL image (canvas drawing, upload, dataset sample), any mode.
        card: the model's card (input shape, mean, std).
        dataset_sample: the image is already in the dataset's format (28x28 MNIST, 32x32 CIFAR): use it as is.
    Raises:
        EmptyImage: an MNIST picture without ink.
    """
    if dataset_sample:
        c, h, w = card.input_shape
        arr = np.asarray(image.convert("L" if c == 1 else "RGB").resize((w, h)), dtype=np.float64) / 255.0
        pixels = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    else:
        pixels = to_pixels(image, card)
    return normalize(pixels, card)


def unnormalize(x: torch.Tensor | np.ndarray, card: ModelCard) -> np.ndarray:
    """(C, H, W) normalised -> (C, H, W) pixels in [0, 1] for display."""
    arr = np.asarray(x, dtype=np.float64)
    mean = np.asarray(card.mean).reshape(-1, 1, 1)
    std = np.asarray(card.std).reshape(-1, 1, 1)
    return np.clip(arr * std + mean, 0.0, 1.0)
