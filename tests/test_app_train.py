"""The Train monitor: attaching to a run folder, following it live without redrawing more
than twice a second, stop / resume keys, and the numbers it derives (cost, memory)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from app_helpers import H100, T0, drive, gpu_dicts, isolate, make_finished_run, screen_text, settle

from screens.widgets.run_view import RunView
from workbench.rundir import RunDir


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def test_run_view_bills_training_time_not_gaps():
    view = RunView()
    view.add([{"type": "status", "time": 100.0, "state": "running"},
              {"type": "log", "time": 150.0, "step": 5, "loss": 1.0},
              {"type": "status", "time": 200.0, "state": "stopped"},
              {"type": "status", "time": 1000.0, "state": "running"},
              {"type": "status", "time": 1010.0, "state": "running", "message": "resuming"}])
    assert view.train_seconds(now=1050.0, live=True) == 150.0
    assert view.train_seconds(now=5000.0, live=False) == 110.0  # killed: billed to last event
    assert view.steps == [5] and view.message == "resuming"


def test_attach_to_a_finished_gpu_run_shows_everything(tmp_path):
    run = make_finished_run(tmp_path / "runs", "demo", gpus=gpu_dicts(H100), hourly=2.5)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot)
        text = screen_text(app)
        assert run.name in text and "finished" in text and "step 40/40" in text
        assert "0.6000" in text                    # last loss
        assert "2m15s" in text and "$0.09 at $2.5/h" in text  # 135 s at $2.50 an hour
        assert "est 22.0 GiB" in text and "(-5%)" in text and "21.0 GiB" in text
        assert "NVIDIA H100" in text and "util 97%" in text  # from the run's gpu events
        assert "step 40/40 loss 0.6000" in text    # log tail
        screen = app.screen
        assert screen.view.eval_losses and len(screen.view.steps) == 20
    drive(steps, size=(120, 40))


def test_follows_a_live_run_and_redraws_at_most_twice_a_second(tmp_path, monkeypatch):
    from screens.widgets.loss_plot import LossPlot

    draws = []
    original = LossPlot.show
    monkeypatch.setattr(LossPlot, "show", lambda self, *a: draws.append(len(a[0])) or original(self, *a))
    run = RunDir.create(tmp_path / "runs", "live")
    run.write_status(state="running", pid=os.getpid(), step=0, total_steps=200)
    run.append_event("status", state="running", message="loading model")

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot)
        draws.clear()
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = 0
        while loop.time() - start < 2.0:  # 20 log lines a second for two seconds
            step += 1
            run.append_event("log", step=step, epoch=step / 100, loss=2.0 - step / 100,
                             learning_rate=1e-4, grad_norm=0.5, tokens_per_s=900.0,
                             gpu_mem_bytes=None, gpu_mem_peak_bytes=None, eta_s=60.0)
            with open(run.log_path, "a") as fh:
                fh.write(f"line {step}\n")
            await pilot.pause(0.05)
        await settle(pilot, 0.7)
        assert app.screen.view.steps[-1] == step  # every event arrived
        assert 1 <= len(draws) <= 6, draws        # ~0.5 s polls: at most 2 redraws a second
        text = screen_text(app)
        assert "running" in text and f"line {step}" in text and "ETA" in text
    drive(steps)


def test_stop_and_resume_keys(tmp_path, monkeypatch):
    from workbench.train import control

    run = make_finished_run(tmp_path / "runs", "demo", state="stopped")
    spawned = []
    monkeypatch.setattr(control, "spawn_detached",
                        lambda r, resume=False: spawned.append((r.name, resume)) or 4242)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot)
        await pilot.press("x")  # not running: the engine's refusal is a notification
        await settle(pilot)
        assert "not running" in str(list(app._notifications)[-1].message)
        await pilot.press("r")
        await settle(pilot)
        assert spawned == [(run.name, True)]
    drive(steps)


def test_opening_the_monitor_directly_picks_the_newest_run(tmp_path):
    make_finished_run(tmp_path / "runs", "old")
    newer = make_finished_run(tmp_path / "runs", "new", start=T0 + 60)

    async def steps(app, pilot):
        await pilot.press("4")
        await settle(pilot, 0.6)
        assert app.screen.run_path == str(newer.path)
    drive(steps)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_snapshot_train(snap_compare, tmp_path, size):
    from screens.app import WorkbenchApp

    run = make_finished_run(tmp_path / "runs", "demo", gpus=gpu_dicts(H100))
    app = WorkbenchApp(runs_dir=Path("runs"), open_run=Path("runs") / run.name)
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settle(pilot, 0.6))


def test_overlapping_polls_never_count_events_twice(tmp_path, monkeypatch):
    """On a busy machine two polls from the same offset can both finish; the monitor must
    add each event once (it used to double the billed time and the plot's points)."""
    monkeypatch.chdir(tmp_path)
    run = make_finished_run(tmp_path / "runs", "demo", steps=40)

    async def steps(app, pilot):
        await pilot.press("4")
        await settle(pilot, 0.6)
        from screens import run_actions

        screen, path = app.screen, str(run.path)
        screen.view, screen._offset, screen._log_size = RunView(), 0, 0
        poll = run_actions.poll_run(path, 0, 0)
        screen._update(path, 0, poll)  # the first poll from offset 0 lands...
        screen._update(path, 0, poll)  # ...and a second one from the same offset too
        assert screen.view.steps == list(range(2, 41, 2))
    drive(steps)


def test_a_free_run_says_free_not_unset(tmp_path):
    """The demo profile prices its CPU at budget.gpu_hourly_usd = 0.0: a price, not a gap."""
    run = make_finished_run(tmp_path / "runs", "demo", hourly=0.0)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot)
        text = screen_text(app)
        assert "$0.00 (free)" in text and "budget.gpu_hourly_usd = 0" in text
        assert "unset" not in text
    drive(steps, size=(80, 24))


