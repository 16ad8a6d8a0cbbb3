"""A real 4-trial grid sweep of the demo profile on the CPU, through the command line:

- trial 1 finishes; the sweep and trial 2 are killed with kill -9 mid-trial (a checkpoint
  exists); `workbench sweep resume` re-runs no finished trial, resumes trial 2 in its own run
  folder and completes the rest;
- trial 3 (learning rate 1e5, no clipping) diverges to NaN: recorded as failed with its reason,
  and the sweep goes on;
- trial 4 (learning rate 1e-8: it learns nothing) is pruned by the median pruner;
- the answer: a ranked table with a recommendation, report.md with the plot, and
  `workbench runs compare` on the trials' runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.rundir import RunDir, pid_alive

DEMO = Path(__file__).resolve().parent.parent / "profiles" / "demo.toml"
SETS = ["train.max_steps=60", "train.eval_steps=10", "train.save_steps=10", "train.logging_steps=5",
        "eval.max_test_rows=4", 'eval.prompts=""']
GRID = "train.learning_rate+train.max_grad_norm=2e-3+1.0,1e-3+1.0,1e5+0,1e-8+1.0"


def wb(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _wait(what, predicate, timeout: float = 240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sweep_survives_kill_records_nan_prunes_and_ranks(tmp_path):
    sets = [a for s in SETS for a in ("--set", s)]
    wb("sweep", str(DEMO), "--grid", GRID, *sets, "--detach", "--runs-dir", "runs",
       "--sweeps-dir", "sweeps", cwd=tmp_path)
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    trials_path = sweep_dir / "trials.json"

    def trials():
        return json.loads(trials_path.read_text())

    def second_trial_has_checkpoint():
        t = trials()
        if t[0]["state"] != "finished" or not t[1].get("run"):
            return None
        run = RunDir(Path(t[1]["run"]))
        return run if run.last_checkpoint() is not None else None

    second = _wait("trial 2 to write a checkpoint", second_trial_has_checkpoint)
    first = RunDir(Path(trials()[0]["run"]))
    first_events = first.events_path.read_text()
    sweep_pid = json.loads((sweep_dir / "status.json").read_text())["pid"]
    trial_pid = second.read_status()["pid"]
    # A machine crash, as far as the sweep can tell: both processes die without a word.
    os.kill(sweep_pid, signal.SIGKILL)
    os.kill(trial_pid, signal.SIGKILL)
    _wait("the killed processes to go", lambda: not pid_alive(sweep_pid) and not pid_alive(trial_pid))
    assert trials()[1]["state"] == "running"
    assert "interrupted" in wb("sweeps", "--sweeps-dir", "sweeps", cwd=tmp_path).stdout

    out = wb("sweep", "resume", sweep_dir.name, "--sweeps-dir", "sweeps", cwd=tmp_path).stdout
    final = trials()
    assert [t["state"] for t in final] == ["finished", "finished", "failed", "pruned"], final
    # Nothing finished ran again, and the killed trial continued in its own run folder.
    assert first.events_path.read_text() == first_events
    assert final[1]["run"] == str(second.path)
    assert second.read_status()["state"] == "finished"
    assert any("resuming from checkpoint-" in (e.get("message") or "")
               for e in second.read_events()[0])
    assert len(list((tmp_path / "runs").iterdir())) == 4
    assert "nan" in final[2]["reason"]
    pruned = RunDir(Path(final[3]["run"])).read_status()
    assert pruned["state"] == "stopped" and pruned["step"] < 60

    # The answer: ranked, with a recommendation and the plot.
    assert "quality/CPU-h" in out and "recommendation:" in out
    assert "trial 3 (learning_rate=1e+05 max_grad_norm=0) failed: nan:" in out
    report = (sweep_dir / "report.md").read_text()
    assert "**Recommendation:**" in report and "![loss curves](loss.svg)" in report
    assert (sweep_dir / "loss.svg").read_text().count("<polyline") >= 4
    data = json.loads(wb("sweep", "report", sweep_dir.name, "--sweeps-dir", "sweeps", "--json",
                         cwd=tmp_path).stdout)
    ranked = [r for r in data["runs"] if r["quality_per_hour"] is not None]
    assert len(ranked) == 2 and data["hour_unit"] == "CPU-hours"
    assert ranked[0]["quality_per_hour"] >= ranked[1]["quality_per_hour"]

    # Any runs compare, the trials' included.
    cmp = json.loads(wb("runs", "compare", first.name, second.name, "--runs-dir", "runs", "--json",
                        cwd=tmp_path).stdout)
    assert cmp["differing_keys"] == ["train.learning_rate"]
    assert "r=" not in cmp["recommendation"] and "learning_rate=" in cmp["recommendation"]
