"""Row detail: the conversation as the trainer sees it, trained tokens highlighted.

`rendered_text` turns a RenderedRow (render_conversation's tokens and loss mask) into Rich
Text: the screen calls it in a worker (tokenizer decoding is not free) and hands the Text to
`DetailPanel.show`, which only draws.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

# Bold on a green background stays readable in 256-colour terminals, and the ▸ markers keep
# trained stretches visible where there is no colour at all (NO_COLOR, screen readers).
TRAINED_STYLE = "bold black on green"
MARK_OPEN, MARK_CLOSE = "▸", "◂"


def rendered_text(tokenizer: Any, row: Any, markers: bool = False) -> Text:
    """The rendered conversation with trained stretches styled (and optionally ▸marked◂)."""
    ids, mask = row.input_ids, row.assistant_masks
    out = Text()
    start = 0
    # Decode runs, not single tokens: a multi-byte character split across tokens survives.
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            piece = tokenizer.decode(ids[start:end], skip_special_tokens=False)
            if mask[start]:
                out.append(f"{MARK_OPEN}{piece}{MARK_CLOSE}" if markers else piece, TRAINED_STYLE)
            else:
                out.append(piece)
            start = end
    return out


def trained_count(row: Any) -> int:
    return sum(row.assistant_masks)


class DetailPanel(VerticalScroll):
    DEFAULT_CSS = """
    DetailPanel { height: 1fr; }
    DetailPanel > Static { height: auto; }
    """

    def compose(self):
        yield Static("Move to a row (Enter) to see it rendered through the chat template.",
                     id="detail-body")

    def show(self, header: str, body: Text, notes: list[str] | None = None) -> None:
        parts = [Text(header, style="bold"), body]
        parts += [Text(n, style="yellow") for n in notes or ()]
        self.query_one("#detail-body", Static).update(Group(*parts))
        self.scroll_home(animate=False)

    def message(self, text: str) -> None:
        self.query_one("#detail-body", Static).update(text)
