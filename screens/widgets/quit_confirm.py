"""The question before quitting with unsaved changes: save, discard or cancel.

The app asks every screen it holds for `unsaved_changes()` (a line, "" when none) and, on
"save", calls their `save_changes()` (None when saving failed: the app then stays open, with
the screen's own error shown)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


class QuitScreen(ModalScreen[str]):
    """Dismissed with "save", "discard" or "cancel"."""

    DEFAULT_CSS = """
    QuitScreen { align: center middle; background: $background 60%; }
    """
    BINDINGS = [
        Binding("s", "answer('save')", "Save and quit", id="quit.save"),
        Binding("d", "answer('discard')", "Discard and quit", id="quit.discard"),
        Binding("c,escape", "answer('cancel')", "Cancel", id="quit.cancel"),
        # A modal screen hides the app's bindings: the back key cancels here too.
        Binding("b", "answer('cancel')", "Back", show=False, id="app.back"),
    ]

    def __init__(self, changes: list[str]):
        super().__init__()
        self.changes = changes

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box", classes="dialog"):
            yield Static("Quit with unsaved changes?", classes="dialog-title")
            yield Static("\n".join(self.changes), classes="dialog-detail", markup=False)
            keys = ("[b]s[/b] Save and quit    [b]d[/b] Discard and quit    "
                    "[b]c[/b] / [b]Esc[/b] Cancel")
            yield Static(keys, classes="dialog-keys")
        yield Footer()

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer)

