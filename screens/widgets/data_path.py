"""Filesystem path completion for Textual's Input: the rest of a name shows in grey as you
type, and Tab (or →) completes it. Tab with nothing left to complete moves on as usual.

The suggestion is computed asynchronously (Textual calls the Suggester off the key handler);
Tab computes it again on the spot, so it completes even before the grey text has arrived. One
`os.scandir` of one folder is cheap even over SSH.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.binding import Binding
from textual.suggester import Suggester

from screens.widgets.keys import KeyedInput


def complete_path(value: str, base: Path | None = None) -> str | None:
    """`value` with its last path component completed against its folder's entries (folders
    get `/`), or None when nothing matches. Ambiguous names complete to their common prefix,
    then to the first of them."""
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, sep, stem = expanded.rpartition(os.sep)
    if not sep and not folder:
        folder = "."
    elif not folder:
        folder = os.sep
    where = Path(folder)
    if base is not None and not where.is_absolute():
        where = base / where
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


class PathSuggester(Suggester):
    """Completes the last path component against the entries of its folder; folders get `/`."""

    def __init__(self, base: Path | None = None) -> None:
        # No cache: the folder changes (a split was just saved) and listing it is cheap.
        super().__init__(use_cache=False, case_sensitive=True)
        self.base = base

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value, self.base)


class PathInput(KeyedInput):
    """A path field whose Tab completes the path (shell-like); with nothing to complete, Tab
    moves to the next field as everywhere else."""

    BINDINGS = [Binding("tab", "complete_path", "Complete path", show=False,
                        id="input.complete_path")]

    def __init__(self, value: str | None = None, *, base: Path | None = None, **kwargs) -> None:
        kwargs.setdefault("suggester", PathSuggester(base))
        super().__init__(value, **kwargs)
        self.base = base

    def action_complete_path(self) -> None:
        completed = complete_path(self.value, self.base) if self.cursor_at_end else None
        if completed is None or completed == self.value:
            self.screen.focus_next()
            return
        self.value = completed
        self.cursor_position = len(completed)
