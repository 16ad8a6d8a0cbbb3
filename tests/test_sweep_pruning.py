"""The sweep's median pruner (issue 26, item 4): a trial at its last step (or with no steps
left) is never pruned, it is evaluated and ranked; a pruned trial reads `pruned` in
`workbench runs`, the Runs screen and `runs compare`, and the sweep says why once.

The real SweepRunner drives a real Optuna study over run folders written through the rundir
API as the runner writes them; a trial's "process" is a real child process the pruner's
stop signal (SIGTERM) ends, as it ends a run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from workbench.cli import main
from workbench.profile import load_profile, save_profile
from workbench.rundir import RunDir, iso, pid_alive
from workbench.sweep.definition import build_definition
from workbench.sweep.engine import SweepRunner, _study, create_sweep
from workbench.sweep.report import sweep_comparison

DEMO = REPO / "profiles" / "demo.toml"
TOTAL = 30
# The two trials that finish first: their eval losses at steps 10, 20 and 30.
DONE = ({10: 1.20, 20: 1.00, 30: 0.9276}, {10: 1.10, 20: 0.95, 30: 0.9000})


@pytest.fixture
def sweep_setup(tmp_path):
    profile = load_profile(DEMO)
    definition = build_definition(profile, ["lora.r=4,8,16"], [], None, None, None)
    assert definition.prune
    sweep = create_sweep(profile, definition, [], tmp_path / "runs", tmp_path / "sweeps", [])
    lines: list[str] = []
    runner = SweepRunner(sweep, say=lines.append)
    study = _study(sweep, runner.definition, create=False)
    procs: list[subprocess.Popen] = []
    yield tmp_path, sweep, runner, study, lines, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _run_folder(tmp_path: Path, trial: dict, pid: int | None) -> RunDir:
    run = RunDir.create(tmp_path / "runs", f"demo-t{trial['index']}")
    save_profile(load_profile(DEMO, trial["overrides"]), run.profile_path)
    run.write_status(state="running", pid=pid, created_at=iso(time.time()),
                     started_at=iso(time.time()), step=0, total_steps=TOTAL, device="cpu")
    run.append_event("status", state="starting", message="loading the training libraries")
    run.append_event("status", state="running", message="loading model")
    return run


def _end(run: RunDir, state: str, message: str, **extra) -> None:
    """What the runner's finish() does: status.json, then the final status event."""
    run.write_status(state=state, message=message, ended_at=iso(time.time()), **extra)
    run.append_event("status", state=state, message=message)


def _finished_trials(runner: SweepRunner, study, tmp_path: Path) -> None:
    """Trials 1 and 2 ran to the end: the runner adopts their finished runs, reads their
    evals (reported to the study) and records them finished."""
    for trial, losses in zip(runner.trials[:2], DONE):
        run = _run_folder(tmp_path, trial, None)
        for step, loss in losses.items():
            run.append_event("log", step=step, loss=loss + 0.1)
            run.append_event("eval", step=step, epoch=step / TOTAL, eval_loss=loss)
        # A run takes time: events written within one millisecond (they carry times to the ms)
        # would make a run of 0 s, which has no cost per hour to rank it by.
        time.sleep(0.01)
        _end(run, "finished", "adapter saved", step=TOTAL, eval_loss=losses[TOTAL])
        trial["run"] = str(run.path)
        act = runner._start(study, trial, None)
        assert runner._poll(act)  # ended
        runner._finish(study, act)
    assert [t["state"] for t in runner.trials[:2]] == ["finished", "finished"]


def _live_trial(runner: SweepRunner, study, tmp_path: Path, procs: list):
    """Trial 3, running: a process the stop signal can end, adopted as a sweep adopts a
    trial left running."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    procs.append(proc)
    trial = runner.trials[2]
    run = _run_folder(tmp_path, trial, proc.pid)
    trial["run"] = str(run.path)
    return runner._start(study, trial, None), run, proc


def test_a_trial_at_its_last_step_is_not_pruned_and_is_ranked(sweep_setup):
    """The trial's case: 0.9231 at step 30 of 30 is above the median of the others at 30
    (0.9138) but better than a ranked trial's 0.9276: it ends, is evaluated and ranked."""
    tmp_path, sweep, runner, study, lines, procs = sweep_setup
    _finished_trials(runner, study, tmp_path)
    act, run, proc = _live_trial(runner, study, tmp_path, procs)
    # Below the median at steps 10 (1.15) and 20 (0.975): not pruned. (The pruner compares
    # the trial's best value so far with the others' median at the step.)
    for step, loss in ((10, 1.10), (20, 0.96)):
        run.append_event("eval", step=step, epoch=step / TOTAL, eval_loss=loss)
    assert not runner._poll(act) and not act.pruned
    run.write_status(step=TOTAL)
    run.append_event("eval", step=TOTAL, epoch=1.0, eval_loss=0.9231)
    assert not runner._poll(act)
    assert not act.pruned, lines
    time.sleep(0.3)
    assert proc.poll() is None  # no stop signal: its evaluation after training goes on
    proc.kill()
    proc.wait()
    _end(run, "finished", "adapter saved", step=TOTAL, eval_loss=0.9231)
    assert runner._poll(act)
    runner._finish(study, act)
    assert runner.trials[2]["state"] == "finished"
    c = sweep_comparison(sweep)
    ranked = {r.path: r for r in c.rows if r.quality_per_hour is not None}
    assert str(run.path) in ranked and len(ranked) == 3


