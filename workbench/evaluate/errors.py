"""The one error type of the evaluate room: something a person can fix, and how."""

from __future__ import annotations


class EvaluateError(Exception):
    """A problem with the run, its adapter, the prompts or the test split. `hint` says
    what to do next; the command line prints both and exits 2."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")
