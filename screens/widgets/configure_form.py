"""The profile form: one row per key (label, input, the validator's message under it).

Which keys appear is listed here; their defaults and choices come from `workbench.profile.
iter_schema()`, so the form never disagrees with the validator. The form turns text into
values (`parse_value`) and shows issues; validating and estimating are the screen's job.

The training method (train.method) comes right after the model, with what it does and the data
it needs under it (from the method registry, workbench.train.methods); the [preference] and
[grpo] keys follow it, each shown only while the chosen method reads it (`Method.settings`).
Under GRPO a line names the reward functions; the screen's Rewards view (f3) shows them.

Keys (the app's focus rule, screens/widgets/focus.py): the form itself takes focus, with a row
cursor (its label highlighted); ↑/↓ move it, Enter edits that row (a text field with its value
selected, so typing replaces it; a choice opens its list), and Enter in a text field or Esc
goes back to the row cursor. A click or Tab enters a field directly; the cursor follows.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static

from screens.widgets.keys import KeyedInput, KeyedSelect, with_ids
from workbench.estimate.gpus import GPUS
from workbench.profile import iter_schema
from workbench.train.methods import METHODS

DETECTED = "(detected)"  # budget.gpu = "": price against the GPU found, if any


@dataclass(frozen=True)
class Field:
    key: str       # dotted profile key
    label: str
    kind: str = "value"  # value (TOML-ish number/bool/text), text, list, choice


# The keys of the [preference] section; each shows only under a method that reads it.
PREFERENCE_FIELDS: tuple[Field, ...] = (
    Field("preference.beta", "beta"),
    Field("preference.loss", "loss", "choice"),
    Field("preference.label_smoothing", "smoothing"),
    Field("preference.gamma", "gamma"),
    Field("preference.desirable_weight", "desirable"),
    Field("preference.undesirable_weight", "undesired"),
    Field("preference.precompute_ref", "precompute", "choice"),
)

# The keys of the [grpo] section GRPO's settings name (the [rewards] are the Rewards view's).
GRPO_FIELDS: tuple[Field, ...] = (
    Field("grpo.num_generations", "group size"),
    Field("grpo.max_completion_len", "answer len"),
    Field("grpo.temperature", "temp"),
    Field("grpo.beta", "KL beta"),
    Field("grpo.loss", "loss", "choice"),
    Field("grpo.generation", "generation", "choice"),
)
METHOD_FIELDS = PREFERENCE_FIELDS + GRPO_FIELDS

FIELDS: tuple[Field, ...] = (
    Field("name", "name", "text"),
    Field("model.name_or_path", "model", "text"),
    Field("train.method", "method", "choice"),
    *METHOD_FIELDS,
    Field("model.adapter", "start from", "text"),
    Field("lora.method", "adapter", "choice"),
    Field("lora.r", "LoRA r"),
    Field("lora.alpha", "LoRA alpha"),
    Field("lora.dropout", "dropout"),
    Field("lora.target_modules", "targets", "list"),
    Field("lora.rslora", "rsLoRA", "choice"),
    Field("lora.init", "LoRA init", "text"),  # text: "pissa_niter_4" is no fixed choice
    Field("lora.train_embeddings", "embeddings", "choice"),
    Field("train.batch_size", "batch"),
    Field("train.grad_accum", "grad accum"),
    Field("train.max_seq_len", "seq len"),
    Field("train.learning_rate", "learn rate"),
    Field("train.embedding_learning_rate", "embed LR"),
    Field("train.epochs", "epochs"),
    Field("train.gradient_checkpointing", "grad ckpt", "choice"),
    Field("train.optimizer", "optimizer", "choice"),
    Field("train.precision", "precision", "choice"),
    Field("budget.gpu", "price GPU", "choice"),
    Field("budget.gpu_hourly_usd", "$ / hour"),
)


def choices_for(key: str) -> tuple[str, ...]:
    if key == "train.gradient_checkpointing":
        return ("auto", "true", "false")
    if key == "budget.gpu":
        return ("",) + tuple(g.key for g in GPUS)
    for dotted, default, _required, choices in iter_schema():
        if dotted == key:
            return ("true", "false") if isinstance(default, bool) and not choices else choices
    return ()


def method_text(name: str) -> str:
    """What a training method does and the data it needs, for under its choice."""
    method = METHODS.get(name)
    if method is None:
        return ""
    return f"{method.title}: {method.summary}; trains on {method.data}"


def hidden_keys(method_name: str) -> set[str]:
    """The [preference] and [grpo] keys the method does not read (all of them for SFT)."""
    method = METHODS.get(method_name)
    reads = set(method.settings) if method is not None else set()
    return {f.key for f in METHOD_FIELDS if f.key not in reads}


def show_value(value: Any) -> str:
    """A profile value as the form shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return str(value)


