"""Export: merge, quantize and package a finished run, as `workbench export RUN --json` in a
child process (torch stays out of the app). Its stderr lines are the progress shown in the
log; its JSON gives the proof result and the Ollama / vLLM commands, which can be copied
(OSC 52) or selected in the text box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.markup import escape
from textual.widgets import Checkbox, Footer, Header, Label, Select, Static, TextArea

from screens.widgets.run_picker import PicksFinishedRun
from screens.run_actions import ActionError
from screens.widgets.focus import FocusScreen
from screens.widgets.export_result import commands_of, error_text, progress_line, proof_text
from screens.widgets.log_pane import LogPane
from screens.widgets.nav import NavBar
from screens.widgets.tick_box import TickBox

FORMATS = ("merged", "ollama", "vllm", "bnb4", "gguf")
DEFAULT_ON = ("merged", "vllm")
# llama.cpp's quantizations the export offers (workbench.export.gguf.QUANTS; not imported so
# that the screen does not load the export package at start-up).
GGUF_QUANTS = ("q4_K_M", "q5_K_M", "q8_0")
NO_QUANT = "not quantized"


def export_command(run_path: str, formats: list[str], force: bool,
                   quant: str | None = None) -> list[str]:
    # --hints-for app: a refusal's hint names the "force" tick box, not --force.
    cmd = [sys.executable, "-m", "workbench", "export", run_path, "--format", ",".join(formats),
           "--json", "--hints-for", "app"]
    if quant and "gguf" in formats:
        cmd += ["--quant", quant]
    return cmd + ["--force"] * force


class ExportScreen(PicksFinishedRun, FocusScreen):
    RUN_SELECT = "#export-run"
    HOME = "#export-run"  # the runs to export: a list
    DEFAULT_CSS = """
    #export-top { height: 1; padding: 0 1; }
    #export-top Label { color: $text-muted; width: auto; }
    #export-run { width: 1fr; }
    #export-quant { width: 17; }
    #export-formats { height: 1; padding: 0 1; }
    #export-formats Checkbox { margin-right: 1; }
    /* At 80 columns "done: merged -> export/merged, ..." and the export's progress lines are
       longer than a line: both wrap (the status up to 3 lines) instead of being cut. */
    #export-status { height: auto; max-height: 3; color: $text-muted; padding: 0 1; }
    #export-log { height: 1fr; min-height: 3; border: round $panel-lighten-2; }
    #export-proof { height: auto; padding: 0 1; }
    #export-commands { height: 5; min-height: 3; }
    """
    BINDINGS = [
        Binding("e", "export", "Export", id="export.start"),
        Binding("x", "cancel", "Cancel", id="export.cancel"),
        Binding("o", "copy('ollama')", "Copy Ollama", id="export.copy_ollama"),
        Binding("v", "copy('vllm')", "Copy vLLM", id="export.copy_vllm"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen | None = None
        self.result: dict | None = None
        self.commands: dict[str, list[str]] = {}
        self.busy = False
        self.log_lines: list[str] = []  # the progress lines shown, as written

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("export")
        with Horizontal(id="export-top"):
            yield Label("run ")
            yield Select([], prompt="no finished run", id="export-run", compact=True,
                         type_to_search=False)
            yield Label("  gguf ")
            yield Select([(q, q) for q in GGUF_QUANTS], prompt=NO_QUANT, id="export-quant",
                         compact=True, type_to_search=False)
        with Horizontal(id="export-formats"):
            for fmt in FORMATS:
                yield TickBox(fmt, fmt in DEFAULT_ON, id=f"fmt-{fmt}", compact=True)
            yield TickBox("force", False, id="fmt-force", compact=True)
        yield Static("choose formats (space toggles), e exports", id="export-status")
        yield LogPane(max_lines=1000, id="export-log")
        yield Static("proof: -", id="export-proof")
        yield TextArea("", id="export-commands", read_only=True, show_line_numbers=False,
                       soft_wrap=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "export"
        self.query_one("#export-log", LogPane).border_title = "progress"
        self.query_one("#export-commands", TextArea).border_title = "commands"
        self._refresh_runs()
        self.query_one("#export-run", Select).focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return self.busy or None  # greyed out when nothing runs
        if action == "copy":
            return bool(self.commands.get(parameters[0])) or None
        return super().check_action(action, parameters)

    # ---- export ----------------------------------------------------------------------------
    def selected_formats(self) -> list[str]:
        return [f for f in FORMATS if self.query_one(f"#fmt-{f}", Checkbox).value]

    def selected_quant(self) -> str | None:
        value = self.query_one("#export-quant", Select).value
        return None if value == Select.NULL else str(value)

    def on_select_changed(self, event: Select.Changed) -> None:
        # A quantization is a GGUF file: choosing one ticks gguf.
        if event.select.id == "export-quant" and event.value != Select.NULL:
            self.query_one("#fmt-gguf", Checkbox).value = True

    def action_export(self) -> None:
        if self.busy:
            self.notify("an export is running; x cancels it", severity="warning")
            return
        value = self.query_one("#export-run", Select).value
        if value == Select.NULL:
            self.app.notify_error(f"no finished run in {self.app.runs_dir}: train one first",
                                  "export")
            return
        formats = self.selected_formats()
        if not formats:
            self.app.notify_error("choose at least one format", "export")
            return
        force = self.query_one("#fmt-force", Checkbox).value
        self.start(str(value), formats, force, self.selected_quant())

    def start(self, run_path: str, formats: list[str], force: bool,
              quant: str | None = None) -> None:
        self.busy, self.result, self.commands = True, None, {}
        self.log_lines = []
        self.query_one("#export-log", LogPane).reset()
        self.query_one("#export-proof", Static).update("proof: -")
        self.query_one("#export-commands", TextArea).load_text("")
        what = ", ".join(f"{f} {quant}" if f == "gguf" and quant else f for f in formats)
        self._set_status(f"exporting {Path(run_path).name}: {what}...")
        self.refresh_bindings()
        cmd = export_command(run_path, formats, force, quant)
        self.app.run_in_thread(self._run, cmd, node=self, group="export", exclusive=True,
                               on_done=self._done, error_title="export")

    def _run(self, cmd: list[str]) -> dict:
        """In the worker thread: the child's stderr to the log, its JSON back."""
        app = self.app
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                stdin=subprocess.DEVNULL, text=True, env=env)
        except OSError as exc:
            app.call_from_thread(self._stopped)
            raise ActionError(f"could not start the export: {exc}") from None
        started = time.monotonic()
        tail: list[str] = []
        for raw in proc.stderr:  # text mode: \r progress updates arrive as lines too
            line = progress_line(raw)
            if line is not None:
                tail = (tail + [line])[-8:]
                app.call_from_thread(self._line, line, time.monotonic() - started)
        stdout = proc.stdout.read()
        rc = proc.wait()
        self.proc = None
        try:
            out = json.loads(stdout)
        except ValueError:
            app.call_from_thread(self._stopped)
            if rc < 0:
                raise ActionError("export cancelled") from None
            raise ActionError("\n".join(tail[-4:]) or f"the export exited with status {rc}") from None
        return out

    def _line(self, line: str, elapsed: float) -> None:
        self.log_lines.append(line)
        self.query_one("#export-log", LogPane).add(line + "\n", follow=True)
        self._set_status(f"exporting... {elapsed:.0f}s  (x cancels)")

    def _set_status(self, text: str) -> None:
        self.query_one("#export-status", Static).update(text)

    def _stopped(self) -> None:
        self.busy = False
        self._set_status("stopped: see the notification")
        self.refresh_bindings()

    def _done(self, out: dict) -> None:
        self.busy = False
        self.result = out
        if not out.get("ok"):
            self._set_status("export failed: see the notification")
            if out.get("evidence") is not None:
                self.query_one("#export-proof", Static).update(
                    f"[$error]proof FAILED[/]: {escape(json.dumps(out['evidence'])[:400])}")
            self.app.notify_error(error_text(out), "export")
            self.refresh_bindings()
            return
        self.query_one("#export-proof", Static).update(proof_text(out.get("proof")))
        self.commands = commands_of(out)
        lines = []
        for which, cmds in self.commands.items():
            lines += [f"# {which}"] + cmds
        self.query_one("#export-commands", TextArea).load_text("\n".join(lines))
        paths = ", ".join(f"{f} -> export/{f}" for f in out.get("formats", {}))
        self._set_status(f"done: {paths}" + ("  (o / v copy the commands)" if self.commands else ""))
        self.refresh_bindings()

    def action_cancel(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            self._set_status("cancelling...")

    def action_copy(self, which: str) -> None:
        cmds = self.commands.get(which)
        if not cmds:
            self.notify(f"no {which} command yet: export with {which} checked first",
                        severity="warning")
            return
        self.app.copy_to_clipboard("\n".join(cmds))
        self.notify(f"copied the {which} command{'s' * (len(cmds) > 1)} to the clipboard",
                    title="copy")

    def on_unmount(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
