"""The stats panel: what the inspection found, and the length histogram drawn with plotext.

It only draws a report it is given (InspectionReport.to_json()); the screen runs the inspection.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot


def _n(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else ("-" if value is None else str(value))


def summary_table(report: dict) -> Table:
    """Counts, schema and findings as a two-column table (fits a 30-column pane)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()

    def row(label: str, value, warn: bool = False) -> None:
        table.add_row(label, Text(_n(value), style="bold yellow" if warn and value else ""))

    row("rows", report.get("rows"))
    if report.get("rows_skipped"):
        row("skipped (bad)", report["rows_skipped"], warn=True)
    schemas = ", ".join(f"{k} {v:,}" for k, v in (report.get("rows_by_schema") or {}).items())
    table.add_row("schema", schemas or "-")
    roles = ", ".join(f"{k} {v:,}" for k, v in (report.get("roles") or {}).items())
    table.add_row("messages", roles or "-")
    chars = (report.get("chars") or {}).get("row") or {}
    if chars.get("count"):
        table.add_row("chars", f"p50 {_n(chars.get('p50'))} · p99 {_n(chars.get('p99'))} · "
                               f"max {_n(chars.get('max'))}")
    tokens = report.get("tokens") or {}
    if tokens.get("row"):
        t = tokens["row"]
        table.add_row("tokens", f"p50 {_n(t.get('p50'))} · p99 {_n(t.get('p99'))} · max {_n(t.get('max'))}")
        over = tokens.get("over_limit") or {}
        if over:
            row(f"over {over.get('max_seq_len')}", over.get("rows"), warn=True)
            if over.get("answer_tokens_lost"):
                row("answer tok lost", over["answer_tokens_lost"], warn=True)
    exact = report.get("exact_duplicates") or {}
    row("exact dups", exact.get("rows_removable"), warn=True)
    near = report.get("near_duplicates")
    if near is not None:
        row("near dups", near.get("rows_removable"), warn=True)
    row("placeholders", (report.get("placeholders") or {}).get("rows"), warn=True)
    row("secrets", (report.get("secrets") or {}).get("rows"), warn=True)
    row("PII", (report.get("pii") or {}).get("rows"), warn=True)
    row("short answers", (report.get("short_answers") or {}).get("rows"), warn=True)
    row("empty fields", (report.get("empty_fields") or {}).get("rows"), warn=True)
    row("broken text", (report.get("broken_text") or {}).get("rows"), warn=True)
    if report.get("cancelled"):
        table.add_row("", Text("cancelled: partial report", style="bold red"))
    return table


class LengthHistogram(PlotextPlot):
    """Rows per length bin, tokens when a tokenizer was used, else characters."""

    DEFAULT_CSS = "LengthHistogram { height: 10; min-height: 6; }"

    def show(self, report: dict) -> None:
        tokens = (report.get("tokens") or {}).get("row") or {}
        hist = tokens.get("histogram") or ((report.get("chars") or {}).get("row") or {}).get("histogram")
        unit = "tokens" if tokens.get("histogram") else "chars"
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if hist and hist.get("counts"):
            labels = [str(edge) for edge in hist["edges"][:-1]]
            plt.bar(labels, hist["counts"], marker="hd")
            # Every label would overlap in a narrow pane: show the first, middle and last.
            keep = sorted({0, len(labels) // 2, len(labels) - 1})
            plt.xticks(keep, [labels[i] for i in keep])
        plt.title(f"rows by length ({unit})")
        self.refresh()


class StatsPanel(VerticalScroll):
    DEFAULT_CSS = """
    StatsPanel { height: 1fr; }
    StatsPanel > #stats-summary { height: auto; }
    StatsPanel > #stats-sources { height: auto; display: none; margin-bottom: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="stats-sources")
        yield Static("Open a file to see its statistics.", id="stats-summary")
        yield LengthHistogram(id="stats-histogram")

    def show(self, report: dict) -> None:
        self.query_one("#stats-summary", Static).update(summary_table(report))
        histogram = self.query_one(LengthHistogram)
        histogram.display = True
        histogram.show(report)

    def show_sources(self, sources: list[dict] | None) -> None:
        """A mixture's sources and their shares above the statistics (hidden otherwise)."""
        from screens.widgets.data_sources import sources_table

        box = self.query_one("#stats-sources", Static)
        box.display = bool(sources)
        if sources:
            box.update(sources_table(sources))

    def show_preference(self, report: dict) -> None:
        """A preference report (workbench.data.preference_checks): no length histogram, the
        chosen / rejected lengths are compared in the summary instead."""
        from screens.widgets.data_preference import preference_summary

        self.query_one("#stats-summary", Static).update(preference_summary(report))
        self.query_one(LengthHistogram).display = False