def test_no_steps_left_means_no_pruning_even_for_a_late_report(sweep_setup):
    """The sweep polls every 0.2 s: an eval of step 20 read once the run reached its last
    step (it is evaluating now) prunes nothing either."""
    tmp_path, _sweep, runner, study, _lines, procs = sweep_setup
    _finished_trials(runner, study, tmp_path)
    act, run, proc = _live_trial(runner, study, tmp_path, procs)
    run.write_status(step=TOTAL)
    run.append_event("eval", step=20, epoch=20 / TOTAL, eval_loss=1.5)
    runner._poll(act)
    assert not act.pruned and proc.poll() is None


def test_a_pruned_trial_reads_pruned_everywhere_and_says_why_once(sweep_setup, capsys):
    tmp_path, sweep, runner, study, lines, procs = sweep_setup
    sys.path.insert(0, str(REPO))
    from screens.run_actions import scan_runs
    from workbench.sweep.compare import compare_runs

    _finished_trials(runner, study, tmp_path)
    act, run, proc = _live_trial(runner, study, tmp_path, procs)
    run.append_event("eval", step=10, epoch=10 / TOTAL, eval_loss=1.5)  # the median: 1.15
    runner._poll(act)
    assert act.pruned
    assert proc.wait(timeout=10) != 0  # the stop signal reached the trial's process
    # The runner, on that signal: a checkpoint, then `stopped`.
    _end(run, "stopped", f"stopped at step 10; checkpoint checkpoint-10; continue with "
                         f"`workbench resume {run.name}`", step=10)
    assert runner._poll(act)
    runner._finish(study, act)
    assert runner.trials[2]["state"] == "pruned"

    assert run.shown_state() == "pruned"
    assert main(["runs", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    states = {r["name"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert states[run.name] == "pruned"
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if run.name in line)
    assert " pruned " in listed and "stopped" not in listed
    assert {r.name: r.state for r in scan_runs(tmp_path / "runs")}[run.name] == "pruned"
    compared = compare_runs([RunDir(Path(t["run"])) for t in runner.trials])
    assert {r.name: r.state for r in compared.rows}[run.name] == "pruned"
    assert "pruned" in run.read_status()["message"]

    # The sweep's log says it once: why when it prunes, what became of it when it ends.
    log = sweep.log_path.read_text()
    assert log.count("median") == 1, log
    assert "pruned (pruned" not in log and "pruned: pruned" not in log
    trial3 = [line for line in lines if line.startswith("trial 3") and "pruned" in line]
    assert len(trial3) == 2 and "median" in trial3[0] and "median" not in trial3[1], trial3
    c = sweep_comparison(sweep)
    notes = [n for n in c.notes if n.startswith("trial 3")]
    assert len(notes) == 1 and notes[0].count("pruned") == 1, notes


def test_a_resumed_pruned_trial_reads_its_new_state(sweep_setup):
    """`workbench resume` on a pruned trial's run: it is no longer "pruned" once it runs."""
    tmp_path, _sweep, runner, study, _lines, procs = sweep_setup
    _finished_trials(runner, study, tmp_path)
    act, run, proc = _live_trial(runner, study, tmp_path, procs)
    run.append_event("eval", step=10, epoch=10 / TOTAL, eval_loss=1.5)
    runner._poll(act)
    proc.wait(timeout=10)
    _end(run, "stopped", "stopped at step 10", step=10)
    runner._poll(act)
    runner._finish(study, act)
    assert run.shown_state() == "pruned"
    _end(run, "finished", "adapter saved", step=TOTAL)
    assert run.shown_state() == "finished"
    assert not pid_alive(proc.pid)
