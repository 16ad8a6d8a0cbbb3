"""The app's one focus rule, shared by every screen (issue 26).

- A screen is arrived on at its home: the list, table or form named by `HOME`, never in a text
  field. That holds the first time it shows and every time it shows again (a field left focused
  when the screen was switched away by the palette or a started run is left). A dialog of the
  screen itself (help, a question) is no leaving: the field it was opened from keeps focus.
- A field takes keys only once the person enters it: Enter on the home where the screen offers
  it, a click, Tab, or a key that names the field (Data's ctrl+o). Entering a field selects its
  text (Textual's `select_on_focus`, left on for every field), so typing replaces the value.
- Esc always leaves a field, back to the home.
- So while no field is being edited, screen keys (1-6, the screens' letters) never type.

A screen takes the rule by subclassing `FocusScreen` (a Screen) and naming its `HOME`; one
whose home changes (Configure's Rewards view) overrides `home_widget`. A screen that binds Esc
itself must leave the field in that action too (call `focus_home`).
"""

from __future__ import annotations

from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Select, TextArea


def is_field(widget: Widget | None) -> bool:
    """A widget that takes printable keys as text (an editable text box), or a choice box:
    Esc leaves both."""
    if isinstance(widget, TextArea):
        return not widget.read_only
    return isinstance(widget, (Input, Select))


class FocusScreen(Screen):
    """A Screen that arrives on `HOME`, and whose Esc takes a field back to it."""

    HOME = ""  # CSS selector of the screen's list, table or form
    BINDINGS = [
        # Shown (and Esc taken) only while a field has focus: elsewhere Esc is the screen's.
        Binding("escape", "leave_field", "Leave field", id="screen.leave_field"),
    ]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # Textual's own first focus goes to the home too (its default is the first focusable
        # widget, which is a text field on Data, Configure and Compare).
        if cls.HOME and "AUTO_FOCUS" not in cls.__dict__:
            cls.AUTO_FOCUS = cls.HOME

    def home_widget(self) -> Widget | None:
        if not self.HOME:
            return None
        try:
            return self.query_one(self.HOME)
        except NoMatches:
            return None

    def editing(self) -> bool:
        """A field (not the home itself) has focus."""
        focused = self.focused
        return is_field(focused) and focused is not self.home_widget()

    def focus_home(self) -> None:
        home = self.home_widget()
        if home is not None and home.focusable:
            home.focus()
        else:
            self.set_focus(None)

    def action_leave_field(self) -> None:
        self.focus_home()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "leave_field":
            return self.editing()
        return super().check_action(action, parameters)

    def on_screen_suspend(self) -> None:
        # Still in the shown stack, under a dialog: the screen was not left.
        self._under_dialog = self in self.app.screen_stack and self.app.screen is not self

    def on_screen_resume(self) -> None:
        # After Textual's own resume handling (and any focus it restores).
        self.call_after_refresh(self._arrive, getattr(self, "_under_dialog", False))
        self._under_dialog = False

    def _arrive(self, from_dialog: bool = False) -> None:
        if self.focused is None or (self.editing() and not from_dialog):
            self.focus_home()
