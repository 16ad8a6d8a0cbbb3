"""The Textual app: the screens of `screens.SCREENS` as modes, keys that switch between them,
a help screen, a command palette listing every action, a keymap file, and the run actions
(start, stop, resume, delete) every screen can ask for.

The app only reads run folders and starts detached processes; closing it (or losing the
SSH connection) leaves runs going. Nothing here imports torch or transformers: engine work
is imported inside the thread workers that need it."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import Reactive
from textual.screen import Screen
from textual.theme import Theme

from screens import SCREENS, make_screen
from workbench.rundir import default_runs_dir

# Every colour sits on the xterm-256 palette (cube steps 00/5f/87/af/d7/ff, greys 1c..d0),
# so a 256-colour terminal shows exactly these instead of a lossy approximation.
WORKBENCH_THEME = Theme(
    name="workbench",
    primary="#5fafd7",
    secondary="#87afaf",
    accent="#d7af5f",
    warning="#d7af00",
    error="#ff5f5f",
    success="#87af5f",
    foreground="#d0d0d0",
    background="#1c1c1c",
    surface="#262626",
    panel="#303030",
    dark=True,
)


def keymap_path() -> Path:
    if os.environ.get("WORKBENCH_KEYMAP"):
        return Path(os.environ["WORKBENCH_KEYMAP"]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "workbench" / "keymap.toml"


def load_keymap(path: Path) -> tuple[dict[str, str], str]:
    """({binding id: "key[,key]"}, problem). The file is either a [keymap] table or bare
    `"runs.stop" = "ctrl+x"` lines; a missing file is no problem."""
    import tomllib

    if not path.is_file():
        return {}, ""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, f"{path}: {exc}; using the default keys"
    table = data.get("keymap", data)
    keymap = {k: v for k, v in table.items() if isinstance(v, str)}
    bad = sorted(k for k, v in table.items() if not isinstance(v, str))
    problem = f"{path}: ignored {', '.join(bad)} (values must be key strings)" if bad else ""
    return keymap, problem


def _screen_bindings() -> list[Binding]:
    return [Binding(spec.key, f"show('{name}')", spec.title, show=False, id=f"app.show.{name}")
            for name, spec in SCREENS.items()]


class RunsChanged(Message):
    """A run was started, stopped, resumed or deleted: lists should re-read the folders."""


class WorkbenchApp(App):
    TITLE = "workbench"
    CSS_PATH = "workbench.tcss"
    # Screen keys are plain (not priority) bindings: a focused text field takes printable
    # keys first, so 1-6 typed into a field are text, never a screen switch.
    BINDINGS = [
        *_screen_bindings(),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("b", "back", "Back", id="app.back"),
        Binding("q", "quit", "Quit", id="app.quit"),
        # Textual's own app keys, declared again with ids so help names them and the keymap
        # can remap them (Textual adds its palette binding only when none is declared).
        Binding("ctrl+q", "quit", "Quit, also from a field", show=False, priority=True,
                id="app.quit_anywhere"),
        Binding(App.COMMAND_PALETTE_BINDING, "command_palette", "palette", show=False,
                priority=True, key_display=App.COMMAND_PALETTE_DISPLAY,
                id="app.command_palette"),
    ]
    # Screens live in modes, so each keeps its state (cursor, attached run) while away.
    MODES = {name: partial(make_screen, name) for name in SCREENS}
    DEFAULT_MODE = "runs"  # home is the first screen drawn: no blank default screen first
    # The theme is the app's from the start (registered in __init__): set in on_mount, it
    # restyled every widget of the first screen a second time before the first frame.
    theme = Reactive(WORKBENCH_THEME.name)

    def __init__(self, runs_dir: Path | None = None, open_run: str | Path | None = None,
                 keymap_file: Path | None = None):
        super().__init__()
        self.register_theme(WORKBENCH_THEME)
        self.runs_dir = Path(runs_dir or default_runs_dir())
        self.monitored_run: str | None = None  # the run the Train screen shows
        self._open_at_start = str(open_run) if open_run else None
        self._history: list[str] = []
        self._keymap_problem = ""
        self.keymap_file = keymap_file or keymap_path()
        keymap, self._keymap_problem = load_keymap(self.keymap_file)
        if keymap:
            self.set_keymap(keymap)
        if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_TTY"):
            # Every animated frame is bytes over the network; over SSH they only add lag.
            self.animation_level = "none"

    # ---- start-up --------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self._keymap_problem:
            self.notify(self._keymap_problem, title="keymap", severity="warning", timeout=10)
        if self._open_at_start:
            self.open_run(self._open_at_start)

    def key_for(self, binding_id: str, default: str) -> str:
        """The key a binding answers to now (the keymap's, else its default)."""
        return self._keymap.get(binding_id, default).split(",")[0]

    # ---- navigation ------------------------------------------------------------------------
    def action_show(self, name: str) -> None:
        """Switch screens. The history is the way back to home without loops: showing a
        screen already in it goes back to it (so Runs -> Train -> Runs leaves nothing to go
        back to, and `b` never flips between two screens)."""
        if name not in SCREENS or name == self.current_mode:
            return
        if name in self._history:
            del self._history[self._history.index(name):]
        else:
            self._history.append(self.current_mode)
            del self._history[:-20]
        self.switch_mode(name)
        self.refresh_bindings()

    def action_back(self) -> None:
        """Close a dialog, else go to the previous screen, else home. (Dialogs bind the
        back key themselves: an open modal screen hides the app's bindings.)"""
        if len(self.screen_stack) > 1:
            self.pop_screen()
        elif self._history:
            self.switch_mode(self._history.pop())
        elif self.current_mode != "runs":
            self.switch_mode("runs")
        self.refresh_bindings()

    def open_run(self, path: str | Path) -> None:
        """Show a run in the Train monitor (any screen may call this)."""
        self.monitored_run = str(path)
        if self.current_mode == "train":
            self.screen.post_message(RunsChanged())
        else:
            self.action_show("train")

    # ---- quitting: unsaved changes are asked about ----------------------------------------
    def unsaved_changes(self) -> list[tuple[Screen, str]]:
        """(screen, what would be lost) for every screen the app holds (each mode keeps its
        screen) that has unsaved changes (`unsaved_changes()`, e.g. Configure's edits)."""
        found = []
        for stack in list(self._screen_stacks.values()):
            for screen in stack:
                ask = getattr(screen, "unsaved_changes", None)
                text = ask() if callable(ask) else ""
                if text:
                    found.append((screen, text))
        return found

    async def action_quit(self) -> None:
        """q / ctrl+q: quit, after asking save / discard / cancel when a screen holds unsaved
        changes (runs keep going either way)."""
        from screens.widgets.quit_confirm import QuitScreen

        if isinstance(self.screen, QuitScreen):
            return  # the question is open: it answers
        unsaved = self.unsaved_changes()
        if not unsaved:
            self.exit()
            return

        def answered(answer: str | None) -> None:
            if answer == "discard":
                self.exit()
            elif answer == "save":
                saved = [screen.save_changes() for screen, _ in unsaved]
                if all(path is not None for path in saved):
                    self.exit(message="saved " + ", ".join(str(p) for p in saved))

        self.push_screen(QuitScreen([text for _, text in unsaved]), answered)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # "Back" is hidden where there is nowhere to go back to (home, nothing opened).
        if action == "back":
            return len(self.screen_stack) > 1 or bool(self._history) or self.current_mode != "runs"
        return True

    # ---- help and command palette ----------------------------------------------------------
    def binding_rows(self, screen: Screen) -> list[tuple[str, str, str]]:
        rows, seen = [], set()
        # The screen's own keys first, then the app's, then the focused widget's (scrolling).
        order = {screen: 0, self: 1}
        actives = sorted(screen.active_bindings.items(), key=lambda kv: order.get(kv[1].node, 2))
        for key, active in actives:
            b = active.binding
            if not b.description or (b.id, key) in seen:
                continue
            seen.add((b.id, key))
            # The palette's description is its footer label ("palette"); help says more.
            description = "Command palette" if b.action == "command_palette" else b.description
            rows.append((self.get_key_display(b), description, b.id or ""))
        return rows

    def action_help(self) -> None:
        from screens.widgets.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        note = (f"Remap keys in {self.keymap_file} as `\"id\" = \"key\"` lines "
                f"(e.g. \"runs.stop\" = \"ctrl+x\").")
        self.push_screen(HelpScreen(self.screen.sub_title or self.current_mode,
                                    self.binding_rows(self.screen), note))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for name, spec in SCREENS.items():
            yield SystemCommand(f"Go to {spec.title}", spec.description,
                                partial(self.action_show, name))
        for key, active in screen.active_bindings.items():
            b = active.binding
            if b.description and not (b.id or "").startswith("app.") and active.enabled:
                # Textual's own bindings (copy, an Input's editing keys) carry no id.
                help_text = f"key {self.get_key_display(b)}" + (f" · {b.id}" if b.id else "")
                yield SystemCommand(b.description, help_text,
                                    partial(self.run_action, b.action, active.node))

    # ---- work in threads, errors as notifications ------------------------------------------
    def run_in_thread(self, fn: Callable[..., Any], *args, on_done: Callable[[Any], None] | None = None,
                      node=None, group: str = "default", exclusive: bool = False,
                      error_title: str = "error"):
        """Run blocking `fn(*args)` in a thread worker owned by `node` (a screen, so it is
        cancelled with it). Its result goes to `on_done` on the UI thread; an exception
        becomes a notification with its message, never a traceback."""

        def job():
            from textual.worker import get_current_worker

            try:
                result = fn(*args)
            except Exception as exc:
                self._from_thread(self.notify_error, exc, error_title)
                return
            # A thread cannot be stopped: when a newer exclusive worker has replaced this one,
            # its (older) result is dropped rather than drawn over the newer one.
            if on_done is not None and not get_current_worker().is_cancelled:
                self._from_thread(on_done, result)

        return (node or self).run_worker(job, thread=True, group=group, exclusive=exclusive,
                                         exit_on_error=False)

    def _from_thread(self, fn, *args) -> None:
        try:
            self.call_from_thread(fn, *args)
        except RuntimeError:
            pass  # the app is closing; nobody is left to tell

    def notify_error(self, exc: BaseException | str, title: str = "error") -> None:
        from screens.run_actions import ActionError

        if isinstance(exc, str):
            text = exc
        elif isinstance(exc, ActionError) or type(exc).__module__.startswith("workbench"):
            text = str(exc)  # the engine's messages are written for people already
        else:
            text = f"{type(exc).__name__}: {exc}"
        self.log.error(f"{title}: {text}")
        # Plain text: messages quote commands such as `pip install '.[gguf]'`, whose brackets
        # Textual's markup would swallow.
        self.notify(text, title=title, severity="error", timeout=12, markup=False)

    # ---- run actions (used by Runs, Train and Configure) -----------------------------------
    def start_run(self, profile_ref: str | Path, overrides: list[str] = ()) -> None:
        """Plan and start a run detached, then show it in the monitor."""
        from screens import run_actions

        self.notify(f"planning {Path(str(profile_ref)).stem}: loading the tokenizer and data...",
                    title="start")

        def started(path: Path) -> None:
            self.notify(f"started {path.name}; it keeps running if you close the app",
                        title="start")
            self._runs_changed()
            self.open_run(path)

        self.run_in_thread(run_actions.start_detached, str(profile_ref), self.runs_dir,
                           list(overrides), on_done=started, group="start",
                           error_title=f"could not start {profile_ref}")

    def stop_run(self, path: str) -> None:
        from screens import run_actions

        def done(state: str) -> None:
            self.notify(f"asked {Path(path).name} to checkpoint and stop", title="stop")
            self._runs_changed()

        self.run_in_thread(run_actions.stop, path, on_done=done, error_title="stop")

    def resume_run(self, path: str) -> None:
        from screens import run_actions

        def done(pid: int) -> None:
            self.notify(f"resuming {Path(path).name} (pid {pid})", title="resume")
            self._runs_changed()
            self.open_run(path)

        self.run_in_thread(run_actions.resume, path, on_done=done, error_title="resume")

    def delete_run(self, path: str) -> None:
        """Ask first; the Runs screen refuses a running run before asking."""
        from screens import run_actions
        from screens.widgets.confirm import ConfirmScreen

        name = Path(path).name

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_in_thread(run_actions.delete, path, on_done=deleted, error_title="delete")

        def deleted(_: None) -> None:
            self.notify(f"deleted {name}", title="delete")
            if self.monitored_run == path:
                self.monitored_run = None
            self._runs_changed()

        self.push_screen(ConfirmScreen(f"Delete run {name}?",
                                       f"{path}\nIts checkpoints, adapter and logs are removed "
                                       "for good."), answered)

    def _runs_changed(self) -> None:
        self.screen.post_message(RunsChanged())


def run_app() -> int:
    WorkbenchApp().run()
    return 0


if __name__ == "__main__":  # python -m screens.app [RUN] : open the app (on a run)
    WorkbenchApp(open_run=sys.argv[1] if len(sys.argv) > 1 else None).run()
