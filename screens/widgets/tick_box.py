"""A compact checkbox whose glyph says its state: ticked "X", unticked blank.

Textual's Checkbox draws the same "X" either way and shows the state only by colour, which is
lost on a monochrome or colour-poor SSH terminal and in screen readers' text."""

from __future__ import annotations

from textual.widgets import Checkbox


class TickBox(Checkbox):
    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - overrides Textual's class constant
        return "X" if self.value else " "
