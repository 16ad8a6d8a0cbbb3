"""The three answer columns of the Compare screen (base, few-shot, fine-tuned).

Each column is a scrollable box holding one Static; the screen hands it the whole text of
the column (rebuilt from the answers so far) and the column follows the end only when the
reader was already there, so scrolling back up to read is never undone by a new token.

The three columns are read side by side, so their rows line up: `aligned_columns` wraps each
prompt's block to its column's width and pads the shorter blocks with blank lines, so prompt
N starts on the same row in every column, and the screen scrolls the three together."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

SYSTEMS = ("base", "few-shot", "fine-tuned")


class AnswerColumn(VerticalScroll):
    DEFAULT_CSS = """
    /* A scrollbar that is always there keeps the width the text is wrapped to constant. */
    AnswerColumn { width: 1fr; height: 1fr; border: round $panel-lighten-2;
                   border-title-color: $accent; padding: 0 1; overflow-y: scroll;
                   scrollbar-size-vertical: 1; }
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

    @property
    def wrap_width(self) -> int:
        """The cells a line of text has here (0 before the first layout)."""
        return self.scrollable_content_region.width

    def show(self, text: Text | str, display: Text | None = None) -> None:
        """`text`: the column's answers as they are (`self.text`); `display`: the same wrapped
        and padded to line up with the other columns (`aligned_columns`), when known."""
        plain = text.plain if isinstance(text, Text) else text
        shown = display if display is not None else text
        shown_plain = shown.plain if isinstance(shown, Text) else shown
        if plain == self.text and shown_plain == getattr(self, "_shown", None):
            return
        at_end = self.is_vertical_scroll_end or self.max_scroll_y == 0
        self.text, self._shown = plain, shown_plain
        self.query_one(Static).update(shown)
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False)


def _block(system: str, i: int, prompt: str, answers: dict[tuple[str, int], str],
           with_prompts: bool) -> Text:
    """Prompt i's part of a column: its first line (for a suite), then the answer so far."""
    if not with_prompts:
        return Text(answers.get((system, i), ""))
    out = Text()
    out.append(f"{i + 1}. ", style="bold")
    out.append(prompt.strip().splitlines()[0][:200] if prompt.strip() else "", style="dim")
    out.append("\n")
    out.append(answers.get((system, i), ""))
    return out


def column_text(system: str, prompts: list[str], answers: dict[tuple[str, int], str],
                with_prompts: bool) -> Text:
    """One column: each prompt (for a suite) followed by this system's answer so far."""
    if not with_prompts:
        return _block(system, 0, "", answers, False)
    return Text("\n\n").join(_block(system, i, prompt, answers, True)
                              for i, prompt in enumerate(prompts))


def aligned_columns(systems: tuple[str, ...], widths: dict[str, int], prompts: list[str],
                    answers: dict[tuple[str, int], str], with_prompts: bool) -> dict[str, Text]:
    """Each system's column wrapped to its width, every prompt's block padded to the tallest
    of the three, so that prompt N starts on the same row in each column."""
    console = Console(width=max(widths.values()) + 1, file=None, color_system=None,
                      legacy_windows=False)
    count = len(prompts) if with_prompts else 1
    lines: dict[str, list[Text]] = {system: [] for system in systems}
    for i in range(count):
        wrapped = {system: list(_block(system, i, prompts[i] if with_prompts else "", answers,
                                       with_prompts).wrap(console, max(1, widths[system])))
                   for system in systems}
        tallest = max(len(block) for block in wrapped.values())
        for system, block in wrapped.items():
            if i:
                lines[system].append(Text(""))  # the blank line between prompts
            lines[system].extend(block + [Text("")] * (tallest - len(block)))
    return {system: Text("\n").join(rows) for system, rows in lines.items()}
