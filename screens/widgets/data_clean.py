"""Cleaning toggles, their settings, and the split/save form; the screen runs the work and
sends results back.

One checkbox per clean operation, in the engine's order (order matters: whitespace is normalized
before deduplicating), then the settings those operations read (minimum answer length, near-
duplicate threshold, token limit). A toggle or an edited setting posts `CleanPanel.Changed`; the
screen re-runs `clean_records` (debounced, previous run cancelled) and calls `show_result`.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Static

from screens.widgets.tick_box import TickBox
from workbench.data.clean import CleanConfig

# The engine's operation names (workbench.data.clean.STEPS) with a label that fits 30 columns.
STEP_LABELS = (
    ("drop_empty", "drop empty messages"),
    ("drop_short", "drop short answers"),
    ("normalize_whitespace", "normalize whitespace"),
    ("dedup_exact", "remove exact duplicates"),
    ("dedup_near", "remove near duplicates"),
    ("length_filter", "drop rows over the limit"),
    ("fill_placeholders", "flag {{placeholders}}"),
    ("drop_secrets", "drop rows with secrets"),
)

# The settings the steps read: (input id, label, CleanConfig field, type, rule, what is expected).
SETTINGS = (
    ("min-answer", "min answer", "min_answer_chars", int, lambda v: v >= 0,
     "a whole number of characters, 0 or more"),
    ("near-dup", "near-dup ≥", "near_dup_threshold", float, lambda v: 0 < v <= 1,
     "a Jaccard similarity above 0 and at most 1, e.g. 0.85"),
    ("max-tokens", "max tokens", "max_tokens", int, lambda v: v > 0,
     "a whole number of tokens above 0 (the profile's max_seq_len)"),
)


def result_table(summary: list[dict], rows_in: int, rows_out: int, reasons: dict[str, str]) -> Table:
    """rows kept / removed, then one line per operation with a sample reason."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column()
    table.add_row(Text("kept", style="bold"), Text(f"{rows_out:,}", style="bold green"),
                  f"of {rows_in:,}")
    table.add_row(Text("removed", style="bold"), Text(f"{rows_in - rows_out:,}",
                  style="bold red" if rows_in - rows_out else ""), "")
    for op in summary:
        what = []
        if op["changed"]:
            what.append(f"{op['changed']:,} changed")
        if op["flagged"]:
            what.append(f"{op['flagged']:,} flagged")
        if reasons.get(op["name"]):
            what.append(f"e.g. {reasons[op['name']]}")
        table.add_row(op["name"], f"-{op['removed']:,}", "; ".join(what))
    return table


class CleanPanel(VerticalScroll):
    DEFAULT_CSS = """
    CleanPanel { height: 1fr; }
    CleanPanel Checkbox { height: 1; border: none; padding: 0; background: transparent; }
    CleanPanel #clean-result { height: auto; margin: 1 0; }
    CleanPanel Horizontal { height: 1; }
    CleanPanel Horizontal > Label { width: 8; }
    CleanPanel Horizontal > Input { width: 1fr; }
    CleanPanel Horizontal.setting > Label { width: 12; }
    CleanPanel Horizontal.setting > Input { width: 10; }
    """

    # ↑/↓ move between the steps' boxes (space toggles); elsewhere in the panel they scroll.
    BINDINGS = [
        Binding("up", "step(-1)", "Previous step", show=False, id="clean.previous_step"),
        Binding("down", "step(1)", "Next step", show=False, id="clean.next_step"),
    ]

    class Changed(Message):
        """A step was toggled or a setting edited."""

    def __init__(self, out_dir: str = "", max_tokens: int = 2048, **kwargs) -> None:
        super().__init__(**kwargs)
        self._out_dir = out_dir
        self._defaults = {"min_answer_chars": CleanConfig.min_answer_chars,
                          "near_dup_threshold": CleanConfig.near_dup_threshold,
                          "max_tokens": max_tokens}
        self._typed: dict[str, str] = {}  # input id -> last value seen (mounting posts one too)

    def compose(self) -> ComposeResult:
        for step, label in STEP_LABELS:
            yield TickBox(label, id=f"step-{step}", compact=True)
        for input_id, label, key, kind, _, _ in SETTINGS:
            self._typed[f"clean-{input_id}"] = str(self._defaults[key])
            with Horizontal(classes="setting"):
                yield Label(label)
                yield Input(self._typed[f"clean-{input_id}"], id=f"clean-{input_id}", compact=True,
                            type="integer" if kind is int else "number")
        yield Static("Toggle a step to see what it removes.", id="clean-result")
        with Horizontal():
            yield Label("split")
            yield Input("0.8,0.1,0.1", id="split-fractions", compact=True)
        with Horizontal():
            yield Label("save to")
            yield Input(self._out_dir, placeholder="output folder", id="split-out", compact=True)

    def action_step(self, delta: int) -> None:
        boxes = [box for box in self.query(TickBox) if box.focusable]
        focused = self.screen.focused
        if focused in boxes:
            at = boxes.index(focused) + delta
            if 0 <= at < len(boxes):
                boxes[at].focus()
        else:
            self.scroll_relative(y=delta, animate=False)

    @property
    def steps(self) -> list[str]:
        return [step for step, _ in STEP_LABELS if self.query_one(f"#step-{step}", Checkbox).value]

    def set_step(self, step: str, on: bool) -> None:
        self.query_one(f"#step-{step}", Checkbox).value = on

    def settings(self) -> dict[str, int | float]:
        """The CleanConfig fields typed in the panel; ValueError names the one that is wrong."""
        values = {}
        for input_id, label, key, kind, rule, expected in SETTINGS:
            text = self.query_one(f"#clean-{input_id}", Input).value.strip()
            try:
                value = kind(text)
            except ValueError:
                value = None
            if value is None or not rule(value):
                raise ValueError(f"{label.rstrip(' ≥')}: expected {expected}; got {text!r}")
            values[key] = value
        return values

    def set_setting(self, key: str, value: int | float) -> None:
        input_id = next(i for i, _, k, *_ in SETTINGS if k == key)
        self.query_one(f"#clean-{input_id}", Input).value = str(value)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in self._typed:
            event.stop()
            if self._typed[event.input.id] != event.value:
                self._typed[event.input.id] = event.value
                self.post_message(self.Changed())

    def set_preference(self, on: bool) -> None:
        """Preference data is not cleaned here (the steps read conversations): its problems are
        the checks in the stats pane, and those rows are dropped before training. Split and
        save still work, keeping every prompt's rows in one split."""
        for step, _ in STEP_LABELS:
            box = self.query_one(f"#step-{step}", Checkbox)
            if on:
                box.value = False
            box.disabled = on
        for input_id, *_ in SETTINGS:
            self.query_one(f"#clean-{input_id}", Input).disabled = on
        self.show_result(
            "Preference data: the cleaning steps are for conversations. Rows with a problem "
            "(i shows them) are dropped before training; split + save keeps each prompt's rows "
            "in one split." if on else "Toggle a step to see what it removes.")

    def show_result(self, renderable) -> None:
        self.query_one("#clean-result", Static).update(renderable)

    @property
    def fractions(self) -> str:
        return self.query_one("#split-fractions", Input).value

    @property
    def out_dir(self) -> str:
        return self.query_one("#split-out", Input).value.strip()

    def set_out_dir(self, value: str) -> None:
        self.query_one("#split-out", Input).value = value
