"""The demo profile on two CPU processes through torchrun (gloo), driven through the real
command line: it finishes like any run, rank 0 owns the run folder, the ranks saw different
rows and the loss follows the one-process run at the same global batch; `stop` checkpoints
once and stops every rank; a resume continues on another number of processes; kill -9 of
rank 1 ends the run `failed`, naming rank 1, within a minute."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import workbench
from workbench.rundir import RunDir, pid_alive
from workbench.profile import load_profile

pytestmark = pytest.mark.slow

# Small and fast: no evaluation, logging every 2 steps. Global batch 16 either way:
# 1 process x batch 4 x accum 4, or 2 processes x batch 4 x accum 2.
FAST = ["--set", "eval.after_training=false", "--set", "train.eval_steps=0",
        "--set", "train.logging_steps=2", "--set", "train.warmup_ratio=0.0"]


def only_run(runs: Path) -> RunDir:
    found = [p for p in runs.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return RunDir(found[0])


def log_losses(run: RunDir) -> list[float]:
    events, _ = run.read_events()
    return [e["loss"] for e in events if e["type"] == "log"]


def ranks(run: RunDir) -> dict[int, dict]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text())
            for p in (run.path / "ranks").glob("rank-*.json")}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_two_processes_finish_like_one(tmp_path, needs_tiny_model):
    steps = ["--set", "train.max_steps=12", "--set", "train.save_steps=6"]
    one = workbench("run", "demo", "--runs-dir", "one", *FAST, *steps, cwd=tmp_path)
    assert one.returncode == 0, one.stdout + one.stderr
    two = workbench("run", "demo", "--procs", "2", "--set", "train.grad_accum=2",
                    "--runs-dir", "two", *FAST, *steps, cwd=tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "distributed: 2 CPU processes (gloo), world size 2, ddp" in two.stdout

    run = only_run(tmp_path / "two")
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 12
    assert status["world_size"] == 2 and status["launch"]["strategy"] == "ddp"
    # Rank 0 owns the folder: one adapter, checkpoints with both ranks' RNG states, the
    # launcher's pid (the command line process), not a rank's.
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    cp = run.path / "checkpoints" / "checkpoint-12"
    assert (cp / "rng_state_0.pth").is_file() and (cp / "rng_state_1.pth").is_file()
    rec = ranks(run)
    assert set(rec) == {0, 1} and status["pid"] not in (rec[0]["pid"], rec[1]["pid"])
    assert rec[0]["state"] == rec[1]["state"] == "finished"
    # Different data on each rank, and all of a step's batch rows: 12 steps x 2 micro-batches
    # x the demo's batch_size (packs of rows: one a micro-batch).
    seen0, seen1 = set(rec[0]["seen_rows"]), set(rec[1]["seen_rows"])
    batch = load_profile("demo").train.batch_size
    assert len(rec[0]["seen_rows"]) == len(rec[1]["seen_rows"]) == 12 * 2 * batch
    assert len(seen0 & seen1) <= 2, "the ranks trained on the same rows"
    # The same global batch learns the same way: final logged loss within 10%.
    single, double = log_losses(only_run(tmp_path / "one")), log_losses(run)
    assert single[-1] == pytest.approx(double[-1], rel=0.10), (single, double)
    listed = json.loads(workbench("runs", "--json", "--runs-dir", "two", cwd=tmp_path,
                                  check=True).stdout)
    assert [r["state"] for r in listed] == ["finished"]


def test_stop_then_resume_on_one_process(tmp_path, needs_tiny_model):
    # Start detached on two processes, stop it: one checkpoint, `stopped`, no process left.
    started = workbench("run", "demo", "--procs", "2", "--detach", "--set", "train.grad_accum=2",
                        "--set", "train.max_steps=30", "--set", "train.save_steps=1000",
                        "--runs-dir", "runs", *FAST, cwd=tmp_path)
    assert started.returncode == 0, started.stdout + started.stderr
    run = only_run(tmp_path / "runs")
    wait_for(lambda: (run.read_status().get("step") or 0) >= 3, 240, "step 3")
    stopped = workbench("stop", run.name, "--runs-dir", "runs", "--timeout", "120", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    status = run.read_status()
    assert status["state"] == "stopped", status
    cps = run.checkpoints()
    assert len(cps) == 1 and cps[0][0] == status["step"]
    first = ranks(run)
    wait_for(lambda: not any(pid_alive(r["pid"]) for r in first.values())
             and not pid_alive(status["pid"]), 30, "every process to exit")
    first_rows = set(first[0]["seen_rows"]) | set(first[1]["seen_rows"])
    stopped_at = status["step"]

    # Resume on one process: the same global batch (grad_accum 2 x 2 -> 4), the data order
    # goes on (rows of this epoch not seen again), the steps continue.
    resumed = workbench("resume", run.name, "--procs", "1", "--runs-dir", "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "gradient accumulation 2 -> 4 keeps the global batch of 4" in resumed.stdout
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 30
    assert status["world_size"] == 1 and status["grad_accum_per_rank"] == 4
    after = set(ranks(run)[0]["seen_rows"])
    global_batch = 4 * load_profile("demo").train.batch_size  # grad_accum 4 on one process
    assert len(after) >= (30 - stopped_at) * global_batch * 0.9
    assert len(after & first_rows) <= 3, "the resumed run started the data over"



def test_kill_9_of_rank_1_fails_the_run_naming_it(tmp_path, needs_tiny_model):
    # kill -9 of rank 1: failed, naming rank 1, within 60 s; nothing left running.
    again = workbench("run", "demo", "--procs", "2", "--detach", "--set", "train.max_steps=200",
                      "--runs-dir", "killed", *FAST, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    victim = only_run(tmp_path / "killed")
    wait_for(lambda: (victim.read_status().get("step") or 0) >= 2, 240, "step 2")
    rec = ranks(victim)
    os.kill(rec[1]["pid"], signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: victim.read_status().get("state") == "failed", 60, "state failed")
    assert time.time() - killed_at < 60
    status = victim.read_status()
    assert "rank 1 was killed by SIGKILL" in status["message"], status["message"]
    assert status["failed_rank"] == 1
    wait_for(lambda: not any(pid_alive(r["pid"]) for r in rec.values())
             and not pid_alive(status["pid"]), 45, "every process to exit")


def test_one_process_run_resumes_on_two(tmp_path, needs_tiny_model):
    started = workbench("run", "demo", "--detach", "--set", "train.max_steps=24",
                        "--set", "train.save_steps=1000", "--runs-dir", "runs", *FAST,
                        cwd=tmp_path)
    assert started.returncode == 0, started.stdout + started.stderr
    run = only_run(tmp_path / "runs")
    wait_for(lambda: (run.read_status().get("step") or 0) >= 3, 240, "step 3")
    stopped = workbench("stop", run.name, "--runs-dir", "runs", "--timeout", "120", cwd=tmp_path)
    assert stopped.returncode == 0 and run.read_status()["state"] == "stopped"
    resumed = workbench("resume", run.name, "--procs", "2", "--runs-dir", "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "world size 1 -> 2: gradient accumulation 4 -> 2 keeps the global batch of 4" \
        in resumed.stdout
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 24 and status["world_size"] == 2
    assert set(ranks(run)) == {0, 1}


def test_two_machines_on_one_host_share_one_run(tmp_path, needs_tiny_model):
    """`--node-rank` as on two machines (here both on localhost, one CPU process each, a
    static rendezvous at master_addr:master_port): node 1 joins the folder node 0 created."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["run", "demo", "--runs-dir", "runs", "--set", "distributed.nnodes=2",
              "--set", f"distributed.master_port={port}", "--set", "train.max_steps=6",
              "--set", "train.save_steps=3", *FAST]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    node1 = subprocess.Popen([sys.executable, "-m", "workbench", *common, "--node-rank", "1"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        node0 = workbench(*common, "--node-rank", "0", cwd=tmp_path, timeout=600)
        out1, _ = node1.communicate(timeout=120)
    finally:
        if node1.poll() is None:
            node1.kill()
    assert node0.returncode == 0, node0.stdout + node0.stderr
    assert node1.returncode == 0, out1
    run = only_run(tmp_path / "runs")
    assert f"node 1: joining {run.name}" in out1
    status = run.read_status()
    assert status["state"] == "finished" and status["world_size"] == 2
    assert status["launch"]["nnodes"] == 2
    rec = ranks(run)
    assert set(rec) == {0, 1} and rec[1]["state"] == "finished"
    node = json.loads((run.path / "ranks" / "node-1.json").read_text())
    assert node["state"] == "finished"
