"""The app shell: screen registry and switching, back, help, command palette, keymap file,
SSH behaviour, errors as notifications, and what the app imports at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from app_helpers import isolate, make_finished_run, screen_text, settle, wait_for
from conftest import REPO

import screens
from screens import ScreenSpec


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def drive(app, steps, size=(80, 24)):
    async def go():
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.3)
            await steps(pilot)
    asyncio.run(go())


def make_app(**kwargs):
    from screens.app import WorkbenchApp

    return WorkbenchApp(**kwargs)


def test_number_keys_switch_screens_and_back_returns():
    app = make_app()

    async def steps(pilot):
        assert app.current_mode == "runs"
        await pilot.press("4")
        await pilot.pause(0.2)
        assert app.current_mode == "train"
        assert "4 Train" in screen_text(app)
        await pilot.press("1")
        await pilot.press("4")
        await pilot.pause(0.1)
        assert "b Back" in screen_text(app)  # history left: back is offered
        await pilot.press("b")  # back: a visible key, not only Esc
        await pilot.pause(0.1)
        assert app.current_mode == "runs"
    drive(app, steps)


def test_back_goes_back_in_history_and_never_flips(monkeypatch):
    """4-1-4 then b b: Runs and stays there; it used to flip Train, Runs, Train..."""
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens", lambda p: (None, "test"))
    app = make_app()

    async def steps(pilot):
        for key in ("4", "1", "4"):
            await pilot.press(key)
        await pilot.pause(0.2)
        await pilot.press("b")
        await pilot.pause(0.1)
        assert app.current_mode == "runs"
        text = screen_text(app)
        assert "b Back" not in text and "q Quit" in text  # home: nowhere further back
        await pilot.press("b")
        await pilot.pause(0.1)
        assert app.current_mode == "runs"
        await pilot.press("4", "3")  # Runs -> Train -> Configure: back is Train, then Runs
        await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
        await pilot.press("b")  # Configure is arrived on at its form, never in a field
        await pilot.pause(0.1)
        assert app.current_mode == "train"
        await pilot.press("b")
        await pilot.pause(0.1)
        assert app.current_mode == "runs"
    drive(app, steps)


def test_back_closes_help_and_the_delete_question(tmp_path):
    run = make_finished_run(tmp_path / "runs", "demo")
    app = make_app(runs_dir="runs")

    async def steps(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("b")
        await pilot.pause(0.1)
        assert len(app.screen_stack) == 1 and app.current_mode == "runs"
        await pilot.press("d")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "ConfirmScreen"
        assert "/ b no" in screen_text(app)
        await pilot.press("b")  # back: no, nothing deleted
        await settle(pilot)
        assert len(app.screen_stack) == 1 and run.path.exists()
        assert app.current_mode == "runs"
    drive(app, steps, size=(100, 30))


def test_missing_screen_module_shows_coming_soon(monkeypatch):
    monkeypatch.setitem(screens.SCREENS, "export", ScreenSpec(
        "export", "Export", "6", "screens.not_written_yet:ExportScreen", "Ship the model"))
    monkeypatch.setitem(screens.SCREENS, "compare", ScreenSpec(
        "compare", "Compare", "5", "screens.runs:NoSuchClass", "Side by side"))
    from screens.widgets.coming_soon import ComingSoonScreen

    assert isinstance(screens.make_screen("export"), ComingSoonScreen)
    broken = screens.make_screen("compare")
    assert isinstance(broken, ComingSoonScreen) and "NoSuchClass" in broken.reason


def test_help_lists_keys_with_ids_and_closes_with_a_shown_key():
    app = make_app()

    async def steps(pilot):
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "runs.stop" in text and "runs.delete" in text and "Close" in text
        await pilot.press("q")  # q closes the help, not the app
        await pilot.pause(0.1)
        assert app.current_mode == "runs" and len(app.screen_stack) == 1
    drive(app, steps, size=(100, 40))


def test_command_palette_lists_every_screen_action():
    app = make_app()

    async def steps(pilot):
        commands = list(app.get_system_commands(app.screen))
        titles = {c.title for c in commands}
        for expected in ("Go to Train", "Go to Data", "Start", "Stop", "Resume", "Delete",
                         "Open", "Attach", "Refresh"):
            assert expected in titles
        assert not [c.help for c in commands if "None" in (c.help or "")]  # was "key ^c · None"
        await pilot.press("5")  # Compare: its prompt Input brings Textual's own bindings
        await pilot.pause(0.3)
        assert not [c.help for c in app.get_system_commands(app.screen) if "None" in (c.help or "")]
        await pilot.press("1")
        await pilot.pause(0.2)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"go to train", "enter")
        await pilot.pause(0.4)
        assert app.current_mode == "train"
    drive(app, steps)


def test_keymap_file_remaps_a_binding(tmp_path, monkeypatch):
    keymap = tmp_path / "keymap.toml"
    keymap.write_text('[keymap]\n"app.show.train" = "t"\n"app.help" = "f2"\n')
    app = make_app(keymap_file=keymap)

    async def steps(pilot):
        await pilot.press("t")
        await pilot.pause(0.2)
        assert app.current_mode == "train"
        assert " t Train" in screen_text(app)  # the nav bar shows the remapped key
        await pilot.press("f2")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "HelpScreen"
    drive(app, steps)


def test_bad_keymap_file_is_a_notification(tmp_path):
    keymap = tmp_path / "keymap.toml"
    keymap.write_text("this is = not toml = at all\n")
    app = make_app(keymap_file=keymap)

    async def steps(pilot):
        assert any("keymap.toml" in str(n.message) for n in app._notifications)
    drive(app, steps)


def test_no_animation_over_ssh(monkeypatch):
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 5555 10.0.0.2 22")
    assert make_app().animation_level == "none"


def test_engine_errors_are_notifications_not_tracebacks():
    app = make_app()

    async def steps(pilot):
        app.stop_run("runs/nope")  # not a run: the engine refuses
        await pilot.pause(0.5)
        messages = [str(n.message) for n in app._notifications]
        assert messages and "Traceback" not in messages[-1]
        assert app.is_running
    drive(app, steps)


def test_app_mounts_without_heavy_imports():
    """Start the app headless in a fresh interpreter: no torch, transformers, trl, datasets,
    and no plotting library until the Train screen is opened."""
    code = (
        "import asyncio, sys\n"
        "from screens.app import WorkbenchApp\n"
        "async def main():\n"
        "    app = WorkbenchApp(runs_dir='runs')\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        await pilot.pause(0.5)\n"
        "        await asyncio.gather(*[w.wait() for w in list(app.workers)],\n"
        "                             return_exceptions=True)\n"
        "        print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft',\n"
        "                                 'textual_plotext') if m in sys.modules))\n"
        "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_engine_modules_never_import_textual():
    code = (
        "import importlib, pkgutil, sys, workbench\n"
        "for m in pkgutil.walk_packages(workbench.__path__, 'workbench.'):\n"
        "    if m.name.endswith('__main__'): continue\n"
        "    try: importlib.import_module(m.name)\n"
        "    except ImportError: pass  # optional extras (e.g. a GPU-only library)\n"
        "print('textual' in sys.modules, any(k.startswith('screens') for k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_snapshot_help_80x24(snap_compare, tmp_path):
    make_finished_run(tmp_path / "runs", "demo")
    assert snap_compare(make_app(runs_dir="runs"), press=["question_mark"],
                        terminal_size=(80, 24), run_before=lambda pilot: settle(pilot, 0.3))

