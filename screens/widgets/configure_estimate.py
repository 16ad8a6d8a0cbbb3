"""The live estimate: a memory bar split by term against the GPU's memory, the verdict, the
remedies, trainable parameters, time and cost.

The remedies are a list (`RemedyList`): `m` on the screen goes to it, ↑/↓ pick one, Enter
applies it, Esc goes back to the form. Plain keys outside a field, because alt+N never arrives through
tmux and many SSH terminals. A remedy that would make the profile invalid (QLoRA on a CPU
profile) is listed greyed out with the validator's words, which say what else must change.

`compute_view` is pure (the estimate engine is pure Python: 2.5 ms for Mistral 7B with five
remedies, each remedy's profile validated, on the 2-core machine), so the screen calls it on
every keystroke; `EstimatePanel.show` only draws its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from workbench.fmt import fmt_gib, fmt_span

GIB = 1024 ** 3
MAX_REMEDIES = 6
# One colour per breakdown term, cycled; all on the xterm-256 palette.
TERM_COLOURS = ("#5fafd7", "#87af5f", "#d7af5f", "#af87d7", "#d7875f", "#5fd7af", "#d75f87", "#afafaf")
VERDICT_STYLE = {"fits": "bold green", "tight": "bold yellow", "does not fit": "bold red"}
# Remedy settings (EstimateSettings attributes) -> the profile keys that express them.
REMEDY_KEYS = {
    "grad_ckpt": "train.gradient_checkpointing", "batch": "train.batch_size",
    "grad_accum": "train.grad_accum", "optimizer": "train.optimizer", "method": "lora.method",
    "targets": "lora.target_modules", "seq": "train.max_seq_len",
    "precompute_ref": "preference.precompute_ref",
    "max_completion_len": "grpo.max_completion_len", "max_prompt_len": "grpo.max_prompt_len",
}


@dataclass
class GpuChoice:
    """Where the memory to fit into comes from."""

    spec: Any              # gpus.GpuSpec or None
    available: int | None  # bytes
    source: str            # "free now on GPU 0 (...)" / "table" / ""


@dataclass
class EstimateView:
    estimate: Any
    gpu: GpuChoice
    verdict: str | None
    remedies: list = field(default_factory=list)
    times: list[tuple[str, Any]] = field(default_factory=list)  # (label, TimeEstimate)
    notes: list[str] = field(default_factory=list)
    # One per remedy: "" when applying it leaves a valid profile, else the validator's message
    # (what else must change first).
    remedy_problems: list[str] = field(default_factory=list)


def remedy_changes(remedy: Any, current: Any) -> dict[str, Any]:
    """The profile keys a remedy changes, with their new values (`current`: the settings
    estimated now)."""
    out: dict[str, Any] = {}
    for attr, key in REMEDY_KEYS.items():
        value = getattr(remedy.settings, attr)
        if value != getattr(current, attr):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def remedy_problem(profile: Any, changes: dict[str, Any]) -> str:
    """Why the profile with `changes` applied would not be valid ("" when it would be): the
    validator's own message, which names what else must change."""
    from workbench.profile import ProfileError, profile_from_dict

    data = profile.to_dict()
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        data.setdefault(head, {})[rest] = value
    try:
        profile_from_dict(data, source=profile.source or "<form>")
    except ProfileError as exc:
        return "; ".join(dict.fromkeys(issue.message for issue in exc.issues))
    return ""


def choose_gpu(wanted: str, detected: dict | None) -> GpuChoice:
    """The profile's budget.gpu when set (planning for a GPU you do not have), else the GPU
    found with its free memory now; `detected` is {"name", "free", "total"} or None."""
    from workbench.estimate.gpus import UnknownGpu, find_gpu

    if wanted:
        spec = find_gpu(wanted)
        return GpuChoice(spec, spec.memory_bytes, "table")
    if detected:
        try:
            spec = find_gpu(detected["name"])
        except UnknownGpu:
            spec = None
        free = detected.get("free") or detected.get("total")
        return GpuChoice(spec, free, f"free now on {detected['name']}")
    return GpuChoice(None, None, "")


