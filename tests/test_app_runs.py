"""The Runs (home) screen: runs and profiles listed, the GPU panel over a fake NVML, and
open / start / stop / resume / attach / delete driven by keys."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_helpers import (A10G, H100, T0, gpu_dicts, install_fake_nvml, isolate,
                         make_finished_run, screen_text, settle, wait_for)
from app_helpers import drive as helpers_drive

from workbench.rundir import RunDir


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path, fake_gpus=False)


@pytest.fixture
def two_runs(tmp_path):
    """Newest first on screen: qwen (stopped, on CPU), then demo (finished, on a GPU)."""
    demo = make_finished_run(tmp_path / "runs", "demo", gpus=gpu_dicts(H100))
    qwen = make_finished_run(tmp_path / "runs", "qwen", start=T0 + 3600, state="stopped")
    return demo, qwen


def drive(steps, size=(80, 24), **kwargs):
    helpers_drive(steps, size, **kwargs)



def live_run(runs_dir: Path, pid: int) -> RunDir:
    run = RunDir.create(runs_dir, "live")
    run.write_status(state="running", pid=pid, step=3, total_steps=10, loss=1.5,
                     created_at="2026-11-28T10:00:00+00:00", started_at="2026-11-28T10:00:00+00:00")
    return run


def test_lists_runs_profiles_and_every_gpu(monkeypatch, two_runs):
    install_fake_nvml(monkeypatch, [H100, A10G])

    async def steps(app, pilot):
        text = screen_text(app)
        assert "qwen-" in text and "stopped" in text and "finished" in text and "40/40" in text
        assert "NVIDIA H100 80GB HBM3" in text and "NVIDIA A10G" in text
        assert "util 97%" in text and "61°C" in text and "512 W/700 W" in text
        assert "demo" in text and "qwen2.5-7b-qlora" in text  # profiles
    drive(steps, size=(120, 40))


def test_no_gpu_reads_as_such(monkeypatch, two_runs):
    install_fake_nvml(monkeypatch, [])

    async def steps(app, pilot):
        assert "no NVIDIA GPU found" in screen_text(app)
    drive(steps)


def test_open_shows_the_run_in_the_monitor(monkeypatch, two_runs):
    install_fake_nvml(monkeypatch, [])
    demo, _ = two_runs

    async def steps(app, pilot):
        await pilot.press("down", "o")
        await settle(pilot, 0.5)
        assert app.current_mode == "train" and app.monitored_run == str(demo.path)
        assert demo.name in screen_text(app)
    drive(steps)


def test_delete_asks_first_and_refuses_a_running_run(monkeypatch, two_runs, tmp_path):
    install_fake_nvml(monkeypatch, [])
    demo, qwen = two_runs
    running = live_run(tmp_path / "runs", os.getpid())  # newest: first row

    async def steps(app, pilot):
        await pilot.press("d")
        await settle(pilot)
        assert running.path.exists() and len(app.screen_stack) == 1
        assert "stop it first" in str(list(app._notifications)[-1].message)
        await pilot.press("down", "d")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("n")  # no: nothing happens
        await settle(pilot)
        assert qwen.path.exists()
        await pilot.press("d", "y")
        await settle(pilot, 0.5)
        assert not qwen.path.exists()
        assert qwen.name not in screen_text(app) and demo.name in screen_text(app)
    drive(steps, size=(100, 30))


def test_a_scan_while_deleting_never_lists_the_run(two_runs, tmp_path, monkeypatch):
    """The Runs list is rescanned every 2 s; one landing mid-delete used to list the run as
    "unknown" (its status.json gone) over the fresh list. The folder is renamed away first."""
    import shutil

    from screens import run_actions

    demo, qwen = two_runs
    seen = []

    def rmtree(path, *args, **kwargs):
        seen.append([row.name for row in run_actions.scan_runs(tmp_path / "runs")])
        real_rmtree(path, *args, **kwargs)
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(run_actions.shutil, "rmtree", rmtree)
    run_actions.delete(str(qwen.path))
    assert seen == [[demo.name]]
    assert not qwen.path.exists() and not list((tmp_path / "runs").glob(".deleting-*"))


def test_stop_signals_the_run_process(monkeypatch, tmp_path):
    install_fake_nvml(monkeypatch, [])
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = live_run(tmp_path / "runs", proc.pid)

    async def steps(app, pilot):
        await pilot.press("x")
        await settle(pilot)
        assert proc.wait(timeout=10) != 0  # SIGTERM reached it
        await pilot.press("f5")
        await settle(pilot)
        assert "interrupted" in screen_text(app), screen_text(app)
    try:
        drive(steps, size=(100, 30))
    finally:
        proc.kill()
    assert run.path.exists()


def test_resume_spawns_a_detached_runner(monkeypatch, two_runs):
    install_fake_nvml(monkeypatch, [])
    from workbench.train import control

    spawned = []
    monkeypatch.setattr(control, "spawn_detached",
                        lambda run, resume=False: spawned.append((run.name, resume)) or 4242)
    demo, qwen = two_runs

    async def steps(app, pilot):
        await pilot.press("r")  # qwen: stopped, resumable
        await settle(pilot, 0.5)
        assert spawned == [(qwen.name, True)]
        assert app.current_mode == "train"
        await pilot.press("1", "down", "r")  # demo: finished, not resumable
        await settle(pilot, 0.5)
        assert spawned == [(qwen.name, True)]
        assert "already finished" in str(list(app._notifications)[-1].message)
    drive(steps, size=(100, 30))


def test_attach_jumps_to_the_live_run(monkeypatch, two_runs, tmp_path):
    install_fake_nvml(monkeypatch, [])
    running = live_run(tmp_path / "runs", os.getpid())

    async def steps(app, pilot):
        await pilot.press("down", "down", "a")
        await settle(pilot)
        assert app.monitored_run == str(running.path)
    drive(steps)


def test_start_error_is_a_notification(monkeypatch, tmp_path):
    """A profile the planner rejects: the engine's message, no traceback, app still up."""
    install_fake_nvml(monkeypatch, [])
    profiles = tmp_path / "no-profiles"
    profiles.mkdir()
    (profiles / "broken.toml").write_text(
        '[model]\nname_or_path = "/nowhere/model"\n[data]\ntrain = "/nowhere/data.jsonl"\n')

    async def steps(app, pilot):
        options = app.screen.query_one("#profiles")
        options.highlighted = [o.id for o in options.options].index("broken")
        await pilot.press("s")
        for _ in range(120):
            await pilot.pause(0.5)
            errors = [n for n in app._notifications if n.severity == "error"]
            if errors:
                break
        assert errors and "Traceback" not in str(errors[-1].message)
        assert "/nowhere" in str(errors[-1].message)
    drive(steps)


