"""The three answer columns of the Compare screen (base, few-shot, fine-tuned).

Each column is a scrollable box holding one Static; the screen hands it the whole text of
the column (rebuilt from the answers so far) and the column follows the end only when the
reader was already there, so scrolling back up to read is never undone by a new token."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

SYSTEMS = ("base", "few-shot", "fine-tuned")


class AnswerColumn(VerticalScroll):
    DEFAULT_CSS = """
    AnswerColumn { width: 1fr; height: 1fr; border: round $panel-lighten-2;
                   border-title-color: $accent; padding: 0 1; }
    AnswerColumn:focus { border: round $primary; }
    AnswerColumn > Static { width: 1fr; height: auto; }
    """

    def __init__(self, system: str, **kwargs):
        super().__init__(**kwargs)
        self.system = system
        self.border_title = system
        self.text = ""

    def compose(self) -> ComposeResult:
        yield Static("")

    def show(self, text: Text | str) -> None:
        plain = text.plain if isinstance(text, Text) else text
        if plain == self.text:
            return
        at_end = self.is_vertical_scroll_end or self.max_scroll_y == 0
        self.text = plain
        self.query_one(Static).update(text)
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False)


def column_text(system: str, prompts: list[str], answers: dict[tuple[str, int], str],
                with_prompts: bool) -> Text:
    """One column: each prompt (for a suite) followed by this system's answer so far."""
    if not with_prompts:
        return Text(answers.get((system, 0), ""))
    out = Text()
    for i, prompt in enumerate(prompts):
        if i:
            out.append("\n\n")
        out.append(f"{i + 1}. ", style="bold")
        out.append(prompt.strip().splitlines()[0][:200] if prompt.strip() else "", style="dim")
        out.append("\n")
        out.append(answers.get((system, i), ""))
    return out
