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


class LogApp(App):
    def compose(self):
        from screens.widgets.log_pane import LogPane

        yield LogPane()


def test_log_pane_wraps_lines_and_joins_chunks():
    """At 80 columns a training line is longer than the terminal: it wraps instead of being
    cut, a line that arrives in two chunks is one line, and a wider pane wraps them again."""
    from screens.widgets.log_pane import LogPane

    long = "step 40/40  epoch 2.00  loss 0.6000  lr 2.00e-04  ETA 0s"

    def shown(log) -> list[str]:
        return [strip.text.rstrip() for strip in log.lines]

    async def go():
        app = LogApp()
        async with app.run_test(size=(31, 8)) as pilot:  # 30 cells + the scrollbar
            await pilot.pause()
            log = app.query_one(LogPane)
            log.add(long + "\nstep 41 lo", follow=True)
            await pilot.pause()
            narrow = shown(log)
            assert all(len(line) <= 30 for line in narrow) and len(narrow) == 2, narrow
            assert " ".join(narrow) == long
            log.add("ss 0.5\n", follow=True)
            await pilot.pause()
            assert shown(log)[-1] == "step 41 loss 0.5"
            await pilot.resize_terminal(81, 8)
            await pilot.pause(0.2)
            assert shown(log) == [long, "step 41 loss 0.5"]
    asyncio.run(go())
