"""The sweep folder: `sweeps/<profile>-<UTC timestamp>/`.

    sweep.json     the definition: base profile, axes, options, runs folder (written once)
    profile.toml   the base profile, resolved (every trial is it plus the trial's overrides)
    trials.json    one entry per trial: overrides, state, run folder, reason; replaced atomically
    status.json    the sweep's own state and pid (as a run's)
    study.db       the Optuna study (SQLite): sampling and pruning state, resumable
    trials/        what each trial process hands back (its run folder) before it trains
    report.md      the ranked table, the recommendation and the loss curves (loss.svg)

The sweep process is the only writer of trials.json and status.json; everything else reads.
Trial states: pending, running, finished, failed, pruned, stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.rundir import iso, pid_alive, utc_stamp, write_json_atomic

TRIAL_STATES = ("pending", "running", "finished", "failed", "pruned", "stopped")
DONE_TRIAL_STATES = ("finished", "failed", "pruned")  # never run again


class SweepNotFound(Exception):
    pass


def default_sweeps_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_SWEEPS_DIR", "sweeps"))


@dataclass
class SweepDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def definition_path(self) -> Path:
        return self.path / "sweep.json"

    @property
    def profile_path(self) -> Path:
        return self.path / "profile.toml"

    @property
    def trials_path(self) -> Path:
        return self.path / "trials.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.path / 'study.db'}"

    @property
    def handoff_dir(self) -> Path:
        return self.path / "trials"

    @property
    def log_path(self) -> Path:
        return self.path / "sweep.log"

    @classmethod
    def create(cls, sweeps_dir: Path, profile_name: str) -> "SweepDir":
        sweeps_dir = Path(sweeps_dir).resolve()
        sweeps_dir.mkdir(parents=True, exist_ok=True)
        base = f"{profile_name}-{utc_stamp()}"
        for n in range(1, 1000):
            path = sweeps_dir / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / "trials").mkdir()
            return cls(path)
        raise RuntimeError(f"could not create a sweep folder under {sweeps_dir}")

    # ---- files ----------------------------------------------------------------------------
    def _read(self, path: Path, default):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return default

    def read_definition(self) -> dict:
        return self._read(self.definition_path, {})

    def read_trials(self) -> list[dict]:
        return self._read(self.trials_path, [])

    def write_trials(self, trials: list[dict]) -> None:
        write_json_atomic(self.trials_path, trials)

    def read_status(self) -> dict:
        return self._read(self.status_path, {})

    def write_status(self, **fields) -> dict:
        status = self.read_status()
        status.update(fields)
        status["updated_at"] = iso(__import__("time").time())
        write_json_atomic(self.status_path, status)
        return status

    def effective_state(self, status: dict | None = None) -> str:
        status = self.read_status() if status is None else status
        state = status.get("state", "unknown")
        if state in ("starting", "running") and not pid_alive(status.get("pid")):
            return "interrupted"
        return state

    def log(self, line: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")

    def progress(self) -> tuple[int, int]:
        trials = self.read_trials()
        return sum(t["state"] in DONE_TRIAL_STATES for t in trials), len(trials)


def list_sweeps(sweeps_dir: Path | None = None) -> list[SweepDir]:
    sweeps_dir = sweeps_dir or default_sweeps_dir()
    if not sweeps_dir.is_dir():
        return []
    found = [SweepDir(p.resolve()) for p in sweeps_dir.iterdir()
             if p.is_dir() and (p / "sweep.json").is_file()]
    return sorted(found, key=lambda s: (s.read_definition().get("created_at") or "", s.name))


def find_sweep(ref: str, sweeps_dir: Path | None = None) -> SweepDir:
    sweeps_dir = sweeps_dir or default_sweeps_dir()
    direct = Path(ref)
    if (direct / "sweep.json").is_file():
        return SweepDir(direct.resolve())
    if (sweeps_dir / ref / "sweep.json").is_file():
        return SweepDir((sweeps_dir / ref).resolve())
    matches = [s for s in list_sweeps(sweeps_dir) if s.name.startswith(ref)]
    if matches:
        return matches[-1]
    known = ", ".join(s.name for s in list_sweeps(sweeps_dir)[-5:]) or "none"
    raise SweepNotFound(f"no sweep {ref!r}: not a sweep folder, and nothing under {sweeps_dir}/ "
                        f"starts with it (latest sweeps there: {known}). Pass the sweep's folder "
                        "path, or --sweeps-dir DIR.")
