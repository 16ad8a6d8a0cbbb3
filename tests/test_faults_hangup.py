"""Issue 16: a run outlives its terminal. A foreground demo run in a pseudo-terminal whose
master side is closed (what a dropped SSH connection does: SIGHUP to the session) keeps
training, writes only to stdout.log from then on, and `workbench stop` stops it; with
train.on_hangup = "stop" it checkpoints and stops by itself.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, workbench
from workbench.rundir import RunDir

pytestmark = pytest.mark.slow

DEMO = REPO / "profiles" / "demo.toml"


def _start_in_a_terminal(cwd: Path, *sets: str) -> tuple[int, int]:
    """`workbench run demo` as a person types it: the session leader of a new terminal."""
    args = [sys.executable, "-m", "workbench", "run", str(DEMO), "--runs-dir", "runs",
            "--set", "train.grad_accum=1", "--set", "train.eval_steps=0",
            "--set", "eval.after_training=false"]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once (nothing of pytest runs here)
        os.chdir(cwd)
        os.execve(sys.executable, args, env)
    return pid, master


def _read_until(master: int, text: str, timeout: float = 120) -> str:
    seen = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if text.encode() in seen:
                return seen.decode(errors="replace")
    raise AssertionError(f"{text!r} never appeared; the terminal showed:\n"
                         f"{seen.decode(errors='replace')}")


def _end(pid: int, master: int | None) -> None:
    """After a test, whatever happened: close the terminal and make sure the run is gone."""
    if master is not None:
        os.close(master)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _run_of(cwd: Path) -> RunDir:
    return RunDir(next((cwd / "runs").iterdir()))


def _wait(predicate, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _reap(pid: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the run did not end")


def test_a_foreground_run_outlives_its_terminal_and_stops_on_request(tmp_path):
    pid, master = _start_in_a_terminal(tmp_path, "train.max_steps=100000",
                                       "train.save_steps=100000", "train.logging_steps=1")
    try:
        shown = _read_until(master, "step 2/")
        assert "closing this terminal will not stop the run; Ctrl-C stops it" in shown
        run = _run_of(tmp_path)
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP
        master = None
        time.sleep(1.0)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the run died with its terminal"
        step = run.read_status().get("step") or 0
        _wait(lambda: (run.read_status().get("step") or 0) > step + 2)  # still training
        assert run.effective_state() == "running"
        log = run.log_path.read_text()
        assert "the terminal went away (SIGHUP): the run goes on" in log
        lines_after = log[log.index("the terminal went away"):]
        assert "step " in lines_after  # progress now lands in stdout.log

        proc = workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
        st = run.read_status()
        assert st["state"] == "stopped", proc.stdout
        assert (run.checkpoints_dir / f"checkpoint-{st['step']}").is_dir()
        status = _reap(pid)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert "Traceback" not in run.log_path.read_text()
    finally:
        _end(pid, master)


def test_on_hangup_stop_checkpoints_then_stops(tmp_path):
    pid, master = _start_in_a_terminal(tmp_path, "train.max_steps=100000",
                                       "train.save_steps=100000", "train.logging_steps=1",
                                       "train.on_hangup=stop")
    try:
        shown = _read_until(master, "step 2/")
        assert "closing this terminal stops the run after a checkpoint" in shown
        run = _run_of(tmp_path)
        os.close(master)
        master = None
        status = _reap(pid)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        st = run.read_status()
        assert st["state"] == "stopped"
        assert (run.checkpoints_dir / f"checkpoint-{st['step']}").is_dir()
        assert "train.on_hangup = \"stop\"" in run.log_path.read_text()
    finally:
        _end(pid, master)
