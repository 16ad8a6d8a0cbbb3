"""Configure screen: a form over a profile, validated as you type, with a live memory estimate.

Each change rebuilds the profile through `profile_from_dict` (the same validator as files) and,
when valid, re-runs the memory estimate synchronously: it is pure Python and far under a
millisecond, so there is nothing to debounce. What is slow runs in thread workers, once: the
model's config (a file read, maybe the hub), GPU telemetry (NVML) and counting the dataset's
tokens for the time estimate (transformers).

Keys: while a field has focus, every printable key (digits included) is typed into it; Esc
leaves the field, and then 1-6 switch screens as everywhere else. A field whose value differs
from the loaded (or last saved) profile is marked "*", and the status line counts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Select, Static

from screens.widgets.configure_estimate import EstimatePanel, compute_view
from screens.widgets.configure_form import FIELDS, ProfileForm
from screens.widgets.data_path import PathSuggester
from screens.widgets.keys import KeyedInput, with_ids

# Remedy settings -> the form keys that express them.
REMEDY_KEYS = {
    "grad_ckpt": "train.gradient_checkpointing", "batch": "train.batch_size",
    "grad_accum": "train.grad_accum", "optimizer": "train.optimizer", "method": "lora.method",
    "targets": "lora.target_modules", "seq": "train.max_seq_len",
}


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

    if preference is None or method not in METHODS:
        return ""
    if method == "sft" and preference:
        return ("! this data is preference rows: SFT needs conversations (pairs train with "
                "dpo, orpo, simpo; labelled answers with kto)")
    if method != "sft" and not preference:
        return f"! this data is conversations: {METHODS[method].title} needs preference rows"
    return ""

class ConfigureScreen(Screen):
    TITLE = "workbench"
    SUB_TITLE = "configure"
    # Coming back to this screen with nothing focused must not land in a text field, where
    # the next screen key would be typed: the form itself takes focus (arrows scroll it).
    AUTO_FOCUS = "#cfg-form"
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
    """
    # The footer must fit 80 columns with the app's "? Help  b Back  q Quit" and, while a
    # field has focus, "esc Leave field": Open and the remedies are left to help and the
    # palette (the estimate panel shows each remedy's key next to it).
    BINDINGS = [
        *with_ids(Screen, "screen"),
        Binding("ctrl+o", "open", "Open", show=False, id="configure.open"),
        Binding("ctrl+s", "save", "Save", id="configure.save"),
        Binding("f2", "save_as", "Save as", id="configure.save_as"),
        Binding("ctrl+r", "start", "Start", id="configure.start"),
        Binding("escape", "leave_field", "Leave field", id="configure.leave_field"),
        Binding("ctrl+t", "trace", "Trace the step", show=False, id="configure.trace"),
        Binding("alt+1", "remedy(1)", "Remedy 1-6", show=False, key_display="alt+1…6",
                id="configure.remedy.1"),
        *[Binding(f"alt+{n}", f"remedy({n})", f"Remedy {n}", show=False, id=f"configure.remedy.{n}")
          for n in range(2, 7)],
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

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="cfg-top"):
            yield KeyedInput(self.profile_ref,
                             placeholder="profile name or .toml path, Enter loads",
                             suggester=PathSuggester(), id="cfg-profile", compact=True)
        yield Static("", id="cfg-status")
        with Horizontal(id="cfg-main"):
            with Vertical():
                yield ProfileForm(id="cfg-form")
                yield Static("", id="cfg-issues")
            yield EstimatePanel(id="cfg-estimate")
        yield KeyedInput(placeholder="save as: path to a .toml file, Enter saves",
                         id="cfg-save-as", suggester=PathSuggester(), compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        ref = self.profile_ref or getattr(self.app, "configure_profile", None) or "demo"
        self.query_one("#cfg-profile", Input).value = str(ref)
        self.load(str(ref))
        if self.probe_gpu:
            self._work(self._probe_gpu, group="gpu")

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
        self._filling = True
        self.query_one(ProfileForm).fill(profile)
        # Changed events from fill() arrive later; refresh once they are all in.
        self.call_after_refresh(self._filled)

    def _filled(self) -> None:
        self._filling = False
        self.revalidate()
        self.query_one(ProfileForm).widget("lora.r").focus()

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

    def _field_focused(self) -> bool:
        return isinstance(self.focused, (Input, Select))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "leave_field":  # shown (and Esc taken) only while a field has focus
            return self._field_focused()
        return True

    def action_leave_field(self) -> None:
        """Esc: out of the field, onto the form, where 1-6 switch screens again. Leaving
        the save-as box cancels it."""
        box = self.query_one("#cfg-save-as", Input)
        if self.focused is box:
            box.remove_class("-shown")
        self.query_one(ProfileForm).focus()

    def action_remedy(self, n: int) -> None:
        if self.view is None or not (1 <= n <= len(self.view.remedies)):
            self.notify(f"No remedy {n}: the settings fit." if self.view and not self.view.remedies
                        else f"No remedy {n}.", severity="warning")
            return
        remedy = self.view.remedies[n - 1]
        current = self.view.estimate.settings
        form = self.query_one(ProfileForm)
        for attr, key in REMEDY_KEYS.items():
            value = getattr(remedy.settings, attr)
            if value != getattr(current, attr):
                form.set_value(key, list(value) if isinstance(value, tuple) else value)
        self.notify(f"Applied: {remedy.change}", title="Remedy")

    def _valid_profile(self) -> Any:
        if self.issues:
            self.notify("Fix the problems shown in red first.", severity="error")
            return None
        return self.profile

    def action_save(self) -> None:
        from workbench.profile import user_profiles_dir

        profile = self._valid_profile()
        if profile is None:
            return
        source = Path(self.source) if self.source and not self.source.startswith("<") else None
        # Shipped presets stay as shipped; edits of them go to the user's profile folder.
        if source is not None and user_profiles_dir().resolve() in source.resolve().parents:
            self.save_to(source)
        else:
            self.save_to(user_profiles_dir() / f"{profile.name}.toml")

    def action_save_as(self) -> None:
        from workbench.profile import user_profiles_dir

        box = self.query_one("#cfg-save-as", Input)
        if not box.value and self.profile is not None:
            box.value = str(user_profiles_dir() / f"{self.profile.name}.toml")
        box.add_class("-shown")
        box.focus()

    def save_to(self, path: Path) -> Path | None:
        from workbench.profile import save_profile

        profile = self._valid_profile()
        if profile is None:
            return None
        if path.suffix != ".toml":
            path = path.with_suffix(".toml")
        try:
            save_profile(profile, path)
        except OSError as exc:
            self._error("Cannot save the profile", f"{path}: {exc.strerror or exc}")
            return None
        self.source = str(path)
        self.base = profile.to_dict()
        self.query_one(ProfileForm).mark_saved()
        self._status(f"{profile.name}  ·  saved to {path}")
        self.notify(str(path), title="Profile saved")
        return path

    def action_start(self) -> None:
        """Save, then ask the app to start the run detached (it plans in a worker)."""
        if self._valid_profile() is None:
            return
        start = getattr(self.app, "start_run", None)
        if start is None:
            self.notify("This app cannot start runs; use `workbench run PROFILE`.", severity="warning")
            return
        saved = self.save_to(Path(self.source)) if self._is_user_file() else None
        if saved is None:
            from workbench.profile import user_profiles_dir

            saved = self.save_to(user_profiles_dir() / f"{self.profile.name}.toml")
        if saved is not None:
            start(saved)

    def _is_user_file(self) -> bool:
        from workbench.profile import user_profiles_dir

        if not self.source or self.source.startswith("<"):
            return False
        return user_profiles_dir().resolve() in Path(self.source).resolve().parents
