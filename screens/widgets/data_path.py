"""Filesystem path completion for Textual's Input (Tab or → accepts the grey suggestion).

A Suggester is the one place a widget looks at the disk: Textual calls it asynchronously,
off the key handler, and a single `os.scandir` of one folder is cheap even over SSH.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester


class PathSuggester(Suggester):
    """Completes the last path component against the entries of its folder; folders get `/`."""

    def __init__(self, base: Path | None = None) -> None:
        # No cache: the folder changes (a split was just saved) and listing it is cheap.
        super().__init__(use_cache=False, case_sensitive=True)
        self.base = base

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, _, stem = expanded.rpartition(os.sep)
        if not _ and not folder:
            folder = "."
        elif not folder:
            folder = os.sep
        where = Path(folder)
        if self.base is not None and not where.is_absolute():
            where = self.base / where
        try:
            names = sorted(e.name + (os.sep if e.is_dir() else "") for e in os.scandir(where)
                           if e.name.startswith(stem) and not (e.name.startswith(".") and not stem.startswith(".")))
        except OSError:
            return None
        if not names:
            return None
        completion = names[0] if len(names) == 1 else os.path.commonprefix(names)
        if len(completion) <= len(stem):
            completion = names[0]
        # Keep what the user typed (e.g. "~/"), append only the rest of the name.
        return value + completion[len(stem):]
