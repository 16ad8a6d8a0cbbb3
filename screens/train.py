"""Train (monitor): follows one run by reading its folder, like `workbench attach`.

The run is a separate process; this screen only reads its events.jsonl, status.json and
stdout.log, in a thread worker every half second while it trains (every two seconds once it
has ended, to notice a resume). So the plot is redrawn at most twice a second, and closing
the app or losing the connection does nothing to the run.

A preference or GRPO run also plots its method's signals, one small chart per `Chart` of the
method (workbench.train.methods): under the loss plot when there is room for them, else one
chart at a time in the loss plot's place (g shows the next). A chart of a pattern signal
("rewards/*/mean") draws one line per matching signal: GRPO's reward per reward function. A GRPO
run also shows its latest sampled completions with their rewards (the "samples" events) beside
the log. An SFT run looks as it always did."""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from screens import run_actions
from screens.app import RunsChanged
from screens.run_actions import RunPoll
from screens.widgets.focus import FocusScreen
from screens.widgets.format import NA, duration, gib, num
from screens.widgets.gpu_panel import GpuPanel
from screens.widgets.keys import with_ids
from screens.widgets.log_pane import LogPane
from screens.widgets.loss_plot import LossPlot
from screens.widgets.nav import NavBar
from screens.widgets.run_view import RunView
from screens.widgets.samples_panel import SamplesPanel
from screens.widgets.signal_plot import SignalPlot, charts_for, expand, signal_value

LIVE_POLL_S = 0.5
# Plotext is most of the monitor's CPU: the plot follows new points at most once a second
# (the issue allows twice); the numbers beside it still update every poll.
PLOT_EVERY_S = 1.0
IDLE_POLL_S = 2.0
LIVE_STATES = ("starting", "running")
# Signal charts go under the loss plot when each gets at least this many cells; in a smaller
# plot area the charts take turns (g) in the loss plot's place.
CHART_MIN_WIDTH, PLOTS_MIN_HEIGHT = 26, 16
STATE_STYLE = {"running": "$success", "starting": "$warning", "finished": "$primary",
               "failed": "$error", "interrupted": "$warning", "stopped": "$warning"}


def short_message(message: str, run_path: str) -> str:
    """A status message for the header, which has two lines at most: paths inside the run
    folder are written from it ("adapter saved to ./adapter"), since the header names the
    run already."""
    for folder in {str(Path(run_path).resolve()), str(run_path)}:
        message = message.replace(folder + os.sep, "./")
    return message


def cost_lines(hourly: float | None, seconds: float | None) -> list[str]:
    """The cost rows of the stats column (36 cells wide)."""
    if hourly is None:
        return [f"cost       {NA}"]
    if not hourly:  # 0 is a price (a CPU you own), not a missing setting
        return ["cost       $0.00 (free)", "  budget.gpu_hourly_usd = 0"]
    if seconds is None:
        return ["cost       -"]
    return [f"cost       ${seconds / 3600 * hourly:.2f} at ${hourly:g}/h"]


