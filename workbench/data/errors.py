"""Errors raised by the data room.

Every error here is meant to be read by a person: it says where (file:line:column, or file and
row), what was wrong, and what to do next. The location is also kept as attributes so the app can
jump to it instead of parsing the message.
"""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A dataset problem a person has to fix: names the place, the problem and the next step."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(self._compose())

    @property
    def location(self) -> str:
        """`file:line:column`, as much of it as is known ("" when nothing is)."""
        parts = [p for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(str(p) for p in parts)

    def _compose(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class TemplateError(DataError):
    """The tokenizer's chat template cannot render the data the way training needs."""
