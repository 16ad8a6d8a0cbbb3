"""What a registered screen shows before its module exists, or when it fails to import:
the rest of the app keeps working and the reason is on screen, not in a traceback."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from screens.widgets.nav import NavBar


class ComingSoonScreen(Screen):
    def __init__(self, spec, reason: str = ""):
        super().__init__()
        self.spec = spec
        self.reason = reason

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar(self.spec.name)
        if self.reason:
            message = (f"The {self.spec.title} screen could not be loaded:\n\n{self.reason}\n\n"
                       "The other screens still work.")
        else:
            message = (f"The {self.spec.title} screen is coming soon.\n\n{self.spec.description}."
                       "\n\nEverything it will do is available from the command line now: "
                       "run `workbench --help`.")
        yield Static(message, id="coming-soon", classes="placeholder")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.spec.title
