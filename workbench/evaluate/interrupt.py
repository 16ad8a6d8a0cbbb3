"""Ctrl-C and SIGTERM for the commands that generate: `workbench eval`, `compare`, `export`.

A stop must end such a command within seconds, with one clear line and no traceback, even in
the middle of a long generate call. `SignalStop` is the flag the evaluation's loops ask after
every generated token and perplexity batch (errors.stop_requested: the same mechanism as a
run's stop during its evaluation after training); with `at_once` the first signal raises
KeyboardInterrupt instead, for work that has no flag to ask (export: each format is written
to a temporary folder that an exception removes). A second signal always quits at once.

Pure Python, no torch: the command line imports it at start.
"""

from __future__ import annotations

import signal
import threading

EXIT_STOPPED = 130  # as a shell reports a command ended by Ctrl-C


class SignalStop:
    """A context in which SIGINT / SIGTERM set this flag (callable, and Event-like)."""

    def __init__(self, at_once: bool = False):
        self.at_once = at_once
        self.signum: int | None = None
        self._event = threading.Event()
        self._previous: dict = {}

    def __call__(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def name(self) -> str:
        """What stopped it, as a person says it."""
        if self.signum == signal.SIGINT or self.signum is None:
            return "Ctrl-C"
        return signal.Signals(self.signum).name

    def _on_signal(self, signum, frame) -> None:
        again = self._event.is_set()
        self.signum = self.signum or signum
        self._event.set()
        if again or self.at_once:
            raise KeyboardInterrupt

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():  # Python's rule
            self._previous = {s: signal.signal(s, self._on_signal)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
