"""Compare: a finished run's base, few-shot and fine-tuned answers side by side, streamed.

The model is loaded in a thread worker (torch and transformers are imported only there) and
kept for the next prompt; the three systems are answered by the comparison engine in one
batched call whose deltas are posted to the UI at most every 50 ms. Writing the report
(`workbench eval`) runs in a worker too. Keys are ctrl combinations so they work while
typing a prompt."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Label, Select, Static

from screens.widgets.run_picker import PicksFinishedRun
from screens.widgets.compare_columns import SYSTEMS, AnswerColumn, aligned_columns, column_text
from screens.widgets.focus import FocusScreen
from screens.widgets.nav import NavBar
from screens.widgets.sized_table import repaint_after_sizing
from workbench.fmt import fmt_duration

FLUSH_S = 0.05
TYPED_PLACEHOLDER = "Enter: type a prompt, Enter again generates"


class CompareError(Exception):
    """A setting on the screen is wrong; the message is for people."""


class PromptsAnswered:
    """Counts prompts whose every system has stopped: the engine reports rows (a prompt
    once per system), a person thinks in prompts."""

    def __init__(self, total: int, systems: int):
        self.total, self.done = total, 0
        self._left = [systems] * total

    def row_done(self, prompt_index: int) -> bool:
        """True when this row was its prompt's last one."""
        self._left[prompt_index] -= 1
        if self._left[prompt_index]:
            return False
        self.done += 1
        return True


def load_engine(run_path: str, device: str = "auto", progress=None):
    """(engine, profile, run, splits): the base model with the run's adapter, loaded once;
    `progress(stage)` hears each loading stage as it starts."""
    from workbench.evaluate.compare import ComparisonEngine, run_adapters
    from workbench.evaluate.errors import EvaluateError
    from workbench.evaluate.testset import load_splits
    from workbench.profile import ProfileError, load_profile
    from workbench.rundir import RunDir

    run = RunDir(Path(run_path))
    try:
        profile = load_profile(run.profile_path)
    except ProfileError as exc:
        raise EvaluateError(f"could not read the run's profile: {exc}") from exc
    adapters = run_adapters(run)
    if progress:
        progress("reading the run's data splits (few-shot examples come from train)")
    splits = load_splits(profile)
    engine = ComparisonEngine.from_run(run, profile, adapters=adapters, device=device,
                                       progress=progress)
    return engine, profile, run, splits


