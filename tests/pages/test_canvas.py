"""The drawing canvas's Python side (cnnviz/canvas.py): what it accepts from the browser, and the page's handling of
it. Its drawing in a real browser (strokes, Undo, Clear) is tested in tests/browser/test_explorer_browser.py."""

from __future__ import annotations

import base64
import io

import pytest

from cnnviz.canvas import canvas_value, png_bytes
from tests.support import drawing


def test_png_bytes_reads_the_data_url_the_canvas_sends():
    buf = io.BytesIO()
    drawing("one").save(buf, format="PNG")
    png = buf.getvalue()
    assert png_bytes(canvas_value(png)["drawing"]) == png


def test_an_empty_canvas_is_none():
    assert png_bytes(None) is None
    assert png_bytes(canvas_value(None)["drawing"]) is None


@pytest.mark.parametrize("value", [
    42, {"raw": {}}, "", "data:image/jpeg;base64,AAAA", "http://example.com/a.png",
    "data:image/png;base64,not base64!", "data:image/png;base64,AAA",
])
def test_anything_else_is_refused(value):
    with pytest.raises(ValueError):
        png_bytes(value)


def test_padding_and_alphabet_are_checked_not_guessed():
    good = base64.b64encode(b"\x89PNG\r\n\x1a\nxyz").decode()
    assert png_bytes("data:image/png;base64," + good).startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        png_bytes("data:image/png;base64," + good.replace("=", ""))
