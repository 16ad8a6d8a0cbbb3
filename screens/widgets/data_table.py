"""A virtual table of dataset rows: only the rows on screen are ever formatted.

Textual's DataTable builds a row object per row up front; at 100,000 rows that alone takes
seconds (see bench/app_data_table.md), so the data screen draws its rows with the Line API
instead: `render_line(y)` formats one visible row from the record it points at. Filtering is a
list of indices, so switching to "flagged only" never copies records.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

# Flag bits, one per finding of the inspection; FLAG_CODES gives the one-letter column.
FLAG_DUPLICATE = 1
FLAG_PLACEHOLDER = 2
FLAG_SECRET = 4
FLAG_OVER_LIMIT = 8
FLAG_SHORT = 16
FLAG_EMPTY = 32
FLAG_BROKEN = 64
FLAG_PAIR = 128  # preference data: a pair that cannot train (identical sides, other prompts...)
FLAG_CODES = (
    (FLAG_DUPLICATE, "D", "duplicate"),
    (FLAG_PLACEHOLDER, "P", "placeholder"),
    (FLAG_SECRET, "S", "secret or personal data"),
    (FLAG_OVER_LIMIT, "L", "over the length limit"),
    (FLAG_SHORT, "s", "short answer"),
    (FLAG_EMPTY, "E", "empty field"),
    (FLAG_BROKEN, "B", "broken text"),
    (FLAG_PAIR, "X", "cannot train"),
)


def flag_letters(bits: int) -> str:
    return "".join(code for bit, code, _ in FLAG_CODES if bits & bit)


def flag_names(bits: int) -> list[str]:
    return [name for bit, _, name in FLAG_CODES if bits & bit]


def _first(record: dict, role: str) -> str:
    for message in record.get("messages") or ():
        if message.get("role") == role:
            return message.get("content") or ""
    return ""


def _text(messages) -> str:
    """An answer's text (a text plus a tool call is two messages)."""
    return " ".join(m.get("content") or "" for m in messages or ())


def _question(record: dict) -> str:
    """A preference record's question: the last user (or tool) turn of its prompt."""
    for message in reversed(record.get("prompt") or ()):
        if message.get("role") != "system":
            return message.get("content") or ""
    return ""


def record_kind(record: dict) -> str:
    """"paired" (chosen / rejected), "unpaired" (completion + label) or "sft" (messages)."""
    if "chosen" in record:
        return "paired"
    return "unpaired" if "completion" in record else "sft"


def record_chars(record: dict) -> int:
    kind = record_kind(record)
    if kind == "sft":
        return sum(len(m.get("content") or "") for m in record.get("messages") or ())
    sides = ("prompt", "chosen", "rejected") if kind == "paired" else ("prompt", "completion")
    return sum(len(m.get("content") or "") for s in sides for m in record.get(s) or ())


def _fit(text: str, width: int) -> str:
    """One line of exactly `width` cells: newlines shown as ⏎ so a row never wraps."""
    text = text.replace("\r", "").replace("\n", "⏎").replace("\t", " ")
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.ljust(width)


# The text columns each kind of record shows: (header, text of a record).
TEXT_COLUMNS = {
    "sft": (("question", lambda r: _first(r, "user")), ("answer", lambda r: _first(r, "assistant"))),
    "paired": (("prompt", _question), ("chosen", lambda r: _text(r.get("chosen"))),
               ("rejected", lambda r: _text(r.get("rejected")))),
    "unpaired": (("prompt", _question), ("completion", lambda r: _text(r.get("completion")))),
}


