"""The Rewards view of the Configure screen (train.method = "grpo"): the profile's reward
functions with their weights and what each does, and the reward test's result.

What a built-in does comes from its summary (workbench/rewards/builtin.py); what a function of
yours does from its docstring, read with `ast` (the file is parsed, never run: running it is the
reward test's job, in a worker). The test's result (workbench.evaluate.reward_trial) is drawn
summary first (the verdict, the flags and what GRPO's first steps would see), then each
prompt's completions with every reward and the weighted total.

Drawing only: the screen (screens/configure.py) runs the test and the editor. The keys are
bindings of this view, so they work only while it has focus (never typed into a field).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from screens.widgets.keys import KeyedDataTable

OK_STYLE, BAD_STYLE = "bold #1c1c1c on #87af5f", "bold #1c1c1c on #d7af00"  # success / warning
FLAG_STYLE, ACCENT = "#d7af00", "#d7af5f"


@dataclass(frozen=True)
class RewardRow:
    spec: str        # as the profile names it ("answer:exact", "/abs/rewards.py:french_overlap")
    name: str        # as logs and tables call it ("answer:exact", "rewards.py:french_overlap")
    weight: float
    file: str = ""   # the user's file; "" for a built-in
    function: str = ""
    line: int | None = None  # where the function starts in its file
    what: str = ""   # one line for people
    detail: str = ""  # the rest: where it is, the columns it reads, its argument
    known: bool = True  # a built-in or a FILE.py:FUNCTION (False: a spec the validator refuses)

    @property
    def builtin(self) -> bool:
        return self.known and not self.file


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split())


def read_function(file: str, function: str) -> tuple[int | None, str, str]:
    """(line, docstring's first paragraph, problem) of `function` in the Python `file`, by
    parsing it (not running it)."""
    path = Path(file)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=file)
    except FileNotFoundError:
        return None, "", "file not found"
    except (OSError, UnicodeDecodeError) as exc:
        return None, "", f"cannot read it: {exc}"
    except SyntaxError as exc:
        return exc.lineno, "", f"syntax error at line {exc.lineno}: {exc.msg}"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return node.lineno, _first_paragraph(ast.get_docstring(node) or ""), ""
    for node in ast.walk(tree):  # assigned or nested: found when the file runs, maybe
        if isinstance(node, ast.Name) and node.id == function and isinstance(node.ctx, ast.Store):
            return node.lineno, "", ""
    return None, "", f"no function {function!r} in it"


def reward_rows(functions: list, weights: list) -> list[RewardRow]:
    """The profile's rewards.functions and rewards.weights ([] = all 1.0) as rows."""
    from workbench.rewards.builtin import builtin_for

    rows = []
    for i, spec in enumerate(functions):
        spec = str(spec)
        weight = float(weights[i]) if i < len(weights) and _number(weights[i]) else 1.0
        found = builtin_for(spec)
        if found is not None:
            builtin, argument = found
            detail = "built in (workbench/rewards/builtin.py): nothing to edit; its settings " \
                     "are in [rewards]"
            if argument is not None:
                detail = f"{builtin.argument}: {argument!r}; " + detail
            rows.append(RewardRow(spec, spec, weight, what=builtin.summary, detail=detail))
            continue
        file, _, function = spec.rpartition(":")
        if not file.endswith(".py"):  # the validator says what is wrong with it
            rows.append(RewardRow(spec, spec, weight, what="not a built-in reward, nor "
                                  "FILE.py:FUNCTION", detail="see the profile's problems",
                                  known=False))
            continue
        line, doc, problem = read_function(file, function)
        where = f"{file}:{line}" if line else file
        detail = f"your function {function}() in {where}" + (f" ({problem})" if problem else "")
        rows.append(RewardRow(spec, f"{Path(file).name}:{function}", weight, file, function,
                              line, doc or f"your function {function}()", detail))
    return rows


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ---- the reward test's result ----------------------------------------------------------------


def _short(name: str) -> str:
    file, sep, func = name.rpartition(":")
    short = func if sep and file.endswith(".py") else name
    return short if len(short) <= 14 else short[:13] + "…"


def _one_line(text) -> str:
    return " ".join(str(text or "").split())


def summary_view(result: dict) -> Group:
    """The flags and what the first steps would see (the verdict is drawn on its own)."""
    parts: list = []
    for flag in result.get("flags") or ():
        parts.append(Text("! " + str(flag.get("message", "")), style=FLAG_STYLE))
    first = result.get("first_steps") or {}
    if first:
        parts.append(Text(
            f"first steps would see: mean reward {first.get('mean_reward', 0):g} (std "
            f"{first.get('reward_std', 0):g}), {first.get('groups_with_signal', 0)} of "
            f"{first.get('groups', 0)} groups with signal "
            f"({first.get('fraction_with_signal', 0):.0%})"))
    return Group(*parts)


def _group_table(names: list[str], header: bool) -> Table:
    table = Table(expand=True, box=None, padding=(0, 1), show_edge=False, pad_edge=False,
                  show_header=header, header_style="bold")
    table.add_column("completion", ratio=1, no_wrap=True, overflow="ellipsis", min_width=16)
    table.add_column("cut", width=3, no_wrap=True)
    for name in names:
        table.add_column(_short(name), justify="right", no_wrap=True,
                         width=max(len(_short(name)), 6))
    table.add_column("total", justify="right", no_wrap=True, width=6)
    return table


def groups_view(result: dict) -> Group:
    """Each prompt (one line) and its completions with every reward and the weighted total."""
    names = list(result.get("functions") or ())
    weights = list(result.get("weights") or ())
    head = (f"{len(result.get('groups') or ())} prompts x {result.get('samples', '?')} "
            f"completions from {result.get('model', '?')} (temperature "
            f"{result.get('temperature', 0):g}, up to {result.get('max_completion_len', '?')} "
            f"tokens; {result.get('seconds', 0):g} s); total = "
            + " + ".join(f"{w:g} x {_short(n)}" for n, w in zip(names, weights)))
    parts: list = [Text(head, style="dim"), _group_table(names, header=True)]
    for group in result.get("groups") or ():
        row = str(group.get("row", ""))
        file, sep, at = row.rpartition(":")
        source = f"{Path(file).name}:{at}" if sep else row  # the data file's name and row
        prompt = Text(no_wrap=True, overflow="ellipsis")
        prompt.append("▸ " + _one_line(group.get("prompt")), style=f"italic {ACCENT}")
        if source:
            prompt.append(f"  ({source})", style="dim")
        parts.append(prompt)
        table = _group_table(names, header=False)
        for c in group.get("completions") or ():
            values = list(c.get("rewards") or ())
            table.add_row(Text("  " + (_one_line(c.get("text")) or "(empty)")),
                          Text("cut" if c.get("truncated") else "", style=FLAG_STYLE),
                          *(Text(f"{v:.3g}", style="" if v else "dim") for v in values),
                          Text(f"{c.get('total', 0):.3g}", style="bold"))
        parts.append(table)
    return Group(*parts)


class RewardsView(Vertical):
    """The rewards table, the selected reward's details, the test's progress and result."""

    DEFAULT_CSS = """
    RewardsView { height: 1fr; padding: 0 1; }
    RewardsView #rewards-head { height: auto; color: $text-muted; }
    RewardsView #rewards-table { height: auto; max-height: 8; margin-top: 1; }
    RewardsView #rewards-detail { height: auto; padding-left: 1; margin-top: 1; }
    RewardsView #rewards-status { height: auto; margin-top: 1; color: $accent; }
    RewardsView #rewards-verdict { height: auto; padding: 0 1; margin-bottom: 1; display: none; }
    RewardsView #rewards-verdict.-shown { display: block; }
    RewardsView #rewards-result { height: 1fr; border-top: solid $panel-lighten-2; }
    RewardsView #rewards-result:focus { border-top: solid $primary; }
    RewardsView #rewards-result > Static { height: auto; }
    """
    # Bindings of the view: they act only while the table or the result has focus. The
    # actions are the screen's (it runs the editor and the test).
    BINDINGS = [
        Binding("e", "screen.edit_reward", "Edit reward", id="configure.rewards.edit"),
        Binding("t", "screen.test_rewards", "Test rewards", id="configure.rewards.test"),
        Binding("escape", "screen.toggle_rewards", "Profile", id="configure.rewards.close"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: list[RewardRow] = []

    def compose(self):
        yield Static("", id="rewards-head")
        yield KeyedDataTable(id="rewards-table", cursor_type="row", zebra_stripes=False)
        yield Static("", id="rewards-detail")
        yield Static("", id="rewards-status")
        # Summary first, as `workbench rewards test` ends: the flags, the first steps, the
        # verdict (which refers to the flags "above"); then each prompt's completions.
        with VerticalScroll(id="rewards-result"):
            yield Static("", id="rewards-summary")
            yield Static("", id="rewards-verdict")
            yield Static("", id="rewards-groups")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("reward", "weight", "what it does")

    @property
    def table(self) -> DataTable:
        return self.query_one("#rewards-table", DataTable)

    def show_rewards(self, rows: list[RewardRow], head: str) -> None:
        self.rows = rows
        self.query_one("#rewards-head", Static).update(head)
        table = self.table
        cursor = table.cursor_row
        table.clear()
        # The view may be hidden (no size yet): the screen's width is what it will have.
        name_w = max([len(r.name) for r in rows] + [6])
        width = max(24, (self.size.width or self.app.size.width) - name_w - 16)
        for row in rows:
            what = row.what if len(row.what) <= width else row.what[:width - 1] + "…"
            table.add_row(row.name, f"{row.weight:g}", what)
        if rows:
            table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
        self.show_detail()

    def selected(self) -> RewardRow | None:
        if not self.rows:
            return None
        return self.rows[min(max(self.table.cursor_row, 0), len(self.rows) - 1)]

    def show_detail(self) -> None:
        row = self.selected()
        text = Text()
        if row is not None:
            text.append(row.name, style="bold")
            text.append(f": {row.what}\n")
            text.append(row.detail + ("; e opens it in $EDITOR" if row.file else ""),
                        style="dim")
        self.query_one("#rewards-detail", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def status(self, text: str) -> None:
        self.query_one("#rewards-status", Static).update(Text(text))

    def clear_result(self) -> None:
        self.query_one("#rewards-verdict", Static).remove_class("-shown")
        self.query_one("#rewards-summary", Static).update("")
        self.query_one("#rewards-groups", Static).update("")

    def show_result(self, result: dict) -> None:
        verdict = result.get("verdict") or {}
        ok = bool(verdict.get("ok"))
        box = self.query_one("#rewards-verdict", Static)
        box.update(Text(("✓ " if ok else "! ") + "verdict: " + str(verdict.get("text", "")),
                        style=OK_STYLE if ok else BAD_STYLE))
        box.set_class(ok, "-ok")
        box.add_class("-shown")
        self.query_one("#rewards-summary", Static).update(summary_view(result))
        self.query_one("#rewards-groups", Static).update(groups_view(result))
        self.query_one("#rewards-result", VerticalScroll).scroll_home(animate=False)
