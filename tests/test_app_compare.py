"""The Compare screen: load a run's model in a worker, stream a typed prompt into the three
columns, and the fine-tuned column equals the engine's own (separate) answer."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from app_helpers import isolate, make_finished_run, screen_text, settle, wait_for


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


def test_generate_with_an_empty_prompt_says_what_to_type(tmp_path):
    from screens.app import WorkbenchApp

    make_finished_run(tmp_path / "runs", "demo")
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def go():
        # run_test shows no toasts: what is asserted here is on the screen itself
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            screen = app.screen
            screen.query_one("#compare-run").focus()
            await pilot.press("ctrl+g")
            await settle(pilot)
            assert "type a prompt above, then Enter or ^g" in screen_text(app)
            assert app.focused is screen.query_one("#compare-prompt")
            assert not screen.busy and screen.engine is None  # nothing was loaded for it
    asyncio.run(go())


def test_suite_generation_counts_prompts_as_they_finish(tmp_path, needs_tiny_model):
    from test_export_support import make_run

    from screens.app import WorkbenchApp

    make_run(tmp_path / "runs")
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def go():
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            screen = app.screen
            screen.query_one("#compare-max").value = "3"
            await pilot.press("ctrl+t")  # the run's prompt suite: 40 demo prompts
            shown = []
            show = screen._show_status
            screen._show_status = lambda text: (shown.append(text), show(text))
            whats = []
            answered = screen._answered
            screen._answered = lambda *a: (answered(*a), whats.append(screen._what))
            await pilot.press("ctrl+g")
            await until_idle(pilot, screen)
            counts = [int(w.split(" / ")[0].split()[-1]) for w in whats]
            assert counts == list(range(1, 41)), whats
            assert whats[-1] == "generating: 40 / 40 prompts"
            gen = [t for t in shown if t.startswith("generating")]  # after the loading
            assert gen[0].startswith("generating...  ·  0s so far"), shown  # no rows yet
            assert gen[1].startswith("generating: 0 / 40 prompts ") and "ETA" not in gen[1], gen
            # "generating: 1 / 40 prompts, ETA 2s  ·  0s so far  (^c stops)": an ETA once one
            # is done, and the clock labelled (a bare "0s" after it read as a second ETA)
            one = next(t for t in gen if t.startswith("generating: 1 / 40"))
            assert re.fullmatch(r"generating: 1 / 40 prompts, ETA \w+  ·  \w+ so far  "
                                r"\(\^c stops\)", one), one
            assert "done" in screen_text(app)

            # ctrl+c stops a generation within a prompt (the terminal's own stop key; the
            # old ctrl+b never reached an app inside tmux, whose prefix it is)
            screen._answered = answered
            screen.query_one("#compare-max").value = "64"  # ~20 s of answers: time to stop
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: bool(screen.busy))
            await pilot.press("ctrl+c")
            await until_idle(pilot, screen, limit=15)
            assert not screen.busy and app.is_running  # stopped, and the app did not quit
            assert not screen._what.startswith("generating: 40 / 40"), screen._what
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
        # Arrived on the answers (the focus rule): no field, so no blinking cursor in the picture.
        await settle(pilot, 0.2)
    assert snap_compare(app, terminal_size=size, run_before=before)


class _Delta:
    def __init__(self, system, prompt_index, text):
        self.system, self.prompt_index, self.text = system, prompt_index, text
