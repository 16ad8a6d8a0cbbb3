"""One focus rule on every screen of the app (issue 26, item 5), driven through the real app:

- a screen is arrived on at its list, table or form (its "home"), never in a text field;
- a field takes keys only once it is entered (Enter, a click, Tab), and entering it selects
  its text, so typing replaces the value (Configure used to append: 16 + 64 = 1664);
- Esc always leaves a field, back to the screen's home;
- while no field is being edited, screen keys (digits, letters) never type into one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import drive, isolate, make_finished_run, screen_text, settle, wait_for
from textual.widgets import Input, TextArea

from screens import SCREENS

REPO = Path(__file__).resolve().parent.parent
# Letters no screen binds: pressed anywhere they must do nothing (above all, not type).
STRAY = ("z", "u", "m", "h")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)
    # Configure's time note counts the dataset's tokens (a tokenizer load): not needed here.
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens", lambda p: (None, "test"))
    make_finished_run(tmp_path / "runs", "demo")  # Compare and Export have a run to pick


def field_values(app) -> dict[str, str]:
    """Every text field of every screen opened so far, by screen and id."""
    values = {}
    for mode in SCREENS:
        screen = app._screen_stacks.get(mode, [None])[-1] if hasattr(app, "_screen_stacks") \
            else None
        if screen is None:
            continue
        for box in screen.query(Input):
            values[f"{mode}#{box.id}"] = box.value
    return values


def editing(app) -> bool:
    focused = app.focused
    return isinstance(focused, Input) or (isinstance(focused, TextArea) and not focused.read_only)


async def show(app, pilot, key: str, mode: str) -> None:
    await pilot.press(key)
    await settle(pilot, 0.2)
    if mode == "configure":  # the profile loads and fills the form after the screen shows
        await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
    await pilot.pause(0.1)
    assert app.current_mode == mode, screen_text(app)


def test_every_screen_is_arrived_on_its_home_and_screen_keys_never_type():
    """Every screen by its key, twice round in two orders, with stray letters between: the
    right screen shows, focus is on its home, and no field's value changed."""

    async def steps(app, pilot):
        order = [(spec.key, name) for name, spec in SCREENS.items()]
        tour = order[1:] + order[:1] + list(reversed(order))
        before = None
        for key, mode in tour:
            await show(app, pilot, key, mode)
            screen = app.screen
            assert not editing(app), f"{mode}: arrived in the field {app.focused!r}"
            assert app.focused is screen.home_widget(), f"{mode}: focus on {app.focused!r}"
            assert "Leave field" not in screen_text(app)  # the footer offers it only in one
            await pilot.press(*STRAY)
            await pilot.pause(0.1)
            assert app.current_mode == mode and not editing(app)
            values = field_values(app)
            if before is not None:
                assert {k: v for k, v in values.items() if k in before} == before, mode
            before = values
    drive(steps, size=(100, 30))


async def _enter_type_leave(app, pilot, enter_keys, field_id: str, text: str,
                            away: tuple[str, str]):
    """Enter a field by keys, type `text`, Esc, then a screen key switches screens."""
    screen = app.screen
    box = screen.query_one(f"#{field_id}", Input)
    await pilot.press(*enter_keys)
    await pilot.pause(0.1)
    assert app.focused is box, f"{enter_keys} did not enter #{field_id}: {app.focused!r}"
    await pilot.press(*text)
    await pilot.pause(0.1)
    typed = box.value
    await pilot.press("escape")
    await pilot.pause(0.1)
    assert not editing(app) and app.focused is screen.home_widget()
    key, mode = away
    await show(app, pilot, key, mode)
    assert box.value == typed  # the screen key was no text
    return typed


def test_configure_enter_edits_the_row_replacing_its_value_and_esc_leaves():
    async def steps(app, pilot):
        await show(app, pilot, "3", "configure")
        form = app.screen.query_one("#cfg-form")
        assert app.focused is form and form.current == "lora.r"
        typed = await _enter_type_leave(app, pilot, ["enter"], "f-lora-r", "64", ("4", "train"))
        assert typed == "64"  # replaced, not appended (16 + 64 = 1664 before)
        await show(app, pilot, "3", "configure")
        assert app.focused is form
        # Arrows move the row cursor; Enter edits that row; Enter again finishes the edit.
        await pilot.press("down", "enter", "1", "2", "8", "enter")
        await pilot.pause(0.1)
        assert form.widget("lora.alpha").value == "128" and app.focused is form
        assert form.current == "lora.alpha"
        # Tab into the next field also selects its text.
        await pilot.press("enter", "tab", "0", ".", "1")
        await pilot.pause(0.1)
        assert form.widget("lora.dropout").value == "0.1"
        await pilot.press("escape", "1")
        await pilot.pause(0.2)
        assert app.current_mode == "runs"
    drive(steps, size=(100, 30))


