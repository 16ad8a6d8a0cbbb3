"""What the Train monitor knows about a run, folded from its events as they arrive.
Pure Python (no I/O, no Textual), so it is tested without an app."""

from __future__ import annotations

from dataclasses import dataclass, field

FINAL = ("finished", "failed", "stopped")
# A status message in these states is a progress note ("loading model", "resuming from
# checkpoint-24"): true until training logs a step, stale after that.
NOTE_STATES = ("starting", "running")


@dataclass
class RunView:
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    last_log: dict = field(default_factory=dict)
    # A method's own signals (log and eval events' `signals`): {name: (steps, values)}.
    signals: dict[str, tuple[list, list]] = field(default_factory=dict)
    eval_signals: dict[str, tuple[list, list]] = field(default_factory=dict)
    gpus: list[dict] = field(default_factory=list)
    estimate: dict | None = None   # the memory model's answer at start
    memory: dict | None = None     # measured peak at the end (GPU runs)
    message: str = ""              # the latest status message, while it is still news
    message_state: str = ""        # the state it came with
    error: dict | None = None      # the latest error event
    last_checkpoint_step: int | None = None
    # GRPO: the latest "samples" event (sampled completions with their rewards) and how many
    # have arrived, so the screen redraws its panel only when a new one came.
    samples: dict | None = None
    samples_seen: int = 0
    first_time: float | None = None
    last_time: float | None = None
    # Training time as [start, end] segments: a stop / resume gap is not billed.
    segments: list[list[float | None]] = field(default_factory=list)

    def add(self, events: list[dict]) -> bool:
        """Fold new events in; True when the plotted series changed."""
        plot_changed = False
        for ev in events:
            kind, t = ev.get("type"), ev.get("time")
            if isinstance(t, (int, float)):
                self.first_time = t if self.first_time is None else self.first_time
                self.last_time = t
            if kind == "log":
                self.last_log = ev
                if self.message_state in NOTE_STATES:
                    self.message = ""  # training has moved on since the note
                if isinstance(ev.get("loss"), (int, float)) and isinstance(ev.get("step"), int):
                    self.steps.append(ev["step"])
                    self.losses.append(ev["loss"])
                    plot_changed = True
                plot_changed |= _add_signals(self.signals, ev)
            elif kind == "eval":
                if isinstance(ev.get("eval_loss"), (int, float)):
                    self.eval_steps.append(ev.get("step") or 0)
                    self.eval_losses.append(ev["eval_loss"])
                    plot_changed = True
                plot_changed |= _add_signals(self.eval_signals, ev)
            elif kind == "gpu":
                self.gpus = ev.get("gpus") or []
            elif kind == "estimate":
                self.estimate = ev
            elif kind == "memory":
                self.memory = ev
            elif kind == "checkpoint":
                self.last_checkpoint_step = ev.get("step")
            elif kind == "error":
                self.error = ev
            elif kind == "samples":
                if isinstance(ev.get("samples"), list):
                    self.samples = ev
                    self.samples_seen += 1
            elif kind == "status":
                self.message = ev.get("message") or ev.get("state") or ""
                self.message_state = ev.get("state") or ""
                self._segment(ev.get("state"), t)
        return plot_changed

    @property
    def seen_signals(self) -> set[str]:
        return set(self.signals) | set(self.eval_signals)

    def _segment(self, state: str | None, t: float | None) -> None:
        if not isinstance(t, (int, float)):
            return
        open_ = bool(self.segments) and self.segments[-1][1] is None
        if state == "running" and not open_:
            self.segments.append([t, None])
        elif state in FINAL and open_:
            self.segments[-1][1] = t

    def train_seconds(self, now: float, live: bool) -> float | None:
        """Seconds spent training. An open segment runs to `now` while the process lives,
        else to the last event (a killed run stopped billing when it stopped writing)."""
        if not self.segments:
            return None
        total = 0.0
        for start, end in self.segments:
            if end is None:
                end = now if live else (self.last_time or start)
            total += max(end - start, 0.0)
        return total


def _add_signals(into: dict[str, tuple[list, list]], ev: dict) -> bool:
    signals, step = ev.get("signals"), ev.get("step")
    if not isinstance(signals, dict) or not isinstance(step, int):
        return False
    added = False
    for name, value in signals.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps, values = into.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
            added = True
    return added
