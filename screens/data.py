"""Data screen: open a dataset, see its rows and what inspection found, clean, split and save.

Preference data (chosen / rejected pairs, or answers labelled desirable or not) is found when
the file opens: the table then shows the prompt and both answers, the stats pane the preference
checks (rows that cannot train, length bias), and Enter opens the pair view, where n / p move
between pairs.

Every piece of engine work (loading, loading the tokenizer, inspecting, rendering a row,
cleaning, splitting and saving) runs in a thread worker that posts its result back; the
widgets only draw. The engine is imported inside the workers: `workbench.data.inspect` pulls
in numpy and the tokenizer pulls in transformers, neither of which the app may pay for at start.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import ContentSwitcher, Footer, Header, Input, Static

from screens.widgets.data_clean import CleanPanel, result_table
from screens.widgets.data_detail import DetailPanel, rendered_text, trained_count
from screens.widgets.data_flags import (
    FILTERS,
    PREFERENCE_FILTERS,
    filtered_indices,
    flags_from_report,
    preference_flags,
)
from screens.widgets.data_path import PathInput
from screens.widgets.data_preference import PairView
from screens.widgets import data_sources
from screens.widgets.data_sources import Opened, first_page, is_profile, open_profile
from screens.widgets.data_stats import StatsPanel
from screens.widgets.data_table import RowsView, flag_names, record_kind, shown_row
from screens.widgets.focus import FocusScreen
from screens.widgets.nav import NavBar

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZER = REPO / "assets" / "tiny-model"
CLEAN_DEBOUNCE_S = 0.3  # toggling three boxes quickly runs one clean, not three


def _describe(exc: BaseException) -> str:
    """The engine's own message (DataError / ProfileError text); never a traceback."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _short(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class DataScreen(FocusScreen):
    """Rows on the left; stats, row detail or cleaning on the right (i / d / c). Arrived on
    the rows (screens/widgets/focus.py); ctrl+o enters the path field, Esc leaves any field."""

    TITLE = "workbench"
    SUB_TITLE = "data"
    DEFAULT_CSS = """
    DataScreen #data-open { height: 1; }
    DataScreen #data-open > #data-path { width: 1fr; }
    DataScreen #data-open > #data-tokenizer { width: 30%; max-width: 40; }
    DataScreen #data-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    DataScreen #data-main { height: 1fr; }
    DataScreen #data-rows { width: 1fr; min-width: 30; }
    DataScreen #data-pane { width: 40%; min-width: 30; border-left: vkey $primary; padding: 0 1; }
    DataScreen #data-pairs { display: none; }
    DataScreen.-pairs #data-rows, DataScreen.-pairs #data-pane { display: none; }
    DataScreen.-pairs #data-pairs { display: block; width: 1fr; }
    """
    BINDINGS = [
        # The footer (compact) must fit 80 columns with the app's "? Help  b Back  q Quit":
        # the stats pane (shown first), the detail (Enter on a row) and re-inspecting (done on
        # open) are left to help and the palette.
        Binding("ctrl+o", "open", "Open", id="data.open"),
        Binding("i", "pane('stats')", "Stats", show=False, id="data.stats"),
        Binding("d", "pane('detail')", "Detail", show=False, id="data.detail"),
        Binding("c", "pane('clean')", "Clean", id="data.clean"),
        Binding("f", "next_filter", "Filter", id="data.filter"),
        Binding("r", "inspect", "Inspect", show=False, id="data.inspect"),
        Binding("x", "cancel", "Cancel", id="data.cancel"),
        Binding("s", "save", "Split+save", id="data.save"),
        Binding("m", "more", "More rows", show=False, id="data.more"),
        Binding("escape", "focus_rows", "Rows", show=False, id="data.rows"),
    ]
    SUB_TITLE_PAIRS = "data · pairs"
    HOME = "#data-rows"

    def __init__(self, path: str | Path | None = None, *, tokenizer: str | Path | None = None,
                 max_seq_len: int = 2048, out_dir: str | Path | None = None,
                 auto_inspect: bool = True, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.initial_path = str(path) if path else ""
        self.tokenizer_path = str(tokenizer or DEFAULT_TOKENIZER)
        self.max_seq_len = max_seq_len
        self.initial_out = str(out_dir) if out_dir else ""
        self.auto_inspect = auto_inspect
        self.records: list[dict] = []
        self.detail_text: Any = None  # the rendered row on show (Rich Text), for tests and copy
        self.kind = "sft"  # "sft", or preference data: "paired" / "unpaired"
        self.pair_shown: Any = None  # the PairShown on show in the pair view, for tests
        self._load_report: Any = None
        self.sources: list[dict] | None = None  # a mixture's sources and shares (a profile)
        self._rest: Any = None  # the unread rows of a paged dataset (an iterator), or None
        self.formats: list[str] = []
        self.flags: Any = ()
        self.report: dict | None = None
        self.filter_index = 0
        self.loaded_path = ""
        self.kept: list[dict] | None = None
        self.clean_report: Any = None
        self._cleaned_for: tuple | None = None  # the (steps, settings) `kept` was cleaned with
        self.saved_to: Path | None = None
        self._proposed_out = ""  # the save folder this screen named after the open file
        self._tokenizer: Any = None
        self._tokenizer_for = ""
        self._tokenizer_lock = threading.Lock()
        self._inspect_cancel = threading.Event()
        self._clean_cancel = threading.Event()
        self._clean_timer = None
        self._status = {"rows": "", "filter": "", "work": "", "saved": ""}

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("data")
        with Horizontal(id="data-open"):
            yield PathInput(self.initial_path,
                            placeholder="file, folder, Hub id (org/name) or profile.toml",
                            id="data-path", compact=True)
            yield PathInput(_short(self.tokenizer_path), placeholder="tokenizer folder",
                            id="data-tokenizer", compact=True)
        yield Static("Open a file, a folder, a Hub dataset id or a profile (its mixture): ctrl+o, "
                     "type, Enter.", id="data-status")
        with Horizontal(id="data-main"):
            yield RowsView(id="data-rows")
            with ContentSwitcher(initial="stats", id="data-pane"):
                yield StatsPanel(id="stats")
                yield DetailPanel(id="detail")
                yield CleanPanel(out_dir=self.initial_out, max_tokens=self.max_seq_len, id="clean")
            yield PairView(id="data-pairs")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self.initial_path:
            self.open(self.initial_path)

    def on_unmount(self) -> None:
        # Threads cannot be killed; the flags make the engine stop at its next batch.
        self._inspect_cancel.set()
        self._clean_cancel.set()

    # -- status line ------------------------------------------------------------------------

    def _set_status(self, **parts: str) -> None:
        self._status.update(parts)
        text = "  ·  ".join(p for p in self._status.values() if p)
        self.query_one("#data-status", Static).update(text)

    def _error(self, title: str, exc: BaseException | str) -> None:
        self.notify(exc if isinstance(exc, str) else _describe(exc), title=title,
                    severity="error", timeout=10, markup=False)

    def _from_thread(self, fn, *args, **kwargs) -> None:
        """Run `fn` on the UI thread; quietly skipped when the app is already gone."""
        try:
            self.app.call_from_thread(fn, *args, **kwargs)
        except RuntimeError:
            pass

    # -- actions ----------------------------------------------------------------------------

    def action_open(self) -> None:
        self.query_one("#data-path", Input).focus()

    @property
    def preference(self) -> bool:
        return self.kind != "sft"

    @property
    def filters(self) -> tuple[tuple[str, int], ...]:
        return PREFERENCE_FILTERS if self.preference else FILTERS

    @property
    def pairs_shown(self) -> bool:
        return self.has_class("-pairs")

    def action_focus_rows(self) -> None:
        self._show_pairs(False)
        self.query_one(RowsView).focus()

    def _show_pairs(self, on: bool) -> None:
        """The pair view takes the rows' and the pane's place (two answers need the width)."""
        if on == self.pairs_shown:
            return
        self.set_class(on, "-pairs")
        self.sub_title = self.SUB_TITLE_PAIRS if on else self.SUB_TITLE
        table = self.query_one(RowsView)
        if on:
            self.query_one(PairView).focus()
            self._show_detail(table.current_index)
        else:  # n / p moved the cursor while the table was hidden
            self.call_after_refresh(table.reveal_cursor)

    def action_pane(self, pane: str) -> None:
        if pane == "detail" and self.preference:
            self._show_pairs(True)
            return
        self._show_pairs(False)
        self.query_one("#data-pane", ContentSwitcher).current = pane
        if pane == "detail":
            self._show_detail(self.query_one(RowsView).current_index)
        elif pane == "clean":
            # Onto the first step; preference data has none to toggle, so the panel itself
            # (arrows scroll it), never a field: the next screen key must not be typed.
            self.query_one(CleanPanel if self.preference else "#step-drop_empty").focus()

    def action_next_filter(self) -> None:
        if not self.records:
            return
        if self.report is None and self.filter_index == 0:
            self.notify("Flags come from the inspection; wait for it to finish (or press r).")
            return
        self.filter_index = (self.filter_index + 1) % len(self.filters)
        self._apply_filter()

    def action_inspect(self) -> None:
        if self.records:
            self._start_inspect()

    def action_cancel(self) -> None:
        self._inspect_cancel.set()
        self._clean_cancel.set()

    def action_save(self) -> None:
        if not self.records:
            self.notify("Open a dataset first.", severity="warning")
            return
        panel = self.query_one(CleanPanel)
        if not panel.out_dir:
            self.action_pane("clean")
            self.query_one("#split-out", Input).focus()
            self.notify("Type the output folder, then press s again.", severity="warning")
            return
        request = self._clean_request()
        if isinstance(request, str):
            self.action_pane("clean")
            self.notify(f"Fix the clean settings first: {request}", severity="error")
            return
        if request[0] and self._cleaned_for != request and not self.preference:
            self.notify("Cleaning with these settings is still running; press s again when its "
                        "counts show.", severity="warning")
            return
        self._set_status(work="splitting and saving…")
        self._save_worker(list(self.kept if self.kept is not None else self.records),
                          panel.fractions, panel.out_dir)

    # -- events -----------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "data-path":
            self.open(event.value.strip())
        elif event.input.id == "data-tokenizer":
            self.tokenizer_path = event.value.strip()
            self._tokenizer = None
            self.action_inspect()
            self.action_focus_rows()
        elif event.input.id == "split-out":
            self.action_save()

    def on_rows_view_row_highlighted(self, event: RowsView.RowHighlighted) -> None:
        if self.pairs_shown or (not self.preference and
                                self.query_one("#data-pane", ContentSwitcher).current == "detail"):
            self._show_detail(event.index)

    def on_rows_view_row_selected(self, event: RowsView.RowSelected) -> None:
        if self.preference:
            self._show_pairs(True)
            return
        self.query_one("#data-pane", ContentSwitcher).current = "detail"
        self._show_detail(event.index)

    def on_pair_view_move(self, event: PairView.Move) -> None:
        if event.delta == 0:
            self.action_focus_rows()
            return
        table = self.query_one(RowsView)
        if table.row_count:
            at = table.cursor + event.delta
            if not 0 <= at < table.row_count:
                self.notify("That was the " + ("last" if event.delta > 0 else "first") +
                            " row" + (" of this filter" if self.filter_index else "") + ".",
                            timeout=2)
                return
            table.move_to(at)  # the table's RowHighlighted redraws the pair

    def on_clean_panel_changed(self, _: CleanPanel.Changed) -> None:
        if self._clean_timer is not None:
            self._clean_timer.stop()
        self._clean_timer = self.set_timer(CLEAN_DEBOUNCE_S, self._start_clean)

    # -- opening ----------------------------------------------------------------------------

    def open(self, path: str) -> None:
        if not path:
            return
        self._inspect_cancel.set()
        self._clean_cancel.set()
        self.loaded_path = path
        self.records, self.flags, self.report, self.kept, self.filter_index = [], (), None, None, 0
        self.sources, self._rest = None, None
        self._cleaned_for = None
        self.pair_shown = None
        self.query_one(RowsView).set_records([])
        self._set_status(rows=f"loading {path}…", filter="", work="", saved="")
        self._load_worker(path)

    def _work(self, fn, *args, group: str, exclusive: bool = True) -> None:
        self.run_worker(lambda: fn(*args), thread=True, group=group, exclusive=exclusive,
                        exit_on_error=False)

    def _load_worker(self, path: str) -> None:
        def load() -> None:
            from workbench.data.load import LoadReport, iter_records
            from workbench.data.preference import is_preference_data, iter_preference_records

            report = LoadReport()
            try:
                if is_profile(path):
                    opened = open_profile(path, report)
                else:
                    try:
                        preference = is_preference_data(path)
                    except Exception:  # noqa: BLE001 - the SFT loader says what is wrong with it
                        preference = False
                    rows = (iter_preference_records if preference else iter_records)(
                        path, on_bad_line="skip", report=report)
                    opened = Opened(*first_page(self._counted(rows)))
            except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
                self._from_thread(self._load_failed, path, exc)
                return
            formats = sorted(set(report.formats.values()))
            self._from_thread(self._loaded, path, opened.records, len(report.skipped), formats,
                              report, opened)

        self._work(load, group="load")

    def _counted(self, rows, start: int = 0):
        """`rows`, saying how many have been read every 20,000 (a big file takes a while)."""
        for n, record in enumerate(rows, start=start + 1):
            if n % 20_000 == 0:
                self._from_thread(self._set_status, rows=f"loading… {n:,} rows")
            yield record

    def action_more(self) -> None:
        """The next page of a dataset too big to load at once (data_sources.PAGE_ROWS a page)."""
        if self._rest is None:
            self.notify("Every row is loaded.", timeout=3)
            return
        path, rest, have = self.loaded_path, self._rest, len(self.records)
        self._rest = None  # one reader at a time: the iterator is not thread-safe
        self._set_status(rows=f"loading rows after {have:,}…")

        def more() -> None:
            try:
                page, left = first_page(self._counted(rest, have))
            except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
                self._from_thread(self._load_failed, path, exc)
                return
            self._from_thread(self._more_loaded, path, page, left)

        self._work(more, group="load")

    def _more_loaded(self, path: str, page: list[dict], rest) -> None:
        if path != self.loaded_path:
            return
        records = self.records + page
        skipped = len(self._load_report.skipped) if self._load_report else 0
        self._loaded(path, records, skipped, self.formats, self._load_report,
                     Opened(records, rest, self.sources))

    def _load_failed(self, path: str, exc: BaseException) -> None:
        # The save folder stays as it was: it is named after a file only once that file opens.
        self._set_status(rows=f"could not open {path}")
        self._error("Cannot open the dataset", exc)

    def _name_out_dir(self, path: str) -> None:
        """Propose "<file>-split" as the save folder, unless the person typed one: a folder
        this screen proposed for an earlier file follows the file now open."""
        panel = self.query_one(CleanPanel)
        if not panel.out_dir or panel.out_dir == self._proposed_out:
            self._proposed_out = f"{Path(path).stem}-split"
            panel.set_out_dir(self._proposed_out)

    def _loaded(self, path: str, records: list[dict], skipped: int, formats: list[str],
                load_report: Any = None, opened: Opened | None = None) -> None:
        if path != self.loaded_path:  # a newer open won
            return
        self.records = records
        self._rest = opened.rest if opened else None
        self.sources = opened.sources if opened else None
        self.query_one(StatsPanel).show_sources(self.sources)
        if opened and opened.notes[1:]:  # the first note is the summary the status line gives
            self.notify("\n".join(n.removeprefix("data: ") for n in opened.notes[1:]),
                        title="Mixture", timeout=8, markup=False)
        self.formats = formats
        self._load_report = load_report
        self._name_out_dir(path)
        was_preference = self.preference
        self.kind = record_kind(records[0]) if records else "sft"
        self.flags = bytearray(len(records))
        table = self.query_one(RowsView)
        table.set_records(records, self.flags)
        self._show_pairs(False)
        box = self.query_one("#data-path", Input)
        typing = isinstance(self.focused, Input) and not (
            self.focused is box and box.value.strip() == path)
        if not typing:
            # Opened: on to the rows. Unless a field holds something new being typed (the next
            # path, started before this load ended): its keys would land on the rows, where
            # letters are commands (s saves).
            table.focus()
        if self.preference != was_preference:
            self.query_one(CleanPanel).set_preference(self.preference)
            self.query_one("#data-pane", ContentSwitcher).current = "stats"
        skipped_text = f" ({skipped:,} bad rows skipped)" if skipped else ""
        what = {"paired": "pairs", "unpaired": "rows with a label (KTO)"}.get(self.kind, "rows")
        if self.sources:
            shown = (f"{_short(path)}: a mixture of {len(self.sources)} sources, "
                     f"{len(records):,} training rows")
        else:
            shown = f"{_short(path)}: {len(records):,} {what}"
        if self._rest is not None:
            # A sample, and the person is told so: inspection and cleaning see these rows only.
            shown += f" (the first {len(records):,}: m reads {data_sources.PAGE_ROWS:,} more)"
        self._set_status(rows=shown + skipped_text,
                         filter=f"filter: {self.filters[0][0]}")
        if self.auto_inspect:
            self._start_inspect()
        if self.query_one(CleanPanel).steps and not self.preference:
            self._start_clean()

    # -- tokenizer --------------------------------------------------------------------------

    def tokenizer(self) -> Any:
        """The tokenizer, loaded once per path (called from worker threads only)."""
        with self._tokenizer_lock:
            if self._tokenizer is None or self._tokenizer_for != self.tokenizer_path:
                from workbench.data.errors import DataError

                try:
                    from transformers import AutoTokenizer

                    self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
                except Exception as exc:  # noqa: BLE001 - the message names the folder
                    raise DataError(f"could not load a tokenizer from {self.tokenizer_path!r}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                                    hint="type a model folder with tokenizer.json in the "
                                         "tokenizer box and press Enter") from None
                self._tokenizer_for = self.tokenizer_path
            return self._tokenizer

    # -- inspection -------------------------------------------------------------------------

    def _start_inspect(self) -> None:
        self._inspect_cancel.set()
        cancel = self._inspect_cancel = threading.Event()
        records = self.records
        if self.preference:
            self._start_preference_inspect(records, cancel)
            return
        self._set_status(work="inspecting… (x cancels)")

        def inspect() -> None:
            from workbench.data.inspect import inspect_dataset

            tokenizer = None
            try:
                tokenizer = self.tokenizer()
            except Exception as exc:  # noqa: BLE001 - inspect without token counts instead
                self._from_thread(self._error, "No token counts", exc)

            def progress(done: int, _total: int | None) -> None:
                self._from_thread(self._set_status,
                                  work=f"inspecting… {done:,}/{len(records):,} rows (x cancels)")

            try:
                # Unbounded examples: the flag filters need every flagged row, not the first 20.
                report = inspect_dataset(records, tokenizer=tokenizer, max_seq_len=self.max_seq_len,
                                         progress=progress, cancel=cancel,
                                         max_examples=len(records) + 1).to_json()
                flags = flags_from_report(report, records)
            except Exception as exc:  # noqa: BLE001
                self._from_thread(self._error, "Inspection failed", exc)
                self._from_thread(self._set_status, work="")
                return
            if not cancel.is_set() or report.get("cancelled"):
                self._from_thread(self._inspected, records, report, flags)

        self._work(inspect, group="inspect")

    def _start_preference_inspect(self, records: list[dict], cancel: threading.Event) -> None:
        """The preference checks (rows that cannot train, duplicates, length bias), with
        lengths in trained tokens when the tokenizer loads. They take no cancel flag: x only
        drops the result."""
        path, load_report = self.loaded_path, self._load_report
        self._set_status(work="checking the pairs…" if self.kind == "paired" else "checking the rows…")

        def inspect() -> None:
            from workbench.data.preference_checks import inspect_preferences

            tokenizer = None
            try:
                tokenizer = self.tokenizer()
            except Exception as exc:  # noqa: BLE001 - lengths in characters instead
                self._from_thread(self._error, "No token counts", exc)
            try:
                report = inspect_preferences(records, tokenizer, self.max_seq_len,
                                             load_report=load_report, inputs=[_short(path)],
                                             max_examples=len(records) + 1).to_json()
                flags = preference_flags(report, records)
            except Exception as exc:  # noqa: BLE001
                self._from_thread(self._error, "Inspection failed", exc)
                self._from_thread(self._set_status, work="")
                return
            if cancel.is_set():
                self._from_thread(self._set_status, work="inspection cancelled")
                return
            self._from_thread(self._inspected, records, report, flags)

        self._work(inspect, group="inspect")

    def _inspected(self, records: list[dict], report: dict, flags) -> None:
        if records is not self.records:
            return
        if self.preference:
            self.report, self.flags = report, flags
            self.query_one(RowsView).set_flags(flags)
            self.query_one(StatsPanel).show_preference(report)
            flagged = sum(1 for f in flags if f)
            self._set_status(work=f"{flagged:,} flagged")
            if self.filter_index:
                self._apply_filter()
            return
        # Inspection saw records, not the file: name the file's schema as the loader found it.
        report["rows_by_schema"] = {"/".join(self.formats) or "records": report.get("rows", 0)}
        self.report, self.flags = report, flags
        self.query_one(RowsView).set_flags(flags)
        self.query_one(StatsPanel).show(report)
        flagged = sum(1 for f in flags if f)
        state = "inspection cancelled (partial)" if report.get("cancelled") else f"{flagged:,} flagged"
        self._set_status(work=state)
        if self.filter_index:
            self._apply_filter()

    def _apply_filter(self) -> None:
        name, bits = self.filters[self.filter_index]
        view = filtered_indices(self.flags, bits, len(self.records))
        self.query_one(RowsView).set_view(view)
        self._set_status(filter=f"filter: {name} ({len(view):,})")

    # -- row detail -------------------------------------------------------------------------

    def _show_detail(self, index: int | None) -> None:
        if self.preference:
            self._show_pair(index)
            return
        if index is None or not (0 <= index < len(self.records)):
            return
        record = self.records[index]
        bits = self.flags[index] if index < len(self.flags) else 0
        source = record.get("source") or {}
        header = f"{_short(source.get('file') or '')} row {shown_row(source, index)}"
        notes = [f"flagged: {', '.join(flag_names(bits))}"] if bits else []
        self.detail_text = None

        def render() -> None:
            from workbench.data.render import render_rows

            try:
                tokenizer = self.tokenizer()
                rows = render_rows(tokenizer, record["messages"], max_seq_len=self.max_seq_len,
                                   tools=record.get("tools"))
                row = rows[-1]  # holds the whole conversation, with its last answer trained
                body = rendered_text(tokenizer, row)
            except Exception as exc:  # noqa: BLE001
                self._from_thread(self.query_one(DetailPanel).message, _describe(exc))
                return
            extra = list(notes)
            if len(rows) > 1:
                extra.append(f"trains as {len(rows)} rows, one per answer ({row.why}); shown: the last")
            extra.append(f"{len(row.input_ids):,} tokens, {trained_count(row):,} trained (highlighted)")
            if row.truncated:
                extra.append(f"truncated at {self.max_seq_len}: {row.answer_tokens_lost} answer tokens lost")
            self._from_thread(self._detail_shown, header, body, extra)

        self._work(render, group="detail")

    def _detail_shown(self, header: str, body: Any, notes: list[str]) -> None:
        self.detail_text = body
        self.query_one(DetailPanel).show(header, body, notes)

    def _show_pair(self, index: int | None) -> None:
        view = self.query_one(PairView)
        table = self.query_one(RowsView)
        if index is None or not (0 <= index < len(self.records)):
            view.message("", "No row here: this filter shows none (f changes it).")
            return
        record = self.records[index]
        source = record.get("source") or {}
        what = "pair" if self.kind == "paired" else "answer"
        header = (f"{what} {table.cursor + 1:,} of {table.row_count:,} "
                  f"(row {shown_row(source, index)})")
        if self.filter_index:
            header += f"  ·  filter: {self.filters[self.filter_index][0]}"
        bits = self.flags[index] if index < len(self.flags) else 0
        if bits:
            header += f"  ·  flagged: {', '.join(flag_names(bits))}"
        self.pair_shown = None

        def render() -> None:
            from screens.widgets.data_preference import render_shown

            try:
                tokenizer = self.tokenizer()
            except Exception as exc:  # noqa: BLE001 - shown raw, and said why
                tokenizer = None
                self._from_thread(self._error, "No tokenizer", exc)
            try:
                shown = render_shown(tokenizer, record, self.max_seq_len, header)
            except Exception as exc:  # noqa: BLE001
                self._from_thread(view.message, header, _describe(exc))
                return
            self._from_thread(self._pair_shown, index, shown)

        self._work(render, group="detail")

    def _pair_shown(self, index: int, shown: Any) -> None:
        if self.query_one(RowsView).current_index != index:
            return  # moved on meanwhile; the newer pair is on its way
        self.pair_shown = shown
        self.query_one(PairView).show(shown)

    # -- cleaning ---------------------------------------------------------------------------

    def _clean_request(self) -> tuple[list[str], dict] | str:
        """(steps, settings) as the panel shows them now, or what is wrong with a setting."""
        panel = self.query_one(CleanPanel)
        try:
            return panel.steps, panel.settings()
        except ValueError as exc:
            return str(exc)

    def _start_clean(self) -> None:
        self._clean_cancel.set()
        cancel = self._clean_cancel = threading.Event()
        records = self.records
        if not records or self.preference:
            return
        request = self._clean_request()
        panel = self.query_one(CleanPanel)
        if isinstance(request, str) or not request[0]:
            # A half-typed number is said where the person is looking; the status line keeps
            # an inspection's summary and loses only a clean's.
            panel.show_result(Text(request, style="bold red") if isinstance(request, str)
                              else "No steps: every row is kept.")
            if not isinstance(request, str):
                self.kept, self.clean_report, self._cleaned_for = None, None, None
            if self._status["work"].startswith("clean"):
                self._set_status(work="")
            return
        steps, settings = request
        self._set_status(work="cleaning…")

        def clean() -> None:
            from workbench.data.clean import CleanConfig, clean_records

            try:
                tokenizer = self.tokenizer() if "length_filter" in steps else None
                kept, report = clean_records(records, CleanConfig(steps=steps, **settings),
                                             tokenizer=tokenizer, cancel=cancel)
            except Exception as exc:  # noqa: BLE001
                self._from_thread(self._error, "Cleaning failed", exc)
                self._from_thread(self._set_status, work="")
                return
            if cancel.is_set() or report.cancelled:
                return  # a newer toggle is already running; its result will be shown
            self._from_thread(self._cleaned, records, request, kept, report)

        self._work(clean, group="clean")

    def _cleaned(self, records: list[dict], request: tuple, kept: list[dict], report: Any) -> None:
        if records is not self.records or request != self._clean_request():
            return  # the panel changed since: the newer clean's result will be shown
        self.kept, self.clean_report, self._cleaned_for = kept, report, request
        reasons = {op.name: op.removed[0]["reason"] for op in report.operations if op.removed}
        self.query_one(CleanPanel).show_result(
            result_table(report.summary(), report.rows_in, report.rows_out, reasons))
        self._set_status(work=f"clean: {report.rows_out:,} kept, {report.removed_total:,} removed")

    # -- split and save ---------------------------------------------------------------------

    def _save_worker(self, rows: list[dict], fractions: str, out_dir: str) -> None:
        path, report = self.loaded_path, self.clean_report
        preference, formats = self.preference, list(self.formats)

        def save() -> None:
            from workbench.data.save import describe_sources, save_splits
            from workbench.data.split import split_records

            try:
                if preference:  # every row of one prompt in one split, as `data split` does
                    from workbench.data.preference_checks import split_preference_records

                    split = split_preference_records(rows, fractions)
                    extra = {"sources": describe_sources([path]), "kind": "preference",
                             "detected_formats": formats, "split": split.report, "operations": []}
                else:
                    split = split_records(rows, fractions)
                    extra = {"sources": describe_sources([path]), "split": split.report,
                             "operations": report.summary() if report is not None else []}
                folder = save_splits(out_dir, split.as_dict(), extra)
            except Exception as exc:  # noqa: BLE001
                self._from_thread(self._error, "Split and save failed", exc)
                self._from_thread(self._set_status, work="")
                return
            self._from_thread(self._saved, folder, split.report["sizes"])

        self._work(save, group="save")

    def _saved(self, folder: Path, sizes: dict) -> None:
        self.saved_to = Path(folder)
        counts = " / ".join(f"{n:,}" for n in sizes.values())
        self._set_status(work="", saved=f"saved {counts} to {_short(folder)}/")
        self.notify(f"train / validation / test = {counts} rows\n{folder}", title="Saved")
