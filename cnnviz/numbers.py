"""The one way a number is written on a page, by every page and every backend module that builds text.

    fmt(3.0) == "3"            fmt(0.7310585786) == "0.731059"     fmt(1e-10) == "1e-10"
    fmt(0.2425203, style="f") == "0.242520"   fmt(0.15, style="f") == "0.15"
    factor(-4) == "(-4)": a number inside a written product or sum

A value is written as an integer only when it is one exactly, so a small non-zero result is never printed as 0.
"""

from __future__ import annotations

import math


def fmt(value: float | None, digits: int = 6, style: str = "g") -> str:
    """A number as a learner would write it.

    Args:
        value: any real number; None gives "".
        digits: significant digits for numbers that are not whole.
        style: "g" (3, 220.5, 0.731059, 1.5e+10) or "f", the MLP worked examples' fixed decimals: six decimals
            for computed numbers between 0.001 and 10,000 (0.242520), short as typed when exact (0.15).
    Returns:
        "nan", "inf" and "-inf" for those values; "0" for zero of either sign.
    """
    if value is None:
        return ""
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if style == "f" and 1e-3 <= abs(v) < 1e4:
        text = f"{v:.6f}"
        return text.rstrip("0").rstrip(".") if float(text) == v else text
    if v == round(v) and abs(v) < 1e15:
        return str(round(v))
    return f"{v:.{digits}g}"


def factor(value: float | None, digits: int = 6, style: str = "g", first: bool = False) -> str:
    """A number inside a longer expression: negative ones get parentheses, except the first term's."""
    text = fmt(value, digits, style)
    return text if first or not text.startswith("-") else f"({text})"


def fmt_close_to_one(p: float, digits: int = 4) -> str:
    """A probability written so that it is true: 0.9999736 as "1 - 2.64e-05", never as a rounded "1"."""
    p = float(p)
    if math.isfinite(p) and 0.999 < p < 1.0:
        return f"1 - {fmt(1.0 - p, 3)}"
    return fmt(p, digits)


def digits_for_sum(total: float, terms, digits: int = 4) -> int:
    """Significant digits to write a sum's terms with, so that adding the written terms gives the total's first
    ``digits`` digits: more where the terms cancel (0.0425431412 + (-0.0425462457) for a total of -3.1e-06, not
    0.04254 + (-0.04254)). The largest term's last digit sits one place below the total's; at most 17."""
    big = max((abs(float(t)) for t in terms), default=0.0)
    total = abs(float(total))
    if not (math.isfinite(big) and math.isfinite(total)) or big == 0 or total == 0:
        return digits
    places = math.floor(math.log10(big)) - math.floor(math.log10(total))  # how many decades the terms cancel
    return min(17, max(digits, digits + 1 + places))
