"""Records -> figures and tiled images. numpy in, figures out, no streamlit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

try:  # plotly serialises with orjson when present: several times faster for heatmaps
    import plotly.io as pio

    pio.json.config.default_engine = "orjson"
except (ImportError, AttributeError, ValueError):  # pragma: no cover - plain json still works
    pass

# Small colour tables: a perceptual sequential map for activations and a blue-white-red map for signed values.
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                     [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]], dtype=np.float64)
_DIVERGING = np.array([[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
                       [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43],
                       [103, 0, 31]], dtype=np.float64)


def _interpolate(values01: np.ndarray, table: np.ndarray) -> np.ndarray:
    pos = np.clip(values01, 0, 1) * (len(table) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(table) - 1)
    frac = (pos - lo)[..., None]
    return (table[lo] * (1 - frac) + table[hi] * frac).astype(np.uint8)


_LEVELS = 1024  # colours per scale, precomputed: a lookup instead of an interpolation per pixel (5x faster)
_FINE = {id(t): _interpolate(np.linspace(0.0, 1.0, _LEVELS), t) for t in (_VIRIDIS, _DIVERGING)}


def _lut(values01: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Colours of values in [0, 1] (clipped) on ``table``'s scale, linearly interpolated between its entries."""
    index = np.rint(np.clip(values01, 0.0, 1.0) * (_LEVELS - 1)).astype(np.intp)
    return _FINE[id(table)][index]


def colorize(arr: np.ndarray, signed: bool, vmax: float | None = None) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8. Signed values use a diverging map centred on 0."""
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float64))
    if signed:
        vmax = vmax if vmax is not None else float(np.abs(arr).max())
        return _lut(0.5 + 0.5 * arr / (vmax or 1.0), _DIVERGING)
    lo = float(arr.min())
    vmax = vmax if vmax is not None else float(arr.max())
    return _lut((arr - lo) / ((vmax - lo) or 1.0), _VIRIDIS)


def ramp_css(signed: bool) -> str:
    """The CSS gradient of the diverging (signed) or the sequential scale, for colour bars beside HTML figures."""
    if signed:
        return "linear-gradient(90deg, #053061, #4393c3, #f7f7f7, #d6604d, #67001f)"
    return "linear-gradient(90deg, #440154, #3e4a89, #26828e, #35b779, #fde725)"


def is_signed(arr: np.ndarray) -> bool:
    return bool((np.asarray(arr) < 0).any())


def tile_maps(maps: np.ndarray, signed: bool | None = None, columns: int | None = None, cell_px: int = 56,
              gap: int = 2, highlight: int | None = None) -> Image.Image:
    """One tiled image of every channel of a (C, H, W) stack, all on one colour scale so channels compare.

    Args:
        maps: (C, H, W) values; a (K,) vector is shown as K 1x1 tiles.
        signed: diverging colours centred on 0 (default: whether any value is negative).
        columns: tiles per row (default: about square, at most 16).
        cell_px: each tile is scaled (nearest neighbour) to about this many pixels per side.
        highlight: a channel to frame in red.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 1:
        maps = maps[:, None, None]
    c, h, w = maps.shape
    signed = is_signed(maps) if signed is None else signed
    vmax = float(np.abs(maps).max()) if signed else float(maps.max())
    columns = columns or min(16, max(1, math.ceil(math.sqrt(c))))
    rows = math.ceil(c / columns)
    zoom = max(1, round(cell_px / max(h, w)))
    th, tw = h * zoom, w * zoom
    canvas = np.full((rows * (th + gap) + gap, columns * (tw + gap) + gap, 3), 255, dtype=np.uint8)
    colored = colorize(maps.reshape(c * h, w), signed, vmax).reshape(c, h, w, 3)
    for k in range(c):
        r, q = divmod(k, columns)
        y, x = gap + r * (th + gap), gap + q * (tw + gap)
        canvas[y:y + th, x:x + tw] = colored[k].repeat(zoom, 0).repeat(zoom, 1)
        if k == highlight:
            canvas[max(y - gap, 0):y + th + gap, max(x - gap, 0):x] = (220, 30, 30)
            canvas[max(y - gap, 0):y + th + gap, x + tw:x + tw + gap] = (220, 30, 30)
            canvas[max(y - gap, 0):y, x:x + tw] = (220, 30, 30)
            canvas[y + th:y + th + gap, x:x + tw] = (220, 30, 30)
    return Image.fromarray(canvas)


