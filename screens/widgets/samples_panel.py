"""GRPO's latest sampled completions on the Train monitor: each prompt once, its completions
under it with every reward, the weighted total and the advantage (how much better than its
group the completion scored), from the run's newest "samples" event.

One line per completion, cut to the panel's width (Rich's ellipsis), so a panel a few lines high
shows a whole group; it scrolls for the rest. Redrawn only when a new event arrives.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from screens.widgets.keys import with_ids
from screens.widgets.signal_plot import short_reward

EMPTY = ("no samples yet: a GRPO run records its latest completions with their rewards at "
         "every logging step")
ADV_STYLE = {1: "#87af5f", -1: "#ff5f5f", 0: "#808080"}  # the theme's success / error / grey


def one_line(text) -> str:
    return " ".join(str(text or "").split())


def _num(value, spec: str = ".2f") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return format(value, spec)


def _sign(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) < 5e-3:
        return 0
    return 1 if value > 0 else -1


def reward_names(samples: list[dict]) -> list[str]:
    """The reward functions, in the order the samples name them."""
    names: dict[str, None] = {}
    for s in samples:
        if isinstance(s, dict) and isinstance(s.get("rewards"), dict):
            names.update(dict.fromkeys(s["rewards"]))
    return list(names)


def _column_name(name: str) -> str:
    """A reward's column header, at most 12 cells: the completions need the width (the
    reward per function chart's legend has the names in full)."""
    short = short_reward(name)
    return short if len(short) <= 12 else short[:11] + "…"


def _table(names: list[str], header: bool) -> Table:
    """completion | each reward | total | adv; the number columns have fixed widths, so the
    tables of every prompt line up under one header."""
    table = Table(expand=True, box=None, padding=(0, 1), show_edge=False, pad_edge=False,
                  show_header=header, header_style="bold")
    table.add_column("completion", ratio=1, no_wrap=True, overflow="ellipsis", min_width=12)
    for name in names:
        width = max(len(_column_name(name)), 5)
        table.add_column(_column_name(name), justify="right", no_wrap=True, width=width)
    table.add_column("total", justify="right", no_wrap=True, width=6)
    table.add_column("adv", justify="right", no_wrap=True, width=6)
    return table


def samples_table(samples: list[dict], width: int = 0) -> Group:
    """The completions grouped under their prompts (each prompt one full line), each with
    every reward, the total and the advantage. Given the `width` it is drawn at, the reward
    columns are left out where they would leave a completion under 24 cells (the total and
    the advantage stay)."""
    names = reward_names(samples)
    if width and width - sum(max(len(_column_name(n)), 5) + 1 for n in names) - 14 < 24:
        names = []
    parts: list = [_table(names, header=True)]
    table, prompt = None, object()
    for s in samples:
        if not isinstance(s, dict):
            continue
        if table is None or s.get("prompt") != prompt:
            prompt = s.get("prompt")
            parts.append(Text("▸ " + one_line(prompt), style="italic #d7af5f", no_wrap=True,
                              overflow="ellipsis"))
            table = _table(names, header=False)
            parts.append(table)
        rewards = s.get("rewards") if isinstance(s.get("rewards"), dict) else {}
        text = one_line(s.get("completion")) or "(empty)"
        cells = [Text(_num(rewards.get(n)), style="dim" if not rewards.get(n) else "")
                 for n in names]
        adv = s.get("advantage")
        table.add_row(Text("  " + text), *cells, Text(_num(s.get("total")), style="bold"),
                      Text(_num(adv, "+.2f"), style=ADV_STYLE[_sign(adv)]))
    return Group(*parts)


class SamplesPanel(VerticalScroll):
    """The newest "samples" event of a GRPO run (`show(event)`; None: none yet)."""

    DEFAULT_CSS = """
    SamplesPanel { border: round $panel-lighten-2; border-title-color: $accent;
                   border-subtitle-color: $text-muted; padding: 0 1; height: 1fr; }
    SamplesPanel:focus { border: round $primary; }
    SamplesPanel > Static { height: auto; }
    """
    BINDINGS = with_ids(VerticalScroll, "samples")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.event: dict | None = None
        self._width = 0  # the width the samples were last drawn for
        self.border_title = "latest completions"
        # Hidden under other methods: it must not take the focus the screen gives on arrival
        # (the log's); the screen makes it focusable while it is shown.
        self.can_focus = False

    def compose(self):
        yield Static(EMPTY, id="samples-body")

    def show(self, event: dict | None) -> None:
        self.event = event
        body = self.query_one("#samples-body", Static)
        samples = [s for s in (event or {}).get("samples") or () if isinstance(s, dict)]
        if not samples:
            self.border_title = "latest completions"
            self.border_subtitle = ""
            body.update(EMPTY)
            return
        self.border_title = f"latest completions · step {event.get('step', '?')}"
        self.border_subtitle = "adv: reward against its group"
        self._width = self.content_size.width
        body.update(samples_table(samples, self._width))

    def on_resize(self) -> None:
        if self.event is not None and self.content_size.width != self._width:
            self.show(self.event)
