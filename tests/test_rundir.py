"""The run-directory protocol, without training: status, events, checkpoints, lookup."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workbench.rundir import (EVENT_FIELDS, RunDir, RunNotFound, find_run, list_runs,
                                    pid_alive)


@pytest.fixture
def run(tmp_path):
    return RunDir.create(tmp_path / "runs", "demo")


def test_create_names_and_layout(tmp_path):
    a = RunDir.create(tmp_path / "runs", "demo")
    b = RunDir.create(tmp_path / "runs", "demo")  # same second: must not share a folder
    assert a.path != b.path
    assert a.name.startswith("demo-") and a.checkpoints_dir.is_dir()


def test_status_is_replaced_atomically_and_merged(run):
    run.write_status(state="running", pid=os.getpid(), step=0)
    run.write_status(step=5)
    st = json.loads(run.status_path.read_text())
    assert st["state"] == "running" and st["step"] == 5 and "updated_at" in st
    # no temporary files left behind
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []


def test_events_follow_the_documented_schema(run):
    run.append_event("log", step=1, epoch=0.1, loss=2.0, learning_rate=1e-3, grad_norm=1.0,
                     tokens_per_s=100.0, gpu_mem_bytes=None, gpu_mem_peak_bytes=None, eta_s=3.0)
    run.append_event("eval", step=1, epoch=0.1, eval_loss=1.5)
    with pytest.raises(ValueError, match="no fields"):
        run.append_event("log", step=1, colour="red")
    with pytest.raises(ValueError, match="unknown event type"):
        run.append_event("chat", step=1)
    events, offset = run.read_events()
    assert [e["type"] for e in events] == ["log", "eval"]
    assert all(set(e) - {"type", "time"} <= set(EVENT_FIELDS[e["type"]]) for e in events)
    assert offset == run.events_path.stat().st_size


def test_eval_progress_is_a_documented_event(run):
    # The evaluation after training (and `workbench eval`) reports rows done / total.
    run.append_event("eval_progress", stage="test answers", done=60, total=180, eta_s=40.0)
    with pytest.raises(ValueError, match="no fields"):
        run.append_event("eval_progress", stage="test answers", rows=60)
    events, _ = run.read_events()
    assert events[-1]["type"] == "eval_progress" and events[-1]["done"] == 60


def test_nan_is_refused_in_events(run):
    # JSON has no NaN; a reader in another language would choke on it.
    with pytest.raises(ValueError):
        run.append_event("eval", step=1, epoch=0.0, eval_loss=float("nan"))


def test_a_torn_last_line_waits_for_the_next_read(run):
    run.append_event("status", state="running", message="x")
    with open(run.events_path, "a") as fh:
        fh.write('{"type": "log", "step"')  # the runner is mid-write
    events, offset = run.read_events()
    assert len(events) == 1
    with open(run.events_path, "a") as fh:
        fh.write(': 2}\n')
    more, _ = run.read_events(offset)
    assert more == [{"type": "log", "step": 2}]


def test_only_complete_checkpoints_are_listed(run):
    for name in ("checkpoint-5", "checkpoint-10"):
        (run.checkpoints_dir / name).mkdir()
        (run.checkpoints_dir / name / "trainer_state.json").write_text("{}")
    (run.checkpoints_dir / ".staging-15" / "checkpoint-15").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-20").mkdir()  # no trainer state: not complete
    assert [s for s, _ in run.checkpoints()] == [5, 10]
    assert run.last_checkpoint().name == "checkpoint-10"
    removed = run.remove_partial_checkpoints()
    assert [p.name for p in removed] == [".staging-15"]


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(run):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_status(state="running", pid=dead.pid)
    assert not pid_alive(dead.pid)
    assert run.effective_state() == "interrupted"
    run.write_status(pid=os.getpid())
    assert run.effective_state() == "running"


def test_find_run_by_path_name_and_prefix(tmp_path, run):
    run.write_status(state="finished", created_at="2026-01-01T00:00:00+00:00")
    runs_dir = run.path.parent
    assert find_run(str(run.path)).path == run.path
    assert find_run(run.name, runs_dir).path == run.path
    assert find_run("demo", runs_dir).path == run.path
    assert list_runs(runs_dir)[0].path == run.path
    with pytest.raises(RunNotFound, match="no run 'nope'"):
        find_run("nope", runs_dir)
