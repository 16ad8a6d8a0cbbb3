"""Runs compared: the runs marked on the Runs screen side by side (what differs, eval loss,
the task metric, perplexity, peak memory, tokens/s, hours, cost, quality per hour), the
recommendation, and their loss and eval-loss curves overlaid on one plot. The same
comparison as `workbench runs compare`, read from the run folders in a thread worker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from screens.widgets.keys import KeyedDataTable

# What the ranking is made of first, so it stays on screen at 80 columns; the rest scrolls.
COLUMNS = ("#", "run / what differs", "quality/h", "quality", "hours", "cost $", "eval loss",
           "state", "ppl", "peak mem", "tok/s")


def _load(paths: list[str]):
    from pathlib import Path

    from workbench.sweep.compare import compare_runs
    from workbench.rundir import RunDir

    return compare_runs([RunDir(Path(p)) for p in paths])


def _row_cells(row, rank: str, labelled: bool) -> tuple[str, ...]:
    from workbench.fmt import fmt_gib

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    return (rank, row.label if labelled else row.name, num(row.quality_per_hour, ".0f"),
            num(row.quality, ".1f"), num(row.hours, ".3f"), num(row.cost_usd, ".2f"),
            num(row.eval_loss, ".4f"), row.state, num(row.perplexity, ".3f"),
            (fmt_gib(row.peak_bytes) + ("*" if row.peak_source == "estimated" else ""))
            if row.peak_bytes else "-", num(row.tokens_per_s, ".0f"))


class CurvesPlot(PlotextPlot):
    """Every run's train loss (lines) and eval loss (dots), one colour per run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.series: list[tuple[str, list, list]] = []

    def show(self, series: list[tuple[str, list, list]]) -> None:
        self.series = series
        self._draw()

    def on_mount(self) -> None:
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("loss (lines) and eval loss (dots)")
        plt.xlabel("step")
        for n, (label, loss, ev) in enumerate(self.series):
            color = n % 12 + 1
            if loss:
                plt.plot([s for s, _ in loss], [v for _, v in loss], label=label[:24],
                         marker="braille", color=color)
            if ev:
                plt.scatter([s for s, _ in ev], [v for _, v in ev], marker="dot", color=color)
        self.refresh()


class RunsCompareScreen(Screen):
    BINDINGS = [Binding("escape,b", "close", "Back", id="runs_compare.close")]
    DEFAULT_CSS = """
    RunsCompareScreen #cmp-body { height: 1fr; }
    RunsCompareScreen #cmp-table { height: auto; max-height: 45%; }
    RunsCompareScreen .cmp-line { height: auto; padding: 0 1; }
    RunsCompareScreen #cmp-plot { height: 1fr; min-height: 6; }
    """

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.paths = list(paths)
        self.comparison = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="cmp-body"):
            yield Static(f"Comparing {len(self.paths)} run(s)…", id="cmp-title", classes="cmp-line")
            yield KeyedDataTable(id="cmp-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="cmp-recommendation", classes="cmp-line")
            yield CurvesPlot(id="cmp-plot")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "runs compared"
        table = self.query_one("#cmp-table", DataTable)
        for label in COLUMNS:
            table.add_column(label)
        self.app.run_in_thread(_load, self.paths, node=self, on_done=self._show,
                               group="runs-compare", error_title="compare runs")

    def _show(self, c) -> None:
        self.comparison = c
        table = self.query_one("#cmp-table", DataTable)
        table.clear()
        rank = 0
        for row in c.rows:
            if row.quality_per_hour is not None:
                rank += 1
            table.add_row(*_row_cells(row, str(rank) if row.quality_per_hour is not None else "-",
                                      bool(c.differing_keys)))
        differs = ", ".join(c.differing_keys) if c.differing_keys else "nothing in the profiles"
        self.query_one("#cmp-title", Static).update(
            f"{len(c.rows)} run(s); what differs: {differs}. Quality: {c.quality_name}, "
            f"per {c.hour_unit[:-1]}")
        from rich.markup import escape

        lines = ([f"[b]Recommendation:[/b] {escape(c.recommendation)}"]
                 + [f"note: {escape(n)}" for n in c.notes])
        self.query_one("#cmp-recommendation", Static).update("\n".join(lines))
        self.query_one(CurvesPlot).show([(r.label if c.differing_keys else r.name, r.loss_curve,
                                          r.eval_curve) for r in c.rows])

    def action_close(self) -> None:
        self.app.pop_screen()
