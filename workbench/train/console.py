"""Turning run events into terminal output: a live one-line bar on a terminal, plain lines
otherwise (CI logs, `nohup`, a detached run's stdout.log). The foreground runner and
`workbench attach` feed it the same events, so both look the same."""

from __future__ import annotations

import shutil
import sys
from typing import IO

from workbench.evaluate.progress import progress_text
from workbench.fmt import fmt_bytes, fmt_duration  # noqa: F401 - re-exported for the CLI


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "n/a"


class ProgressPrinter:
    """Consumes events (dicts as written to events.jsonl) and the run's total steps."""

    def __init__(self, stream: IO[str] | None = None, live: bool | None = None,
                 total_steps: int | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.total_steps = total_steps
        self.last_log: dict = {}
        self.last_eval_loss: float | None = None
        self._bar_shown = False

    # Lines that must stay visible (evals, checkpoints, status) end the live bar first.
    def _line(self, text: str) -> None:
        if self.live and self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.live and self.last_log:
            self._bar()

    def _bar(self) -> None:
        step = self.last_log.get("step", 0)
        total = self.total_steps or 0
        frac = min(step / total, 1.0) if total else 0.0
        width = max(10, min(30, shutil.get_terminal_size((100, 20)).columns - 80))
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        text = (f"step {step}/{total or '?'} [{bar}] {frac:4.0%}  {self._metrics(self.last_log)}")
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._bar_shown = True

    def _metrics(self, ev: dict) -> str:
        parts = [f"loss {_num(ev.get('loss'), '.4f')}"]
        if self.last_eval_loss is not None:
            parts.append(f"eval {self.last_eval_loss:.4f}")
        parts.append(f"lr {_num(ev.get('learning_rate'), '.2e')}")
        if ev.get("grad_norm") is not None:
            parts.append(f"gnorm {_num(ev.get('grad_norm'), '.2f')}")
        if ev.get("tokens_per_s") is not None:
            parts.append(f"{ev['tokens_per_s']:.0f} tok/s")
        if ev.get("gpu_mem_peak_bytes"):
            parts.append(f"peak {fmt_bytes(ev['gpu_mem_peak_bytes'])}")
        parts.append(f"ETA {fmt_duration(ev.get('eta_s'))}")
        return "  ".join(parts)

    def handle(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "log":
            self.last_log = ev
            if self.live:
                self._bar()
            else:
                total = self.total_steps or "?"
                self._line(f"step {ev.get('step')}/{total}  epoch {_num(ev.get('epoch'), '.2f')}  "
                           + self._metrics(ev))
        elif kind == "eval":
            self.last_eval_loss = ev.get("eval_loss")
            self._line(f"eval  step {ev.get('step')}  eval_loss {_num(ev.get('eval_loss'), '.4f')}")
        elif kind == "checkpoint":
            self._line(f"checkpoint  step {ev.get('step')}  {ev.get('path')}")
        elif kind == "status":
            msg = f"  {ev['message']}" if ev.get("message") else ""
            self._line(f"[{ev.get('state')}]{msg}")
        elif kind == "estimate":
            self._line(f"memory estimate: {fmt_bytes(ev.get('peak_bytes'))} peak on a GPU "
                       f"(torch reserved {fmt_bytes(ev.get('reserved_bytes'))}; "
                       "`workbench estimate` explains it)")
        elif kind == "memory":
            err = ev.get("error_pct")
            self._line(f"measured peak GPU memory {fmt_bytes(ev.get('measured_peak_reserved_bytes'))}"
                       f" reserved vs {fmt_bytes(ev.get('estimated_reserved_bytes'))} estimated"
                       + (f" ({err:+.1f}%)" if isinstance(err, (int, float)) else ""))
        elif kind == "eval_progress":  # the evaluation after training: a few a stage
            if self.live:  # in place of the step bar, which has nothing more to say
                self.stream.write("\r\033[K" + progress_text(ev))
                self.stream.flush()
                self._bar_shown = True
            else:
                self._line(progress_text(ev))
        elif kind == "error":
            hint = f"\n  hint: {ev['hint']}" if ev.get("hint") else ""
            self._line(f"error ({ev.get('kind')}): {ev.get('message')}{hint}")

    def close(self) -> None:
        if self.live and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False
