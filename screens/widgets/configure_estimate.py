"""The live estimate: a memory bar split by term against the GPU's memory, the verdict, the
remedies (alt+N applies remedy N), trainable parameters, time and cost.

`compute_view` is pure (the estimate engine is pure Python, well under a millisecond), so the
screen calls it on every keystroke; `EstimatePanel.show` only draws its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.fmt import fmt_gib, fmt_span

GIB = 1024 ** 3
MAX_REMEDIES = 6
# One colour per breakdown term, cycled; all on the xterm-256 palette.
TERM_COLOURS = ("#5fafd7", "#87af5f", "#d7af5f", "#af87d7", "#d7875f", "#5fd7af", "#d75f87", "#afafaf")
VERDICT_STYLE = {"fits": "bold green", "tight": "bold yellow", "does not fit": "bold red"}


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
    view.notes.append((f"reserve from the traced bf16 LoRA twin of this QLoRA step "
                       f"({traced[1].seconds:.0f} s)" if traced[1].stands_in_for else
                       f"peak, reserve and verdict from the traced step ({traced[1].seconds:.0f} s)")
                      if replayed else "ctrl+t traces the step (seconds, CPU): peak and verdict "
                      "from the real code's allocations")
    if gpu.available:
        view.verdict = verdict(est.peak_bytes, gpu.available)
        if view.verdict != "fits":
            view.remedies = remedies(arch, settings, gpu.available)[:MAX_REMEDIES]
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


def render_view(view: EstimateView, width: int) -> Group:
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
    legend = Table.grid(padding=(0, 1))
    legend.add_column(no_wrap=True)
    legend.add_column(justify="right", no_wrap=True)
    for i, (name, value) in enumerate(est.breakdown.items()):
        if value < GIB / 200:  # shows as 0.00 GiB: a line that says nothing (the bar has it)
            continue
        legend.add_row(Text(f"■ {name}", TERM_COLOURS[i % len(TERM_COLOURS)]), _gib2(value))
    parts.append(legend)
    if view.verdict:
        parts.append(Text(view.verdict, VERDICT_STYLE[view.verdict]))
    for n, remedy in enumerate(view.remedies, 1):
        line = Text(f"alt+{n} ", "bold")
        line.append(f"{remedy.change} → {_gib2(remedy.estimate.peak_bytes)}")
        line.append(" fits" if remedy.fits else " still too big", "green" if remedy.fits else "red")
        parts.append(line)
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
    return Group(*parts)


class EstimatePanel(VerticalScroll):
    DEFAULT_CSS = """
    EstimatePanel { height: 1fr; }
    EstimatePanel > Static { height: auto; }
    """

    def compose(self):
        yield Static("Loading the model's config…", id="estimate-body")

    def show(self, view: EstimateView) -> None:
        width = max(10, self.size.width - 2)
        self.query_one("#estimate-body", Static).update(render_view(view, width))

    def message(self, text: str) -> None:
        self.query_one("#estimate-body", Static).update(text)