def compute_view(arch: Any, profile: Any, detected: dict | None,
                 data: Any, traced: tuple | None = None, data_why: str = "") -> EstimateView:
    """`data`: the DataCount of the profile's training data, or None while it is counted or
    when it cannot be (`data_why` says why). `traced` is (settings, TracedStep) of the last ctrl+t: used while the
    settings are still those it traced, so an edit falls back to the analytic estimate at once."""
    from workbench.estimate.advice import remedies, verdict
    from workbench.estimate.gpus import find_gpu
    from workbench.estimate.memory import EstimateSettings, estimate_memory
    from workbench.estimate.speed import estimate_time
    from workbench.estimate.trace import with_trace

    settings = EstimateSettings.from_profile(profile)
    est = estimate_memory(arch, settings)
    replayed = traced is not None and traced[0] == settings
    if replayed:
        est = with_trace(est, traced[1])
    gpu = choose_gpu(profile.budget.gpu, detected)
    view = EstimateView(est, gpu, None)
    view.notes.extend(f"warning: {w}" for w in est.warnings)  # r = 1664 on a 192-wide model
    view.notes.append((f"reserve from the traced bf16 LoRA twin of this QLoRA step "
                       f"({traced[1].seconds:.0f} s)" if traced[1].stands_in_for else
                       f"peak, reserve and verdict from the traced step ({traced[1].seconds:.0f} s)")
                      if replayed else "ctrl+t traces the step (seconds, CPU): peak and verdict "
                      "from the real code's allocations")
    if gpu.available:
        view.verdict = verdict(est.peak_bytes, gpu.available)
        if view.verdict != "fits":
            view.remedies = remedies(arch, settings, gpu.available)[:MAX_REMEDIES]
            view.remedy_problems = [remedy_problem(profile, remedy_changes(r, settings))
                                    for r in view.remedies]
    timing = dict(data=data, epochs=profile.train.epochs,
                  max_steps=profile.train.max_steps)
    price = profile.budget.gpu_hourly_usd or None
    labels = []
    if detected:
        try:
            labels.append(("detected", find_gpu(detected["name"])))
        except ValueError:
            view.notes.append(f"{detected['name']} is not in the GPU table: no time for it")
    if gpu.spec is not None and gpu.source == "table":
        labels.append(("chosen", gpu.spec))
    for label, spec in labels:
        view.times.append((f"{label} {spec.name}", estimate_time(arch, settings, spec, usd_per_hour=price,
                                                                   **timing)))
    if data is None and profile.train.max_steps <= 0:
        view.notes.append(f"the run is not timed or priced: the data was {data_why}" if data_why
                          else "the run's time and cost wait for the data to be counted "
                          "(rows and tokens)")
    return view


def _gib2(n: int | None) -> str:
    return fmt_gib(n, digits=2)


def memory_bar(breakdown: dict[str, int], capacity: int, width: int) -> Text:
    """Each term a coloured stretch, scaled to `capacity`; the rest of the GPU dim."""
    bar = Text()
    scale = width / max(capacity, sum(breakdown.values()), 1)
    used = 0
    for i, (name, value) in enumerate(breakdown.items()):
        value = max(value, 0)  # "traced vs the terms" is negative where the terms over-count
        cells = round((used + value) * scale) - round(used * scale)
        used += value
        bar.append("█" * cells, TERM_COLOURS[i % len(TERM_COLOURS)])
    rest = max(0, width - bar.cell_len)
    bar.append("░" * rest, "grey42")
    if bar.cell_len > width:  # over capacity: the overflow is cut, the verdict says so
        bar.truncate(width)
    return bar


def legend_lines(breakdown: dict[str, int], width: int) -> list[Text]:
    """One line a term, "■ name ... 0.92 GiB": a narrow panel (80 columns) shortens the name,
    never the number."""
    rows = [(i, name, _gib2(value)) for i, (name, value) in enumerate(breakdown.items())
            if value >= GIB / 200]  # shows as 0.00 GiB: a line that says nothing (the bar has it)
    if not rows:
        return []
    names = max(len(name) for _, name, _ in rows) + 2
    values = max(len(value) for _, _, value in rows)
    room = max(4, min(names, width - values - 1))
    lines = []
    for i, name, value in rows:
        label = f"■ {name}"
        if len(label) > room:
            label = label[:room - 1] + "…"
        line = Text(label.ljust(room), TERM_COLOURS[i % len(TERM_COLOURS)])
        line.append(" " + value.rjust(values))
        lines.append(line)
    return lines


def remedy_line(n: int, remedy: Any, problem: str) -> Text:
    """A remedy as the list shows it: its number, the change, the peak after it and whether
    that fits; a remedy that cannot be applied as it is says what else must change."""
    line = Text(f"{n} ", "bold")
    line.append(f"{remedy.change} → {_gib2(remedy.estimate.peak_bytes)}")
    line.append(" fits" if remedy.fits else " still too big", "green" if remedy.fits else "red")
    if problem:
        line.append(f" — not as it is: {problem}", "yellow")
    return line


