"""Preference data on the Data screen: what the preference checks found, and one pair at a time.

`preference_summary` draws a PreferenceReport.to_json() for the stats pane. `render_shown` turns
one record into a `PairShown` (the screen calls it in a worker: rendering through the chat
template needs the tokenizer) and `PairView.show` only draws it: the prompt once, then the
chosen and rejected answers side by side (stacked when the view is narrow), or an unpaired
answer with its label. Trained tokens are styled as the SFT row detail styles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from screens.widgets.data_detail import rendered_text

# Narrower than this, the two answers are stacked: side by side each would get under 36 cells.
STACK_BELOW = 76
# A long prompt (a multi-turn conversation) shows its last lines, so that the answers stay on
# screen; `t` shows it whole.
PROMPT_ROWS = 8


# ---- the report ------------------------------------------------------------------------------

def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def preference_summary(report: dict) -> Group:
    """Rows, the checks that drop rows before training, duplicates, lengths and the length-bias
    warning, in a 30-column pane."""
    paired = report.get("kind") == "paired"
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()

    def row(label: str, value: Any, warn: bool = False) -> None:
        table.add_row(label, Text(_n(value), style="bold yellow" if warn and value else ""))

    table.add_row("rows", f"{report.get('rows', 0):,} " + ("pairs" if paired else "answers (KTO)"))
    if report.get("rows_skipped"):
        row("skipped (bad)", report["rows_skipped"], warn=True)
    table.add_row("schema", ", ".join(sorted(set((report.get("formats") or {}).values()))) or "-")
    labels = report.get("labels")
    if labels:
        table.add_row("labels", f"{labels['desirable']:,} desirable, {labels['undesirable']:,} not")
    tokens = report.get("tokens") or {}
    dropped = (tokens.get("dropped") or {}).get("count") or 0
    kept = (report.get("kept") or 0) - dropped  # the checks' survivors that also render
    table.add_row("can train", Text(f"{kept:,} of {report.get('rows', 0):,}",
                                    style="bold yellow" if kept < report.get("rows", 0) else ""))
    for entry in (report.get("checks") or {}).values():
        row(_short_check(entry["label"]), entry["count"], warn=True)
    dups = report.get("duplicates") or {}
    row("shared prompts", dups.get("prompts_with_several_rows"))
    row("duplicate rows", dups.get("duplicate_rows"), warn=True)
    lengths = report.get("lengths") or {}
    basis = "tokens" if lengths.get("tokens") else "chars"
    block = lengths.get(basis)
    if block and paired:
        table.add_row(f"{basis} p50", f"chosen {_n(block['chosen']['median'])} · "
                                      f"rejected {_n(block['rejected']['median'])}")
        table.add_row("chosen longer", f"{block['chosen_longer_share']:.0%} of pairs")
        if block.get("median_ratio") is not None:
            table.add_row("length ratio", f"{block['median_ratio']:.2f}x (median)")
    elif block:
        table.add_row(f"{basis} p50", f"good {_n(block['desirable']['median'])} · "
                                      f"bad {_n(block['undesirable']['median'])}")
    if tokens:
        over = tokens.get("over_limit") or {}
        if tokens.get("max_seq_len") is not None:
            row(f"over {tokens['max_seq_len']}", over.get("rows"), warn=True)
        whys = [e.get("why", "") for e in (tokens.get("dropped") or {}).get("examples") or ()]
        long = all(w.startswith("the prompt alone") for w in whys)
        row("prompt too long" if long else "render drops", dropped, warn=True)
    parts: list[Any] = [table]
    if report.get("length_bias"):
        parts.append(Text(report["length_bias"], style="yellow"))
    if labels and labels.get("note"):
        parts.append(Text(labels["note"], style="yellow"))
    if not lengths.get("tokens"):
        parts.append(Text("lengths in characters: no tokenizer", style="dim"))
    return Group(*parts)


def _short_check(label: str) -> str:
    """The checks' labels, short enough for the pane's first column."""
    return {"sides reply to different prompts": "other prompts",
            "chosen equals rejected": "identical sides",
            "empty prompt": "empty prompt"}.get(label, "empty answer" if "empty" in label else label)


# ---- one pair --------------------------------------------------------------------------------

@dataclass
class PairShown:
    """One record as the pair view draws it."""

    header: str
    prompt_title: str
    prompt: Text
    sides: list[tuple[str, Text, str]] = field(default_factory=list)  # (title, body, its style)
    notes: list[str] = field(default_factory=list)


def _plain(messages: list[dict]) -> Text:
    text = Text()
    for n, m in enumerate(messages or ()):
        if n:
            text.append("\n")
        text.append(f"{m.get('role')}: ", style="dim")
        text.append(m.get("content") or "")
    return text


def _answer(tokenizer: Any, ids: list[int]) -> Text:
    # Every token of an answer trains: the same styling as the SFT row detail's trained part.
    return rendered_text(tokenizer, SimpleNamespace(input_ids=ids, assistant_masks=[1] * len(ids)))


def render_shown(tokenizer: Any, record: dict, max_seq_len: int | None, header: str) -> PairShown:
    """Render a preference record as training will (blocking: call it in a worker). A record
    that cannot train is still shown, with why; without a tokenizer its text is shown raw."""
    from workbench.data.errors import DataError
    from workbench.data.preference_checks import pair_problem

    paired = "chosen" in record
    notes = []
    problem = pair_problem(record)
    if problem is not None:
        notes.append(f"dropped before training: {problem[1]}")
    rendered = None
    if tokenizer is not None:
        from workbench.data.preference_render import PairDropped, render_pair, render_unpaired

        render = render_pair if paired else render_unpaired
        try:
            try:
                rendered = render(tokenizer, record, max_seq_len)
            except PairDropped as exc:
                if max_seq_len is None:
                    raise
                notes.append(f"dropped before training: {exc.message}")
                rendered = render(tokenizer, record, None)  # shown whole, with why it drops
        except DataError as exc:
            notes.append(f"cannot render it: {exc.message}")
    if rendered is None:
        names = ("chosen", "rejected") if paired else ("completion",)
        sides = [(name, _plain(record.get(name) or []), _side_style(name, record)) for name in names]
        if not paired:
            sides = [(_label_title(record.get("label")), sides[0][1], sides[0][2])]
        return PairShown(header, "prompt (as written: not rendered)", _plain(record.get("prompt") or []),
                         sides, notes)

    prompt = Text(tokenizer.decode(rendered.prompt_ids, skip_special_tokens=False))
    shared = ", shared by both answers" if paired else ""
    prompt_title = f"prompt · {len(rendered.prompt_ids):,} tokens{shared}, not trained"
    if paired:
        sides = [(f"chosen · {len(rendered.chosen_ids):,} tokens trained{_cut(rendered.chosen)}",
                  _answer(tokenizer, rendered.chosen_ids), "chosen"),
                 (f"rejected · {len(rendered.rejected_ids):,} tokens trained{_cut(rendered.rejected)}",
                  _answer(tokenizer, rendered.rejected_ids), "rejected")]
    else:
        sides = [(f"{_label_title(rendered.label)} · {len(rendered.completion_ids):,} tokens trained"
                  f"{_cut(rendered.row)}", _answer(tokenizer, rendered.completion_ids),
                  _side_style("completion", record))]
    if rendered.truncated:
        notes.append(f"cut to max_seq_len={max_seq_len}: {rendered.answer_tokens_lost:,} answer "
                     "tokens lost")
    return PairShown(header, prompt_title, prompt, sides, notes)


def _cut(row: Any) -> str:
    return f" (cut: {row.answer_tokens_lost:,} lost)" if getattr(row, "truncated", False) else ""


def _label_title(label: Any) -> str:
    return "desirable (label true)" if label else "undesirable (label false)"


def _side_style(name: str, record: dict) -> str:
    if name == "completion":
        return "chosen" if record.get("label") else "rejected"
    return name


class PairView(VerticalScroll, can_focus=True):
    """The prompt on top, then the answers: two columns, or stacked when narrow."""

    DEFAULT_CSS = """
    PairView { height: 1fr; padding: 0 1; }
    PairView > #pair-head { height: 1; color: $text-muted; }
    PairView > #pair-prompt { height: auto; border: round $panel-lighten-2;
                              border-title-color: $text-muted; padding: 0 1; }
    PairView > #pair-sides { height: auto; }
    PairView > #pair-sides.-stacked { layout: vertical; }
    PairView .pair-side { width: 1fr; height: auto; border: round $panel-lighten-2;
                          padding: 0 1; }
    PairView .pair-side.-chosen { border: round $success; border-title-color: $success; }
    PairView .pair-side.-rejected { border: round $error; border-title-color: $error; }
    PairView > #pair-sides.-stacked > .pair-side { width: 100%; }
    PairView > #pair-notes { height: auto; color: $warning; }
    """
    BINDINGS = [
        Binding("n,right", "move(1)", "Next", key_display="n", id="pairs.next"),
        Binding("p,left", "move(-1)", "Previous", key_display="p", id="pairs.previous"),
        Binding("t", "whole_prompt", "Whole prompt", id="pairs.whole_prompt"),
        Binding("escape", "rows", "Rows", id="pairs.rows"),
    ]

    class Move(Message):
        """Show the next (+1) or previous (-1) row of the table's current view; 0 closes the
        pair view."""

        def __init__(self, delta: int) -> None:
            self.delta = delta
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shown: PairShown | None = None
        self.whole_prompt = False
        self._prompt_width = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="pair-head")
        yield Static("Move to a row (Enter) to see the pair rendered through the chat template.",
                     id="pair-prompt")
        with Horizontal(id="pair-sides"):
            yield Static("", id="pair-a", classes="pair-side")
            yield Static("", id="pair-b", classes="pair-side")
        yield Static("", id="pair-notes")

    def on_resize(self) -> None:
        self.query_one("#pair-sides").set_class(self.size.width < STACK_BELOW, "-stacked")
        if self.shown is not None and self.size.width != self._prompt_width:
            self._show_prompt()

    def action_whole_prompt(self) -> None:
        self.whole_prompt = not self.whole_prompt
        if self.shown is not None:
            self._show_prompt()

    def _show_prompt(self) -> None:
        """The prompt's last PROMPT_ROWS rows as wrapped at this width, unless `t` asked for
        all of it."""
        shown = self.shown
        box = self.query_one("#pair-prompt", Static)
        box.border_title = shown.prompt_title
        self._prompt_width = self.size.width
        width = max(10, self.size.width - 6)  # the box's border and padding, the scrollbar
        lines = shown.prompt.split("\n", allow_blank=True)
        rows = [max(1, -(-line.cell_len // width)) for line in lines]
        if self.whole_prompt or sum(rows) <= PROMPT_ROWS:
            box.update(shown.prompt)
            box.border_subtitle = "t: fold it" if sum(rows) > PROMPT_ROWS else ""
            return
        keep, used = len(lines), 0
        while keep > 0 and used + rows[keep - 1] <= PROMPT_ROWS - 1:
            keep -= 1
            used += rows[keep]
        if keep == len(lines):  # one line longer than the box: its end
            tail = lines[-1]
            tail = tail[max(0, tail.cell_len - width * (PROMPT_ROWS - 1)):]
            kept = [tail]
        else:
            kept = lines[keep:]
        text = Text(f"… {sum(rows) - sum(rows[keep:]) if keep < len(lines) else sum(rows) - 1} "
                    "earlier lines (t shows the whole prompt)\n", style="dim italic")
        text.append(Text("\n").join(kept))
        box.update(text)
        box.border_subtitle = "t: whole prompt"

    def action_move(self, delta: int) -> None:
        self.post_message(self.Move(delta))

    def action_rows(self) -> None:
        self.post_message(self.Move(0))  # 0: back to the table

    def show(self, shown: PairShown) -> None:
        self.shown = shown
        self.query_one("#pair-head", Static).update(Text(shown.header))
        self._show_prompt()
        boxes = [self.query_one("#pair-a", Static), self.query_one("#pair-b", Static)]
        for box, side in zip(boxes, shown.sides + [None] * (2 - len(shown.sides))):
            box.display = side is not None
            if side is None:
                continue
            title, body, style = side
            box.border_title = title
            box.set_class(style == "chosen", "-chosen")
            box.set_class(style == "rejected", "-rejected")
            box.update(body)
        notes = self.query_one("#pair-notes", Static)
        notes.update("\n".join(shown.notes))
        notes.display = bool(shown.notes)
        self.scroll_home(animate=False)

    def message(self, header: str, text: str) -> None:
        self.shown = None
        self.query_one("#pair-head", Static).update(Text(header))
        box = self.query_one("#pair-prompt", Static)
        box.border_title = box.border_subtitle = ""
        box.update(Text(text))
        self.query_one("#pair-notes", Static).display = False
        for box in self.query(".pair-side"):
            box.display = False