def pixels_image(pixels: np.ndarray, size: int = 196) -> Image.Image:
    """(C, H, W) pixels in [0, 1] -> an upscaled RGB image (what the network actually receives)."""
    arr = np.clip(np.asarray(pixels), 0, 1)
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    img = Image.fromarray((arr.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    return img.resize((size, size), Image.NEAREST)


def training_curve(history: Sequence[dict]) -> go.Figure | None:
    """The one accuracy-per-epoch figure: train and test accuracy from a model card's history; None if empty."""
    rows = [h for h in history if "epoch" in h]
    if not rows:
        return None
    data = []
    for key, name, colour in (("train_accuracy", "train accuracy (augmented)", "#1565c0"),
                              ("test_accuracy", "test accuracy", "#c62828")):
        pts = [(h["epoch"], h[key]) for h in rows if h.get(key) is not None]
        if pts:
            data.append({"type": "scatter", "mode": "lines+markers", "x": [p[0] for p in pts],
                         "y": [p[1] for p in pts], "name": name, "line": {"color": colour},
                         "hovertemplate": name + " %{y:.2f}%<extra></extra>"})
    layout = {"height": 280, "margin": {"l": 10, "r": 10, "t": 10, "b": 10}, "font": {"size": 14},
              "xaxis": {"title": {"text": "epoch"}, "dtick": 1}, "yaxis": {"title": {"text": "accuracy (%)"}},
              "legend": {"orientation": "h", "y": -0.3}}
    return go.Figure({"data": data, "layout": layout})


def overlay(picture: np.ndarray, heat: np.ndarray, opacity: float = 0.5, signed: bool | None = None,
            vmax: float | None = None, size: int | None = None, by_strength: bool = True,
            fade: float = 0.0) -> np.ndarray:
    """The input picture with a heat map (an attribution) blended over it.

    Args:
        picture: (C, H, W) or (H, W) pixels in [0, 1] (as ``pictures.unnormalize`` gives), C = 1 or 3.
        heat: (h, w) map; resized bilinearly to (H, W) when its size differs (a Grad-CAM map, say).
        opacity: 0 shows only the picture, 1 only the colours (where the heat is strongest, if ``by_strength``).
        signed: diverging colours centred on 0 (blue negative, red positive); default: whether any value is < 0.
        vmax: the value drawn at full colour (default: the largest |heat|), e.g. one scale for several maps.
        size: scale the result (nearest neighbour) to this many pixels a side.
        by_strength: blend each pixel in proportion to |heat| / vmax, so zero heat leaves the picture as it is.
        fade: mix the picture this much (0 to 1) with the colour of zero heat (white when signed, the sequential
            scale's darkest colour otherwise) first, so a faint picture stays under a heat map that reads clearly.
    Returns:
        (S, S, 3) uint8 RGB, S = size or the picture's own size.
    """
    pic = np.clip(np.nan_to_num(np.asarray(picture, dtype=np.float64)), 0.0, 1.0)
    if pic.ndim == 2:
        pic = pic[None]
    if pic.ndim != 3 or pic.shape[0] not in (1, 3):
        raise ValueError(f"picture must be (H, W) or (C, H, W) with C = 1 or 3, got shape {np.shape(picture)}")
    rgb = np.repeat(pic, 3, axis=0) if pic.shape[0] == 1 else pic  # (3, H, W)
    h, w = rgb.shape[1:]
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    if heat.ndim != 2:
        raise ValueError(f"heat must be a (h, w) map, got shape {heat.shape}")
    if heat.shape != (h, w):
        heat = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR),
                          dtype=np.float64)
    signed = is_signed(heat) if signed is None else signed
    top = float(vmax) if vmax else float(np.abs(heat).max())
    scaled = heat / top if top > 0 else np.zeros_like(heat)  # in [-1, 1]
    colours = _lut(0.5 + 0.5 * scaled, _DIVERGING) if signed else _lut(np.clip(scaled, 0, 1), _VIRIDIS)
    if fade:
        zero = (_DIVERGING[len(_DIVERGING) // 2] if signed else _VIRIDIS[0])[:, None, None] / 255.0
        rgb = rgb + float(np.clip(fade, 0.0, 1.0)) * (zero - rgb)
    alpha = float(np.clip(opacity, 0.0, 1.0)) * (np.clip(np.abs(scaled), 0, 1) if by_strength else np.ones_like(scaled))
    out = rgb.transpose(1, 2, 0) * 255.0 * (1 - alpha[..., None]) + colours.astype(np.float64) * alpha[..., None]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if size is not None and size != h:
        out = np.asarray(Image.fromarray(out).resize((int(size), int(size) * h // w), Image.NEAREST))
    return out


CLIP_PERCENTILE = 99.0  # attribution colours saturate at this percentile of |value|


def clip_level(values: np.ndarray, percentile: float = CLIP_PERCENTILE) -> float:
    """The value a map's colours saturate at: the ``percentile``-th percentile of |values| (numpy's linear
    interpolation), so a few extreme pixels do not wash out the rest; the largest |value| when that percentile is 0
    (a map that is almost all zeros), and 0 for an all-zero map."""
    magnitudes = np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64))).ravel()
    if not magnitudes.size:
        return 0.0
    level = float(np.percentile(magnitudes, percentile))
    return level if level > 0 else float(magnitudes.max())


def ink_mask(picture: np.ndarray) -> tuple[np.ndarray, float]:
    """Where a picture is bright, for drawing its outline over a map.

    Args:
        picture: (C, H, W) or (H, W) pixels in [0, 1], C = 1 or 3.
    Returns:
        (H, W) bool mask and its threshold: 0.5 for a grey picture (a digit's light ink on a dark ground); for a
        colour picture, Otsu's threshold (the level that best splits it into two tones) of its brightness averaged
        over each 3x3 neighbourhood (a smoother outline, without single-pixel islands).
    """
    pic = np.clip(np.nan_to_num(np.asarray(picture, dtype=np.float64)), 0.0, 1.0)
    pic = pic[None] if pic.ndim == 2 else pic
    if pic.shape[0] == 1:
        return pic[0] > 0.5, 0.5
    h, w = pic.shape[1:]
    padded = np.pad(np.tensordot([0.299, 0.587, 0.114], pic[:3], axes=1), 1, mode="edge")  # (H + 2, W + 2)
    brightness = sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    counts, edges = np.histogram(brightness, bins=64, range=(0.0, 1.0))
    levels = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)  # pixels at or below each level
    above = below[-1] - below
    sum_below = np.cumsum(counts * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = below * above * (sum_below / below - (sum_below[-1] - sum_below) / above) ** 2
    threshold = float(edges[1:][int(np.nanargmax(np.nan_to_num(between)))])
    return brightness > threshold, threshold
