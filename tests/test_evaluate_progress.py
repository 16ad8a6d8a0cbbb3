"""Evaluation progress without a model: the pacing of eval_progress reports, how a terminal
shows them (`workbench eval`, and the training display for the evaluation after a run), and
the report's header stating the run's final state."""

from __future__ import annotations

import io
import os

from workbench.evaluate.progress import EvalProgress, TerminalProgress, progress_text


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_every_report_is_an_update_and_a_few_a_stage_are_periodic():
    clock = FakeClock()
    updates, periodic = [], []
    progress = EvalProgress(on_update=updates.append, on_periodic=periodic.append, every_s=5.0,
                            clock=clock)
    progress("test answers", 0, 10)
    for done in range(1, 11):
        clock.now += 1.0  # one row a second
        progress("test answers", done, 10)
    assert [u["done"] for u in updates] == list(range(11))
    # first, then one every 5 s, then the last
    assert [p["done"] for p in periodic] == [0, 5, 10]
    assert updates[0]["eta_s"] is None  # no rate before the first row
    assert updates[4]["eta_s"] == 6.0  # 4 rows in 4 s, 6 to go
    assert updates[-1]["eta_s"] == 0.0
    # a new stage starts its own clock and is always reported
    clock.now += 1.0
    progress("prompt suite answers", 0, 3)
    assert periodic[-1] == {"stage": "prompt suite answers", "done": 0, "total": 3, "eta_s": None}


def test_progress_text():
    assert progress_text({"stage": "test answers", "done": 60, "total": 180, "eta_s": 40}) == \
        "evaluating: test answers 60/180 (33%), ETA 40s"
    assert progress_text({"stage": "test answers", "done": 0, "total": 180, "eta_s": None}) == \
        "evaluating: test answers 0/180 (0%)"
    assert progress_text({"stage": "answers", "done": 6, "total": 6, "eta_s": 0.0},
                         "comparing") == "comparing: answers 6/6 (100%)"


def test_a_terminal_gets_one_line_redrawn_in_place():
    out, err = io.StringIO(), Tty()
    shown = TerminalProgress(out, err)
    assert shown.live
    shown.update({"stage": "test answers", "done": 1, "total": 4, "eta_s": 3.0})
    shown.periodic({"stage": "test answers", "done": 1, "total": 4, "eta_s": 3.0})  # live: all
    shown.update({"stage": "test answers", "done": 2, "total": 4, "eta_s": 2.0})
    shown.log("  base: exact_match 10.0")
    shown.close()
    assert err.getvalue() == ("\r\033[Kevaluating: test answers 1/4 (25%), ETA 3s"
                              "\r\033[Kevaluating: test answers 2/4 (50%), ETA 2s\r\033[K")
    assert out.getvalue() == "  base: exact_match 10.0\n"


def test_a_pipe_gets_plain_periodic_lines():
    out, err = io.StringIO(), io.StringIO()
    shown = TerminalProgress(out, err)
    assert not shown.live
    shown.update({"stage": "test answers", "done": 1, "total": 4, "eta_s": 3.0})  # too many
    shown.periodic({"stage": "test answers", "done": 4, "total": 4, "eta_s": 0.0})
    shown.close()
    assert err.getvalue() == "evaluating: test answers 4/4 (100%)\n"
    assert "\r" not in err.getvalue()


def test_training_display_shows_the_evaluation_after_the_run():
    from workbench.pipeline.console import ProgressPrinter

    ev = {"type": "eval_progress", "stage": "prompt suite answers", "done": 30, "total": 120,
          "eta_s": 90.0}
    plain = io.StringIO()
    ProgressPrinter(plain, live=False).handle(ev)
    assert plain.getvalue() == "evaluating: prompt suite answers 30/120 (25%), ETA 1m30s\n"
    live = io.StringIO()
    printer = ProgressPrinter(live, live=True)
    printer.handle(ev)
    printer.handle({"type": "status", "state": "finished", "message": "adapter saved"})
    assert live.getvalue().startswith("\r\033[Kevaluating: prompt suite answers 30/120")
    # a status line first clears the progress line, so they never run together
    assert "ETA 1m30s\r\033[K[finished]  adapter saved\n" in live.getvalue()


def test_report_states_the_final_state_it_is_given(tmp_path):
    from workbench.evaluate.report import build
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    run = RunDir.create(tmp_path / "runs", "demo")
    # What status.json says while the runner evaluates, just before it marks the run finished.
    run.write_status(state="running", pid=os.getpid(), step=40, total_steps=40, device="cpu")
    profile = load_profile("demo")
    md, data = build(run, profile, {}, state="finished")
    header = md.splitlines()[2]
    assert "state finished, step 40/40" in header and "running" not in header
    assert data["training"]["state"] == "finished"
    # Without a state given, the report says what status.json says.
    md, _ = build(run, profile, {})
    assert "state running" in md.splitlines()[2]