def test_a_progress_note_clears_once_training_moves_on(tmp_path):
    """"resuming from checkpoint-24" is news until the next logged step, not at step 165."""
    run = RunDir.create(tmp_path / "runs", "live")
    run.write_status(state="running", pid=os.getpid(), step=24, total_steps=300)
    run.append_event("status", state="running", message="resuming from checkpoint-24")

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot)
        assert "resuming from checkpoint-24" in screen_text(app)
        run.append_event("log", step=165, epoch=1.1, loss=0.9, learning_rate=1e-4,
                         grad_norm=0.4, tokens_per_s=900.0, eta_s=60.0)
        run.write_status(step=165)
        await settle(pilot, 0.8)
        text = screen_text(app)
        assert "step 165/300" in text and "resuming" not in text
        run.append_event("status", state="finished", message="adapter saved")
        run.write_status(state="finished", pid=None)
        await settle(pilot, 2.5)
        assert "adapter saved" in screen_text(app)  # an end state's message stays
    drive(steps, size=(80, 24))


LONG_LINE = ("step 40/40  epoch 2.00  loss 0.6000  eval 0.7385  lr 2.00e-04  gnorm 0.33  "
             "1235 tok/s  peak 21.0 GiB  ETA 0s")


def _long_run(tmp_path):
    run = make_finished_run(tmp_path / "runs", "qwen2.5-0.5b-lora-20261128-080000",
                            gpus=gpu_dicts(H100))
    from app_helpers import write_event

    write_event(run, "status", T0 + 200, state="finished", message=f"adapter saved to "
                f"{run.path.resolve()}/adapter (early stopping: eval loss stopped improving)")
    with open(run.log_path, "a") as fh:
        fh.write(LONG_LINE + "\n")
    return run


def test_header_log_and_numbers_fit_80_columns(tmp_path):
    run = _long_run(tmp_path)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        text = screen_text(app)
        assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
        # The header names the run, and its message (wrapped) keeps the adapter's place.
        words = " ".join(text.split())  # the header wraps to a second line
        assert run.name in text
        assert "adapter saved to ./adapter (early stopping: eval loss stopped improving)" in words
        # The long log line wraps: its end is on screen, and more than 3 lines fit.
        assert "ETA 0s" in text and "1235" in text
        assert "step 34/40 loss" in text
        # Every number beside the plot, and the GPU panel under them.
        for part in ("0.6000", "0.7385", "0.333", "1,234", "2m15s", "$0.09 at $2.5/h",
                     "est 22.0 GiB", "21.0 GiB", "util 97%"):
            assert part in text, part
    drive(steps, size=(80, 24))


def test_a_live_run_shows_what_its_evaluation_will_cost(tmp_path):
    """Said before training (workbench/evaluate/cost.py, status.json's eval_estimate_s); gone
    once the run has ended, when the report says what it took."""
    run = RunDir.create(tmp_path / "runs", "live")
    run.write_status(state="running", pid=os.getpid(), step=3, total_steps=300,
                     eval_estimate_s=103.0)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot)
        assert "eval after ~1m43s" in screen_text(app)
        run.write_status(state="finished", pid=None)
        await settle(pilot, 2.5)
        assert "eval after" not in screen_text(app)
    drive(steps, size=(80, 24))


# ---------------------------------------------------------------------------------------------
# Preference runs: the method's signals as small charts beside the loss (one per Chart of the
# method), their latest values in the numbers column; where the plot area is small the charts
# take turns (g). SFT runs have none of it (their snapshots above are unchanged).


