"""Starting, detaching, stopping and resuming runs. Used by the command line and the app.

No torch at import time: `stop`, `list` and the status helpers must stay instant.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from workbench.profile import Profile, load_profile, save_profile
from workbench.rundir import FINAL_STATES, RunDir, iso

LIBRARIES = ("workbench", "torch", "transformers", "peft", "trl", "accelerate", "datasets",
             "bitsandbytes", "tokenizers")


class ControlError(Exception):
    """A run cannot do what was asked (already finished, still running, ...)."""


class StopRequest:
    """A stop asked for (SIGINT / SIGTERM) as the runner's StopFlag records it, without torch:
    it exists from a run process's first line, and the runner takes it over (`execute(stop=)`),
    so a stop while the run is still starting is never lost."""

    def __init__(self):
        import threading

        self._event = threading.Event()
        self.signals = 0

    def request(self) -> None:
        self.signals += 1
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class StartingStop:
    """SIGINT / SIGTERM while a run process starts (importing torch, planning, before the
    runner installs its own handlers): recorded in `flag`, never fatal, so the run ends
    `stopped` with a line instead of dying `interrupted`. A second one quits at once
    (KeyboardInterrupt). `listener(signum)` hears the first, e.g. to say so in the events."""

    def __init__(self):
        import threading

        self.flag = StopRequest()
        self.listener: Callable[[int], None] | None = None
        # Python lets only the main thread install handlers; elsewhere the runner's own apply.
        main = threading.current_thread() is threading.main_thread()
        self._previous = {s: signal.signal(s, self._on_signal)
                          for s in (signal.SIGINT, signal.SIGTERM)} if main else {}

    def _on_signal(self, signum, frame) -> None:
        self.flag.request()
        if self.flag.signals > 1:
            raise KeyboardInterrupt
        if self.listener is not None:
            self.listener(signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


RESUMING_NOTE = "resuming: a new session starts (loading the training libraries)"


def starting_session(run: RunDir, pid: int) -> None:
    """A new process takes the run over (start, resume): the last session's ending (its
    message, hint, end time, evaluation state) is no longer the run's, so a reader never shows
    "stopped at step 100" from before while this session starts. A run that had ended gets a
    status event saying so, the first of the new session (the app's header shows the latest)."""
    ended = run.effective_state() in (*FINAL_STATES, "interrupted")
    run.write_status(state="starting", pid=pid, message=None, hint=None, ended_at=None,
                     evaluation=None)
    if ended:
        try:
            run.append_event("status", state="starting", message=RESUMING_NOTE)
        except OSError:
            pass  # a full disk is met, and reported, by the run itself


def stopped_before_training(run: RunDir, on_event: Callable[[dict], None],
                            from_checkpoint: str | None = None) -> str:
    """End a run that was asked to stop while it started: `stopped`, with a line."""
    last = (run.checkpoints_dir / from_checkpoint) if from_checkpoint else run.last_checkpoint()
    message = ("stopped before training began; " + (
        f"resume continues from {last.name}" if last is not None and last.is_dir()
        else "nothing to resume from"))
    try:
        run.write_status(state="stopped", message=message, ended_at=iso(time.time()))
        event = run.append_event("status", state="stopped", message=message)
    except OSError:  # a full disk: the terminal still says it
        event = {"type": "status", "state": "stopped", "message": message}
    on_event(event)
    return "stopped"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def create_run(plan, runs_dir: Path | None = None) -> RunDir:
    """Make the run folder and write the resolved profile: the profile with every default
    filled in, plus what was decided at start (device, precision, library versions,
    dataset hash). `resume` reads only this file."""
    profile: Profile = plan.profile
    runs_dir = Path(runs_dir or profile.train.runs_dir)
    run = RunDir.create(runs_dir, profile.name)
    profile.resolved = {
        "created_at": iso(time.time()),
        "seed": profile.train.seed,
        "dataset_hash": plan.dataset_hash,
        **({"manifest_hash": plan.manifest_hash} if plan.manifest_hash else {}),
        # A mixture: every source with its hash or Hub revision, what it was asked for and gave.
        **({"sources": plan.sources} if getattr(plan, "sources", None) else {}),
        "device": plan.device,
        "precision": plan.precision,
        "gradient_checkpointing": plan.gradient_checkpointing,
        # A streamed run holds only a sample of its rows: "streamed" instead of a count.
        "train_rows": len(plan.train_rows) if getattr(plan, "stream", None) is None else "streamed",
        "eval_rows": len(plan.eval_rows),
        "versions": library_versions(),
    }
    save_profile(profile, run.profile_path)
    # The creating process owns the run until a detached runner replaces the pid with its own,
    # so a reader never sees a "starting" run without a live process behind it.
    run.write_status(state="starting", pid=os.getpid(), step=0, total_steps=None,
                     profile=profile.name, method=profile.train.method,
                     created_at=profile.resolved["created_at"],
                     run_dir=str(run.path))
    source = getattr(plan, "data_source", "")  # tokenized now, or from the tokenized-data cache
    for note in ([source] if source else []) + plan.notes:
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(note + "\n")
    return run


def run_profile(run: RunDir) -> Profile:
    return load_profile(run.profile_path)


def spawn_detached(run: RunDir, resume: bool = False, from_checkpoint: str | None = None) -> int:
    """Start the runner in its own session (setsid): closing the terminal or losing the SSH
    connection sends SIGHUP to the terminal's session, which this process is not in."""
    cmd = [sys.executable, "-m", "workbench.pipeline.worker", str(run.path)]
    if resume:
        cmd.append("--resume")
        if from_checkpoint:
            cmd += ["--from", from_checkpoint]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # A new session from here on (resume): the last one's ending is no longer the run's.
    starting_session(run, os.getpid())
    log = open(run.log_path, "ab")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    finally:
        log.close()
    run.write_status(pid=proc.pid)
    return proc.pid


def check_resumable(run: RunDir) -> None:
    status = run.read_status()
    state = run.effective_state(status)
    if state in ("starting", "running"):
        raise ControlError(f"{run.name} is still running (pid {status.get('pid')}); "
                           f"watch it with `workbench attach {run.name}`")
    if state == "finished":
        raise ControlError(f"{run.name} already finished at step {status.get('step')}; "
                           "start a new run to train further")


def request_stop(run: RunDir) -> dict:
    """Send the run's process SIGTERM (checkpoint and stop); the status it was sent in.
    Raises ControlError, before sending anything, when there is nothing to stop."""
    status = run.read_status()
    state = run.effective_state(status)
    if state in FINAL_STATES or state == "interrupted":
        raise ControlError(f"{run.name} is not running (state: {state})")
    pid = status.get("pid")
    if not pid:
        raise ControlError(f"{run.name} has no process id yet; try again in a moment")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended between the read and the signal
        raise ControlError(f"{run.name} is not running (state: {run.effective_state()})") from None
    return status


def wait_stopped(run: RunDir, asked: dict, wait_s: float = 0.0, poll_s: float = 0.25) -> str:
    """Wait up to `wait_s` for the run to end after `request_stop`; its state then. A run
    asked while still starting whose process died of the signal before it could catch it
    (the first instants of a process) is recorded as stopped, not interrupted: it was asked."""
    deadline = time.time() + wait_s
    state = run.effective_state()
    while time.time() < deadline:
        state = run.effective_state()
        if state in FINAL_STATES or state == "interrupted":
            break
        time.sleep(poll_s)
    if state == "interrupted" and asked.get("state") == "starting":
        status = run.read_status()
        if status.get("state") == "starting" and status.get("pid") == asked.get("pid"):
            stopped_before_training(run, lambda ev: None)
            state = "stopped"
    return state


def stop_run(run: RunDir, wait_s: float = 0.0, poll_s: float = 0.25) -> str:
    """Ask a run to checkpoint and stop (SIGTERM), optionally waiting for it."""
    asked = request_stop(run)
    return wait_stopped(run, asked, wait_s, poll_s)


def follow(run: RunDir, on_event: Callable[[dict], None], from_start: bool = True) -> str:
    from workbench.rundir import iter_follow

    for event in iter_follow(run, from_start=from_start):
        on_event(event)
    return run.effective_state()
