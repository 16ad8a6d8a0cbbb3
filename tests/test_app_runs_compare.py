"""The Runs screen marks runs (space) and compares them (c): the table of what differs and
what each run cost, the recommendation, and the overlaid curves; snapshots at 80x24 and
160x48."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import (H100, T0, drive, gpu_dicts, install_fake_nvml, isolate,
                         make_finished_run, screen_text, settle, wait_for)

from workbench.profile import load_profile, save_profile
from workbench.rundir import RunDir


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path, fake_gpus=False)
    install_fake_nvml(monkeypatch, [])


@pytest.fixture
def two_runs(tmp_path):
    """Two runs of different configurations: r=16 (demo) and r=64 with a lower eval loss
    that took longer. Newest (r=64) is the first row."""
    small = make_finished_run(tmp_path / "runs", "demo", gpus=gpu_dicts(H100))
    big = make_finished_run(tmp_path / "runs", "wide", start=T0 + 3600, steps=80,
                            gpus=gpu_dicts(H100))
    save_profile(load_profile("demo", ["lora.r=64", "lora.alpha=128", "budget.gpu_hourly_usd=2.5"]),
                 big.profile_path)
    big.write_status(eval_loss=0.6)
    return small, big


def _compare_shown(app) -> bool:
    from screens.runs_compare import RunsCompareScreen

    return isinstance(app.screen, RunsCompareScreen) and app.screen.comparison is not None


async def _mark_both_and_compare(pilot) -> None:
    await pilot.press("space", "down", "space", "c")
    await wait_for(pilot, lambda: _compare_shown(pilot.app))
    await settle(pilot, 0.2)


def test_marked_runs_are_compared(two_runs):
    small, big = two_runs

    async def steps(app, pilot):
        await pilot.press("space")
        await settle(pilot, 0.1)
        assert "● " in screen_text(app)  # the mark shows on the row
        await pilot.press("down", "space", "c")
        await wait_for(pilot, lambda: _compare_shown(app))
        text = screen_text(app)
        assert "what differs: lora.r, lora.alpha" in text
        assert "Recommendation:" in text and "GPU-hour" in text
        assert "r=64" in text and "r=16" in text
        c = app.screen.comparison
        assert {r.name for r in c.rows} == {small.name, big.name}
        assert c.hour_unit == "GPU-hours"
        await pilot.press("escape")
        await settle(pilot, 0.1)
        assert not _compare_shown(app) and app.screen.sub_title == "runs"
    drive(steps, size=(120, 40))


def test_unmarking_and_a_single_run_says_so(two_runs):
    async def steps(app, pilot):
        await pilot.press("space", "space", "c")  # marked, then unmarked: the selected run alone
        await wait_for(pilot, lambda: _compare_shown(app))
        text = screen_text(app)
        assert "only one run" in text and "nothing to compare" in text
    drive(steps, size=(120, 40))


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_runs_compare(snap_compare, two_runs, size):
    from screens.app import WorkbenchApp

    async def before(pilot):
        await settle(pilot)
        await _mark_both_and_compare(pilot)
    assert snap_compare(WorkbenchApp(runs_dir=Path("runs")), terminal_size=size, run_before=before)


def test_sweeps_show_their_trials_and_progress_and_compare(two_runs, tmp_path):
    """w on the Runs screen: every sweep with its progress, the trials of the highlighted one
    (a failed one with its reason), and enter compares the sweep's trials."""
    from workbench.sweep.definition import build_definition
    from workbench.sweep.engine import create_sweep

    small, big = two_runs
    demo = load_profile("demo")
    sweep = create_sweep(demo, build_definition(demo, ["lora.r=16,64,256"], [], None, None, None),
                         [], tmp_path / "runs", tmp_path / "sweeps", [])
    trials = sweep.read_trials()
    for t, run, state, reason in ((trials[0], small, "finished", None),
                                  (trials[1], big, "finished", None),
                                  (trials[2], None, "failed", "nan: the training loss became nan")):
        t.update(state=state, run=str(run.path) if run else None, reason=reason)
    sweep.write_trials(trials)
    sweep.write_status(state="finished", pid=None)

    async def steps(app, pilot):
        await pilot.press("w")
        await wait_for(pilot, lambda: "Trials of" in screen_text(app))
        text = screen_text(app)
        assert sweep.name in text and "3/3" in text and "finished" in text
        assert "r=256" in text and "nan: the training loss became nan" in text
        assert "r=64 (0.6000)" in text  # best so far: the lowest eval loss
        await pilot.press("enter")
        await wait_for(pilot, lambda: _compare_shown(app))
        assert {r.name for r in app.screen.comparison.rows} == {small.name, big.name}
        await pilot.press("escape", "escape")
        await settle(pilot, 0.1)
        assert app.screen.sub_title == "runs"
    drive(steps, size=(120, 40))