@pytest.mark.slow
def test_start_a_real_run_and_watch_it_finish(monkeypatch, tmp_path, needs_tiny_model):
    """The main flow end to end with the tiny model: start a profile from the Runs screen,
    the monitor follows it live, and the run survives as its own process."""
    from workbench.profile import load_profile, save_profile

    install_fake_nvml(monkeypatch, [])
    profiles = tmp_path / "no-profiles"
    profiles.mkdir()
    profile = load_profile("demo", ["train.max_steps=4", "train.logging_steps=1",
                                    "train.eval_steps=2", "train.save_steps=2"])
    profile.name = "tinytest"
    save_profile(profile, profiles / "tinytest.toml")

    async def steps(app, pilot):
        options = app.screen.query_one("#profiles")
        options.highlighted = [o.id for o in options.options].index("tinytest")
        await pilot.press("s")
        deadline = time.time() + 240
        while time.time() < deadline and app.current_mode != "train":
            await pilot.pause(0.5)
        assert app.current_mode == "train", [str(n.message) for n in app._notifications]
        screen = app.screen
        while time.time() < deadline and screen.state != "finished":
            await pilot.pause(0.5)
        await pilot.pause(1.0)
        assert screen.state == "finished", screen_text(app)
        assert screen.view.steps and screen.view.steps[-1] == 4
        text = screen_text(app)
        assert "finished" in text and "step 4/4" in text
    drive(steps, size=(120, 40))
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "adapter").is_dir()


