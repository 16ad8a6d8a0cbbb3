"""Numbers as people read them, shared by the command line and the app. Pure functions."""

from __future__ import annotations

import math

GIB = 1024 ** 3


def fmt_duration(seconds: float | None, missing: str = "?") -> str:
    """A clock-like duration: 45s, 3m07s, 2h05m, 1d03h."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return missing
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h >= 24:
        return f"{h // 24}d{h % 24:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def fmt_span(seconds: float) -> str:
    """A rough planning figure: 90 s, 12 min, 3.5 h (estimates are not precise to the second)."""
    if seconds < 10:  # a short run reads "0.4 s", not "0 s"
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_gib(n: float | None, digits: int = 1, missing: str = "n/a") -> str:
    return missing if n is None else f"{n / GIB:.{digits}f} GiB"


def fmt_bytes(n: float | None, missing: str = "n/a") -> str:
    if n is None:
        return missing
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
