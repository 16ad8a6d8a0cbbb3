"""Turning run events into terminal output: a live one-line bar on a terminal, plain lines
otherwise (CI logs, `nohup`, a detached run's stdout.log). The foreground runner and
`workbench attach` feed it the same events, so both look the same."""

from __future__ import annotations

import os
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
        self._eval_text: str | None = None  # the evaluation's progress, once it has begun
        self._ended = False  # the run's final status is out: nothing live after it

    # Lines that must stay visible (evals, checkpoints, status) end the live bar first, and
    # the live line (the step bar, or the evaluation's progress once it runs) comes back
    # under them, never after the run's last word.
    def _line(self, text: str) -> None:
        if self.live and self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if not self.live or self._ended:
            return
        if self._eval_text is not None:
            self._live(self._eval_text)
        elif self.last_log:
            self._bar()

    def _live(self, text: str) -> None:
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._bar_shown = True

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
        parts += signal_parts(ev.get("signals") or {})
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
            self._line("  ".join([f"eval  step {ev.get('step')}  eval_loss "
                                  f"{_num(ev.get('eval_loss'), '.4f')}"]
                                 + signal_parts(ev.get("signals") or {})))
        elif kind == "checkpoint":
            self._line(f"checkpoint  step {ev.get('step')}  {ev.get('path')}")
        elif kind == "status":
            msg = f"  {ev['message']}" if ev.get("message") else ""
            self._ended = ev.get("state") in ("finished", "stopped", "failed")
            self._line(f"[{ev.get('state')}]{msg}")
        elif kind == "estimate":
            # Two numbers that read alike: the peak counts the CUDA context, torch's reserved
            # memory does not; the app's Train screen shows the reserved one ("memory est").
            self._line(f"memory estimate for a GPU: {fmt_bytes(ev.get('peak_bytes'))} peak with "
                       f"the CUDA context, {fmt_bytes(ev.get('reserved_bytes'))} of it reserved "
                       "by torch (the app's \"memory est\"); `workbench estimate` explains it")
        elif kind == "memory":
            err = ev.get("error_pct")
            self._line(f"measured peak GPU memory {fmt_bytes(ev.get('measured_peak_reserved_bytes'))}"
                       f" reserved vs {fmt_bytes(ev.get('estimated_reserved_bytes'))} estimated"
                       + (f" ({err:+.1f}%)" if isinstance(err, (int, float)) else ""))
        elif kind == "eval_progress":  # the evaluation after training: a few a stage
            if self.live:  # in place of the step bar, which has nothing more to say
                self._eval_text = progress_text(ev)
                self._live(self._eval_text)
            else:
                self._line(progress_text(ev))
        elif kind == "samples":
            now = ev.get("time") or 0.0
            line = sample_line(ev)
            if line and now - getattr(self, "_last_sample", -SAMPLE_EVERY_S) >= SAMPLE_EVERY_S:
                self._last_sample = now
                self._line(line)
        elif kind == "error":
            hint = f"\n  hint: {ev['hint']}" if ev.get("hint") else ""
            self._line(f"error ({ev.get('kind')}): {ev.get('message')}{hint}")

    def close(self) -> None:
        if self.live and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


class SafeStream:
    """A stream that survives its own end: a write that fails (the disk is full, the terminal
    is gone: EIO / EPIPE) turns it off instead of raising out of the training loop. The run's
    events and status are the record; this is only a view of them."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.broken: OSError | None = None

    def write(self, text: str) -> None:
        if self.broken is None:
            try:
                self.stream.write(text)
            except (OSError, ValueError) as exc:  # ValueError: write to a closed file
                self.broken = exc if isinstance(exc, OSError) else OSError(str(exc))

    def flush(self) -> None:
        if self.broken is None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self.broken = exc if isinstance(exc, OSError) else OSError(str(exc))

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        try:
            self.stream.close()
        except (OSError, ValueError):
            pass


class TeePrinter:
    """A foreground run's output: live on the terminal and plain lines in the run's
    stdout.log. When the terminal goes away (SIGHUP: SSH dropped, the window closed), the
    screen half is switched off and the process's stdout / stderr are pointed at stdout.log,
    so the run goes on writing only there (`workbench attach RUN` follows it)."""

    total_steps = None

    def __init__(self, run, live: bool | None = None, screen: IO[str] | None = None):
        self.run = run
        self.screen_stream = SafeStream(screen or sys.stdout)
        self.screen = ProgressPrinter(self.screen_stream, live=live)
        self.log = ProgressPrinter(SafeStream(open(run.log_path, "a", encoding="utf-8",
                                                   buffering=1)), live=False)
        self.hung_up = False

    def handle(self, ev: dict) -> None:
        self.screen.total_steps = self.log.total_steps = self.total_steps
        if not self.hung_up:
            self.screen.handle(ev)
        self.log.handle(ev)

    def notice(self, text: str) -> None:
        """A line for the person at the terminal only (not an event of the run)."""
        if not self.hung_up:
            self.screen_stream.write(text + "\n")
            self.screen_stream.flush()

    def hang_up(self) -> None:
        """The terminal is gone: from now on everything this process prints lands in
        stdout.log (library warnings included), and nothing tries the dead terminal again."""
        if self.hung_up:
            return
        self.hung_up = True
        try:
            fd = os.open(self.run.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        try:
            for target in (sys.stdout, sys.stderr):
                try:
                    target.flush()
                except (OSError, ValueError):
                    pass
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)

    def close(self) -> None:
        if not self.hung_up:
            self.screen.close()
        self.log.stream.close()


class Hangup:
    """SIGHUP for a run in this process. Installed as early as possible (the terminal may go
    away while the model loads); `policy` decides once training can act on it: "continue"
    keeps training, "stop" checkpoints and stops as `workbench stop` would."""

    def __init__(self, printer=None):
        import signal

        self.printer = printer
        self.count = 0
        self.listener = None  # set by the runner: called on each hangup
        self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.count += 1
        if self.printer is not None and hasattr(self.printer, "hang_up"):
            self.printer.hang_up()
        if self.listener is not None:
            self.listener()

    @property
    def happened(self) -> bool:
        return self.count > 0

    def restore(self) -> None:
        import signal

        signal.signal(signal.SIGHUP, self._previous)


# A preference method's signals, shortest first: what a person watches in a DPO run is the
# reward margin growing and the share of pairs the policy already ranks right.
_SIGNAL_LABELS = (("rewards/margins", "margin", "+.3f"), ("rewards/accuracies", "pref acc", ".0%"),
                  ("reward", "reward", ".3f"), ("frac_reward_zero_std", "flat groups", ".0%"),
                  ("completions/clipped_ratio", "cut", ".0%"),
                  ("kl", "kl", ".3f"), ("log_odds_ratio", "log-odds", "+.3f"))
# GRPO: one sampled completion (the best of the latest batch) at most this often, so the
# terminal shows what the rewards are rewarding without scrolling away the steps.
SAMPLE_EVERY_S = 30.0


def sample_line(ev: dict) -> str | None:
    samples = [s for s in ev.get("samples") or [] if s.get("total") is not None]
    if not samples:
        return None
    best = max(samples, key=lambda s: s["total"])
    text = " ".join(str(best.get("completion", "")).split())
    text = text if len(text) <= 70 else text[:69] + "…"
    return f"  sample at step {ev.get('step')} (reward {best['total']:.3f}): {text!r}"


def signal_parts(signals: dict) -> list[str]:
    return [f"{label} {format(signals[key], spec)}" for key, label, spec in _SIGNAL_LABELS
            if signals.get(key) is not None]
