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