def test_run_view_keeps_the_signals_of_log_and_eval_events():
    view = RunView()
    changed = view.add([
        {"type": "log", "time": 1.0, "step": 2, "loss": 0.69,
         "signals": {"rewards/margins": 0.1, "rewards/accuracies": 0.5}},
        {"type": "log", "time": 2.0, "step": 4, "loss": 0.6,
         "signals": {"rewards/margins": 0.3, "rewards/accuracies": 0.75, "bad": "x"}},
        {"type": "eval", "time": 3.0, "step": 4, "eval_loss": 0.62, "signals": {"rewards/margins": 0.25}},
    ])
    assert changed
    assert view.signals["rewards/margins"] == ([2, 4], [0.1, 0.3])
    assert view.eval_signals == {"rewards/margins": ([4], [0.25])}
    assert "bad" not in view.signals
    assert view.seen_signals == {"rewards/margins", "rewards/accuracies"}


def test_charts_come_from_the_method_or_else_from_the_signals():
    from screens.widgets.signal_plot import charts_for
    from workbench.train.methods import METHODS

    assert charts_for("sft") == ()
    assert charts_for("dpo") == METHODS["dpo"].charts
    assert charts_for(None, {"kl", "rewards/chosen"}) == METHODS["kto"].charts
    assert charts_for(None, set()) == ()


def test_a_finished_dpo_run_shows_its_signal_charts(tmp_path):
    from screens.widgets.loss_plot import LossPlot
    from screens.widgets.signal_plot import SignalPlot

    run = make_finished_run(tmp_path / "runs", "dpo", method="dpo", hourly=0.0)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        screen = app.screen
        plots = list(screen.query(SignalPlot))
        assert plots == screen.signal_plots
        assert [p.chart.title for p in plots] == ["rewards", "reward margin", "preference accuracy"]
        assert all(p.display and p.region.width >= 26 for p in plots) and not screen.compact
        assert screen.query_one(LossPlot).display
        assert screen.view.signals["rewards/margins"][1][-1] == 0.9
        text = screen_text(app)
        for part in ("rewards", "reward margin", "preference accuracy", "chosen", "rejected"):
            assert part in text, part
        assert "margin     +0.900" in text and "pref acc 100%" in text  # the numbers column
        assert "g Next chart" not in text  # every chart is on screen: nothing to page through
    drive(steps, size=(140, 40))


def test_in_a_small_terminal_the_charts_take_turns(tmp_path):
    from screens.widgets.loss_plot import LossPlot
    from screens.widgets.signal_plot import SignalPlot

    run = make_finished_run(tmp_path / "runs", "kto", method="kto", hourly=0.0)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        screen = app.screen
        assert screen.compact
        assert "g Next chart" in screen_text(app) and "loss (1/3, g: next)" in screen_text(app)
        await pilot.press("g")
        await pilot.pause()
        shown = [p for p in screen.query(SignalPlot) if p.display]
        assert [p.chart.title for p in shown] == ["rewards"] and not screen.query_one(LossPlot).display
        await pilot.press("g")
        await pilot.pause()
        assert "KL to the reference" in screen_text(app)
        await pilot.press("g")  # and round to the loss again
        await pilot.pause()
        assert screen.query_one(LossPlot).display
        assert not any(p.display for p in screen.query(SignalPlot))
        assert "kl" in screen_text(app)
    drive(steps, size=(80, 24))


def test_another_run_brings_its_own_charts(tmp_path):
    from screens.widgets.signal_plot import SignalPlot

    dpo = make_finished_run(tmp_path / "runs", "dpo", method="dpo")
    kto = make_finished_run(tmp_path / "runs", "kto", method="kto", start=T0 + 60)
    sft = make_finished_run(tmp_path / "runs", "sft", start=T0 + 120)

    async def steps(app, pilot):
        app.open_run(dpo.path)
        await settle(pilot, 0.6)
        app.open_run(kto.path)
        await settle(pilot, 0.6)
        titles = [p.chart.title for p in app.screen.query(SignalPlot)]
        assert titles == ["rewards", "KL to the reference"]
        assert "kl" in screen_text(app) and "margin" not in screen_text(app)
        app.open_run(sft.path)
        await settle(pilot, 0.6)
        assert not list(app.screen.query(SignalPlot)) and app.screen.charts == ()
    drive(steps, size=(140, 40))


def test_an_sft_run_has_no_signal_charts(tmp_path):
    from screens.widgets.signal_plot import SignalPlot

    run = make_finished_run(tmp_path / "runs", "demo")

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        assert app.screen.method == "sft" and not list(app.screen.query(SignalPlot))
        assert not app.screen.query_one("#signal-plots").display
        assert "g Next chart" not in screen_text(app)
    drive(steps, size=(120, 40))


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_snapshot_train_dpo(snap_compare, tmp_path, size):
    from screens.app import WorkbenchApp

    run = make_finished_run(tmp_path / "runs", "dpo", method="dpo", hourly=0.0)
    app = WorkbenchApp(runs_dir=Path("runs"), open_run=Path("runs") / run.name)
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settle(pilot, 0.6))
