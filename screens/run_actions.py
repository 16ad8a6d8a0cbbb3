"""The blocking work behind the Runs and Train screens: reading run folders and NVML,
starting, stopping, resuming and deleting runs. Screens call these from thread workers and
show the result; nothing here touches a widget. Engine modules are imported inside the
functions so that opening the app imports none of them it does not need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


LOG_TAIL_BYTES = 16 * 1024


class ActionError(Exception):
    """An action could not be done; the message is for people (shown as a notification)."""


@dataclass(frozen=True)
class RunRow:
    path: str
    name: str
    state: str
    step: int
    total_steps: int | None
    loss: float | None
    created_at: str | None
    duration_s: float | None
    device: str | None
    pid: int | None

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")


def scan_runs(runs_dir: Path, now: float | None = None) -> list[RunRow]:
    """Every run under `runs_dir`, newest first."""
    from workbench.rundir import list_runs

    now = time.time() if now is None else now
    rows = []
    for run in reversed(list_runs(runs_dir)):
        st = run.read_status()
        if not st and not run.path.exists():
            continue  # deleted since it was listed
        state = run.shown_state(st)  # a sweep's pruned trial reads "pruned", as in `workbench runs`
        rows.append(RunRow(
            path=str(run.path), name=run.name, state=state, step=st.get("step") or 0,
            total_steps=st.get("total_steps"), loss=st.get("loss"),
            created_at=st.get("created_at"),
            # The run's own time, as `workbench runs` and `runs compare` count it.
            duration_s=run.active_seconds(st, now=now),
            device=st.get("device"), pid=st.get("pid")))
    return rows


def read_telemetry() -> tuple[list[dict], str]:
    """(one dict per GPU, reason when there are none). Never raises: a telemetry hiccup is
    shown as text, not as an error."""
    from dataclasses import asdict

    from workbench.estimate.gpu import telemetry

    try:
        t = telemetry()
    except Exception as exc:  # pragma: no cover - telemetry() already wraps NVML
        return [], f"GPU telemetry failed: {exc}"
    return [asdict(g) for g in t.gpus], t.reason


def start_detached(profile_ref: str, runs_dir: Path, overrides: list[str] = ()) -> Path:
    """Plan and start a run through the command line in a child process, detached.

    Planning imports torch and transformers and loads the tokenizer; done in the app it
    would take those (hundreds of MB) into the app for good. The child exits once the
    runner is started in its own session, so the run outlives the app."""
    cmd = [sys.executable, "-m", "workbench", "run", str(profile_ref), "--detach",
           "--runs-dir", str(runs_dir)]
    for item in overrides:
        cmd += ["--set", item]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        raise ActionError(f"planning {profile_ref} took over 15 minutes; "
                          f"try `workbench run {profile_ref}` in a shell to see why") from None
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()]
        text = "\n".join(lines[-6:]) or f"exit status {proc.returncode}"
        raise ActionError(text.removeprefix("error: "))
    for line in proc.stdout.splitlines():
        if line.strip().startswith("folder:"):
            return Path(line.split(":", 1)[1].strip())
    raise ActionError(f"started, but the run folder was not reported:\n{proc.stdout[-400:]}")


def stop(path: str) -> str:
    from workbench.train.control import ControlError, stop_run
    from workbench.rundir import RunDir

    try:
        return stop_run(RunDir(Path(path)), wait_s=0)
    except (ControlError, ProcessLookupError, PermissionError) as exc:
        raise ActionError(str(exc)) from None


def resume(path: str) -> int:
    from workbench.train.control import ControlError, check_resumable, spawn_detached
    from workbench.rundir import RunDir

    run = RunDir(Path(path))
    try:
        check_resumable(run)
        return spawn_detached(run, resume=True)
    except (ControlError, OSError) as exc:
        raise ActionError(str(exc)) from None


def delete(path: str) -> None:
    from workbench.rundir import RunDir

    run = RunDir(Path(path))
    if not run.status_path.exists():
        raise ActionError(f"{path} is not a run folder (no status.json); nothing deleted")
    state = run.effective_state()
    if state in ("starting", "running"):
        raise ActionError(f"{run.name} is running; stop it first (x), then delete it")
    # Renamed to a hidden name first: a scan running meanwhile sees the run whole or not at
    # all, never half deleted (it listed such a run as "unknown").
    doomed = run.path.with_name(f".deleting-{run.name}")
    try:
        run.path.rename(doomed)
        shutil.rmtree(doomed)
    except OSError as exc:
        raise ActionError(f"could not delete {run.path}: {exc}") from None


@dataclass
class RunPoll:
    events: list[dict]
    offset: int
    status: dict
    state: str
    log_text: str     # log bytes since `log_size` (or its tail when it restarted)
    log_reset: bool   # True: `log_text` replaces what was shown
    log_size: int


def poll_run(path: str, offset: int, log_size: int) -> RunPoll:
    """New events since `offset`, the status, and the log bytes written since `log_size`."""
    from workbench.rundir import RunDir

    run = RunDir(Path(path))
    events, offset = run.read_events(offset)
    status = run.read_status()
    text, reset, size = "", False, 0
    try:
        size = run.log_path.stat().st_size
        if size != log_size:
            # Grown a little: read what is new. First read, truncated, or grown a lot: the tail.
            reset = size < log_size or log_size == 0 or size - log_size > LOG_TAIL_BYTES
            start = max(size - LOG_TAIL_BYTES, 0) if reset else log_size
            with open(run.log_path, "rb") as fh:
                fh.seek(start)
                text = fh.read(size - start).decode("utf-8", errors="replace")
    except FileNotFoundError:
        pass
    return RunPoll(events, offset, status, run.effective_state(status), text, reset, size)


def run_budget(path: str) -> float | None:
    """The run's budget.gpu_hourly_usd, or None when the profile cannot be read."""
    return run_settings(path)[0]


def run_settings(path: str) -> tuple[float | None, str | None]:
    """(budget.gpu_hourly_usd, train.method) of the run's profile; Nones when it cannot be
    read."""
    from workbench.profile import ProfileError, load_profile

    try:
        profile = load_profile(Path(path) / "profile.toml")
    except (ProfileError, OSError):
        return None, None
    return profile.budget.gpu_hourly_usd, getattr(profile.train, "method", "sft")
