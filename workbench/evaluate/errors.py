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


class Stopped(EvaluateError):
    """A stop was asked for (Ctrl-C, SIGTERM from `workbench stop`, the app's cancel) while an
    evaluation ran: it ends at the next token or batch, and nothing is written."""

    def __init__(self, message: str = "evaluation cancelled; nothing was written", hint: str = ""):
        super().__init__(message, hint)


def stop_requested(cancel) -> bool:
    """Whether `cancel` asks to stop: None (never), a threading.Event, or a callable such as a
    run's `should_stop` (StopFlag.is_set). Every loop of the evaluation asks this, so a stop
    lands within a token or a batch, not at the end of a minutes-long stage."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def check_stop(cancel) -> None:
    """Raise `Stopped` when `cancel` asks to stop."""
    if stop_requested(cancel):
        raise Stopped()
