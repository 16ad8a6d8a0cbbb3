"""What the Data screen opens besides a file: a Hub dataset id, or a profile whose
[[data.sources]] make a mixture (shown as its training mixture, with each source's share); and
the page-at-a-time reading that lets a file larger than memory be looked at.

Called from the screen's worker threads; the engine is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

# Rows read at a time: a larger dataset shows its first page, and `m` reads the next one, so a
# file (or a streamed Hub dataset) larger than memory can still be paged through.
PAGE_ROWS = 100_000


@dataclass
class Opened:
    """What a path opened to: the first page of rows, the rest still unread."""

    records: list[dict]
    rest: Iterator[dict] | None = None  # None: every row is loaded
    sources: list[dict] | None = None  # a mixture's sources (SourceDraw.to_dict())
    notes: list[str] = field(default_factory=list)
    label: str = ""  # what the status line calls it


def is_profile(text: str) -> bool:
    return text.strip().lower().endswith(".toml")


def first_page(rows: Iterator[dict], page: int | None = None
               ) -> tuple[list[dict], Iterator[dict] | None]:
    """Up to `page` (default PAGE_ROWS) rows, and an iterator over the rest (None when there
    is no rest)."""
    page = page or PAGE_ROWS
    out: list[dict] = []
    for record in rows:
        out.append(record)
        if len(out) >= page:
            break
    else:
        return out, None
    try:
        peeked = next(rows)
    except StopIteration:
        return out, None

    def rest() -> Iterator[dict]:
        yield peeked
        yield from rows

    return out, rest()


def open_profile(path: str, report: Any) -> Opened:
    """A profile's data as training reads it: a mixture drawn from its [[data.sources]] (all
    of each source is loaded, as training loads it), or its one `data.train` source paged."""
    from workbench.data.load import iter_source
    from workbench.data.sources import is_mixture, sources_of
    from workbench.profile import load_profile

    profile = load_profile(path)
    if is_mixture(profile):
        from workbench.data.mixture import load_mixture

        mixture = load_mixture(profile)
        return Opened(mixture.train, None, [d.to_dict() for d in mixture.sources],
                      mixture.notes, f"{Path(path).name}: training mixture")
    specs = sources_of(profile)
    if not specs:
        from workbench.data.errors import DataError

        raise DataError("the profile names no data: set data.train or [[data.sources]]",
                        file=path)
    records, rest = first_page(iter_source(specs[0], "skip", report))
    return Opened(records, rest, label=specs[0].location)


def sources_table(sources: list[dict]) -> Table:
    """One line per source: rows it holds, rows drawn into the training mixture, its share
    (and the share its weight asked for). Fits the 30-column stats pane."""
    table = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True,
                  show_edge=False, header_style="bold")
    table.add_column("source", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("rows", justify="right")
    table.add_column("drawn", justify="right")
    table.add_column("share", justify="right")
    for s in sources:
        share = f"{s.get('share', 0):.1%}"
        target = s.get("share_target")
        if target is not None and abs(target - s.get("share", 0)) >= 0.0005:
            share += f" (asked {target:.1%})"
        drawn = Text(f"{s.get('rows_drawn', 0):,}",
                     style="yellow" if s.get("rows_drawn", 0) > s.get("rows_available", 0) else "")
        table.add_row(s.get("label", "?"), f"{s.get('rows_loaded', 0):,}", drawn, share)
    return table
