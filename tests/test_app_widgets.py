"""Small widgets that work around Textual behaviour: a DataTable frame drawn between add_row
and the idle pass that measures the new cells must not leave the table truncated at its header
widths (seen on a busy CI machine); a checkbox must show its state without colour."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App
from textual.widgets import DataTable

from screens.widgets.sized_table import repaint_after_sizing
from screens.widgets.tick_box import TickBox

NAME = "qwen2.5-7b-qlora-1795856400"


class TableApp(App):
    CSS = "DataTable { height: 5; }"  # a fixed size, as on the Runs screen: no Resize to help

    def __init__(self, fix: bool):
        super().__init__()
        self.fix = fix

    def compose(self):
        yield DataTable()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("run", "state")

    def fill(self) -> None:
        table = self.query_one(DataTable)
        table.add_row(NAME, "finished")
        table.render_line(1)  # a frame drawn before the table has measured the row (cached)
        if self.fix:
            repaint_after_sizing(table)


async def first_row(fix: bool) -> str:
    app = TableApp(fix)
    async with app.run_test(size=(60, 6)) as pilot:
        await pilot.pause(0.2)  # laid out, as the Runs table is long before its rows change
        app.fill()
        await pilot.pause(0.2)
        table = app.query_one(DataTable)
        return "".join(segment.text for segment in table.render_line(1))


@pytest.mark.parametrize("fix", [False, True])
def test_rows_drawn_before_measuring_are_redrawn(fix):
    row = asyncio.run(first_row(fix))
    if fix:
        assert NAME in row, row
    else:  # pins the Textual behaviour the helper exists for; drop it when Textual fixes it
        assert NAME not in row and "qwe" in row, row


class BoxApp(App):
    def compose(self):
        yield TickBox("dedup", False, compact=True)


def test_tick_box_glyph_shows_the_state():
    async def go() -> tuple[str, str]:
        app = BoxApp()
        async with app.run_test(size=(20, 3)) as pilot:
            box = app.query_one(TickBox)
            off = box.render().plain
            await pilot.click(TickBox)
            await pilot.pause()
            assert box.value
            return off, box.render().plain
    off, on = asyncio.run(go())
    assert off.startswith("▐ ▌") and on.startswith("▐X▌"), (off, on)