class CompareScreen(PicksFinishedRun, FocusScreen):
    RUN_SELECT = "#compare-run"
    # Arrive on the answers (arrows scroll them); Enter there goes into the prompt.
    HOME = "#col-base"
    DEFAULT_CSS = """
    #compare-top, #compare-ask { height: 1; padding: 0 1; }
    .compare-label { color: $text-muted; width: auto; }
    #compare-run { width: 1fr; }
    #compare-shots, #compare-max { width: 6; }
    #compare-prompt { width: 1fr; }
    #compare-columns { height: 1fr; min-height: 6; }
    #compare-metrics { height: auto; max-height: 6; }
    /* A long status (a report's progress and its clock) wraps at 80 columns, never cut. */
    #compare-status { height: auto; max-height: 3; color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", id="compare.generate", priority=True),
        Binding("ctrl+l", "load", "Load", id="compare.load", priority=True),
        Binding("ctrl+t", "toggle_source", "Suite", id="compare.source", priority=True),
        Binding("ctrl+r", "report", "Report", id="compare.report", priority=True),
        # ctrl+c: what stops things in a terminal (ctrl+b, the old key, is tmux's prefix)
        Binding("ctrl+c", "cancel", "Stop", id="compare.cancel", priority=True),
        # Not a priority key: in the prompt Enter generates, on the run list it opens it.
        Binding("enter", "enter_prompt", "Prompt", show=False, id="compare.prompt"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.device = "auto"
        self.source = "typed"  # or "suite"
        self.engine = None     # (engine, profile, run, splits) of self.engine_run
        self.engine_run: str | None = None
        self.busy = ""         # "", "load", "generate", "report"
        self._counted: tuple[int, int] | None = None  # prompts answered, of (suite)
        self._cancel: threading.Event | None = None
        self._since = 0.0
        self._what = ""
        self.prompts: list[str] = []
        self.answers: dict[tuple[str, int], str] = {}
        self.metrics: dict = {}
        self.timing: dict = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("compare")
        with Horizontal(id="compare-top"):
            yield Label("run ", classes="compare-label")
            yield Select([], prompt="no finished run", id="compare-run", compact=True,
                         type_to_search=False)
            yield Label(" shots ", classes="compare-label")
            yield Input("3", id="compare-shots", type="integer", compact=True)
            yield Label(" max tokens ", classes="compare-label")
            yield Input("64", id="compare-max", type="integer", compact=True)
        with Horizontal(id="compare-ask"):
            yield Label("prompt ", id="compare-source", classes="compare-label")
            yield Input(placeholder=TYPED_PLACEHOLDER, id="compare-prompt", compact=True)
        yield Static("", id="compare-status")
        with Horizontal(id="compare-columns"):
            for name in SYSTEMS:
                yield AnswerColumn(name, id=f"col-{name}")
        yield DataTable(id="compare-metrics", cursor_type="none", show_cursor=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "compare"
        self.query_one("#compare-metrics").display = False
        self._tick = self.set_interval(1.0, self._show_busy, pause=True)
        self._show_status("pick a run; ^g generates (the model loads first), ^t suite/typed")
        self._refresh_runs()
        # The three columns scroll as one: their rows are aligned (compare_columns.py).
        for column in self.query(AnswerColumn):
            self.watch(column, "scroll_y", partial(self._scrolled, column), init=False)

    def _scrolled(self, source: AnswerColumn, y: float) -> None:
        for column in self.query(AnswerColumn):
            if column is not source and column.scroll_y != y:
                column.scroll_to(y=y, animate=False, immediate=True)

    def on_resize(self, event) -> None:
        self.call_after_refresh(self._redraw)  # wrapped to the new widths

    # ---- status ----------------------------------------------------------------------------
    def _show_status(self, text: str) -> None:
        self.query_one("#compare-status", Static).update(text)

    def _start_busy(self, what: str, text: str) -> None:
        self.busy, self._what, self._since = what, text, time.monotonic()
        self._counted = None
        self._show_busy()
        self._tick.resume()

    def _show_busy(self) -> None:
        if not self.busy:
            return
        elapsed = time.monotonic() - self._since
        eta = ""
        if self._counted is not None:  # (prompts done, prompts): the ETA moves with the clock
            done, total = self._counted
            if 0 < done < total:
                eta = f", ETA {fmt_duration(elapsed / done * (total - done))}"
        # The clock is labelled: after a report's own "ETA 1s", a bare "64s" read as a
        # second ETA ("ETA 1s 64s").
        self._show_status(f"{self._what}{eta}  ·  {fmt_duration(elapsed)} so far  (^c stops)")

    def _end_busy(self, text: str = "") -> None:
        self.busy = ""
        self._tick.pause()
        if text:
            self._show_status(text)

    # ---- inputs ----------------------------------------------------------------------------
    def _run_path(self) -> str:
        value = self.query_one("#compare-run", Select).value
        if value == Select.NULL:
            raise CompareError(f"no finished run in {self.app.runs_dir}: train one first")
        return str(value)

    def _int(self, widget_id: str, name: str, low: int) -> int:
        text = self.query_one(widget_id, Input).value.strip()
        try:
            value = int(text)
        except ValueError:
            raise CompareError(f"{name} must be a whole number, not {text!r}") from None
        if value < low:
            raise CompareError(f"{name} must be at least {low}")
        return value

    def _guard(self) -> bool:
        if self.busy:
            self.notify(f"busy ({self.busy}); ^c stops it", severity="warning")
            return False
        return True

    def _failed(self, exc) -> None:
        self._end_busy("stopped: see the notification")
        self.app.notify_error(exc, "compare")

    # ---- loading ---------------------------------------------------------------------------
    def action_load(self) -> None:
        if self._guard():
            try:
                self._load(self._run_path(), then=None)
            except CompareError as exc:
                self.app.notify_error(str(exc), "compare")

    def _load(self, run_path: str, then) -> None:
        cancel = self._cancel = threading.Event()
        self._start_busy("load", f"loading the model and adapter of {Path(run_path).name}...")

        def stage(text: str) -> None:  # from the loading thread
            self.app._from_thread(self._loading_stage, cancel, text)

        def job():
            try:
                return load_engine(run_path, self.device, progress=stage), None
            except Exception as exc:  # shown by _loaded, on the UI thread
                return None, exc

        def loaded(result) -> None:
            engine, exc = result
            if cancel.is_set():
                return
            if exc is not None:
                self._failed(exc)
                return
            self.engine, self.engine_run = engine, run_path
            self._end_busy(f"loaded {Path(run_path).name} on {engine[0].device}; "
                           "^g generates")
            if then is not None:
                then()

        self.app.run_in_thread(job, node=self, group="compare", on_done=loaded)

    def _loading_stage(self, cancel: threading.Event, text: str) -> None:
        if self.busy == "load" and not cancel.is_set():
            self._what = f"{text}..."
            self._show_busy()

    def action_enter_prompt(self) -> None:
        prompt = self.query_one("#compare-prompt", Input)
        if prompt.disabled:  # the suite is generated instead: nothing to type
            self.notify("generating the run's prompt suite: ^g starts it, ^t types a prompt",
                        severity="information")
            return
        prompt.focus()

    # ---- generating ------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "compare-prompt":
            self.action_generate()

    def action_toggle_source(self) -> None:
        self.source = "suite" if self.source == "typed" else "typed"
        prompt = self.query_one("#compare-prompt", Input)
        label = self.query_one("#compare-source", Label)
        if self.source == "suite":
            label.update("suite ")
            prompt.disabled = True
            prompt.value = ""
            prompt.placeholder = "the run's prompt suite (eval.prompts); ^g to generate"
        else:
            label.update("prompt ")
            prompt.disabled = False
            prompt.placeholder = TYPED_PLACEHOLDER

    def _settings(self) -> tuple[str, int, int]:
        """The chosen run, shots and max new tokens; CompareError names a bad field."""
        return (self._run_path(), self._int("#compare-shots", "shots", 0),
                self._int("#compare-max", "max tokens", 1))

    def action_generate(self) -> None:
        if not self._guard():
            return
        try:
            run_path, shots, max_new = self._settings()
            typed = None
            if self.source == "typed":
                typed = self.query_one("#compare-prompt", Input).value.strip()
        except CompareError as exc:
            self.app.notify_error(str(exc), "compare")
            return
        if typed == "":
            self._ask_for_prompt()
            return
        go = lambda: self._generate(typed, shots, max_new)  # noqa: E731
        if self.engine is None or self.engine_run != run_path:
            self._load(run_path, then=go)
        else:
            go()

    def _ask_for_prompt(self) -> None:
        """Nothing to generate: say what to type where the eye is (the line under the prompt,
        not only a toast in a corner), and put the cursor in the prompt."""
        text = "type a prompt above, then Enter or ^g (^t: the run's prompt suite instead)"
        self._show_status(text)
        self.query_one("#compare-prompt", Input).focus()
        self.notify(text, title="compare", severity="warning")

    def _generate(self, typed: str | None, shots: int, max_new: int) -> None:
        engine, profile, run, splits = self.engine
        cancel = self._cancel = threading.Event()
        self._start_busy("generate", "generating...")
        app = self.app

        def job():
            from workbench.evaluate.compare import Delta, RowDone, default_systems
            from workbench.evaluate.evaluation import EvalOptions
            from workbench.evaluate.fewshot import FewShotPicker
            from workbench.evaluate.metrics import score_all
            from workbench.evaluate.suite import load_prompts

            try:
                if typed is not None:
                    prompts = [{"prompt": typed, "reference": None}]
                else:
                    from workbench.evaluate.errors import EvaluateError

                    if not profile.eval.prompts:
                        raise EvaluateError("the run's profile has no prompt suite",
                                            hint="set eval.prompts, or type a prompt (^t)")
                    prompts = load_prompts(profile.eval.prompts)
                opts = EvalOptions.from_profile(profile, shots=shots, max_new_tokens=max_new)
                picker = FewShotPicker(splits.train, opts.shots, seed=opts.seed,
                                       selection=opts.selection,
                                       exclude_prompts=[p["prompt"] for p in prompts])
                systems = default_systems(opts.shots)
                rows = engine.rows([p["prompt"] for p in prompts], systems, picker)
                app.call_from_thread(self._begin, [p["prompt"] for p in prompts], typed is None)
                pending: list = []
                last = time.monotonic()
                gens = None
                answered = PromptsAnswered(len(prompts), len(systems))
                for ev in engine.stream(rows, cancel=cancel, max_new_tokens=opts.max_new_tokens,
                                        seed=opts.seed, batch_size=opts.batch_size):
                    if isinstance(ev, Delta):
                        pending.append(ev)
                        if time.monotonic() - last >= FLUSH_S:
                            app.call_from_thread(self._add, pending)
                            pending, last = [], time.monotonic()
                    elif isinstance(ev, RowDone):
                        if answered.row_done(ev.prompt_index):
                            app.call_from_thread(self._answered, cancel, answered.done,
                                                 answered.total)
                    else:
                        gens = ev
                if pending:
                    app.call_from_thread(self._add, pending)
                names = [s.name for s in systems]
                scored = [i for i, p in enumerate(prompts) if p["reference"] is not None]
                chosen = opts.metric_names([prompts[i]["reference"] for i in scored])[0]
                metrics = ({n: score_all(chosen, [gens.text(n, i) for i in scored],
                                         [prompts[i]["reference"] for i in scored])
                            for n in names} if scored and not cancel.is_set() else {})
                final = {(a.system, a.prompt_index): a.text for a in gens.answers}
                timing = {k: v.to_dict() for k, v in gens.timing.items()}
                return final, metrics, timing, len(scored), None
            except Exception as exc:
                return None, None, None, 0, exc

        def done(result) -> None:
            final, metrics, timing, n_scored, exc = result
            if exc is not None:
                self._failed(exc)
                return
            self.answers.update(final)
            self.metrics, self.timing = metrics, timing
            self._redraw()
            self._show_metrics(metrics, timing, n_scored)
            speed = "  ".join(f"{n} {t['tokens_per_s']:.0f} tok/s" for n, t in timing.items())
            self._end_busy(("cancelled" if cancel.is_set() else "done") + f"  {speed}")

        self.app.run_in_thread(job, node=self, group="compare", on_done=done)

    def _begin(self, prompts: list[str], suite: bool) -> None:
        self.prompts, self._suite, self.answers = prompts, suite, {}
        self.query_one("#compare-metrics").display = False
        if len(prompts) > 1 and self.busy == "generate":
            self._count_prompts(0, len(prompts))
        self._redraw()

    def _answered(self, cancel: threading.Event, done: int, total: int) -> None:
        """A prompt has all its answers: a suite takes minutes on a CPU, so count them."""
        if self.busy == "generate" and not cancel.is_set() and total > 1:
            self._count_prompts(done, total)

    def _count_prompts(self, done: int, total: int) -> None:
        self._what, self._counted = f"generating: {done} / {total} prompts", (done, total)
        self._show_busy()

    def _add(self, deltas) -> None:
        touched = set()
        for d in deltas:
            key = (d.system, d.prompt_index)
            self.answers[key] = self.answers.get(key, "") + d.text
            touched.add(d.system)
        self._redraw(touched)

    def _redraw(self, systems=SYSTEMS) -> None:
        """Every column, always: an answer growing in one pads the rows of the others.
        (`systems`, the columns a delta touched, is kept for callers.)"""
        suite = getattr(self, "_suite", False)
        columns = {name: self.query_one(f"#col-{name}", AnswerColumn) for name in SYSTEMS}
        widths = {name: column.wrap_width for name, column in columns.items()}
        aligned = (aligned_columns(SYSTEMS, widths, self.prompts, self.answers, suite)
                   if all(widths.values()) else {})  # before the first layout: not yet
        for name, column in columns.items():
            column.show(column_text(name, self.prompts, self.answers, suite), aligned.get(name))

    def _show_metrics(self, metrics: dict, timing: dict, n_scored: int) -> None:
        table = self.query_one("#compare-metrics", DataTable)
        table.clear(columns=True)
        if not metrics:
            table.display = False
            return
        names = list(next(iter(metrics.values())))
        table.add_columns("system", *names, "tok/s")
        for system, values in metrics.items():
            table.add_row(system, *(f"{values[n]:.1f}" for n in names),
                          f"{timing.get(system, {}).get('tokens_per_s', 0):.0f}")
        table.display = True
        repaint_after_sizing(table)

    def column_text(self, system: str) -> str:
        return self.query_one(f"#col-{system}", AnswerColumn).text

    # ---- report and cancel -----------------------------------------------------------------
    def action_report(self) -> None:
        if not self._guard():
            return
        try:
            run_path, shots, max_new = self._settings()
        except CompareError as exc:
            self.app.notify_error(str(exc), "compare")
            return
        engine = self.engine if self.engine_run == run_path else None
        cancel = self._cancel = threading.Event()
        self._start_busy("report", f"evaluating {Path(run_path).name} for the report...")
        app = self.app

        def log(line: str) -> None:
            app.call_from_thread(setattr, self, "_what", line.strip()[:60])

        def progress(fields: dict) -> None:  # rows done / total and an ETA, each stage
            from workbench.evaluate.progress import progress_text

            if not cancel.is_set():  # "cancelling..." stays until the evaluation stops
                app.call_from_thread(setattr, self, "_what", progress_text(fields))

        def job():
            from workbench.evaluate.evaluation import evaluate_run
            from workbench.rundir import RunDir

            try:
                run = engine[2] if engine else RunDir(Path(run_path))
                evaluate_run(run, engine=engine[0] if engine else None,
                             profile=engine[1] if engine else None, log=log, cancel=cancel,
                             device=self.device, shots=shots, max_new_tokens=max_new,
                             progress=progress)
                return run.path / "report.md", None
            except Exception as exc:
                return None, exc

        def done(result) -> None:
            path, exc = result
            if exc is not None:
                self._failed(exc)
                return
            self._end_busy(f"wrote {path.parent.name}/report.md and report.json")
            self.notify(f"report written: {path}", title="report")

        self.app.run_in_thread(job, node=self, group="compare", on_done=done)

    def action_cancel(self) -> None:
        if not self.busy or self._cancel is None:
            self.notify("nothing to cancel", severity="information")
            return
        self._cancel.set()
        if self.busy == "load":  # loading cannot be interrupted; its result is dropped
            self._end_busy("cancelled loading")
        else:
            self._what = "cancelling..."
