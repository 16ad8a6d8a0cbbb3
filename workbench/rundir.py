"""The run directory: the contract between the runner and everything that watches it.

Layout (see ARCHITECTURE.md and the README's "Run directory" section)::

    runs/<profile>-<UTC timestamp>/
        profile.toml     fully resolved profile + [resolved] versions, dataset hash, seed
        status.json      current state; always replaced atomically, never edited in place
        events.jsonl     append-only, one JSON object a line
        checkpoints/     checkpoint-<step>/, each renamed into place only when complete, with
                         workbench-manifest.json (sizes, sha256) checked before resume loads it
                         (checkpoints.py); damaged-checkpoint-<step>/: found damaged, kept aside
        adapter/         the final adapter, also renamed into place when complete
        stdout.log       human-readable log (and a detached run's stdout / stderr)

The runner is the only writer. `workbench attach`, `workbench runs` and the app only read,
so every read here tolerates a file that is being written (a torn last line is skipped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

# States a run can be in. "running" with a dead pid is reported as "interrupted" by readers.
STATES = ("starting", "running", "finished", "failed", "stopped")
FINAL_STATES = ("finished", "failed", "stopped")

# Event types and the fields each one carries (besides "type" and "time", a UNIX timestamp).
# This table is the documented schema; tests check the runner writes nothing else.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "log": ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "tokens",
            "gpu_mem_bytes", "gpu_mem_peak_bytes", "eta_s", "signals"),
    # `tokens`: tokens through the model since this process started training (padding not
    # counted), as trl counts them; tokens_per_s is its rate between two logs.
    # `signals`: the method's own values besides the loss ({"rewards/margins": 0.4, ...} for
    # DPO), the ones its module's charts name (workbench/train/methods).
    "eval": ("step", "epoch", "eval_loss", "signals"),
    "gpu": ("gpus",),
    "checkpoint": ("step", "path"),
    "status": ("state", "message"),
    "error": ("kind", "message", "hint"),
    # The memory model's answer at start, and on a GPU the measured peak at the end, so every
    # run checks the estimate (`workbench estimate` explains the terms).
    "estimate": ("peak_bytes", "reserved_bytes", "breakdown", "trainable_params"),
    "memory": ("measured_peak_reserved_bytes", "measured_peak_allocated_bytes",
               "estimated_reserved_bytes", "error_pct"),
    # The evaluation at the end of a run (and `workbench eval`) takes minutes on a CPU: rows
    # scored or answered so far in a stage, a few times a stage (workbench/evaluate/progress.py).
    "eval_progress": ("stage", "done", "total", "eta_s"),
    # GRPO: the latest sampled completions, each with its prompt, every reward, the weighted
    # total and its advantage (the monitor's samples panel), at each logging step.
    "samples": ("step", "samples"),
}

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class RunNotFound(Exception):
    """A run named on the command line does not exist."""


def utc_stamp(now: float | None = None) -> str:
    return datetime.fromtimestamp(now or time.time(), tz=timezone.utc).strftime("%Y%m%d-%H%M%S")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary sibling, fsync, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def profile_path(self) -> Path:
        return self.path / "profile.toml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def log_path(self) -> Path:
        return self.path / "stdout.log"

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir: Path, profile_name: str) -> "RunDir":
        runs_dir = Path(runs_dir).resolve()  # absolute: printed, and handed to a detached process
        runs_dir.mkdir(parents=True, exist_ok=True)
        base = f"{profile_name}-{utc_stamp()}"
        # Two runs started in the same second get -2, -3 ... rather than sharing a folder.
        for n in range(1, 1000):
            path = runs_dir / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / "checkpoints").mkdir()
            return cls(path)
        raise RuntimeError(f"could not create a run folder under {runs_dir}")

    # ---- status ---------------------------------------------------------------------------
    def read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_status(self, **fields: Any) -> dict:
        status = self.read_status()
        status.update(fields)
        status["updated_at"] = iso(time.time())
        write_json_atomic(self.status_path, status)
        return status

    def effective_state(self, status: dict | None = None) -> str:
        """The state as a reader should show it: a running run whose process is gone was
        killed (kill -9, power loss, OOM killer) and can be resumed."""
        status = self.read_status() if status is None else status
        state = status.get("state", "unknown")
        if state in ("starting", "running") and not pid_alive(status.get("pid")):
            return "interrupted"
        return state

    def active_seconds(self, status: dict | None = None, now: float | None = None) -> float | None:
        """The run's own time, what its cost is counted from: status.json's `active_seconds`,
        recorded by the runner as each session ends (`active_until` = that session's
        `ended_at`); else (a live run, one killed, a session ended elsewhere, or a run older
        than the record) counted from its events, a live session up to `now`. Evaluation
        and export commands run later append no time to it."""
        status = self.read_status() if status is None else status
        recorded = status.get("active_seconds")
        if (status.get("state") in FINAL_STATES and isinstance(recorded, (int, float))
                and status.get("active_until") == status.get("ended_at")):
            return float(recorded)
        live = self.effective_state(status) in ("starting", "running")
        return _clock_of(self).seconds(live_until=(time.time() if now is None else now)
                                       if live else None)

    def shown_state(self, status: dict | None = None) -> str:
        """The state as lists show it: effective_state, and "pruned" for a sweep trial its
        sweep's pruner stopped (status.json's `pruned`, written by the sweep for the session
        that ended then; a resumed trial reads as its new state)."""
        status = self.read_status() if status is None else status
        state = self.effective_state(status)
        pruned = status.get("pruned")
        if (state == "stopped" and isinstance(pruned, dict)
                and pruned.get("ended_at") == status.get("ended_at")):
            return "pruned"
        return state

    def mark_pruned(self, sweep: str, reason: str) -> None:
        """Written by a sweep once its pruner has stopped this trial's run (the run's process
        has ended): the run then reads "pruned" (shown_state) until it runs again."""
        status = self.read_status()
        self.write_status(
            pruned={"sweep": sweep, "step": status.get("step"), "reason": reason,
                    "ended_at": status.get("ended_at")},
            message=f"{reason} (sweep {sweep}); `workbench resume {self.name}` would continue it")

    # ---- events ---------------------------------------------------------------------------
    def append_event(self, type_: str, **fields: Any) -> dict:
        if type_ not in EVENT_FIELDS:
            raise ValueError(f"unknown event type {type_!r}")
        unknown = set(fields) - set(EVENT_FIELDS[type_])
        if unknown:
            raise ValueError(f"event {type_!r} has no fields {sorted(unknown)}")
        event = {"type": type_, "time": round(time.time(), 3), **fields}
        line = json.dumps(event, sort_keys=True, allow_nan=False) + "\n"
        # One write() of one line with O_APPEND: concurrent readers see whole lines or none.
        with open(self.events_path, "a", encoding="utf-8") as fh:
            fh.write(line)
        return event

    def read_events(self, offset: int = 0) -> tuple[list[dict], int]:
        """Events from byte `offset` on, and the offset to continue from next time."""
        try:
            with open(self.events_path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        events = []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        for raw in data[:end].splitlines():
            try:
                events.append(json.loads(raw))
            except ValueError:
                continue
        return events, offset + end

    # ---- checkpoints ----------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first. Partial ones live under a dot-name and are
        never listed, so resume cannot pick up half a checkpoint."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            m = CHECKPOINT_RE.match(child.name)
            if m and child.is_dir() and (child / "trainer_state.json").is_file():
                found.append((int(m.group(1)), child))
        return sorted(found)

    def last_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1][1] if cps else None

    def remove_partial_checkpoints(self) -> list[Path]:
        removed = []
        if self.checkpoints_dir.is_dir():
            for child in self.checkpoints_dir.iterdir():
                if child.name.startswith("."):
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child)
        return removed


# ---- a run's own time ----------------------------------------------------------------------
# What a run cost is the time its own processes spent training it and evaluating it after
# training: its sessions. A session opens with a "starting" status (the worker, the launcher,
# the pipeline) or, in runs older than that, a "running" one after a final status; it closes
# at its final status. Events after that belong to later commands (`workbench eval` appends
# its progress) and are no session's: they never change the run's time. A session that ended
# without a word (kill -9) closes at its last event; a pause between stop and resume is nobody's.
SESSION_OPENING_STATES = ("starting", "running")


class SessionClock:
    """Reads a run's events in file order, as many at a time as there are, and keeps its
    sessions: the Runs screen feeds it a live run's new events every poll, not the file."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []  # closed sessions, (start, end) UNIX times
        self.start: float | None = None  # the open session's
        self.last: float | None = None
        self.opened = False  # something besides "starting" happened in the open session
        self.seen = False

    def feed(self, events: list[dict]) -> SessionClock:
        for e in events:
            t = e.get("time")
            if not isinstance(t, (int, float)):
                continue
            state = e.get("state") if e.get("type") == "status" else None
            if self.start is None:
                # The run's first event opens its first session; after a final status only a
                # new session's opening does (a resume), not a later command's progress.
                if not self.seen or state in SESSION_OPENING_STATES:
                    self.start = self.last = t
                    self.opened = state != "starting"
                self.seen = True
                continue
            if state == "starting" and self.opened:
                # The open session was killed: it ended at its last event.
                self.spans.append((self.start, self.last))
                self.start = self.last = t
                self.opened = False
                continue
            self.last = max(self.last, t)
            self.opened = self.opened or state != "starting"
            if state in FINAL_STATES:
                self.spans.append((self.start, self.last))
                self.start = None
        return self

    def session_spans(self, live_until: float | None = None) -> list[tuple[float, float]]:
        """Every session; `live_until`: the run is live, its open session lasts until then."""
        if self.start is None:
            return list(self.spans)
        end = max(self.last, live_until) if live_until is not None else self.last
        return self.spans + [(self.start, end)]

    def seconds(self, live_until: float | None = None) -> float | None:
        spans = self.session_spans(live_until)
        return sum(end - start for start, end in spans) if spans else None


