"""Every key that works on the screen below, what it does and its id (the name to use in
the keymap file to remap it)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from screens.widgets.sized_table import repaint_after_sizing


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark,f1", "close", "Close", id="help.close"),
        # A modal screen hides the app's bindings, so the app's back key is bound here too
        # (same id: a keymap that moves "app.back" moves this one with it).
        Binding("b", "close", "Back", show=False, id="app.back"),
    ]

    def __init__(self, title: str, rows: list[tuple[str, str, str]], keymap_note: str):
        super().__init__()
        self.title_text = title
        self.rows = rows
        self.keymap_note = keymap_note

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="dialog"):
            yield Static(f"Keys: {self.title_text}", classes="dialog-title")
            yield DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            yield Static(self.keymap_note, classes="dialog-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "action", "id")
        for row in self.rows:
            table.add_row(*row)
        repaint_after_sizing(table)
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
