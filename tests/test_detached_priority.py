"""Detached runs (`workbench run --detach`, the app's start action, `workbench resume`) train at
a lowered CPU priority, so the app and the shell stay responsive beside them; foreground runs
(`workbench --run`) keep the priority they were started with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run the worker's real entry point; only the training itself is replaced by a line that says
# the niceness the process has when training would begin.
PROBE = """
import os, sys
import workbench.pipeline.worker as worker
def report(*a, **k):
    print("nice", os.nice(0))
    group = "/proc/self/autogroup"
    if os.path.exists(group):  # "/autogroup-N nice K"
        print("group", open(group).read().split()[-1])
    return 0
worker.run_in_this_process = report
sys.exit(worker.main([sys.argv[1]]))
"""

FOREGROUND = """
import os, sys
import workbench.pipeline.worker as worker
worker._plan_and_execute = lambda *a, **k: print("nice", os.nice(0)) or 0
from workbench.rundir import RunDir
sys.exit(worker.run_in_this_process(RunDir.create(sys.argv[1], "fg"), resume=False))
"""


def _run(script: str, arg: str, env: dict | None = None) -> dict[str, int]:
    # In its own session, as control.spawn_detached starts a worker.
    out = subprocess.run([sys.executable, "-c", script, arg], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env=env, start_new_session=True, check=False)
    assert out.returncode == 0, out.stderr
    return {ln.split()[0]: int(ln.split()[1]) for ln in out.stdout.splitlines()
            if ln.startswith(("nice ", "group "))}


def _nice_of(script: str, arg: str, env: dict | None = None) -> int:
    return _run(script, arg, env)["nice"]


def test_detached_worker_lowers_its_priority(tmp_path):
    from workbench.pipeline.worker import BACKGROUND_NICE

    assert BACKGROUND_NICE >= 10
    seen = _run(PROBE, str(tmp_path))
    assert seen["nice"] == min(19, os.nice(0) + BACKGROUND_NICE)
    if "group" in seen:  # autogroups: the session's share is lowered too, else nice is moot
        assert seen["group"] == seen["nice"]


def test_priority_can_be_kept(tmp_path):
    env = dict(os.environ, WORKBENCH_RUN_NICE="0")
    assert _nice_of(PROBE, str(tmp_path), env) == os.nice(0)


def test_foreground_run_keeps_its_priority(tmp_path):
    assert _nice_of(FOREGROUND, str(tmp_path)) == os.nice(0)


def test_detached_distributed_launcher_asks_for_background(tmp_path, monkeypatch):
    """The launcher of a detached distributed run lowers its priority (its ranks inherit it);
    the same launcher run by a cluster job script does not."""
    from workbench.pipeline import launch

    seen = {}

    class Popen:
        def __init__(self, cmd, **kw):
            seen["cmd"] = cmd
            self.pid = 4242

    monkeypatch.setattr("subprocess.Popen", Popen)
    from workbench.rundir import RunDir

    run = RunDir.create(tmp_path, "dist")
    launch.spawn_detached_launch(run)
    assert "--background" in seen["cmd"]
