"""The Textual app. For now one screen: the runs in ./runs, read from their run folders
and refreshed every two seconds. The full set of screens (data, configure, train monitor,
compare, export) is issue 6. It reads run folders only; it never imports torch."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from workbench.train.rundir import default_runs_dir, list_runs


class WorkbenchApp(App):
    TITLE = "workbench"
    SUB_TITLE = "runs"
    BINDINGS = [
        Binding("r", "refresh", "Refresh", id="runs.refresh"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(self, runs_dir: Path | None = None):
        super().__init__()
        self.runs_dir = runs_dir or default_runs_dir()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="hint")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns("run", "state", "step", "loss", "eval loss", "device")
        self.action_refresh()
        self.set_interval(2.0, self.action_refresh)

    def action_refresh(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.clear()
        runs = list_runs(self.runs_dir)
        for run in reversed(runs):
            st = run.read_status()
            loss = st.get("loss")
            ev = st.get("eval_loss")
            table.add_row(
                run.name, run.effective_state(st),
                f"{st.get('step') or 0}/{st.get('total_steps') or '?'}",
                f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                f"{ev:.4f}" if isinstance(ev, (int, float)) else "-",
                st.get("device") or "-", key=str(run.path))
        hint = self.query_one("#hint", Static)
        hint.update(f"{len(runs)} run(s) in {self.runs_dir}/  ·  start one with "
                    "`workbench run demo` (the full app arrives with issue 6)")


def run_app() -> int:
    WorkbenchApp().run()
    return 0
