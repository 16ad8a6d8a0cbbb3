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
        "device": plan.device,
        "precision": plan.precision,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "train_rows": len(plan.train_rows),
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


def stop_run(run: RunDir, wait_s: float = 0.0, poll_s: float = 0.25) -> str:
    """Ask a run to checkpoint and stop (SIGTERM), optionally waiting for it."""
    status = run.read_status()
    state = run.effective_state(status)
    if state in FINAL_STATES or state == "interrupted":
        raise ControlError(f"{run.name} is not running (state: {state})")
    pid = status.get("pid")
    if not pid:
        raise ControlError(f"{run.name} has no process id yet; try again in a moment")
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        state = run.effective_state()
        if state in FINAL_STATES or state == "interrupted":
            return state
        time.sleep(poll_s)
    return run.effective_state()


def follow(run: RunDir, on_event: Callable[[dict], None], from_start: bool = True) -> str:
    from workbench.rundir import iter_follow

    for event in iter_follow(run, from_start=from_start):
        on_event(event)
    return run.effective_state()