def test_configure_arrives_on_the_form_after_leaving_from_a_field():
    """Leaving the screen while a field has focus (the palette, a started run) and coming
    back: arrived on the form, so the next screen key switches."""

    async def steps(app, pilot):
        await show(app, pilot, "3", "configure")
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert editing(app)
        app.action_show("train")  # as the command palette's "Go to Train" does
        await settle(pilot, 0.2)
        await show(app, pilot, "3", "configure")
        assert not editing(app) and app.focused is app.screen.query_one("#cfg-form")
        await show(app, pilot, "4", "train")
        assert app.screen_stack and app.current_mode == "train"
    drive(steps, size=(100, 30))


def test_a_dialog_opened_from_a_field_returns_to_it():
    """Help over a field is no leaving the screen: closed, the field has focus again."""

    async def steps(app, pilot):
        await show(app, pilot, "3", "configure")
        await pilot.press("enter")
        await pilot.pause(0.1)
        field = app.focused
        assert editing(app)
        await pilot.press("f1")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await settle(pilot, 0.2)
        assert app.focused is field
    drive(steps, size=(100, 30))


def test_preference_data_clean_key_focuses_no_field():
    """c on preference data (no steps to toggle) lands on the panel, not its split field."""
    pairs = REPO / "assets" / "demo" / "translate_en_fr_pairs.jsonl"

    async def steps(app, pilot):
        await show(app, pilot, "2", "data")
        screen = app.screen
        screen.open(str(pairs))
        await wait_for(pilot, lambda: screen.records and screen.preference)
        await pilot.press("c")
        await pilot.pause(0.1)
        assert not editing(app)
        await show(app, pilot, "1", "runs")
    drive(steps, size=(100, 30))


def test_compare_enter_goes_to_the_prompt_and_esc_leaves_it():
    async def steps(app, pilot):
        await show(app, pilot, "5", "compare")
        assert app.screen.query_one("#compare-prompt", Input).value == ""
        typed = await _enter_type_leave(app, pilot, ["enter"], "compare-prompt", "hello 6",
                                        ("6", "export"))
        assert typed == "hello 6"
        await show(app, pilot, "5", "compare")
        assert not editing(app)
    drive(steps, size=(100, 30))


def test_data_fields_take_keys_only_once_entered():
    demo = str(REPO / "assets" / "demo" / "translate_en_fr.jsonl")

    async def steps(app, pilot):
        await show(app, pilot, "2", "data")
        screen = app.screen
        path = screen.query_one("#data-path", Input)
        path.value = "some/where.jsonl"
        # ctrl+o enters the path field with its text selected: typing replaces it.
        typed = await _enter_type_leave(app, pilot, ["ctrl+o"], "data-path", "x",
                                        ("1", "runs"))
        assert typed == "x"
        await show(app, pilot, "2", "data")
        await pilot.press("ctrl+o", "ctrl+a", "ctrl+k", *demo, "enter")
        await wait_for(pilot, lambda: len(screen.records) == 600)
        assert not editing(app)  # an opened file leaves the field for the rows
        await pilot.press("3")
        await settle(pilot, 0.2)
        assert app.current_mode == "configure"
    drive(steps, size=(100, 30))


def test_esc_leaves_every_field_of_every_screen():
    """Each text field, entered as a click would (focus), then Esc: back on the home."""

    async def steps(app, pilot):
        for name, spec in SCREENS.items():
            await show(app, pilot, spec.key, name)
            screen = app.screen
            if name == "data":
                await pilot.press("c")  # the cleaning panel's fields are shown, then enterable
                await pilot.pause(0.1)
            for box in list(screen.query(Input)):
                if not box.display or box.disabled or not box.focusable:
                    continue
                box.focus()
                await pilot.pause(0.05)
                assert app.focused is box
                await pilot.press("escape")
                await pilot.pause(0.05)
                assert app.focused is screen.home_widget(), f"{name}#{box.id}: {app.focused!r}"
                assert app.current_mode == name
    drive(steps, size=(100, 30))


def test_one_select_on_focus_everywhere():
    """Every text field of the app selects its text when entered (Configure's did not)."""

    async def steps(app, pilot):
        for name, spec in SCREENS.items():
            await show(app, pilot, spec.key, name)
            for box in app.screen.query(Input):
                assert box.select_on_focus, f"{name}#{box.id} appends instead of replacing"
    drive(steps, size=(100, 30))
