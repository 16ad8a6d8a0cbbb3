"""The Data screen's keys (issue 26, item 7): Tab completes a path in the path field, a failed
open leaves the save folder as it was, ↑/↓ move between the cleaning steps, and every screen
shows the same tab bar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from app_helpers import drive, isolate, screen_text, settle, wait_for
from textual.widgets import Input

from screens import SCREENS

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "assets" / "demo" / "translate_en_fr.jsonl"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens", lambda p: (None, "test"))


def data_app(**screen_kwargs):
    from textual.app import App

    from screens.data import DataScreen

    class DataApp(App):
        def on_mount(self) -> None:
            self.push_screen(DataScreen(auto_inspect=False, **screen_kwargs))
    return DataApp()


def run(app, steps, size=(100, 30)) -> None:
    async def go():
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await steps(app, pilot)
    asyncio.run(go())


def test_tab_completes_the_path_and_keeps_the_cursor_in_the_field(tmp_path):
    (tmp_path / "conversations.jsonl").write_text(DEMO.read_text(encoding="utf-8"))
    (tmp_path / "notes").mkdir()

    async def steps(app, pilot):
        screen = app.screen
        path = screen.query_one("#data-path", Input)
        tokenizer = screen.query_one("#data-tokenizer", Input)
        before = tokenizer.value
        await pilot.press("ctrl+o", *"conv", "tab")
        await pilot.pause(0.1)
        assert path.value == "conversations.jsonl" and app.focused is path
        await pilot.press("x")  # the next key is typed at the end, not over the tokenizer
        await pilot.pause(0.1)
        assert path.value == "conversations.jsonlx" and tokenizer.value == before
        await pilot.press("backspace", "ctrl+a", "ctrl+k", "n", "tab")
        await pilot.pause(0.1)
        assert path.value == "notes/"  # a folder completes with its slash
        await pilot.press("ctrl+a", "ctrl+k", *"conversations.jsonl", "tab")
        await pilot.pause(0.1)
        assert app.focused is tokenizer  # nothing left to complete: Tab moves on as usual
    run(data_app(), steps)


def test_a_failed_open_leaves_the_save_folder_as_it_was(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(DEMO.read_text(encoding="utf-8"))
    other = tmp_path / "other.jsonl"
    other.write_text(DEMO.read_text(encoding="utf-8"))

    async def steps(app, pilot):
        screen = app.screen
        out = screen.query_one("#split-out", Input)
        screen.open("typo.jsonl")  # no such file
        await settle(pilot)
        assert "could not open" in screen_text(app)
        assert out.value == ""  # not "typo-split"
        screen.open(str(good))
        await wait_for(pilot, lambda: len(screen.records) == 600)
        assert out.value == "good-split"
        screen.open("typo.jsonl")
        await settle(pilot)
        assert out.value == "good-split"
        screen.open(str(other))  # the proposed folder follows the file that opened...
        await wait_for(pilot, lambda: len(screen.records) == 600)
        assert out.value == "other-split"
        out.value = "mine"  # ...but never replaces one the person typed
        screen.open(str(good))
        await wait_for(pilot, lambda: screen.loaded_path == str(good) and screen.records)
        assert out.value == "mine"
    run(data_app(), steps)


def test_s_after_a_failed_open_writes_to_the_opened_files_folder(tmp_path):
    """The trap itself: a typo first, then the right file, then s."""
    (tmp_path / "alpaca.jsonl").write_text(DEMO.read_text(encoding="utf-8"))

    async def steps(app, pilot):
        screen = app.screen
        await pilot.press("ctrl+o", *"alpaka.jsonl", "enter")
        await settle(pilot)
        await pilot.press("ctrl+a", "ctrl+k", *"alpaca.jsonl", "enter")
        await wait_for(pilot, lambda: len(screen.records) == 600)
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.saved_to is not None)
        assert screen.saved_to.name == "alpaca-split"
        assert json.loads((tmp_path / "alpaca-split" / "manifest.json").read_text())
        assert not (tmp_path / "alpaka-split").exists()
    run(data_app(), steps)


def test_arrow_keys_move_between_the_cleaning_steps():
    from screens.widgets.data_clean import STEP_LABELS

    async def steps(app, pilot):
        screen = app.screen
        await pilot.press("c")
        await pilot.pause(0.1)
        assert app.focused.id == "step-drop_empty"
        await pilot.press("down", "down")
        await pilot.pause(0.1)
        assert app.focused.id == "step-normalize_whitespace"
        await pilot.press("up")
        await pilot.pause(0.1)
        assert app.focused.id == "step-drop_short"
        await pilot.press("space")
        await pilot.pause(0.1)
        assert screen.query_one("#step-drop_short").value
        await pilot.press(*["down"] * (len(STEP_LABELS) + 2))  # stops at the last step
        await pilot.pause(0.1)
        assert app.focused.id == f"step-{STEP_LABELS[-1][0]}"
    run(data_app(path=str(DEMO)), steps)


def test_every_screen_shows_the_same_tab_bar():
    titles = [f"{spec.key} {spec.title}" for spec in SCREENS.values()]

    async def steps(app, pilot):
        for name, spec in SCREENS.items():
            await pilot.press(spec.key)
            await settle(pilot, 0.2)
            assert app.current_mode == name
            bar = next((line for line in screen_text(app).splitlines()
                        if all(t in line for t in titles)), None)
            assert bar is not None, f"{name}: no tab bar\n{screen_text(app)}"
    drive(steps, size=(100, 30))


def test_the_rows_table_numbers_rows_as_every_message_does(tmp_path):
    """One numbering (data/readers.py row_label): a JSON array's first record is row 1, as
    `data inspect` and the training notes say (the table showed 0), a JSONL line its line."""
    import json

    from screens.widgets.data_table import shown_row

    array = tmp_path / "a.json"
    array.write_text(json.dumps([{"instruction": "x", "output": "y"}] * 3))
    lines = tmp_path / "a.jsonl"
    lines.write_text('{"instruction": "x", "output": "y"}\n' * 3)
    assert shown_row({"file": str(array), "row": 0}, 0) == 1
    assert shown_row({"file": str(lines), "row": 1}, 0) == 1  # JSONL rows are their lines
    assert shown_row({}, 4) == 5  # no source: the position, from 1