class TrainScreen(FocusScreen):
    HOME = "#train-log"
    BINDINGS = [
        *with_ids(Screen, "screen"),
        Binding("x", "stop", "Stop run", id="train.stop"),
        Binding("r", "resume", "Resume run", id="train.resume"),
        Binding("l", "focus_log", "Log", id="train.log"),
        Binding("p", "focus_plot", "Plot", id="train.plot"),
        Binding("g", "next_chart", "Next chart", id="train.next_chart"),
        # Shown in help and the palette; the footer has no room for it at 80 columns.
        Binding("s", "focus_samples", "Samples", show=False, id="train.samples"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.run_path: str | None = None
        self.view = RunView()
        self.state = "unknown"
        self.status: dict = {}
        self.hourly_usd: float | None = None
        self._offset = 0
        self._log_size = 0
        self._loaded = False  # the first read replays history; only later errors notify
        self._timer = None
        self._interval = LIVE_POLL_S
        self._stats_text = ""
        self._title_text = ""
        self._plot_pending = False
        self._plot_drawn = 0.0
        self.method: str | None = None  # the run's train.method, once its profile is read
        self.charts: tuple = ()         # the Charts of its signals
        self.compact = False            # the charts take turns in the plot area
        self.chart_index = 0            # which plot shows while compact (0: the loss)
        self.signal_plots: list[SignalPlot] = []  # one per chart (old ones may still be leaving)
        self._samples_drawn = 0  # view.samples_seen when the samples panel was last drawn

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("train")
        yield Static("No run attached: press 1 for Runs, pick one and press o.", id="run-title")
        with Horizontal(id="train-body"):
            with Vertical(id="train-plots"):
                yield LossPlot(id="loss-plot")
                yield Horizontal(id="signal-plots")
            with Vertical(id="train-side"):
                yield Static(id="train-stats")
                yield GpuPanel(id="train-gpus")
        with Horizontal(id="train-bottom"):
            yield SamplesPanel(id="train-samples")
            yield LogPane(id="train-log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "train"
        self._timer = self.set_interval(LIVE_POLL_S, self._poll, pause=True)
        if self.app.monitored_run:
            self.attach(self.app.monitored_run)
        else:  # opened directly: show what is training now, else the newest run
            self.app.run_in_thread(run_actions.scan_runs, self.app.runs_dir, node=self,
                                   on_done=self._attach_newest)

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._follow_app()
        if self.run_path:
            self._timer.resume()

    def on_runs_changed(self, _: RunsChanged) -> None:
        self._follow_app()

    def _follow_app(self) -> None:
        if self.app.monitored_run and self.app.monitored_run != self.run_path:
            self.attach(self.app.monitored_run)

    def _attach_newest(self, rows) -> None:
        if self.run_path is None and rows:
            live = [r for r in rows if r.live]
            self.app.monitored_run = (live or rows)[0].path
            self.attach(self.app.monitored_run)

    # ---- following a run -------------------------------------------------------------------
    def attach(self, path: str) -> None:
        self.run_path = path
        self.view = RunView()
        self.state, self.status, self.hourly_usd = "unknown", {}, None
        self._offset = self._log_size = 0
        self._loaded = False
        self._plot_pending, self._plot_drawn = False, 0.0
        self.query_one(LogPane).reset()
        self.query_one(LossPlot).show([], [], [], [])
        self.method = None
        self._set_charts(())
        self._samples_drawn = 0
        self.query_one(SamplesPanel).show(None)
        self._show_samples_panel(False)
        self.app.run_in_thread(run_actions.run_settings, path, node=self,
                               on_done=lambda facts: self._set_settings(path, *facts))
        self._poll()
        self._timer.resume()

    def _set_settings(self, path: str, hourly: float | None, method: str | None) -> None:
        if path != self.run_path:
            return
        self.hourly_usd, self.method = hourly, method
        self._set_charts(charts_for(method, self.view.seen_signals))
        self._show_samples_panel(method == "grpo" or self.view.samples is not None)
        self._show_stats()

    # ---- the method's charts ---------------------------------------------------------------
    def _set_charts(self, charts: tuple) -> None:
        if charts == self.charts and len(self.signal_plots) == len(charts):
            return
        self.charts = charts
        row = self.query_one("#signal-plots", Horizontal)
        row.remove_children()  # removed later, in the background: self.signal_plots is current
        self.signal_plots = [SignalPlot(chart) for chart in charts]
        if self.signal_plots:
            row.mount_all(self.signal_plots)
        self.chart_index = 0
        self._lay_out_charts()

    def _draw_signals(self) -> None:
        for plot in self.signal_plots:
            plot.show(self.view.signals, self.view.eval_signals)

    def on_resize(self) -> None:
        self.call_after_refresh(self._lay_out_charts)

    def _lay_out_charts(self) -> None:
        """All charts under the loss plot when they fit, else one plot at a time."""
        row = self.query_one("#signal-plots", Horizontal)
        loss = self.query_one(LossPlot)
        plots = self.signal_plots
        area = self.query_one("#train-plots").size
        compact = bool(plots) and (area.width < CHART_MIN_WIDTH * len(plots)
                                   or area.height < PLOTS_MIN_HEIGHT)
        self.compact = compact
        row.display = bool(plots) and not compact
        loss.display = not compact or self.chart_index == 0
        for n, plot in enumerate(plots, 1):
            plot.display = not compact or self.chart_index == n
            plot.title_suffix = f" ({n + 1}/{len(plots) + 1}, g: next)" if compact else ""
        if compact:
            row.display = self.chart_index > 0
        # Short: plotext leaves out a title wider than the plot.
        loss.title_suffix = f" (1/{len(plots) + 1}, g: next)" if compact else ""
        loss.refresh_title()
        self._draw_signals()
        self.refresh_bindings()

    def action_next_chart(self) -> None:
        self.chart_index = (self.chart_index + 1) % (len(self.charts) + 1)
        self._lay_out_charts()

    def _poll(self) -> None:
        if self.run_path is None:
            return
        path, start = self.run_path, self._offset
        self.app.run_in_thread(run_actions.poll_run, path, start, self._log_size,
                               node=self, group="poll", exclusive=True,
                               on_done=lambda poll: self._update(path, start, poll))

    def _update(self, path: str, start: int, poll: RunPoll) -> None:
        if path != self.run_path:
            return  # a late answer about the run we just left
        if start != self._offset:
            # Two polls from the same offset can both finish on a busy machine (a thread
            # worker cannot be cancelled mid-read); only the first may add its events.
            return
        self._offset, self._log_size = poll.offset, poll.log_size
        self.status, self.state = poll.status, poll.state
        self._plot_pending |= self.view.add(poll.events)
        if not self.charts and self.method is None and self.view.seen_signals:
            # The profile is not read (yet, or at all): the signals say which charts.
            self._set_charts(charts_for(None, self.view.seen_signals))
        now = time.monotonic()
        if self._plot_pending and now - self._plot_drawn >= PLOT_EVERY_S - 0.05:
            v = self.view
            self.query_one(LossPlot).show(v.steps, v.losses, v.eval_steps, v.eval_losses)
            self._draw_signals()
            self._plot_pending, self._plot_drawn = False, now
        if self.view.samples_seen != self._samples_drawn:
            self._samples_drawn = self.view.samples_seen
            self._show_samples_panel(True)
            self.query_one(SamplesPanel).show(self.view.samples)
        if self._loaded:
            for ev in poll.events:
                if ev.get("type") == "error":
                    hint = f"\n{ev['hint']}" if ev.get("hint") else ""
                    self.app.notify_error(f"{ev.get('message')}{hint}", f"run {Path(path).name}")
        self._loaded = True
        log = self.query_one(LogPane)
        if poll.log_text:
            at_end = log.is_vertical_scroll_end
            if poll.log_reset:
                log.reset()
            # Follow the log only when the reader is at its end (as Elia does with tokens).
            log.add(poll.log_text, follow=at_end or poll.log_reset)
        if self.state not in LIVE_STATES:
            log.flush(follow=log.is_vertical_scroll_end)
        if self.view.gpus:
            self.query_one("#train-gpus", GpuPanel).show_gpus(self.view.gpus)
        else:
            device = self.status.get("device")
            self.query_one("#train-gpus", GpuPanel).show_gpus(
                [], "CPU run: no GPU telemetry" if device == "cpu"
                else "no GPU telemetry from this run yet")
        self._show_stats()
        # Slow down once the run has ended; keep looking, since it may be resumed.
        interval = LIVE_POLL_S if self.state in LIVE_STATES else IDLE_POLL_S
        if interval != self._interval:
            self._interval = interval
            self._timer.stop()
            self._timer = self.set_interval(interval, self._poll)

    # ---- text ------------------------------------------------------------------------------
    def _show_stats(self) -> None:
        if self.run_path is None:
            return
        st, v, log = self.status, self.view, self.view.last_log
        live = self.state in LIVE_STATES
        style = STATE_STYLE.get(self.state, "$text-muted")
        step = st.get("step") or log.get("step") or 0
        title = (f"[b]{escape(Path(self.run_path).name)}[/b]  [{style}]{self.state}[/]  "
                 f"step {step}/{st.get('total_steps') or '?'}")
        if v.message:  # last: what is cut when the header runs out of room
            title += f"  [$text-muted]{escape(short_message(v.message, self.run_path))}[/]"
        if title != self._title_text:
            self._title_text = title
            self.query_one("#run-title", Static).update(title)

        seconds = v.train_seconds(time.time(), live)
        eta = log.get("eta_s") if live else None
        if isinstance(eta, (int, float)) and isinstance(log.get("time"), (int, float)):
            eta = max(eta - (time.time() - log["time"]), 0)  # the log line is a while old
        eval_loss = v.eval_losses[-1] if v.eval_losses else None
        eta_text = duration(eta) if live else ("done" if self.state == "finished" else "-")
        # Two values a row: the column is 36 cells, and at 80x24 it must leave room under
        # it for the GPU panel.
        pairs = [
            ("loss", num(log.get("loss"), ".4f"), "eval", num(eval_loss, ".4f")),
            ("lr", num(log.get("learning_rate"), ".2e"), "gnorm", num(log.get("grad_norm"), ".3f")),
            ("tokens/s", num(log.get("tokens_per_s"), ",.0f"), "epoch", num(log.get("epoch"), ".2f")),
            ("ETA", eta_text, "trained", duration(seconds)),
        ]
        lines = [
            *(f"{a:<11}{x:<9}{b:<8}{y}" for a, x, b, y in pairs),
            *self._signal_lines(),
            *cost_lines(self.hourly_usd, seconds),
            *self._memory_lines(),
        ]
        eval_s = st.get("eval_estimate_s")
        if live and isinstance(eval_s, (int, float)):  # said before training (evaluate/cost.py)
            lines.append(f"{'eval after':<11}~{duration(eval_s)}")
        if v.error:
            lines.append(f"[$error]error: {escape(str(v.error.get('message')))}[/]")
        text = "\n".join(lines)
        if text != self._stats_text:
            stats = self.query_one("#train-stats", Static)
            # The clock fields change the text every second; a layout pass of the whole screen
            # each time was most of the CPU of following a run. Only a change of height needs
            # one: another count of lines, or a line that may wrap (markup counted as text).
            width = stats.content_size.width
            old = self._stats_text.split("\n") if self._stats_text else []
            same_height = (len(old) == len(lines) and width > 0
                           and all(len(line) <= width for line in old + lines))
            self._stats_text = text
            stats.update(text, layout=not same_height)

    def _signal_lines(self) -> list[str]:
        """The method's signals at the last logged step, two a row; a pattern's signals (GRPO's
        reward per function) one a row, indented, under the row before them."""
        signals = [s for chart in self.charts for s in chart.signals]
        if not signals:
            return []
        values = self.view.last_log.get("signals") or {}
        # KTO's and DPO's charts share no name; expand keeps the order and drops repeats.
        entries = expand(signals, set(self.view.signals) | set(values))
        rows: list[str] = []
        pending: list[tuple[str, str]] = []

        def pair() -> None:
            for i in range(0, len(pending), 2):
                (a, x), (b, y) = pending[i], pending[i + 1] if i + 1 < len(pending) else ("", "")
                # One cell less for the first value (they are 6 wide): "rejected" and "pref
                # acc" fit the second label, and the second values line up with the rows above.
                rows.append(f"{a:<11}{x:<8}{b:<9}{y}".rstrip())
            pending.clear()

        for name, label, signal in entries:
            value = signal_value(name, values.get(name))
            if name == signal:
                pending.append((label, value))
            else:
                pair()
                label = label if len(label) <= 16 else label[:15] + "…"
                rows.append(f"  {label:<17}{value}")
        pair()
        return rows

    def _memory_lines(self) -> list[str]:
        v = self.view
        est = (v.estimate or {}).get("reserved_bytes") or (v.estimate or {}).get("peak_bytes")
        measured = (v.memory or {}).get("measured_peak_reserved_bytes") or \
            v.last_log.get("gpu_mem_peak_bytes")
        if measured is None and self.status.get("device") == "cpu":
            return [f"memory est {gib(est)}", "  measured n/a on CPU"]
        line = f"memory est {gib(est)}"
        if est and measured:
            line += f"  ({(measured - est) / est * 100:+.0f}%)"
        return [line, f"  peak     {gib(measured)}"]

    # ---- actions ---------------------------------------------------------------------------
    def _need_run(self) -> str | None:
        if self.run_path is None:
            self.notify("no run attached; press 1 for Runs and pick one", severity="warning")
        return self.run_path

    def action_stop(self) -> None:
        if path := self._need_run():
            self.app.stop_run(path)

    def action_resume(self) -> None:
        if path := self._need_run():
            self.app.resume_run(path)

    def action_focus_log(self) -> None:
        self.query_one(LogPane).focus()

    def action_focus_plot(self) -> None:
        self.query_one(LossPlot).focus()

    def action_focus_samples(self) -> None:
        self.query_one(SamplesPanel).focus()

    def _show_samples_panel(self, shown: bool) -> None:
        """GRPO's latest completions beside the log (the bottom grows to make room)."""
        bottom = self.query_one("#train-bottom", Horizontal)
        if bottom.has_class("-samples") != shown:
            bottom.set_class(shown, "-samples")
            panel = self.query_one(SamplesPanel)
            panel.can_focus = shown
            if not shown and panel.has_focus:
                self.query_one(LogPane).focus()
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "next_chart":  # only where the charts take turns
            return self.compact
        if action == "focus_samples":
            return self.query_one("#train-bottom").has_class("-samples")
        return super().check_action(action, parameters)  # the focus rule's Esc