def parse_value(field: Field, text: str) -> Any:
    """Text to the value the profile validator should see. Anything unparseable stays text,
    so the validator (not the form) says what was expected."""
    text = text.strip()
    if field.kind == "text":
        return text
    if field.kind == "list":
        if text.startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                return text
        return text if text == "all-linear" else [p.strip() for p in text.split(",") if p.strip()]
    if field.kind == "choice":
        return {"true": True, "false": False}.get(text, text)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _dom_id(key: str) -> str:
    return "f-" + key.replace(".", "-")


_KEYS = {_dom_id(f.key): f.key for f in FIELDS}  # a field's DOM id -> its profile key


class ProfileForm(VerticalScroll):
    """Each field remembers the value it was filled with (the profile as loaded or saved);
    a field that differs is marked "*" so a stray key press can never change the estimate
    unseen."""

    DEFAULT_CSS = """
    ProfileForm { height: 1fr; }
    ProfileForm > .form-row { height: auto; }
    ProfileForm .form-row > Label { width: 12; color: $text-muted; }
    ProfileForm .form-row.-modified > Label { color: $warning; text-style: bold; }
    ProfileForm .form-row > Input, ProfileForm .form-row > Select { width: 1fr; }
    ProfileForm .form-error { color: $error; height: auto; padding-left: 12; display: none; }
    ProfileForm .form-error.-shown { display: block; }
    /* A value longer than its field (a model path at 80 columns), in full under it. */
    ProfileForm .form-full { color: $text-muted; height: auto; padding-left: 12; display: none; }
    ProfileForm .form-full.-shown { display: block; }
    ProfileForm #f-train-method-row > Label { color: $accent; text-style: bold; }
    ProfileForm .form-row.-unread, ProfileForm .form-error.-unread { display: none; }
    ProfileForm .method-note { height: auto; padding-left: 12; color: $text-muted; }
    ProfileForm #method-data { color: $warning; display: none; }
    ProfileForm #method-data.-shown { display: block; }
    ProfileForm #method-rewards { color: $accent; display: none; }
    ProfileForm #method-rewards.-shown { display: block; }
    ProfileForm:focus > .form-row.-current > Label { background: $accent; color: $background; }
    """
    # The rows are a list: ↑/↓ move between them (instead of scrolling), Enter edits one.
    BINDINGS = [
        *[b for b in with_ids(VerticalScroll, "form") if b.key not in ("up", "down", "enter")],
        Binding("up", "move(-1)", "Previous row", show=False, id="form.previous_row"),
        Binding("down", "move(1)", "Next row", show=False, id="form.next_row"),
        Binding("enter", "edit", "Edit", id="form.edit"),
    ]
    MARK = "*"
    FIRST_ROW = "lora.r"  # where the cursor starts: the setting tried most

    class Changed(Message):
        def __init__(self, key: str) -> None:
            self.key = key
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._baseline: dict[str, Any] = {}  # parsed values as filled; {} before the first fill
        self.current = self.FIRST_ROW  # the key of the row the cursor is on

    def compose(self) -> ComposeResult:
        for field in FIELDS:
            with Horizontal(classes="form-row", id=_dom_id(field.key) + "-row"):
                yield Label(field.label)
                if field.kind == "choice":
                    options = [(DETECTED if c == "" else c, c) for c in choices_for(field.key)]
                    yield KeyedSelect(options, allow_blank=False, id=_dom_id(field.key),
                                      compact=True)
                else:
                    yield KeyedInput(id=_dom_id(field.key), compact=True)
            yield Static("", id=_dom_id(field.key) + "-error", classes="form-error")
            if field.kind != "choice":
                yield Static("", id=_dom_id(field.key) + "-full", classes="form-full",
                             markup=False)
            if field.key == "train.method":
                yield Static("", id="method-summary", classes="method-note")
                yield Static("", id="method-data", classes="method-note")
                yield Static("", id="method-rewards", classes="method-note")

    def on_mount(self) -> None:
        self._show_current()

    # -- the row cursor -------------------------------------------------------------------

    def visible_keys(self) -> list[str]:
        hidden = hidden_keys(self.method)
        return [f.key for f in FIELDS if f.key not in hidden]

    def _show_current(self) -> None:
        for field in FIELDS:
            self.query_one("#" + _dom_id(field.key) + "-row").set_class(
                field.key == self.current, "-current")

    def move_to(self, key: str) -> None:
        self.current = key
        self._show_current()
        self.scroll_to_widget(self.query_one("#" + _dom_id(key) + "-row"), animate=False)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The row keys are the form's own, not a focused field's (its arrows, its Enter).
        if action in ("move", "edit"):
            return self.has_focus
        return True

    def action_move(self, delta: int) -> None:
        keys = self.visible_keys()
        at = keys.index(self.current) if self.current in keys else 0
        self.move_to(keys[max(0, min(len(keys) - 1, at + delta))])

    def action_edit(self) -> None:
        """Into the row's field: Textual selects a text field's value as it takes focus."""
        widget = self.widget(self.current)
        widget.focus()
        if isinstance(widget, Select):
            widget.action_show_overlay()

    def on_descendant_focus(self, event) -> None:
        key = _KEYS.get(event.widget.id or "")
        if key is not None and key != self.current:
            self.move_to(key)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in _KEYS:  # Enter ends the edit: back on the row cursor
            self.focus()

    @property
    def method(self) -> str:
        return str(self.widget("train.method").value)

    def show_method(self) -> None:
        """The chosen method's summary and data under it; the [preference] keys it does not
        read are hidden (their values stay in the profile as they are)."""
        self.query_one("#method-summary", Static).update(method_text(self.method))
        hidden = hidden_keys(self.method)
        for field in METHOD_FIELDS:
            self.query_one("#" + _dom_id(field.key) + "-row").set_class(field.key in hidden, "-unread")
            self.query_one("#" + _dom_id(field.key) + "-error").set_class(field.key in hidden, "-unread")
        if self.current in hidden:  # the cursor's row was hidden: onto the method's
            self.current = "train.method"
            self._show_current()

    def show_full_values(self) -> None:
        """Under each text field whose value is wider than the field, the whole value
        (wrapped): at 80 columns a model path or a list of targets is otherwise cut."""
        from rich.cells import cell_len

        hidden = hidden_keys(self.method)
        for field in FIELDS:
            if field.kind == "choice":
                continue
            widget = self.widget(field.key)
            value = widget.value
            width = widget.content_region.width
            cut = width > 0 and cell_len(value) >= width and field.key not in hidden
            full = self.query_one("#" + _dom_id(field.key) + "-full", Static)
            full.update(value if cut else "")
            full.set_class(cut, "-shown")

    def on_resize(self, event) -> None:
        self.call_after_refresh(self.show_full_values)

    def show_rewards_note(self, text: str) -> None:
        """GRPO's reward functions in one line (the screen knows them: they are no field)."""
        note = self.query_one("#method-rewards", Static)
        note.update(text)
        note.set_class(bool(text), "-shown")

    def show_data_note(self, text: str) -> None:
        """Whether the data suits the method (the screen finds out in a worker)."""
        note = self.query_one("#method-data", Static)
        note.update(text)
        note.set_class(bool(text), "-shown")

    def widget(self, key: str) -> Input | Select:
        return self.query_one("#" + _dom_id(key))

    def set_value(self, key: str, value: Any) -> None:
        """Set a field from a profile value (fires Changed, like typing would)."""
        widget = self.widget(key)
        text = show_value(value)
        if isinstance(widget, Select):
            widget.value = text if text in choices_for(key) else widget.value
        else:
            widget.value = text

    def fill(self, profile: Any) -> None:
        """Show a profile; its values become the ones edits are compared with."""
        for field in FIELDS:
            self.set_value(field.key, profile.get(field.key))
        self.mark_saved()
        self.show_method()
        self.call_after_refresh(self.show_full_values)

    def mark_saved(self) -> None:
        """The values shown now are the profile's (just loaded or saved): nothing is modified."""
        self._baseline = self.values()
        self._show_modified()

    def modified(self) -> list[str]:
        """Keys whose value differs from the profile's (compared as parsed values, so "2e-4"
        and "0.0002" are the same)."""
        if not self._baseline:
            return []
        now = self.values()
        return [f.key for f in FIELDS if now[f.key] != self._baseline.get(f.key)]

    def _show_modified(self) -> None:
        changed = set(self.modified())
        for field in FIELDS:
            row = self.query_one("#" + _dom_id(field.key) + "-row", Horizontal)
            row.set_class(field.key in changed, "-modified")
            mark = self.MARK if field.key in changed else ""
            row.query_one(Label).update(field.label + mark)

    def values(self) -> dict[str, Any]:
        out = {}
        for field in FIELDS:
            widget = self.widget(field.key)
            raw = widget.value if isinstance(widget, Input) else str(widget.value)
            out[field.key] = parse_value(field, raw)
        return out

    def show_issues(self, issues: dict[str, str]) -> None:
        for field in FIELDS:
            error = self.query_one("#" + _dom_id(field.key) + "-error", Static)
            message = issues.get(field.key, "")
            error.update(message)
            error.set_class(bool(message), "-shown")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._show_modified()
        self.show_full_values()
        self.post_message(self.Changed(event.input.id or ""))

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == _dom_id("train.method"):
            self.show_method()
        self._show_modified()
        self.post_message(self.Changed(event.select.id or ""))