def session_spans(events: list[dict], live_until: float | None = None) -> list[tuple[float, float]]:
    """(start, end) UNIX times of each session of the run, from its events in file order."""
    return SessionClock().feed(events).session_spans(live_until)


def active_seconds(events: list[dict], live_until: float | None = None) -> float | None:
    """Seconds of the run's own sessions (training and its evaluation), None without events."""
    return SessionClock().feed(events).seconds(live_until)


# Each run's clock and how far into its events.jsonl it has read: a list refreshed every few
# seconds reads only what a live run appended since (a long run's file is many MB).
_CLOCKS: dict[Path, tuple[int, int, SessionClock]] = {}
_CLOCKS_LOCK = threading.Lock()


def _clock_of(run: RunDir) -> SessionClock:
    with _CLOCKS_LOCK:
        inode, offset, clock = _CLOCKS.get(run.path, (0, 0, None))
        try:
            st = run.events_path.stat()
            now_inode, size = st.st_ino, st.st_size
        except OSError:
            now_inode, size = 0, 0
        if clock is None or now_inode != inode or size < offset:  # new, or another file now
            offset, clock = 0, SessionClock()
        events, offset = run.read_events(offset)
        clock.feed(events)
        _CLOCKS[run.path] = (now_inode, offset, clock)
        return clock


