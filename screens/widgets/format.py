"""Numbers as people read them in a narrow terminal. Pure functions, shared by the screens."""

from __future__ import annotations

import math
from datetime import datetime

from workbench.fmt import fmt_duration, fmt_gib

NA = "n/a"


def num(value, fmt: str, missing: str = "-") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return missing
    if isinstance(value, float) and not math.isfinite(value):
        return missing
    return format(value, fmt)


def duration(seconds: float | None) -> str:
    return fmt_duration(seconds, missing="-")


def gib(n: float | None) -> str:
    return fmt_gib(n, missing=NA)


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def started(text: str | None) -> str:
    """'2026-11-28T09:15:00+00:00' -> '11-28 09:15' (UTC, as the run folder names are)."""
    return text[5:16].replace("T", " ") if text and len(text) >= 16 else "-"


def bar(fraction: float | None, width: int) -> str:
    """A text bar; eighths of a cell keep it smooth in narrow panels."""
    if fraction is None or width <= 0:
        return "·" * max(width, 0)
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return ("█" * full + partial).ljust(width, "·")
