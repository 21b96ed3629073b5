"""The drawing canvas as a client sees it: the strokes the load test draws, the canvas's PNG, and the value
streamlit-drawable-canvas sends for a drawing (for the websocket client, and for AppTest's session_state)."""

from __future__ import annotations

import base64
import io
import math

from PIL import Image, ImageDraw

STROKES: dict[str, list[tuple[float, float]]] = {  # one continuous stroke each, on the 280x280 canvas
    "one": [(140, 40), (140, 240)],
    "zero": [(140 + 55 * math.sin(2 * math.pi * k / 48), 140 - 95 * math.cos(2 * math.pi * k / 48)) for k in range(49)],
    "seven": [(70, 50), (210, 50), (120, 240)],
    "two": [(80, 80), (110, 45), (170, 45), (200, 90), (80, 230), (210, 230)],
    "four": [(170, 240), (170, 40), (70, 170), (220, 170)],
    "L": [(100, 40), (100, 230), (200, 230)],
}


def stroke_png(points: list[tuple[float, float]] | None, size: int = 280, width: int = 20) -> bytes:
    """The canvas as its PNG: white round-capped strokes on black, as the page's canvas draws them."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    if points:
        draw = ImageDraw.Draw(img)
        draw.line(points, fill=(255, 255, 255, 255), width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=(255, 255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def canvas_value(image: Image.Image | bytes | None, data_url: str | None = None) -> dict:
    """What the canvas component sends for a drawing: fabric.js's objects and the canvas as a PNG data URL.

    ``image`` is the canvas picture or its PNG; ``data_url`` replaces it with any payload, even a broken one (a
    hostile client can send anything).
    """
    if data_url is None:
        if isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            image = buf.getvalue()
        data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    return {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": data_url}, "backgroundFit": None}
