"""Choosing a finished run (Compare and Export): which runs, and which one is selected."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Select

from screens import run_actions


NO_RUN = "no finished run"


def finished_runs(runs_dir: Path) -> list[tuple[str, str]]:
    """(name, path) of every finished run, newest first. Blocking: call it from a worker."""
    return [(r.name, r.path) for r in run_actions.scan_runs(runs_dir) if r.state == "finished"]


def fill_run_select(select: Select, runs: list[tuple[str, str]], opened: str | None) -> None:
    """Keep the current choice when it is still there, else the run the app opened last,
    else the newest."""
    current = select.value if select.value != Select.NULL else None
    paths = [p for _, p in runs]
    want = current if current in paths else None
    if want is None and opened:
        target = str(Path(opened).resolve())
        want = next((p for p in paths if str(Path(p).resolve()) == target), None)
    select.set_options(runs)
    # The prompt is also the blank first entry of the open list: with runs to choose from it
    # must not say there are none.
    select.prompt = "pick a finished run" if runs else NO_RUN
    want = want or (paths[0] if paths else None)
    if want is not None:
        select.value = want


class PicksFinishedRun:
    """Mixin for a Screen with a Select of finished runs (`RUN_SELECT` is its selector):
    the list is read in a worker when the screen mounts or shows again, and whenever runs
    change (the RunsChanged message)."""

    RUN_SELECT = ""

    def on_screen_resume(self) -> None:
        self._refresh_runs()

    def on_runs_changed(self, _message) -> None:
        self._refresh_runs()

    def _refresh_runs(self) -> None:
        self.app.run_in_thread(finished_runs, self.app.runs_dir, node=self, group="runs",
                               on_done=self._show_runs)

    def _show_runs(self, runs: list[tuple[str, str]]) -> None:
        fill_run_select(self.query_one(self.RUN_SELECT, Select), runs, self.app.monitored_run)