def _runs_shown(expected_runs: int, expected_gpus: int):
    """The screen has read the runs, the profiles and NVML, and polls no more (snapshots must
    not depend on whether a 2 s poll lands before the picture)."""
    def ready(app) -> bool:
        from screens.widgets.gpu_panel import GpuPanel

        screen = app.screen
        if type(screen).__name__ != "RunsScreen" or len(screen.rows) != expected_runs:
            return False
        # DataTable sizes its columns to their cells when idle: wait for that as well.
        name_width = screen.query_one("#runs").columns["run"].content_width
        return (all(len(r.name) <= name_width for r in screen.rows)
                and bool(screen.profiles) and screen.query_one(GpuPanel).gpus is not None
                and len(screen.query_one(GpuPanel).gpus) == expected_gpus)

    async def before(pilot) -> None:
        await wait_for(pilot, lambda: ready(pilot.app))
        pilot.app.screen.on_screen_suspend()  # stop both poll timers
        await settle(pilot, 0.1)
    return before


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_snapshot_runs(snap_compare, monkeypatch, two_runs, size):
    install_fake_nvml(monkeypatch, [H100, A10G])
    from screens.app import WorkbenchApp

    assert snap_compare(WorkbenchApp(runs_dir=Path("runs")), terminal_size=size,
                        run_before=_runs_shown(2, 2))


def test_snapshot_runs_without_gpu_or_runs(snap_compare, monkeypatch):
    install_fake_nvml(monkeypatch, [])
    from screens.app import WorkbenchApp

    assert snap_compare(WorkbenchApp(runs_dir=Path("runs")), terminal_size=(80, 24),
                        run_before=_runs_shown(0, 0))


def test_every_column_and_quit_fit_in_80_columns(monkeypatch, tmp_path):
    """A real run name (profile + time stamp) is longer than the table leaves it at 80
    columns: its middle is cut, and the device column and the footer's Quit stay on screen."""
    install_fake_nvml(monkeypatch, [])
    long = make_finished_run(tmp_path / "runs", "qwen2.5-0.5b-lora-20261128-080000",
                             gpus=gpu_dicts(H100))

    async def steps(app, pilot):
        await wait_for(pilot, lambda: app.screen.rows)
        await pilot.press("4", "1")  # back from Train: the footer is the same as at start
        await settle(pilot)
        lines = screen_text(app).splitlines()
        header = next(line for line in lines if line.lstrip().startswith("run "))
        row = next(line for line in lines if "finished" in line)
        assert header.rstrip().endswith("device") and row.rstrip().endswith("cuda")
        assert "qwen2.5-0.5b" in row and "…" in row and long.name not in row
        assert long.name[-7:] in row  # the end of the stamp tells runs apart
        assert lines[-1].split("▏")[0].rstrip().endswith("q Quit")
        await pilot.resize_terminal(160, 30)  # room enough: the whole name again
        await settle(pilot)
        assert long.name in screen_text(app)
    drive(steps, size=(80, 24))


def test_profiles_listed_do_not_depend_on_what_a_user_keeps(monkeypatch, tmp_path):
    """The app tests look profiles up in a copy of the shipped presets (app_helpers.isolate),
    so a profile a user adds to profiles/ or ~/.config/workbench/profiles changes no screen.
    Stand-ins for those two folders, once bare and once with a profile added: the same screen."""
    from app_helpers import SHIPPED_PRESETS

    from workbench import profile

    real_shipped = profile.shipped_profiles_dir()
    shown = []
    for added in (False, True):
        home = tmp_path / f"user-{added}"
        checkout = home / "checkout" / "profiles"  # the repository's profiles/ as a user has it
        checkout.mkdir(parents=True)
        (home / "checkout" / "assets").symlink_to(real_shipped.parent / "assets")
        for name in SHIPPED_PRESETS:
            (checkout / f"{name}.toml").write_text((real_shipped / f"{name}.toml").read_text())
        config = home / ".config" / "workbench" / "profiles"
        config.mkdir(parents=True)
        if added:
            (checkout / "aaa-mine.toml").write_text((checkout / "demo.toml").read_text())
            (config / "bbb-mine.toml").write_text((checkout / "demo.toml").read_text())
        with monkeypatch.context() as m:
            m.setattr(profile, "shipped_profiles_dir", lambda: checkout)
            m.setenv("XDG_CONFIG_HOME", str(home / ".config"))
            m.delenv("WORKBENCH_PROFILE_DIR", raising=False)
            (home / "tests").mkdir()
            isolate(m, home / "tests", fake_gpus=True)

            async def steps(app, pilot):
                await wait_for(pilot, lambda: app.screen.profiles)
                shown.append((list(app.screen.profiles), screen_text(app)))
            drive(steps)
    assert shown[0] == shown[1]
    assert shown[1][0] == list(SHIPPED_PRESETS)