class RowsView(ScrollView, can_focus=True):
    """Rows of the one record format: number, flags, characters, question and answer; for
    preference data the prompt and both answers (or the answer and its label)."""

    COMPONENT_CLASSES = {"rows--header", "rows--cursor", "rows--flagged", "rows--dim"}
    DEFAULT_CSS = """
    RowsView { background: $surface; }
    RowsView > .rows--header { text-style: bold; background: $panel; }
    RowsView > .rows--cursor { background: $accent 40%; text-style: bold; }
    RowsView:focus > .rows--cursor { background: $accent; color: $text; }
    RowsView > .rows--flagged { color: $warning; }
    RowsView > .rows--dim { color: $text-muted; }
    """
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False, id="rows.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="rows.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="rows.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="rows.page_down"),
        Binding("home,g", "jump(0)", "First", show=False, id="rows.first"),
        Binding("end,G", "jump(-1)", "Last", show=False, id="rows.last"),
        Binding("enter", "select", "Detail", show=False, id="rows.select"),
    ]

    cursor: reactive[int] = reactive(0, always_update=False, repaint=False)

    class RowHighlighted(Message):
        """The cursor moved to record `index` (an index into all records, not the view)."""

        def __init__(self, index: int | None) -> None:
            self.index = index
            super().__init__()

    class RowSelected(RowHighlighted):
        """Enter on a row: show its detail."""

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._records: Sequence[dict] = ()
        self._flags: Sequence[int] = ()
        self._view: Sequence[int] = ()
        self.kind = "sft"

    # -- data -------------------------------------------------------------------------------

    def set_records(self, records: Sequence[dict], flags: Sequence[int] | None = None) -> None:
        self._records = records
        self.kind = record_kind(records[0]) if records else "sft"
        self._flags = flags if flags is not None else ()
        self._view = range(len(records))
        self._reset()

    def set_flags(self, flags: Sequence[int]) -> None:
        self._flags = flags
        self.refresh()

    def set_view(self, indices: Sequence[int]) -> None:
        """Show only these record indices (a filter), in this order."""
        self._view = indices
        self._reset()

    @property
    def row_count(self) -> int:
        return len(self._view)

    @property
    def current_index(self) -> int | None:
        return self._view[self.cursor] if 0 <= self.cursor < len(self._view) else None

    def _reset(self) -> None:
        self.set_reactive(RowsView.cursor, 0)
        self.virtual_size = Size(self.size.width, len(self._view) + 1)  # + the header line
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()
        self.post_message(self.RowHighlighted(self.current_index))

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self._view) + 1)

    # -- keys -------------------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_jump(self, position: int) -> None:
        self.move_to(position if position >= 0 else len(self._view) - 1)

    def action_select(self) -> None:
        self.post_message(self.RowSelected(self.current_index))

    def move_to(self, position: int) -> None:
        if not self._view:
            return
        self.cursor = max(0, min(len(self._view) - 1, position))

    def watch_cursor(self, old: int, new: int) -> None:
        self.reveal_cursor()
        self.refresh()
        self.post_message(self.RowHighlighted(self.current_index))

    def reveal_cursor(self) -> None:
        """Keep the cursor row on screen: line cursor + 1 (the header is line 0, pinned on
        top). While hidden (the pair view moves the cursor) there is no screen to keep it on:
        call again once shown."""
        if self.size.height < 2:
            return
        top, new = self.scroll_offset.y, self.cursor
        body = self.size.height - 1
        if new < top:
            self.scroll_to(y=new, animate=False, immediate=True)
        elif new >= top + body:
            self.scroll_to(y=new - body + 1, animate=False, immediate=True)

    def _on_click(self, event) -> None:  # mouse is optional, but should work when present
        if event.y >= 1:
            self.move_to(self.scroll_offset.y + event.y - 1)
            self.focus()

    # -- drawing ----------------------------------------------------------------------------

    def _columns(self, width: int) -> tuple[int, int, int, list[int]]:
        """Widths of the number, flag and chars columns, then of each text column."""
        number = max(5, len(str(len(self._records))) + 1)
        flags, chars = 4, 6
        labels = 6 if self.kind == "unpaired" else 0  # "false " / "true  "
        texts = len(TEXT_COLUMNS[self.kind])
        rest = max(texts, width - number - flags - chars - labels - 2 - texts)
        widths = [rest // texts] * texts
        widths[-1] += rest - sum(widths)  # the last column takes the odd cells
        return number, flags, chars, widths

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        number, flags, chars, widths = self._columns(width)
        columns = TEXT_COLUMNS[self.kind]
        label = self.kind == "unpaired"
        if y == 0:
            text = (f"{'row':>{number}} {'flag':<{flags}} {'chars':>{chars}} "
                    + ("label " if label else "")
                    + " ".join(_fit(name, w) for (name, _), w in zip(columns, widths)))
            style = self.get_component_rich_style("rows--header")
            return Strip([Segment(_fit(text, width), style)], width)
        line = self.scroll_offset.y + y - 1
        if line >= len(self._view):
            return Strip.blank(width, self.rich_style)
        index = self._view[line]
        record = self._records[index]
        bits = self._flags[index] if index < len(self._flags) else 0
        source = record.get("source") or {}
        row = shown_row(source, index)
        base = self.rich_style
        if line == self.cursor:
            base = base + self.get_component_rich_style("rows--cursor")
        flag_style = base + self.get_component_rich_style("rows--flagged")
        dim = base + self.get_component_rich_style("rows--dim")
        segments = [
            Segment(f"{row:>{number}} ", dim),
            Segment(f"{flag_letters(bits):<{flags}} ", flag_style if bits else base),
            Segment(f"{record_chars(record):>{chars}} ", dim),
        ]
        if label:
            good = bool(record.get("label"))
            segments.append(Segment(f"{'true' if good else 'false':<5} ", base if good else flag_style))
        for n, ((_, text_of), w) in enumerate(zip(columns, widths)):
            segments.append(Segment(_fit(text_of(record), w) + (" " if n < len(widths) - 1 else ""), base))
        return Strip(segments).adjust_cell_length(width, base)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._view) + 1

    def row_region(self, line: int) -> Region:
        return Region(0, line + 1, self.size.width, 1)


def shown_row(source: dict, index: int) -> int:
    """A record's row as every message numbers it (workbench/data/readers.py row_label): a
    line's number in JSON Lines / CSV, a JSON array's or Parquet file's record counted from 1."""
    from workbench.data.readers import numbering_of

    row = source.get("row")
    if not isinstance(row, int):
        return index + 1
    return row + 1 if numbering_of(source.get("file")) == "index" else row