REMEDIES_HINT = "m chooses a remedy (↑/↓, Enter applies it, Esc back)"


def render_view(view: EstimateView, width: int) -> Group:
    """The whole panel as text (the remedies included, each on its line)."""
    head, tail = render_parts(view, width)
    remedies = [remedy_line(n, r, p) for n, (r, p) in
                enumerate(zip(view.remedies, view.remedy_problems or [""] * len(view.remedies)), 1)]
    return Group(head, *remedies, tail)


def render_parts(view: EstimateView, width: int) -> tuple[Group, Group]:
    """What is above the remedies (the peak, the bar, the legend, the verdict) and what is
    below them (trainable parameters, time and cost, notes)."""
    est = view.estimate
    capacity = view.gpu.available or est.peak_bytes
    parts: list[Any] = []
    head = Text()
    head.append(f"peak {_gib2(est.peak_bytes)}", "bold")
    if view.gpu.available:
        name = view.gpu.spec.name if view.gpu.spec else "GPU"
        head.append(f" of {_gib2(view.gpu.available)} ({name}, {view.gpu.source})")
    else:
        head.append(" (no GPU found: choose one under price GPU)")
    parts.append(head)
    parts.append(memory_bar(est.breakdown, capacity, max(10, width)))
    parts.extend(legend_lines(est.breakdown, max(10, width)))
    if view.verdict:
        verdict = Text(view.verdict, VERDICT_STYLE[view.verdict])
        if view.remedies:
            verdict.append(f"  ·  {REMEDIES_HINT}", "")
        parts.append(verdict)
    head, parts = Group(*parts), []
    parts.append(Text(f"trainable {est.trainable_params:,} of {est.all_params:,} "
                      f"({100 * est.trainable_share:.2f}%)"))
    for label, t in view.times:
        if t.seconds is None:
            parts.append(Text(f"{label}: {t.step_seconds:.2f} s a step (the run: see below)"))
        else:
            parts.append(Text(f"{label}: {fmt_span(t.seconds)}, ${t.usd:,.2f} "
                              f"({t.steps:,} steps at ${t.usd_per_hour:.2f}/h)"))
    for note in view.notes:
        parts.append(Text(note, "dim"))
    return head, Group(*parts)


class RemedyList(OptionList):
    """The remedies, one an option; Enter applies the highlighted one (the screen does, on
    `OptionSelected`), Esc goes back to the form."""

    DEFAULT_CSS = """
    RemedyList { height: auto; max-height: 12; border: none; padding: 0; display: none;
                 background: transparent; }
    RemedyList.-shown { display: block; }
    RemedyList:focus { background-tint: $foreground 5%; }
    """
    BINDINGS = [Binding("escape", "back", "Back to the form", id="configure.remedies.back")]

    class Back(Message):
        """Esc in the list: the screen puts the focus back on the form."""

    def show(self, view: EstimateView) -> None:
        problems = view.remedy_problems or [""] * len(view.remedies)
        highlighted = self.highlighted
        self.clear_options()
        self.add_options([Option(remedy_line(n, r, p), id=str(n), disabled=bool(p))
                          for n, (r, p) in enumerate(zip(view.remedies, problems), 1)])
        self.set_class(bool(view.remedies), "-shown")
        if view.remedies:
            usable = [i for i, p in enumerate(problems) if not p]
            keep = highlighted if highlighted in usable else (usable[0] if usable else None)
            self.highlighted = keep

    def action_back(self) -> None:
        self.post_message(self.Back())


class EstimatePanel(VerticalScroll):
    DEFAULT_CSS = """
    EstimatePanel { height: 1fr; }
    EstimatePanel > Static { height: auto; }
    """

    def compose(self):
        yield Static("Loading the model's config…", id="estimate-body")
        yield RemedyList(id="cfg-remedies")
        yield Static("", id="estimate-tail")

    def show(self, view: EstimateView) -> None:
        width = max(10, self.size.width - 2)
        head, tail = render_parts(view, width)
        self.query_one("#estimate-body", Static).update(head)
        self.query_one(RemedyList).show(view)
        self.query_one("#estimate-tail", Static).update(tail)

    def message(self, text: str) -> None:
        self.query_one("#estimate-body", Static).update(text)
        remedies = self.query_one(RemedyList)
        remedies.clear_options()
        remedies.remove_class("-shown")
        self.query_one("#estimate-tail", Static).update("")
