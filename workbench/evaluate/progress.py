"""How far an evaluation has got: which stage, rows done of total, and an ETA.

Generating 60 prompts x 3 systems takes minutes on a CPU; without this, `workbench eval` and
the end of every training run print nothing for that long. `EvalProgress` turns the raw
(stage, done, total) reports of `evaluate` into the fields of an `eval_progress` event. Every
report goes to `on_update` (a terminal line redrawn in place can afford each one); a stage's
first and last report, and one every `every_s` seconds between, go to `on_periodic` (lines in
a log, events in events.jsonl: a few per stage, not one per row).

Pure Python, no torch: the command line imports it at start.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Callable

from workbench.fmt import fmt_duration

EVERY_S = 5.0


def progress_text(ev: dict, doing: str = "evaluating") -> str:
    """One line for a person: `evaluating: test answers 60/180 (33%), ETA 40s`."""
    done, total = ev.get("done") or 0, ev.get("total") or 0
    pct = f" ({done / total:.0%})" if total else ""
    eta = ev.get("eta_s")
    left = "" if done >= total else f", ETA {fmt_duration(eta)}" if eta is not None else ""
    return f"{doing}: {ev.get('stage')} {done}/{total}{pct}{left}"


class EvalProgress:
    """Callable as `progress(stage, done, total)`; see the module's docstring."""

    def __init__(self, on_update: Callable[[dict], None] | None = None,
                 on_periodic: Callable[[dict], None] | None = None,
                 every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.on_update, self.on_periodic = on_update, on_periodic
        self.every_s, self.clock = every_s, clock
        self.stage: str | None = None
        self.started = self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        first = stage != self.stage
        if first:
            self.stage, self.started = stage, now
        # The rate so far in this stage; none before the first row is done.
        eta = (now - self.started) / done * (total - done) if done else None
        fields = {"stage": stage, "done": done, "total": total,
                  "eta_s": None if eta is None else round(eta, 1)}
        if self.on_update is not None:
            self.on_update(fields)
        if self.on_periodic is not None and (first or done >= total
                                             or now - self.last >= self.every_s):
            self.last = now
            self.on_periodic(fields)


class TerminalProgress:
    """`workbench eval`'s output: log lines on stdout, progress on stderr as one line
    rewritten in place on a terminal, or as plain periodic lines otherwise (a pipe, CI)."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None,
                 live: bool | None = None, doing: str = "evaluating"):
        self.out, self.err, self.doing = out or sys.stdout, err or sys.stderr, doing
        self.live = self.err.isatty() if live is None else live
        self._shown = False

    def log(self, text: str) -> None:
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def update(self, ev: dict) -> None:
        """Every report: redraws the live line (ignored when not live)."""
        if self.live:
            self.err.write("\r\033[K" + progress_text(ev, self.doing))
            self.err.flush()
            self._shown = True

    def periodic(self, ev: dict) -> None:
        """A few reports a stage: a plain line (ignored when live, which has them all)."""
        if not self.live:
            self.err.write(progress_text(ev, self.doing) + "\n")
            self.err.flush()

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._shown:
            self.err.write("\r\033[K")
            self.err.flush()
            self._shown = False
