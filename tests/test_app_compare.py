"""The Compare screen: load a run's model in a worker, stream a typed prompt into the three
columns, and the fine-tuned column equals the engine's own (separate) answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from app_helpers import isolate, make_finished_run, screen_text, settle


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


async def until_idle(pilot, screen, limit=120):
    for _ in range(limit * 4):
        await pilot.pause(0.25)
        if not screen.busy:
            break
    await settle(pilot)


def test_stream_a_typed_prompt_into_three_columns(tmp_path, needs_tiny_model):
    from test_export_support import make_run

    from screens.app import WorkbenchApp
    from workbench.evaluate.compare import System

    run = make_run(tmp_path / "runs")
    app = WorkbenchApp(runs_dir=Path("runs"))
    prompt = "Translate to French: the cat sleeps"

    async def go():
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            screen = app.screen
            assert screen.query_one("#compare-run").value == str(run.path)
            screen.query_one("#compare-prompt").value = prompt
            screen.query_one("#compare-max").value = "12"
            shown = []  # every status line, to see the loading stages go by
            show = screen._show_status
            screen._show_status = lambda text: (shown.append(text), show(text))
            await pilot.press("ctrl+g")
            await until_idle(pilot, screen)
            stages = [t for t in shown if t.startswith("loading the")]
            assert any("loading the base model" in t and "of weights" in t for t in stages), shown
            texts = {s: screen.column_text(s) for s in ("base", "few-shot", "fine-tuned")}
            assert all(texts.values()), texts
            engine, profile, _, _ = screen.engine
            rows = engine.rows([prompt], [System("fine-tuned", "tuned")])
            alone = engine.generate_separately(rows, max_new_tokens=12, seed=profile.train.seed)
            assert texts["fine-tuned"] == alone.text("fine-tuned", 0)
            assert "done" in screen_text(app)
            # a bad setting is a notification, not a traceback
            screen.query_one("#compare-shots").value = "-1"
            await pilot.press("ctrl+g")
            await settle(pilot)
            assert "shots must be at least 0" in str(list(app._notifications)[-1].message)
    asyncio.run(go())


def test_a_run_without_adapter_is_a_notification(tmp_path):
    from screens.app import WorkbenchApp

    make_finished_run(tmp_path / "runs", "demo")  # status finished, no adapter folder
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            app.screen.query_one("#compare-prompt").value = "hello"
            await pilot.press("ctrl+g")
            await until_idle(pilot, app.screen, limit=30)
            message = str(list(app._notifications)[-1].message)
            assert "has no adapter yet" in message and "Traceback" not in message
    asyncio.run(go())


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_compare(snap_compare, tmp_path, size):
    from screens.app import WorkbenchApp

    make_finished_run(tmp_path / "runs", "demo")
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def before(pilot):
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        screen = app.screen
        screen._begin(["Translate to French: the cat"], False)
        screen._add([_Delta("base", 0, "the cat"), _Delta("few-shot", 0, "le chat?"),
                     _Delta("fine-tuned", 0, "le chat")])
        screen.query_one("#compare-run").focus()  # no blinking input cursor in the picture
        await settle(pilot, 0.2)
    assert snap_compare(app, terminal_size=size, run_before=before)


class _Delta:
    def __init__(self, system, prompt_index, text):
        self.system, self.prompt_index, self.text = system, prompt_index, text
