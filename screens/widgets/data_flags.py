"""Per-row flags from an inspection report, and the filters of the data screen.

The inspection report names flagged rows by source (file, row) in its example lists; the data
screen asks for unbounded examples, so those lists are complete and every flagged row can be
found here without re-running any check. Pure functions: no Textual, no I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from screens.widgets.data_table import (
    FLAG_BROKEN,
    FLAG_DUPLICATE,
    FLAG_EMPTY,
    FLAG_OVER_LIMIT,
    FLAG_PAIR,
    FLAG_PLACEHOLDER,
    FLAG_SECRET,
    FLAG_SHORT,
)

# (name shown, bits a row needs any of); "all" shows every row.
FILTERS: tuple[tuple[str, int], ...] = (
    ("all rows", 0),
    ("flagged", ~0),
    ("duplicates", FLAG_DUPLICATE),
    ("placeholders", FLAG_PLACEHOLDER),
    ("secrets / PII", FLAG_SECRET),
    ("over the limit", FLAG_OVER_LIMIT),
    ("short / empty", FLAG_SHORT | FLAG_EMPTY),
    ("broken text", FLAG_BROKEN),
)

# Preference data is checked for other things (workbench.data.preference_checks): its filters.
PREFERENCE_FILTERS: tuple[tuple[str, int], ...] = (
    ("all rows", 0),
    ("flagged", ~0),
    ("cannot train", FLAG_PAIR | FLAG_EMPTY),
    ("duplicates", FLAG_DUPLICATE),
    ("over the limit", FLAG_OVER_LIMIT),
)
# A preference check -> the flag of the rows it drops.
PREFERENCE_CHECK_FLAGS = {"prompt_mismatch": FLAG_PAIR, "identical": FLAG_PAIR,
                          "empty_answer": FLAG_EMPTY, "empty_prompt": FLAG_EMPTY}


def _key(source: dict | None) -> tuple:
    source = source or {}
    return (source.get("file"), source.get("row"))


def flags_from_report(report: dict, records: Sequence[dict]) -> array:
    """One flag byte per record (bits from data_table.FLAG_*)."""
    where = {_key(r.get("source")): i for i, r in enumerate(records)}
    flags = array("B", bytes(len(records)))

    def mark(source: dict | None, bit: int) -> None:
        i = where.get(_key(source))
        if i is not None:
            flags[i] |= bit

    for group in (report.get("exact_duplicates") or {}).get("examples", []):
        for source in group[1:]:  # the first of a group is the row that stays
            mark(source, FLAG_DUPLICATE)
    for group in (report.get("near_duplicates") or {}).get("examples", []):
        for source in group[1:]:
            mark(source, FLAG_DUPLICATE)
    for example in (report.get("placeholders") or {}).get("examples", []):
        mark(example["source"], FLAG_PLACEHOLDER)
    for section in ("secrets", "pii"):
        for example in (report.get(section) or {}).get("examples", []):
            mark(example["source"], FLAG_SECRET)
    over = ((report.get("tokens") or {}).get("over_limit") or {})
    for example in over.get("examples", []):
        mark(example["source"], FLAG_OVER_LIMIT)
    for source in (report.get("short_answers") or {}).get("examples", []):
        mark(source, FLAG_SHORT)
    for sources in ((report.get("empty_fields") or {}).get("examples") or {}).values():
        for source in sources:
            mark(source, FLAG_EMPTY)
    for example in (report.get("broken_text") or {}).get("examples", []):
        mark(example["source"], FLAG_BROKEN)
    return flags


def preference_flags(report: dict, records: Sequence[dict]) -> array:
    """One flag byte per record from a PreferenceReport.to_json() whose example lists are
    complete (inspect_preferences with max_examples above the row count). The report names
    rows as "file:row"."""
    where = {f"{(r.get('source') or {}).get('file')}:{(r.get('source') or {}).get('row')}": i
             for i, r in enumerate(records)}
    flags = array("B", bytes(len(records)))

    def mark(ref: str, bit: int) -> None:
        i = where.get(ref)
        if i is not None:
            flags[i] |= bit

    for check, entry in (report.get("checks") or {}).items():
        for ref in entry.get("examples") or ():
            mark(ref, PREFERENCE_CHECK_FLAGS.get(check, FLAG_PAIR))
    for group in (report.get("duplicates") or {}).get("duplicate_examples") or ():
        for ref in group[1:]:  # the first copy is the one a dedup would keep
            mark(ref, FLAG_DUPLICATE)
    tokens = report.get("tokens") or {}
    for ref in (tokens.get("over_limit") or {}).get("examples") or ():
        mark(ref, FLAG_OVER_LIMIT)
    for example in (tokens.get("dropped") or {}).get("examples") or ():
        mark(example.get("where"), FLAG_PAIR)
    return flags


def filtered_indices(flags: Sequence[int], bits: int, total: int) -> Sequence[int]:
    """Indices of the rows a filter shows; `range` for "all rows" so nothing is copied."""
    if bits == 0:
        return range(total)
    return [i for i, f in enumerate(flags) if f & bits]
