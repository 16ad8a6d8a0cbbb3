"""The line under the header naming every screen and the key that opens it, so switching
screens never depends on knowing Esc or a hidden shortcut."""

from __future__ import annotations

from textual.markup import escape
from textual.widgets import Static


class NavBar(Static):
    DEFAULT_CSS = """
    NavBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(**kwargs)
        self.current = current

    def on_mount(self) -> None:
        self.update(self.describe())

    def describe(self) -> str:
        from screens import SCREENS

        key_for = getattr(self.app, "key_for", lambda binding_id, default: default)
        parts = []
        for name, spec in SCREENS.items():
            key = escape(key_for(f"app.show.{name}", spec.key))
            if name == self.current:
                parts.append(f"[reverse bold] {key} {escape(spec.title)} [/]")
            else:
                parts.append(f"[bold $accent] {key}[/] {escape(spec.title)} ")
        return "".join(parts)
