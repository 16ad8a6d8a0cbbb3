"""Sweeps: every sweep folder with its state and progress, and the trials of the highlighted
one (configuration, state, eval loss, why it failed or was pruned). Enter compares the
sweep's trials (screens/runs_compare.py). Folders are read every two seconds in a thread
worker, only while this screen shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from screens.widgets.keys import KeyedDataTable

POLL_S = 2.0
SWEEP_COLUMNS = ("sweep", "state", "trials", "failed", "pruned", "best so far")
TRIAL_COLUMNS = ("#", "configuration", "state", "eval loss", "run / reason")


def scan_sweeps() -> list[dict]:
    """Every sweep and its trials, as plain data (the UI thread does no I/O)."""
    from pathlib import Path

    from workbench.sweep.folder import list_sweeps
    from workbench.rundir import RunDir

    out = []
    for s in reversed(list_sweeps()):  # newest first, as runs are shown
        trials = []
        for t in s.read_trials():
            status = RunDir(Path(t["run"])).read_status() if t.get("run") else {}
            trials.append({"index": t["index"], "label": t.get("label") or "(not drawn yet)",
                           "state": t["state"], "eval_loss": status.get("eval_loss"),
                           "run": t.get("run"), "reason": t.get("reason") or ""})
        finished = [t for t in trials if t["state"] == "finished" and t["eval_loss"] is not None]
        best = min(finished, key=lambda t: t["eval_loss"]) if finished else None
        out.append({"path": str(s.path), "name": s.name, "state": s.effective_state(),
                    "done": sum(t["state"] in ("finished", "failed", "pruned") for t in trials),
                    "total": len(trials), "failed": sum(t["state"] == "failed" for t in trials),
                    "pruned": sum(t["state"] == "pruned" for t in trials),
                    "best": f"{best['label']} ({best['eval_loss']:.4f})" if best else "-",
                    "trials": trials})
    return out


class SweepsScreen(Screen):
    BINDINGS = [
        Binding("escape,b", "close", "Back", id="sweeps.close"),
        Binding("c", "compare", "Compare trials", id="sweeps.compare"),
    ]
    DEFAULT_CSS = """
    SweepsScreen #sweeps { height: auto; max-height: 40%; }
    SweepsScreen #sweep-trials { height: 1fr; }
    SweepsScreen .sweeps-line { height: auto; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.sweeps: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Reading sweeps…", id="sweeps-hint", classes="sweeps-line")
        yield KeyedDataTable(id="sweeps", cursor_type="row", zebra_stripes=True)
        yield Static("Trials", id="trials-title", classes="sweeps-line")
        yield KeyedDataTable(id="sweep-trials", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "sweeps"
        for table_id, columns in (("#sweeps", SWEEP_COLUMNS), ("#sweep-trials", TRIAL_COLUMNS)):
            table = self.query_one(table_id, DataTable)
            for label in columns:
                table.add_column(label)
        self._timer = self.set_interval(POLL_S, self.refresh_sweeps)
        self.refresh_sweeps()
        self.query_one("#sweeps", DataTable).focus()

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()

    def refresh_sweeps(self) -> None:
        self.app.run_in_thread(scan_sweeps, node=self, on_done=self._show, group="sweeps-scan",
                               exclusive=True)

    def _show(self, sweeps: list[dict]) -> None:
        if sweeps == self.sweeps:
            return
        table = self.query_one("#sweeps", DataTable)
        selected = self.selected()
        self.sweeps = sweeps
        table.clear()
        for s in sweeps:
            table.add_row(s["name"], s["state"], f"{s['done']}/{s['total']}", str(s["failed"]),
                          str(s["pruned"]), s["best"], key=s["path"])
        if selected is not None and any(s["path"] == selected["path"] for s in sweeps):
            table.move_cursor(row=table.get_row_index(selected["path"]))
        running = sum(s["state"] in ("starting", "running") for s in sweeps)
        self.query_one("#sweeps-hint", Static).update(
            f"{len(sweeps)} sweep(s), {running} running; enter or c compares a sweep's trials"
            if sweeps else "No sweeps yet: start one with `workbench sweep PROFILE --grid "
                           "lora.r=8,16` (see the README's Experiments section).")
        self._show_trials()

    def selected(self) -> dict | None:
        table = self.query_one("#sweeps", DataTable)
        if not table.row_count or not self.sweeps:
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        return next((s for s in self.sweeps if s["path"] == key), None)

    def _show_trials(self) -> None:
        sweep = self.selected()
        table = self.query_one("#sweep-trials", DataTable)
        table.clear()
        if sweep is None:
            return
        self.query_one("#trials-title", Static).update(f"Trials of {sweep['name']}")
        for t in sweep["trials"]:
            loss = f"{t['eval_loss']:.4f}" if isinstance(t["eval_loss"], (int, float)) else "-"
            where = t["reason"] or (t["run"].rsplit("/", 1)[-1] if t["run"] else "-")
            table.add_row(str(t["index"] + 1), t["label"], t["state"], loss, where)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "sweeps":
            self._show_trials()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "sweeps":
            self.action_compare()

    def action_compare(self) -> None:
        from screens.runs_compare import RunsCompareScreen

        sweep = self.selected()
        paths = [t["run"] for t in (sweep or {}).get("trials", []) if t["run"]]
        if not paths:
            self.notify("no trial of this sweep has a run yet", severity="warning")
            return
        self.app.push_screen(RunsCompareScreen(paths))

    def action_close(self) -> None:
        self.app.pop_screen()
