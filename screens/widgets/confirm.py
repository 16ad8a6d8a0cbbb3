"""A yes/no question in a modal. Answers with y / n (Esc and the back key also say no),
shown on screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
        # A modal screen hides the app's bindings: the app's back key answers "no" here
        # (same id, so a keymap that moves "app.back" moves this one too).
        Binding("b", "answer(False)", "Back", show=False, id="app.back"),
    ]

    def __init__(self, question: str, detail: str = ""):
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Static(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-detail")
            back = escape(getattr(self.app, "key_for", lambda _id, key: key)("app.back", "b"))
            yield Static(f"[b]y[/b] yes    [b]n[/b] / [b]Esc[/b] / [b]{back}[/b] no",
                         classes="dialog-keys")
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
