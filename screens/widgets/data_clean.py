"""Cleaning toggles and the split/save form; the screen runs the work and sends results back.

One checkbox per clean operation, in the engine's order (order matters: whitespace is normalized
before deduplicating). Toggling posts `CleanPanel.StepsChanged`; the screen re-runs
`clean_records` (debounced, previous run cancelled) and calls `show_result`.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Static

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
    """

    class StepsChanged(Message):
        def __init__(self, steps: list[str]) -> None:
            self.steps = steps
            super().__init__()

    def __init__(self, out_dir: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._out_dir = out_dir

    def compose(self) -> ComposeResult:
        for step, label in STEP_LABELS:
            yield Checkbox(label, id=f"step-{step}", compact=True)
        yield Static("Toggle a step to see what it removes.", id="clean-result")
        with Horizontal():
            yield Label("split")
            yield Input("0.8,0.1,0.1", id="split-fractions", compact=True)
        with Horizontal():
            yield Label("save to")
            yield Input(self._out_dir, placeholder="output folder", id="split-out", compact=True)

    @property
    def steps(self) -> list[str]:
        return [step for step, _ in STEP_LABELS if self.query_one(f"#step-{step}", Checkbox).value]

    def set_step(self, step: str, on: bool) -> None:
        self.query_one(f"#step-{step}", Checkbox).value = on

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.StepsChanged(self.steps))

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
