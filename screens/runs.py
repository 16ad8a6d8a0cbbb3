"""Runs (home): the runs in the runs folder, the profiles to start new ones from, and every
GPU. Folders and NVML are read every two seconds in thread workers, only while this screen
is showing, so an idle app stays idle."""

from __future__ import annotations


from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from screens import run_actions
from screens.app import RunsChanged
from screens.run_actions import RunRow
from screens.widgets.focus import FocusScreen
from screens.widgets.format import duration, num, started
from screens.widgets.gpu_panel import GpuPanel
from screens.widgets.keys import KeyedDataTable, KeyedOptionList, with_ids
from screens.widgets.nav import NavBar
from screens.widgets.sized_table import repaint_after_sizing

POLL_S = 2.0
# Short headers: every column must fit 80 columns beside a run name (the hint line says the
# times are UTC).
COLUMNS = (("run", "run"), ("state", "state"), ("step", "step"), ("loss", "loss"),
           ("started", "started"), ("duration", "time"), ("device", "device"))
NAME_MIN = 12  # below this a name says too little; the table scrolls sideways instead


def fit_name(name: str, width: int | None) -> str:
    """A run name cut in the middle to `width` cells: the profile it starts with and the
    end of its time stamp (what tells two runs of one profile apart) are kept."""
    if width is None or len(name) <= width:
        return name
    width = max(width, NAME_MIN)
    tail = min(7, (width - 1) // 3)  # "-080000": the stamp's time of day
    return name[:width - 1 - tail] + "…" + name[len(name) - tail:]


def _cells(row: RunRow, name_width: int | None = None) -> tuple[str, ...]:
    return (fit_name(row.name, name_width), row.state, f"{row.step}/{row.total_steps or '?'}",
            num(row.loss, ".4f"), started(row.created_at), duration(row.duration_s),
            row.device or "-")


def name_width(table: DataTable, rows: list[RunRow]) -> int | None:
    """Cells left for the run name once every other column has its full width (None: the
    table has no size yet)."""
    if not table.size.width:
        return None
    padding = 2 * table.cell_padding
    cells = [_cells(row) for row in rows]
    others = sum(max([cell_len(label)] + [cell_len(c[i]) for c in cells]) + padding
                 for i, (_, label) in enumerate(COLUMNS) if i)
    # The vertical scrollbar is counted always: it appears once the rows outgrow the table.
    return table.size.width - table.styles.scrollbar_size_vertical - others - padding


class RunsScreen(FocusScreen):
    HOME = "#runs"
    BINDINGS = [
        *with_ids(Screen, "screen"),
        Binding("o,enter", "open", "Open", id="runs.open"),
        Binding("s", "start", "Start", id="runs.start"),
        Binding("x", "stop", "Stop", id="runs.stop"),
        Binding("r", "resume", "Resume", id="runs.resume"),
        Binding("a", "attach", "Attach", id="runs.attach"),
        Binding("d,delete", "delete", "Delete", id="runs.delete"),
        # Mark runs, then compare them side by side (screens/runs_compare.py).
        Binding("space", "mark", "Mark", id="runs.mark", show=False),
        Binding("c", "compare", "Compare marked", id="runs.compare", show=False),
        Binding("w", "sweeps", "Sweeps", id="runs.sweeps", show=False),
        # The runs refresh themselves every 2 s; the key is for the impatient (help, palette),
        # and reads the profile folders again too (a profile saved in an editor).
        Binding("f5,ctrl+r", "refresh(True)", "Refresh", id="runs.refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []
        self.profiles: dict[str, str] = {}
        self._name_width: int | None = None
        self.marked: set[str] = set()  # run paths marked for comparison

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("runs")
        yield Static(id="runs-hint", classes="hint")
        yield KeyedDataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="runs-bottom"):
            with Vertical(id="profiles-box", classes="box"):
                yield Static("Profiles  [b]s[/b] start", classes="box-title")
                yield KeyedOptionList(id="profiles")
            with Vertical(id="gpu-box", classes="box"):
                yield Static("GPUs", classes="box-title")
                yield GpuPanel(id="gpus")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "runs"
        table = self.query_one("#runs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self._runs_timer = self.set_interval(POLL_S, self.action_refresh)
        self._gpu_timer = self.set_interval(POLL_S, self._poll_gpu)
        self.action_refresh()
        self._poll_gpu()
        table.focus()

    # Poll only while visible: a hidden screen's timers would cost CPU for nothing.
    def on_screen_suspend(self) -> None:
        self._runs_timer.pause()
        self._gpu_timer.pause()

    def on_screen_resume(self) -> None:
        self._runs_timer.resume()
        self._gpu_timer.resume()
        # Back from Configure (a profile saved there) or anywhere: the profiles too.
        self.action_refresh(profiles=True)

    def on_runs_changed(self, _: RunsChanged) -> None:
        self.action_refresh()

    def on_resize(self) -> None:
        # Names are cut to the table's width: a new width may cut them differently.
        self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        table = self.query_one("#runs", DataTable)
        if self.rows and name_width(table, self.rows) != self._name_width:
            rows, self.rows = self.rows, []
            self._show_runs(rows)

    # ---- reading (workers) -----------------------------------------------------------------
    def action_refresh(self, profiles: bool = False) -> None:
        self.app.run_in_thread(run_actions.scan_runs, self.app.runs_dir, node=self,
                               on_done=self._show_runs, group="runs-scan", exclusive=True)
        if profiles:
            self.app.run_in_thread(_list_profiles, node=self, on_done=self._show_profiles,
                                   group="profiles", exclusive=True)

    def _poll_gpu(self) -> None:
        self.app.run_in_thread(run_actions.read_telemetry, node=self, group="gpu",
                               exclusive=True, on_done=lambda r: self.query_one(GpuPanel).show_gpus(*r))

    # ---- showing ---------------------------------------------------------------------------
    def _show_profiles(self, profiles: dict[str, str]) -> None:
        if profiles == self.profiles:
            return
        options = self.query_one("#profiles", OptionList)
        # Keep the highlighted profile when it is still there, else the demo, else the first.
        kept = self.selected_profile()
        self.profiles = profiles
        options.clear_options()
        options.add_options([Option(name, id=name) for name in profiles])
        if profiles:
            want = kept if kept in profiles else "demo" if "demo" in profiles else None
            options.highlighted = list(profiles).index(want) if want else 0

    def _show_runs(self, rows: list[RunRow]) -> None:
        table = self.query_one("#runs", DataTable)
        hint = self.query_one("#runs-hint", Static)
        live = sum(r.live for r in rows)
        hint.update(f"{len(rows)} run(s), {live} running, in {self.app.runs_dir}/ (times UTC)"
                    if rows else
                    f"No runs in {self.app.runs_dir}/ yet: pick a profile below and press s.")
        width = name_width(table, rows)
        if rows == self.rows and width == self._name_width:
            return
        old = {r.path: r for r in self.rows}
        if [r.path for r in rows] == [r.path for r in self.rows] and width == self._name_width:
            for row in rows:  # same runs: change only the cells that changed
                if old[row.path] != row:
                    for (key, _), value in zip(COLUMNS, self._row_cells(row, width)):
                        table.update_cell(row.path, key, value, update_width=True)
        else:
            selected, at = self.selected_path(), table.cursor_row
            table.clear()
            for row in rows:
                table.add_row(*self._row_cells(row, width), key=row.path)
            if selected in {r.path for r in rows}:
                table.move_cursor(row=table.get_row_index(selected))
            elif rows:  # it was deleted: the run below it (else the new last) takes its place
                table.move_cursor(row=min(at, len(rows) - 1))
        repaint_after_sizing(table)
        self.rows, self._name_width = rows, width

    def _row_cells(self, row: RunRow, width: int | None) -> tuple[str, ...]:
        if row.path not in self.marked:
            return _cells(row, width)
        cells = _cells(row, None if width is None else width - 2)
        return ("● " + cells[0], *cells[1:])

    # ---- selection -------------------------------------------------------------------------
    def selected_path(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        row_key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        return row_key.value

    def selected_run(self) -> RunRow | None:
        path = self.selected_path()
        found = next((r for r in self.rows if r.path == path), None)
        if found is None:
            self.notify("no run selected; start one from a profile with s", severity="warning")
        return found

    def selected_profile(self) -> str | None:
        options = self.query_one("#profiles", OptionList)
        if options.highlighted is None or not self.profiles:
            return None
        return options.get_option_at_index(options.highlighted).id

    # ---- actions ---------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        run = self.selected_run()
        if run:
            self.app.open_run(run.path)

    def action_attach(self) -> None:
        """Jump to the newest run that is training now (e.g. after reopening the app)."""
        live = [r for r in self.rows if r.live]
        if not live:
            self.notify("no run is training now; o opens the selected run", severity="warning")
            return
        self.app.open_run(live[0].path)

    def action_start(self) -> None:
        name = self.selected_profile()
        if name is None:
            self.notify("no profile selected (profiles are *.toml in profiles/ or "
                        "~/.config/workbench/profiles/)", severity="warning")
            return
        self.app.start_run(self.profiles[name])

    def action_stop(self) -> None:
        run = self.selected_run()
        if run:
            self.app.stop_run(run.path)

    def action_resume(self) -> None:
        run = self.selected_run()
        if run:
            self.app.resume_run(run.path)

    def action_mark(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        self.marked ^= {run.path}
        self.query_one("#runs", DataTable).update_cell(
            run.path, "run", self._row_cells(run, self._name_width)[0], update_width=True)

    def action_compare(self) -> None:
        """The marked runs (space marks), else the selected one alone."""
        from screens.runs_compare import RunsCompareScreen

        present = {r.path for r in self.rows}
        paths = [r.path for r in self.rows if r.path in self.marked & present]
        if not paths:
            run = self.selected_run()
            if run is None:
                return
            paths = [run.path]
            self.notify("mark runs with space, then press c to compare them", timeout=4)
        self.app.push_screen(RunsCompareScreen(paths))

    def action_sweeps(self) -> None:
        from screens.sweeps import SweepsScreen

        self.app.push_screen(SweepsScreen())

    def action_delete(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if run.live:
            self.app.notify_error(f"{run.name} is {run.state}; stop it first (x), then delete it",
                                  "delete")
            return
        self.app.delete_run(run.path)


def _list_profiles() -> dict[str, str]:
    from workbench.profile import list_profiles

    return {name: str(path) for name, path in list_profiles().items()}
