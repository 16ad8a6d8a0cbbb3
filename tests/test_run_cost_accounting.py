"""A run's cost is its own sessions' time (training and the evaluation after it), recorded
when a session ends: a `workbench eval` five minutes later, a pause between stop and resume,
or the minutes between a kill -9 and the resume add nothing to it (issue 26, item 3).

The run folders below hold the events the product writes, in the order it writes them
(worker/pipeline "starting", runner "running", logs, evals, the evaluation's eval_progress,
the final status; `workbench eval` appends eval_progress events later), with chosen times;
the last test trains and evaluates a real run through the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, workbench
from workbench.cli import main
from workbench.profile import load_profile, save_profile
from workbench.rundir import RunDir, iso
from workbench.sweep.compare import compare_runs, read_row

DEMO = REPO / "profiles" / "demo.toml"
T0 = 1_800_000_000.0  # a fixed UNIX time: the runs below are laid out from it


def _session(t: float, seconds: float, *, final: str | None = "finished", first_step: int = 1,
             last_step: int = 30, eval_loss: float = 0.9, resumed: bool = False) -> list[dict]:
    """The events of one session as the worker, the pipeline and the runner append them:
    `seconds` from the first "starting" to the final status (None: killed, no final word)."""
    evs = [{"type": "status", "time": t, "state": "starting", "message": "started (pid 4242)"},
           {"type": "status", "time": t + 0.5, "state": "starting",
            "message": "loading the training libraries (torch, transformers, trl)"},
           {"type": "status", "time": t + 2, "state": "running",
            "message": "resuming from checkpoint-10" if resumed else "loading model"}]
    span = seconds * (0.7 if final else 1.0)  # training; then the evaluation after training
    steps = list(range(first_step, last_step + 1))
    for i, step in enumerate(steps):
        evs.append({"type": "log", "time": t + 3 + (span - 3) * (i + 1) / len(steps), "step": step,
                    "epoch": step / 30, "loss": 2.0 - step / 30, "tokens_per_s": 900.0})
    evs.append({"type": "eval", "time": t + span, "step": last_step, "epoch": last_step / 30,
                "eval_loss": eval_loss})
    if final:
        for k in range(1, 4):
            evs.append({"type": "eval_progress", "time": t + span + (seconds - span) * k / 4,
                        "stage": "answers", "done": k, "total": 3, "eta_s": 1.0})
        evs.append({"type": "status", "time": t + seconds, "state": final, "message": "done"})
    return evs


def _later_eval(t: float, seconds: float) -> list[dict]:
    """What `workbench eval RUN` appends: its progress, a few times a stage."""
    return [{"type": "eval_progress", "time": t + seconds * k / 4, "stage": stage, "done": k,
             "total": 4, "eta_s": 1.0} for stage in ("perplexity", "answers") for k in range(1, 5)]


def make_run(runs: Path, name: str, overrides: list[str], events: list[dict], *,
             state: str = "finished", eval_loss: float = 0.9, record: bool = False) -> RunDir:
    """A run folder: profile.toml, status.json as the runner leaves it, events.jsonl."""
    run = RunDir.create(runs, name)
    save_profile(load_profile(DEMO, overrides), run.profile_path)
    ends = [e["time"] for e in events if e["type"] == "status" and e["state"] in
            ("finished", "stopped", "failed")]
    run.write_status(state=state, pid=None, created_at=iso(events[0]["time"]),
                     started_at=iso(events[0]["time"]), ended_at=iso(ends[-1]) if ends else None,
                     step=30, total_steps=30, eval_loss=eval_loss, device="cpu")
    run.events_path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    return run


def append(run: RunDir, events: list[dict]) -> None:
    with open(run.events_path, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(e, sort_keys=True) + "\n" for e in events)


def test_a_later_eval_adds_nothing_to_the_runs_hours_nor_changes_the_recommendation(tmp_path):
    """The trial's numbers: two runs of 120 s and 200 s of training and evaluation; the
    cheaper one reaches 98% of the best quality. Then `workbench eval` on the cheaper one,
    five minutes after it ended, for four minutes: its hours, quality per hour and the
    recommendation stay what they were."""
    runs = tmp_path / "runs"
    cheap = make_run(runs, "cheap", ["name=cheap", "lora.r=4"], _session(T0, 120), eval_loss=0.94)
    best = make_run(runs, "best", ["name=best", "lora.r=64", "lora.alpha=128"],
                    _session(T0, 200), eval_loss=0.92)
    before = compare_runs([cheap, best])
    assert read_row(cheap).hours == pytest.approx(120 / 3600)
    assert "at 60% of its cost" in before.recommendation

    append(cheap, _later_eval(T0 + 120 + 300, 240))
    after = compare_runs([cheap, best])
    row = next(r for r in after.rows if r.name == cheap.name)
    assert row.hours == pytest.approx(120 / 3600)  # was (120 + 300 + 240) s: 5.5x
    assert row.quality_per_hour == pytest.approx(
        next(r for r in before.rows if r.name == cheap.name).quality_per_hour)
    assert after.recommendation == before.recommendation
    assert [r.name for r in after.rows] == [r.name for r in before.rows]


def test_the_command_line_compare_reports_the_sessions_time(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = make_run(runs, "a", ["name=a"], _session(T0, 90))
    b = make_run(runs, "b", ["name=b", "lora.r=8"], _session(T0, 180))
    append(a, _later_eval(T0 + 90 + 300, 300))
    assert main(["runs", "compare", str(a.path), str(b.path), "--json"]) == 0
    hours = {r["name"]: r["hours"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert hours == {a.name: pytest.approx(90 / 3600), b.name: pytest.approx(180 / 3600)}


def test_a_resumed_run_counts_its_sessions_not_the_pause_nor_the_time_after_a_kill(tmp_path):
    """Stopped after 60 s, resumed an hour later for 50 s; a second run killed (kill -9: no
    final status) after 40 s, resumed 100 s later for 50 s. Neither pause is the run's."""
    runs = tmp_path / "runs"
    stopped = _session(T0, 60, final="stopped", last_step=10)
    resumed = _session(T0 + 3660, 50, first_step=11, resumed=True)
    a = make_run(runs, "paused", [], stopped + resumed)
    killed = _session(T0, 40, final=None, last_step=10)
    again = _session(T0 + 140, 50, first_step=11, resumed=True)
    b = make_run(runs, "killed", ["lora.r=8"], killed + again)
    assert read_row(a).hours == pytest.approx(110 / 3600)
    assert read_row(b).hours == pytest.approx(90 / 3600)
    assert RunDir(a.path).active_seconds() == pytest.approx(110)


