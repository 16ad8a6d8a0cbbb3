"""Configure screen: a form over a profile, validated as you type, with a live memory estimate.

Each change rebuilds the profile through `profile_from_dict` (the same validator as files) and,
when valid, re-runs the memory estimate synchronously: it is pure Python and far under a
millisecond, so there is nothing to debounce. What is slow runs in thread workers, once: the
model's config (a file read, maybe the hub), GPU telemetry (NVML) and counting the dataset's
tokens for the time estimate (transformers).

Keys (the app's focus rule, screens/widgets/focus.py): the screen is arrived on at the form's
row cursor, never in a field; ↑/↓ move the cursor, Enter edits that row with its value selected
(typing replaces it) and Enter or Esc leaves it, after which 1-6 switch screens as everywhere
else. A field whose value differs from the loaded (or last saved) profile is marked "*", and the
status line counts them. `m` goes to the memory remedies (screens/widgets/configure_estimate.py).

Saving never writes a copy a shipped preset hides: ctrl+s writes the user's own file, and for a
preset opens Save as with a name no profile has (my-demo); the app asks before quitting with
unsaved changes (`unsaved_changes` / `save_changes`, screens/widgets/quit_confirm.py).

GRPO (train.method = "grpo"): f3 shows the Rewards view in the form's place, arriving on the
table of reward functions (screens/widgets/configure_rewards.py). There `e` opens the selected
function's file in $EDITOR (the app is suspended meanwhile) and `t` runs the reward test
(workbench.evaluate.reward_trial) in a thread worker: the model loads, the prompts are sampled
with a count as they finish, and the result replaces the count. `t` again, a new profile or
leaving the screen cancels it. The model stays loaded for the next test while the screen is
shown, and is let go when it is left or a run is started (the run needs the memory).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from screens.widgets.configure_estimate import (EstimatePanel, RemedyList, compute_view,
                                                remedy_changes)
from screens.widgets.configure_rewards import RewardsView, reward_rows
from screens.widgets.configure_form import FIELDS, ProfileForm
from screens.widgets.data_path import PathInput
from screens.widgets.focus import FocusScreen
from screens.widgets.keys import with_ids
from screens.widgets.nav import NavBar


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _set(d: dict, dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        d.setdefault(head, {})[rest] = value
    else:
        d[head] = value



def _count_key(profile: Any) -> tuple:
    """What the data count depends on: the tokenizer, the data and how rows are cut."""
    m = profile.model
    return (m.name_or_path, m.revision, repr(profile.data), profile.train.max_seq_len,
            profile.train.method)


def _data_key(profile: Any) -> tuple:
    """What telling preference data from conversations depends on."""
    d = profile.data
    return (d.train, repr(d.columns), d.encoding)


def data_note(method: str, preference: bool | None) -> str:
    """A warning when the data is not what the method trains on ("" when it is, or when the
    data could not be looked at here)."""
    from workbench.train.methods import METHODS

    if preference is None or method not in METHODS or method == "grpo":
        return ""  # GRPO samples its own answers: any rows with a prompt will do
    if method == "sft" and preference:
        return ("! this data is preference rows: SFT needs conversations (pairs train with "
                "dpo, orpo, simpo; labelled answers with kto)")
    if method != "sft" and not preference:
        return f"! this data is conversations: {METHODS[method].title} needs preference rows"
    return ""

class ConfigureScreen(FocusScreen):
    TITLE = "workbench"
    SUB_TITLE = "configure"
    # Coming back to this screen with nothing focused must not land in a text field, where
    # the next screen key would be typed: the form itself takes focus (arrows scroll it).
    AUTO_FOCUS = "#cfg-form"
    HOME = "#cfg-form"  # the app's focus rule: screens/widgets/focus.py
    DEFAULT_CSS = """
    ConfigureScreen #cfg-top { height: 1; }
    ConfigureScreen #cfg-top > Input { width: 1fr; }
    ConfigureScreen #cfg-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    ConfigureScreen #cfg-main { height: 1fr; }
    ConfigureScreen ProfileForm { width: 1fr; min-width: 36; }
    ConfigureScreen EstimatePanel { width: 1fr; border-left: vkey $primary; padding: 0 1; }
    ConfigureScreen #cfg-issues { height: auto; color: $error; }
    ConfigureScreen #cfg-save-as { height: 1; display: none; }
    ConfigureScreen #cfg-save-as.-shown { display: block; }
    ConfigureScreen #cfg-rewards { display: none; }
    ConfigureScreen.-rewards #cfg-rewards { display: block; }
    ConfigureScreen.-rewards #cfg-main { display: none; }
    """
    # The footer must fit 80 columns with the app's "? Help  b Back  q Quit" and, while a
    # field has focus, "esc Leave field": Open and the remedies are left to help and the
    # palette (the estimate panel says "m chooses a remedy" when there are any). The remedies
    # take a plain key outside the fields: alt+N never arrives through tmux and many SSH
    # terminals.
    BINDINGS = [
        *with_ids(Screen, "screen"),
        Binding("ctrl+o", "open", "Open", show=False, id="configure.open"),
        Binding("ctrl+s", "save", "Save", id="configure.save"),
        Binding("f2", "save_as", "Save as", id="configure.save_as"),
        Binding("ctrl+r", "start", "Start", id="configure.start"),
        Binding("escape", "leave_field", "Leave field", id="configure.leave_field"),
        # GRPO only (check_action): the reward functions and the reward test, in the form's place.
        Binding("f3", "toggle_rewards", "Rewards", id="configure.rewards"),
        Binding("ctrl+t", "trace", "Trace the step", show=False, id="configure.trace"),
        Binding("m", "remedies", "Memory remedies", show=False, id="configure.remedies"),
    ]

    def __init__(self, profile: str | Path | None = None, *, detected_gpu: dict | None = None,
                 probe_gpu: bool = True, count_tokens: bool = True,
                 name: str | None = None, id: str | None = None) -> None:
        """`detected_gpu` ({"name", "free", "total"}) fixes the GPU instead of asking NVML
        (tests, snapshots); `count_tokens=False` skips counting the dataset's tokens."""
        super().__init__(name=name, id=id)
        self.profile_ref = str(profile) if profile else ""
        self.detected = detected_gpu
        self.probe_gpu = probe_gpu and detected_gpu is None
        self.count_tokens = count_tokens
        self.base: dict = {}         # the loaded profile as a dict; the form edits a copy
        self.source = ""             # where it came from (a path)
        self.profile: Any = None     # the last valid profile
        self.issues: dict[str, str] = {}
        self.arch: Any = None
        self.arch_for = ""
        self.config: dict | None = None  # the model's config.json, for the trace
        self.traced: Any = None          # (EstimateSettings, TracedStep) of the last trace
        self.data_count: Any = None      # DataCount of the data, for `counted_for`
        self.counted_for: Any = None     # what the count depends on (_count_key)
        self.data_why = ""               # why there is no count, once counting failed
        self.data_checked: Any = None    # _data_key of the data last looked at
        self.data_is_preference: bool | None = None  # what it holds (None: not known)
        self.view: Any = None
        self._filling = False
        self.trial: dict | None = None        # the last reward test's result
        self._trial_cancel: threading.Event | None = None  # set: the running test stops
        self._trial_what = ""                 # what the running test does now
        self._trial_since = 0.0
        self._trial_tick: Any = None
        self._engine: Any = None              # the model the last test loaded, kept for the next
        self._engine_key: Any = None
        self._away = False                    # another screen is shown (suspended)
        self._rewards_key: Any = None         # the [rewards] the Rewards view shows

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("configure")
        with Horizontal(id="cfg-top"):
            yield PathInput(self.profile_ref,
                            placeholder="profile name or .toml path, Enter loads",
                            id="cfg-profile", compact=True)
        yield Static("", id="cfg-status")
        with Horizontal(id="cfg-main"):
            with Vertical():
                yield ProfileForm(id="cfg-form")
                yield Static("", id="cfg-issues")
            yield EstimatePanel(id="cfg-estimate")
        yield RewardsView(id="cfg-rewards")
        yield PathInput(placeholder="save as: path to a .toml file, Enter saves",
                        id="cfg-save-as", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        ref = self.profile_ref or getattr(self.app, "configure_profile", None) or "demo"
        self.query_one("#cfg-profile", Input).value = str(ref)
        self.load(str(ref))
        if self.probe_gpu:
            self._work(self._probe_gpu, group="gpu")
        self._trial_tick = self.set_interval(1.0, self._show_trial_progress, pause=True)

    def on_screen_suspend(self) -> None:
        """Leaving the screen stops a reward test and lets its model go."""
        self._away = True
        self._cancel_trial("cancelled: the screen was left")
        self._drop_engine()

    def on_screen_resume(self) -> None:
        self._away = False

    def on_unmount(self) -> None:
        if self._trial_cancel is not None:
            self._trial_cancel.set()

    # -- helpers ----------------------------------------------------------------------------

    def _work(self, fn, *args, group: str) -> None:
        self.run_worker(lambda: fn(*args), thread=True, group=group, exclusive=True,
                        exit_on_error=False)

    def _from_thread(self, fn, *args) -> None:
        try:
            self.app.call_from_thread(fn, *args)
        except RuntimeError:  # the app is closing
            pass

    def _error(self, title: str, exc: BaseException | str) -> None:
        self.notify(exc if isinstance(exc, str) else _describe(exc), title=title,
                    severity="error", timeout=10, markup=False)

    def _status(self, text: str) -> None:
        self.query_one("#cfg-status", Static).update(text)

    # -- loading ----------------------------------------------------------------------------

    def load(self, ref: str) -> None:
        from workbench.profile import ProfileError, load_profile

        try:
            profile = load_profile(ref)
        except ProfileError as exc:
            self._error("Cannot load the profile", exc)
            return
        self.base, self.source, self.profile = profile.to_dict(), profile.source, profile
        self._rewards_key = None
        self._cancel_trial("cancelled: another profile was loaded")
        self.trial = None
        self.query_one(RewardsView).clear_result()
        self._filling = True
        self.query_one(ProfileForm).fill(profile)
        # Changed events from fill() arrive later; refresh once they are all in.
        self.call_after_refresh(self._filled)

    def _filled(self) -> None:
        self._filling = False
        self.revalidate()
        # Onto the form (its row cursor, never into a field: the focus rule), unless the
        # person has gone elsewhere meanwhile (the profile or save-as box, the Rewards view).
        elsewhere = isinstance(self.focused, Input) and self.focused.id in ("cfg-profile",
                                                                             "cfg-save-as")
        if not self.has_class("-rewards") and not elsewhere:
            self.focus_home()

    def _probe_gpu(self) -> None:
        from workbench.estimate.gpu import telemetry

        state = telemetry()
        if state.available and state.gpus:
            g = state.gpus[0]
            detected = {"name": g.name, "free": g.memory_free, "total": g.memory_total}
            self._from_thread(self._gpu_found, detected)

    def _gpu_found(self, detected: dict) -> None:
        self.detected = detected
        self.refresh_estimate()

    def _load_arch(self, ref: str, revision: str) -> None:
        from workbench.estimate.config import load_model_config
        from workbench.estimate.params import architecture_from_config

        try:
            config, _ = load_model_config(ref, revision)
            arch = architecture_from_config(config)
        except Exception as exc:  # noqa: BLE001 - ConfigError says what to do
            self._from_thread(self._arch_failed, ref, exc)
            return
        self._from_thread(self._arch_loaded, ref, arch, config)

    def _arch_failed(self, ref: str, exc: BaseException) -> None:
        self.arch, self.arch_for, self.config = None, ref, None
        self.query_one(EstimatePanel).message(f"No estimate: {_describe(exc)}")

    def _arch_loaded(self, ref: str, arch: Any, config: dict) -> None:
        self.arch, self.arch_for, self.config, self.traced = arch, ref, config, None
        self.refresh_estimate()

    def _trace(self, config: dict, settings: Any) -> None:
        from textual.worker import get_current_worker

        from workbench.estimate.trace import TraceCancelled, trace_step

        worker = get_current_worker()  # cancelled when the app quits or the screen goes
        try:
            traced = trace_step(config, settings, cancel=lambda: worker.is_cancelled)
        except TraceCancelled:
            return
        except Exception as exc:  # noqa: BLE001 - shown, not raised: the screen stays usable
            self._from_thread(self._error, "Trace failed", exc)
            return
        self._from_thread(self._traced, settings, traced)

    def _traced(self, settings: Any, traced: Any) -> None:
        self.traced = (settings, traced)
        self._status(f"traced in {traced.seconds:.0f} s: the peak and verdict follow the trace")
        self.refresh_estimate()

    def _count_tokens(self, profile: Any, key: Any) -> None:
        from workbench.estimate.cli import count_dataset_tokens

        data, why = count_dataset_tokens(profile)
        self._from_thread(self._tokens_counted, key, data, why)

    def _check_data(self, key: tuple, path: str, columns: dict, encoding: str) -> None:
        from workbench.data.preference import is_preference_data

        try:
            found = is_preference_data(path, columns or None, encoding or None)
        except Exception:  # noqa: BLE001 - a missing file or a hub id: said elsewhere, or at start
            found = None
        self._from_thread(self._data_checked, key, found)

    def _data_checked(self, key: tuple, found: bool | None) -> None:
        if self.profile is None or key != _data_key(self.profile):
            return
        self.data_is_preference = found
        self._show_data_note()

    def _show_data_note(self) -> None:
        form = self.query_one(ProfileForm)
        form.show_data_note(data_note(form.method, self.data_is_preference))

    def _tokens_counted(self, key: Any, data: Any, why: str) -> None:
        if key != _count_key(self.profile):  # the profile moved on while this one counted
            return
        self.data_count, self.data_why = data, "" if data else why
        self.refresh_estimate()

    # -- validation and estimate ------------------------------------------------------------

    def on_profile_form_changed(self, event: ProfileForm.Changed) -> None:
        if not self._filling:
            self.revalidate()

    def current_dict(self) -> dict:
        import copy

        d = copy.deepcopy(self.base)
        for key, value in self.query_one(ProfileForm).values().items():
            _set(d, key, value)
        return d

    def revalidate(self) -> None:
        self._check_profile()
        self.show_rewards()

    def _check_profile(self) -> None:
        from workbench.profile import ProfileError, profile_from_dict

        form = self.query_one(ProfileForm)
        try:
            profile = profile_from_dict(self.current_dict(), source=self.source or "<form>")
        except ProfileError as exc:
            shown = {f.key for f in FIELDS}
            self.issues = {}
            for issue in exc.issues:
                self.issues.setdefault(issue.key, issue.message)
            form.show_issues(self.issues)
            others = [f"{k}: {m}" if k else m for k, m in self.issues.items() if k not in shown]
            self.query_one("#cfg-issues", Static).update("\n".join(others))
            self._status(f"{len(exc.issues)} problem(s): the estimate shows the last valid values")
            return
        self.issues = {}
        form.show_issues({})
        self.query_one("#cfg-issues", Static).update("")
        self.profile = profile
        data_key = _data_key(profile)
        if data_key != self.data_checked:
            self.data_checked, self.data_is_preference = data_key, None
            d = profile.data
            self._work(self._check_data, data_key, d.train, dict(d.columns), d.encoding,
                       group="data-kind")
        self._show_data_note()
        key = _count_key(profile)
        if self.count_tokens and key != self.counted_for:
            # another model, data or length: the steps and the time are counted again (the
            # tokenizer and the data load in a worker); until then the panel says it waits
            self.counted_for, self.data_count, self.data_why = key, None, ""
            self._work(self._count_tokens, profile, key, group="tokens")
        changed = len(form.modified())
        # The count before the path: a long path is what gets cut at 80 columns.
        self._status(f"{profile.name}  ·  " + (f"{changed} changed (*)  ·  " if changed else "")
                     + self.source)
        model = profile.model.name_or_path
        if model != self.arch_for:
            self.arch_for = model
            self.query_one(EstimatePanel).message(f"Loading the config of {model}…")
            self._work(self._load_arch, model, profile.model.revision, group="arch")
        elif self.arch is not None:
            self.refresh_estimate()

    def refresh_estimate(self) -> None:
        if self.arch is None or self.profile is None:
            return
        try:
            self.view = compute_view(self.arch, self.profile, self.detected, self.data_count,
                                     self.traced, self.data_why)
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown GPU name, a bad target
            self.view = None
            self.query_one(EstimatePanel).message(f"No estimate: {_describe(exc)}")
            return
        self.query_one(EstimatePanel).show(self.view)

    # -- rewards (GRPO) ---------------------------------------------------------------------

    def _grpo(self) -> bool:
        return self.query_one(ProfileForm).method == "grpo"

    def show_rewards(self) -> None:
        """The Rewards view and the form's rewards line follow the profile; leaving GRPO
        closes the view."""
        form = self.query_one(ProfileForm)
        rewards_view = self.query_one(RewardsView)
        self.refresh_bindings()  # f3 is offered under GRPO only
        if not self._grpo():
            form.show_rewards_note("")
            self._rewards_key = None
            if self.has_class("-rewards"):
                self._close_rewards()
            return
        current = self.current_dict()
        section = current.get("rewards") if isinstance(current.get("rewards"), dict) else {}
        functions = section.get("functions") or []
        weights = section.get("weights") or []
        functions = [str(f) for f in functions] if isinstance(functions, list) else []
        weights = list(weights) if isinstance(weights, list) else []
        key = (tuple(functions), tuple(map(repr, weights)), str(current.get("name") or ""))
        if key != self._rewards_key:  # every keystroke revalidates: read the files on change
            self._rewards_key = key
            rows = reward_rows(functions, weights)
            if rows:
                names = ", ".join(f"{r.name} x{r.weight:g}" for r in rows)
                note = f"rewards: {names} (f3: what they do, and the reward test)"
            else:
                note = "rewards: none yet; add [rewards] functions to the profile (f3 says more)"
            form.show_rewards_note(note)
            head = (f"Rewards of {key[2] or 'this profile'}: a completion's reward is the "
                    "weighted sum of these (the keys are in the footer).")
            rewards_view.show_rewards(rows, head)
        if self._trial_cancel is None and self.trial is None:
            rewards_view.status(self._idle_text(rewards_view.rows))

    def _idle_text(self, rows: list) -> str:
        if not rows:
            return ("no reward functions: name them in [rewards] functions of the profile file "
                    "(`workbench rewards list` shows the built-ins)")
        p = self.profile
        if p is None or self.issues:
            return "t tests the rewards once the profile is valid"
        return (f"t samples {p.rewards.test_prompts} prompts x {p.grpo.num_generations} "
                f"completions and scores them (the model loads first)")

    def action_toggle_rewards(self) -> None:
        """f3: the Rewards view in the form's place, or back to the form."""
        if self.has_class("-rewards"):
            self._close_rewards()
            return
        if not self._grpo():
            self.notify("The Rewards view is for train.method = grpo.", severity="warning")
            return
        self.add_class("-rewards")
        self.show_rewards()
        self.query_one(RewardsView).table.focus()
        self.refresh_bindings()

    def _close_rewards(self) -> None:
        self.remove_class("-rewards")
        self.query_one(ProfileForm).focus()
        self.refresh_bindings()

    def action_edit_reward(self) -> None:
        """e: the selected reward's file in $EDITOR (the app suspended until it exits)."""
        import os
        import shlex

        from textual.app import SuspendNotSupported

        row = self.query_one(RewardsView).selected()
        if row is None:
            self.notify("No reward functions to edit: add them to [rewards] functions in the "
                        "profile file.", severity="warning")
            return
        if not row.known:
            self.notify(f"{row.name} is no reward the workbench knows: see the profile's "
                        "problems (f3 goes back to them).", severity="warning", markup=False)
            return
        if row.builtin:
            self.notify(f"{row.name} is built in (workbench/rewards/builtin.py): there is no file "
                        "of yours to edit; its settings are in the profile's [rewards].",
                        title="Built-in reward", markup=False)
            return
        editor = os.environ.get("EDITOR") or os.environ.get("VISUAL") or ""
        try:
            command = shlex.split(editor)
        except ValueError as exc:
            self._error("Editor", f"$EDITOR ({editor!r}) is not a command line: {exc}")
            return
        if not command:
            self.notify(f"$EDITOR is not set: set it (e.g. `export EDITOR=nano`) and start the "
                        f"app again, or open {row.file} yourself.", title="No editor",
                        severity="warning", timeout=10, markup=False)
            return
        if row.line and Path(command[0]).name in LINE_EDITORS:
            command.append(f"+{row.line}")
        command.append(row.file)
        problem = ""
        try:
            with self.app.suspend():
                problem = _run_editor(command)
        except SuspendNotSupported:
            if not self.app.is_headless:  # a terminal we cannot hand over: never draw over it
                self.notify(f"Cannot hand the terminal to an editor here; open {row.file} "
                            "yourself.", severity="warning", markup=False)
                return
            problem = _run_editor(command)  # headless (tests): nothing to suspend
        if problem:
            self._error("Editor", problem)
        self._rewards_key = None  # its docstring or line may have changed: read it again
        self.show_rewards()

    def action_test_rewards(self) -> None:
        """t: the reward test in a worker; t again while it runs cancels it."""
        from workbench.profile import check_paths

        if self._trial_cancel is not None:
            self._cancel_trial("cancelled")
            return
        if any(w.group == "rewards" and w.is_running for w in self.workers):
            self.notify("The last reward test is still stopping; try again in a moment.",
                        severity="warning")
            return
        profile = self._valid_profile()
        if profile is None:
            return
        if profile.train.method != "grpo" or not profile.rewards.functions:
            self.notify("Nothing to test: the profile names no reward functions.",
                        severity="warning")
            return
        missing = check_paths(profile)
        if missing:
            self._error("Reward test", "\n".join(str(i) for i in missing))
            return
        view = self.query_one(RewardsView)
        cancel = self._trial_cancel = threading.Event()
        self.trial = None
        view.clear_result()
        self._trial_what, self._trial_since = "starting the reward test", time.monotonic()
        self._show_trial_progress()
        self._trial_tick.resume()
        key = (repr(profile.model), repr(profile.lora), profile.train.precision)
        engine = self._engine if self._engine_key == key else None

        def say(text: str) -> None:  # the test's log lines, from the worker thread
            text = text.strip()
            if text.startswith("loading") and "onto" in text:
                text = "loading the model: " + text[len("loading"):].strip()
            self._from_thread(self._trial_progress, cancel, text)

        def progress(done: int, total: int) -> None:
            self._from_thread(self._trial_progress, cancel, f"sampling {done}/{total} completions")

        def job() -> None:
            from workbench.evaluate.reward_trial import load_trial_engine, try_rewards

            loaded, result, exc = engine, None, None
            try:
                if loaded is None:
                    say("loading the model")
                    loaded = load_trial_engine(profile, "auto", say)
                if not cancel.is_set():
                    result = try_rewards(profile, engine=loaded, log=say, progress=progress,
                                         cancel=cancel)
            except Exception as exc_:  # noqa: BLE001 - shown on the screen, never raised
                exc = exc_
            self._from_thread(self._trial_done, cancel, key, loaded, result, exc)

        self.run_worker(job, thread=True, group="rewards", exclusive=True, exit_on_error=False)

    def _trial_progress(self, cancel: threading.Event, text: str) -> None:
        if cancel is self._trial_cancel and not cancel.is_set():
            self._trial_what = text
            self._show_trial_progress()

    def _show_trial_progress(self) -> None:
        if self._trial_cancel is None:
            self._trial_tick.pause()
            return
        elapsed = time.monotonic() - self._trial_since
        key = (self.app.key_for("configure.rewards.test", "t") if hasattr(self.app, "key_for")
               else "t")  # the keymap may have moved it
        self.query_one(RewardsView).status(f"{self._trial_what}…  {elapsed:.0f}s  ({key} cancels)")

    def _trial_done(self, cancel: threading.Event, key: Any, engine: Any, result: dict | None,
                    exc: BaseException | None) -> None:
        if engine is not None and not self._away:
            self._engine, self._engine_key = engine, key  # kept for the next test
        if cancel is not self._trial_cancel:
            return  # cancelled (said so already), or a newer test runs
        self._trial_cancel = None
        self._trial_tick.pause()
        view = self.query_one(RewardsView)
        if cancel.is_set():
            view.status("cancelled")
            return
        if exc is not None:
            view.status("the reward test stopped: see the notification")
            self._error("Reward test", exc)
            return
        self.trial = result
        first = result.get("first_steps") or {}
        took = time.monotonic() - self._trial_since
        view.status(f"tested: {len(result.get('groups') or ())} prompts x "
                    f"{result.get('samples')} completions in {took:.0f}s"
                    + (f"; mean reward {first['mean_reward']:g}" if "mean_reward" in first else "")
                    + "  (t tests again)")
        view.show_result(result)
        if self.focused is not None and view in self.focused.ancestors_with_self:
            view.query_one("#rewards-result").focus()  # arrows scroll the result now
        if not self.has_class("-rewards") or self._away:
            verdict = result.get("verdict") or {}
            self.notify(str(verdict.get("text", "")), title="Reward test",
                        severity="information" if verdict.get("ok") else "warning", markup=False)

    def _cancel_trial(self, why: str) -> None:
        cancel, self._trial_cancel = self._trial_cancel, None
        if cancel is not None:
            cancel.set()
            if self._trial_tick is not None:
                self._trial_tick.pause()
            self.query_one(RewardsView).status(why)

    def _drop_engine(self) -> None:
        """Let the test's model go (a run started next needs the GPU's memory)."""
        if self._engine is None:
            return
        self._engine = self._engine_key = None
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- actions ----------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "cfg-profile":
            self.load(event.value.strip())
        elif event.input.id == "cfg-save-as":
            event.input.remove_class("-shown")
            self.save_to(Path(event.value.strip()).expanduser())

    def action_trace(self) -> None:
        """Trace the step on the CPU (seconds) and replay it through the caching-allocator
        model: the estimate's peak, reserve and verdict then follow the trace."""
        from workbench.estimate.memory import EstimateSettings
        from workbench.estimate.trace import TraceUnsupported, check_traceable

        if self.config is None or self.profile is None:
            self._error("Trace", "no model config loaded yet")
            return
        settings = EstimateSettings.from_profile(self.profile)
        try:
            check_traceable(settings)
        except TraceUnsupported as exc:
            self._error("Trace", str(exc))
            return
        self._status("tracing the step on the CPU (seconds)…")
        self._work(self._trace, self.config, settings, group="trace")

    def action_open(self) -> None:
        self.query_one("#cfg-profile", Input).focus()

    def home_widget(self):
        """The form, or the reward table while the Rewards view shows."""
        if self.has_class("-rewards"):
            return self.query_one(RewardsView).table
        return self.query_one(ProfileForm)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "leave_field":  # shown (and Esc taken) only while a field has focus
            return self.editing()
        if action == "toggle_rewards":  # GRPO only
            return self.has_class("-rewards") or self._grpo()
        return True

    def action_leave_field(self) -> None:
        """Esc: out of the field, onto the form, where 1-6 switch screens again. Leaving
        the save-as box cancels it."""
        box = self.query_one("#cfg-save-as", Input)
        if self.focused is box:
            box.remove_class("-shown")
        self.focus_home()

    def action_remedies(self) -> None:
        """m: onto the list of remedies (↑/↓ pick, Enter applies, Esc back to the form)."""
        if self.view is None or not self.view.remedies:
            self.notify("No remedies: the settings fit." if self.view is not None and
                        self.view.verdict == "fits" else "No remedies to choose from.",
                        severity="information")
            return
        self.query_one(RemedyList).focus()

    def on_option_list_option_selected(self, event: RemedyList.OptionSelected) -> None:
        if isinstance(event.option_list, RemedyList):
            event.stop()
            self.action_remedy(int(event.option.id or 0))
            self.focus_home()

    def on_remedy_list_back(self, event: RemedyList.Back) -> None:
        self.focus_home()

    def action_remedy(self, n: int) -> None:
        if self.view is None or not (1 <= n <= len(self.view.remedies)):
            self.notify(f"No remedy {n}: the settings fit." if self.view and not self.view.remedies
                        else f"No remedy {n}.", severity="warning")
            return
        remedy = self.view.remedies[n - 1]
        problems = self.view.remedy_problems or [""] * len(self.view.remedies)
        if problems[n - 1]:
            self.notify(f"{remedy.change} is not applied: {problems[n - 1]}",
                        title="Remedy", severity="warning", timeout=10, markup=False)
            return
        form = self.query_one(ProfileForm)
        shown = {f.key for f in FIELDS}
        for key, value in remedy_changes(remedy, self.view.estimate.settings).items():
            if key in shown:
                form.set_value(key, value)
            else:  # a setting the form has no field for (e.g. grpo.max_prompt_len)
                _set(self.base, key, value)
                self.revalidate()
        self.notify(f"Applied: {remedy.change}", title="Remedy", markup=False)

    def _valid_profile(self) -> Any:
        if self.issues:
            self.notify("Fix the problems shown in red first.", severity="error")
            return None
        return self.profile

    def action_save(self) -> None:
        """ctrl+s: into the user's own file; a shipped preset (or any file not in the user's
        profile folder) stays as it is, and Save as opens with a new name for the copy."""
        if self._valid_profile() is None:
            return
        if self._is_user_file():
            self.save_to(Path(self.source))
            return
        from workbench.profile import shipped_profiles_dir

        self.action_save_as()
        source = Path(self.source) if self.source and not self.source.startswith("<") else None
        shipped = source is not None and source.resolve().parent == shipped_profiles_dir().resolve()
        what = (f"{source.stem} is a shipped preset" if shipped else
                f"{source or 'this profile'} is not in your profile folder")
        self._status(f"{what}: save your copy under a new name (Enter saves)")

    def new_profile_path(self) -> Path:
        """Where a copy of this profile goes: the user's file itself, else a name in the
        user's profile folder that no profile has yet (my-demo, my-demo-2, ...), so that
        `workbench run NAME` runs the copy and not the preset it came from."""
        from workbench.profile import list_profiles, user_profiles_dir

        if self._is_user_file():
            return Path(self.source)
        folder = user_profiles_dir()
        name = self.profile.name if self.profile is not None else "profile"
        stem = name if name.startswith("my-") else f"my-{name}"
        taken = list_profiles()
        candidate, n = stem, 1
        while candidate in taken or (folder / f"{candidate}.toml").exists():
            n += 1
            candidate = f"{stem}-{n}"
        return folder / f"{candidate}.toml"

    def action_save_as(self) -> None:
        box = self.query_one("#cfg-save-as", Input)
        if not box.value and self.profile is not None:
            box.value = str(self.new_profile_path())
        box.add_class("-shown")
        box.focus()

    def save_to(self, path: Path) -> Path | None:
        from workbench.profile import save_profile

        profile = self._valid_profile()
        if profile is None:
            return None
        if path.suffix != ".toml":
            path = path.with_suffix(".toml")
        copied_from = Path(self.source).stem if self.source and not self.source.startswith("<") \
            else ""
        if path.stem != profile.name and profile.name == copied_from:
            # A copy is named after its file (runs are named after the profile): my-demo.toml
            # holds name = "my-demo", not a second "demo".
            self.query_one(ProfileForm).set_value("name", path.stem)
            self._check_profile()
            profile = self._valid_profile()
            if profile is None:
                return None
        try:
            save_profile(profile, path)
        except OSError as exc:
            self._error("Cannot save the profile", f"{path}: {exc.strerror or exc}")
            return None
        self.source = str(path)
        self.base = profile.to_dict()
        self.query_one(ProfileForm).mark_saved()
        self._status(f"{profile.name}  ·  saved to {path}")
        self.notify(str(path), title="Profile saved", markup=False)
        shadow = _shadowed_by(path)
        if shadow is not None:
            self.notify(f"`workbench run {path.stem}` runs {shadow}, not this file (that name "
                        f"is found first): run it as `workbench run {path}`, or save it under "
                        "another name (f2).", title="Name already taken", severity="warning",
                        timeout=15, markup=False)
        return path

    # -- unsaved changes (the app asks before quitting) -------------------------------------

    def unsaved_changes(self) -> str:
        """What would be lost by quitting now ("" when nothing)."""
        if not self.is_mounted:
            return ""
        changed = self.query_one(ProfileForm).modified()
        if not changed:
            return ""
        labels = {f.key: f.label for f in FIELDS}
        name = self.profile.name if self.profile is not None else "the profile"
        fields = ", ".join(labels[k] for k in changed)
        return f"Configure: {name}, {len(changed)} changed ({fields})"

    def save_changes(self) -> Path | None:
        """Save for the quit question: the user's own file, else a new name."""
        return self.save_to(self.new_profile_path())

    def action_start(self) -> None:
        """Save, then ask the app to start the run detached (it plans in a worker)."""
        if self._valid_profile() is None:
            return
        self._cancel_trial("cancelled: a run was started")
        self._drop_engine()
        start = getattr(self.app, "start_run", None)
        if start is None:
            self.notify("This app cannot start runs; use `workbench run PROFILE`.", severity="warning")
            return
        if self._is_user_file() or self.query_one(ProfileForm).modified():
            saved = self.save_to(self.new_profile_path())  # never a copy a preset hides
        else:  # a preset (or a file elsewhere) as it is: run it, no copy
            saved = Path(self.source) if self.source and not self.source.startswith("<") \
                else self.save_to(self.new_profile_path())
        if saved is not None:
            start(saved)

    def _is_user_file(self) -> bool:
        from workbench.profile import user_profiles_dir

        if not self.source or self.source.startswith("<"):
            return False
        return user_profiles_dir().resolve() in Path(self.source).resolve().parents


def _shadowed_by(path: Path) -> Path | None:
    """The other profile `workbench run <path's stem>` would run instead of `path` (a
    shipped preset is found before the user's folder), or None."""
    from workbench.profile import ProfileError, find_profile

    try:
        found = find_profile(path.stem)
    except ProfileError:
        return None
    try:
        same = found.resolve() == path.resolve()
    except OSError:
        same = False
    if same:
        return None
    try:
        return found.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return found


# Editors that open a file at a line given as "+LINE" before it.
LINE_EDITORS = {"vi", "vim", "nvim", "view", "nano", "emacs", "emacsclient", "micro", "kak",
                "joe", "mg", "ne", "pico"}


def _run_editor(command: list[str]) -> str:
    """Run the editor to its end; what went wrong, for people ("" when nothing did)."""
    import subprocess

    try:
        code = subprocess.run(command).returncode
    except OSError as exc:
        return f"could not run the editor {command[0]!r}: {exc.strerror or exc}"
    return f"the editor {command[0]!r} exited with status {code}" if code else ""