def default_runs_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_RUNS_DIR", "runs"))


def find_run(ref: str, runs_dir: Path | None = None) -> RunDir:
    """A run by its directory path or by its name under the runs folder. A unique prefix of
    a name is accepted too (`demo` finds the only demo run; the latest if several)."""
    runs_dir = runs_dir or default_runs_dir()
    direct = Path(ref)
    if direct.is_dir() and (direct / "status.json").exists():
        return RunDir(direct.resolve())
    candidate = runs_dir / ref
    if candidate.is_dir() and (candidate / "status.json").exists():
        return RunDir(candidate.resolve())
    matches = [r for r in list_runs(runs_dir) if r.name.startswith(ref)]
    if matches:
        return matches[-1]
    known = ", ".join(r.name for r in list_runs(runs_dir)[-5:]) or "none"
    raise RunNotFound(
        f"no run {ref!r}: not a run folder, and nothing under {runs_dir}/ starts with it "
        f"(latest runs there: {known}). Pass the run's folder path, or --runs-dir DIR."
    )


def list_runs(runs_dir: Path | None = None) -> list[RunDir]:
    """Runs under `runs_dir`, oldest first (names sort by their UTC timestamp)."""
    runs_dir = runs_dir or default_runs_dir()
    if not runs_dir.is_dir():
        return []
    runs = [RunDir(p.resolve()) for p in runs_dir.iterdir()  # hidden: being deleted
            if p.is_dir() and not p.name.startswith(".") and (p / "status.json").exists()]
    return sorted(runs, key=lambda r: (r.read_status().get("created_at") or "", r.name))


def iter_follow(run: RunDir, poll_s: float = 0.5, stop_when_final: bool = True,
                from_start: bool = True) -> Iterator[dict]:
    """Yield events as the runner appends them (what `attach` and the app's monitor use).
    Ends when the run reaches a final state, or its process is gone."""
    offset = 0 if from_start else (run.events_path.stat().st_size if run.events_path.exists() else 0)
    while True:
        events, offset = run.read_events(offset)
        yield from events
        if stop_when_final and not events:
            state = run.effective_state()
            if state in FINAL_STATES or state == "interrupted":
                # One last read: the final status event may have landed after our read.
                events, offset = run.read_events(offset)
                yield from events
                return
        if not events:
            time.sleep(poll_s)
