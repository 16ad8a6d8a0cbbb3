"""Runs and the run pickers (issue 26, appendix): deleting a run keeps the cursor where it was,
F5 reads the profiles again too, and a run list that has runs never offers "no finished run"."""

from __future__ import annotations

import pytest
from app_helpers import T0, drive, isolate, make_finished_run, settle, wait_for
from textual.widgets import DataTable, OptionList, Select


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path, fake_gpus=True)


def test_deleting_a_run_keeps_the_cursor_on_the_same_row(tmp_path):
    runs = [make_finished_run(tmp_path / "runs", f"r{i}", start=T0 + i * 3600) for i in range(4)]
    names = [r.path.name for r in reversed(runs)]  # newest first on screen

    async def steps(app, pilot):
        table = app.screen.query_one("#runs", DataTable)
        await wait_for(pilot, lambda: table.row_count == 4)
        await pilot.press("down", "down")  # the third row
        await pilot.pause(0.1)
        assert app.screen.selected_path().endswith(names[2])
        await pilot.press("d")
        await pilot.pause(0.2)
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 3)
        await settle(pilot)
        # The run below the deleted one takes its place under the cursor (not the top row).
        assert table.cursor_row == 2 and app.screen.selected_path().endswith(names[3])
        await pilot.press("d")  # the last row: the cursor stays on the new last row
        await pilot.pause(0.2)
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 2)
        await settle(pilot)
        assert table.cursor_row == 1 and app.screen.selected_path().endswith(names[1])
    drive(steps, size=(100, 30))


def test_f5_reads_the_profiles_again(tmp_path):
    import os

    folder = tmp_path / "no-profiles"  # isolate()'s $WORKBENCH_PROFILE_DIR
    assert os.environ["WORKBENCH_PROFILE_DIR"] == str(folder)

    async def steps(app, pilot):
        options = app.screen.query_one("#profiles", OptionList)

        def ids() -> list[str]:
            return [options.get_option_at_index(i).id for i in range(options.option_count)]

        await wait_for(pilot, lambda: "demo" in ids())
        assert "mine" not in ids()
        folder.mkdir(exist_ok=True)
        shipped = tmp_path / "repo" / "profiles" / "demo.toml"
        (folder / "mine.toml").write_text(shipped.read_text().replace('name = "demo"',
                                                                     'name = "mine"'))
        await pilot.press("f5")
        await wait_for(pilot, lambda: "mine" in ids())
    drive(steps, size=(100, 30))


@pytest.mark.parametrize("key, select_id", [("5", "#compare-run"), ("6", "#export-run")])
def test_the_run_list_offers_no_false_none(tmp_path, key, select_id):
    make_finished_run(tmp_path / "runs", "demo")

    async def steps(app, pilot):
        await pilot.press(key)
        await settle(pilot)
        select = app.screen.query_one(select_id, Select)
        await wait_for(pilot, lambda: select.value != Select.NULL)
        assert "no finished run" not in select.prompt  # the blank entry of the open list
    drive(steps, size=(100, 30))


@pytest.mark.parametrize("key, select_id", [("5", "#compare-run"), ("6", "#export-run")])
def test_an_empty_run_list_says_so(key, select_id):
    async def steps(app, pilot):
        await pilot.press(key)
        await settle(pilot)
        assert app.screen.query_one(select_id, Select).prompt == "no finished run"
    drive(steps, size=(100, 30))