def test_the_recorded_time_wins_and_later_events_do_not_change_it(tmp_path):
    """status.json's active_seconds, written when the session ended, is what readers use."""
    runs = tmp_path / "runs"
    run = make_run(runs, "rec", [], _session(T0, 120))
    run.write_status(active_seconds=118.5, active_until=run.read_status()["ended_at"])
    append(run, _later_eval(T0 + 400, 600))
    assert run.active_seconds() == 118.5
    assert read_row(run).hours == pytest.approx(118.5 / 3600)
    # A later session that ended without the runner's record (stopped while starting, a
    # launch that failed): the stale record is not the run's time, its events are.
    append(run, _session(T0 + 3600, 10, final="stopped", last_step=30))
    run.write_status(state="stopped", ended_at=iso(T0 + 3610))
    assert run.active_seconds() == pytest.approx(130)


def test_runs_list_and_runs_screen_show_the_same_duration(tmp_path, capsys):
    """`workbench runs` and the Runs screen said different durations (created->ended against
    started->ended or updated): both now say the run's own time."""
    sys.path.insert(0, str(REPO))
    from screens.run_actions import scan_runs

    runs = tmp_path / "runs"
    stopped = _session(T0, 60, final="stopped", last_step=10)
    run = make_run(runs, "paused", [], stopped + _session(T0 + 86_400, 50, first_step=11,
                                                         resumed=True))
    append(run, _later_eval(T0 + 90_000, 300))
    assert main(["runs", "--runs-dir", str(runs), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["active_seconds"] == pytest.approx(110)
    (screen_row,) = scan_runs(runs)
    assert screen_row.duration_s == pytest.approx(110)
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    assert "1m50s" in capsys.readouterr().out  # not 1d00h (created -> ended)


@pytest.mark.slow
def test_a_real_run_records_its_time_and_a_later_eval_leaves_it(tmp_path):
    """The trial as the issue tells it, through the command line: a short demo run, then
    `workbench eval` on it; `runs compare` says the same hours before and after."""
    sets = ["--set", "train.max_steps=4", "--set", "train.eval_steps=2", "--set",
            "train.save_steps=4", "--set", "eval.max_test_rows=2", "--set", 'eval.prompts=""']
    workbench("run", str(DEMO), *sets, "--runs-dir", "runs", cwd=tmp_path, check=True)
    (path,) = (tmp_path / "runs").iterdir()
    run = RunDir(path)
    status = run.read_status()
    assert status["state"] == "finished"
    events = run.read_events()[0]
    span = events[-1]["time"] - events[0]["time"]
    # Recorded once, as the session ended: the whole session, evaluation included.
    assert 0.9 * span <= status["active_seconds"] <= span + 1
    before = json.loads(workbench("runs", "compare", str(path), "--json", cwd=tmp_path,
                                  check=True).stdout)["runs"][0]["hours"]
    workbench("eval", str(path), "--max-test-rows", "2", cwd=tmp_path, check=True)
    assert len(run.read_events()[0]) > len(events)  # the eval appended its progress
    after = json.loads(workbench("runs", "compare", str(path), "--json", cwd=tmp_path,
                                 check=True).stdout)["runs"][0]["hours"]
    assert after == pytest.approx(before) == pytest.approx(status["active_seconds"] / 3600)
    assert run.read_status()["active_seconds"] == status["active_seconds"]


def test_a_live_run_counts_up_to_now_and_reads_only_what_was_appended(tmp_path):
    """The Runs screen asks every two seconds: a live run's time grows with the clock, the
    events it appends are read once, and its end closes the session."""
    import os

    runs = tmp_path / "runs"
    run = make_run(runs, "live", [], _session(T0, 60, final=None), state="running")
    run.write_status(pid=os.getpid(), ended_at=None)
    assert run.active_seconds(now=T0 + 100) == pytest.approx(100)
    append(run, [{"type": "status", "time": T0 + 110, "state": "finished", "message": "done"}])
    run.write_status(state="finished", ended_at=iso(T0 + 110))
    assert run.active_seconds(now=T0 + 5000) == pytest.approx(110)
    append(run, _later_eval(T0 + 400, 100))
    assert run.active_seconds(now=T0 + 9000) == pytest.approx(110)
