"""The answer to "which configuration was worth it": any runs side by side.

For each run: what differs from the others, eval loss, the task metric and perplexity of its
evaluation, peak memory, tokens/s, device-hours, cost, and quality per device-hour; then a
recommendation, the loss curves of all runs on one plot, and the three-way comparison
(base / few-shot / fine-tuned) of the best run. Read from the run folders only: works on a
sweep's trials and on any runs, of any profiles.

Quality is the run's task metric from its evaluation (exact match, token F1, ...: 0-100,
higher is better) when every ranked run has the same one; otherwise 100 / perplexity of the
final eval loss (100 * exp(-eval_loss): the mean probability the model gives the reference
token, in %), which every run with evaluation during training has.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.fmt import fmt_gib
from workbench.rundir import RunDir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RANKED_STATES = ("finished",)
# Keys that differ between any two runs without saying anything about the configuration.
NOISE_KEYS = ("description",)
LOSS_QUALITY = "100/ppl"  # the fallback quality's name in tables
PREFERENCE_QUALITY = "pref acc"  # preference runs: held-out preference accuracy, %
REWARD_QUALITY = "reward"  # GRPO runs: the held-out weighted reward of greedy answers


@dataclass
class RunRow:
    name: str
    path: str
    state: str
    differs: dict = field(default_factory=dict)  # key -> value, only keys that differ
    eval_loss: float | None = None
    metric_name: str | None = None
    metric: float | None = None
    perplexity: float | None = None
    peak_bytes: int | None = None
    peak_source: str = ""  # "measured" | "estimated" | ""
    tokens_per_s: float | None = None
    hours: float | None = None
    device: str | None = None
    cost_usd: float | None = None
    quality: float | None = None
    quality_per_hour: float | None = None
    verdict: str | None = None
    three_way: dict = field(default_factory=dict)  # system -> primary metric
    loss_curve: list = field(default_factory=list)
    eval_curve: list = field(default_factory=list)
    note: str = ""

    @property
    def label(self) -> str:
        return " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in self.differs.items()) or self.name


@dataclass
class Comparison:
    rows: list[RunRow]  # ranked first (by quality per device-hour), then the rest
    differing_keys: list[str]
    quality_name: str
    hour_unit: str  # "GPU-hours" or "CPU-hours"
    recommendation: str
    notes: list[str] = field(default_factory=list)

    @property
    def quality_format(self) -> str:
        """Rewards are small numbers (0.42), the other qualities percentages (90.8)."""
        return ".3g" if self.quality_name == REWARD_QUALITY else ".1f"

    def best(self) -> RunRow | None:
        ranked = [r for r in self.rows if r.quality is not None]
        return max(ranked, key=_best_key) if ranked else None

    def to_dict(self) -> dict:
        return {"differing_keys": self.differing_keys, "quality": self.quality_name,
                "hour_unit": self.hour_unit, "recommendation": self.recommendation,
                "notes": self.notes, "runs": [asdict(r) for r in self.rows]}


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "attention" if v == ["q_proj", "k_proj", "v_proj", "o_proj"] else ",".join(map(str, v))
    if isinstance(v, str) and ("/" in v):
        return Path(v).name or v
    return str(v)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("columns", "placeholders") and prefix == "":
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


def _profile_of(run: RunDir) -> dict:
    try:
        raw = tomllib.loads(run.profile_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    raw.pop("resolved", None)
    raw.pop("sweep", None)
    return _flat(raw)


def _hours(run: RunDir, status: dict) -> float | None:
    """The run's own time (rundir.RunDir.active_seconds: its sessions of training and the
    evaluation after it, as recorded when each ended), never the span from its first event to
    its last: a `workbench eval` run later, or a pause between stop and resume, is not what
    this configuration cost to train. A run with no events falls back to train_seconds."""
    secs = run.active_seconds(status)
    if not secs:
        secs = status.get("train_seconds")
    return secs / 3600 if isinstance(secs, (int, float)) and secs > 0 else None


def read_row(run: RunDir) -> RunRow:
    status = run.read_status()
    row = RunRow(name=run.name, path=str(run.path), state=run.shown_state(status),
                 eval_loss=status.get("eval_loss"), device=status.get("device"))
    if isinstance(status.get("peak_gpu_mem_bytes"), int):
        row.peak_bytes, row.peak_source = status["peak_gpu_mem_bytes"], "measured"
    elif isinstance(status.get("estimated_peak_bytes"), int):
        row.peak_bytes, row.peak_source = status["estimated_peak_bytes"], "estimated"
    events, _ = run.read_events()
    row.hours = _hours(run, status)
    speeds = []
    for ev in events:
        if ev.get("type") == "log":
            if isinstance(ev.get("loss"), (int, float)):
                row.loss_curve.append((ev["step"], ev["loss"]))
            if isinstance(ev.get("tokens_per_s"), (int, float)) and ev.get("step", 0) > 1:
                speeds.append(ev["tokens_per_s"])  # the first step includes warm-up
        elif ev.get("type") == "eval" and isinstance(ev.get("eval_loss"), (int, float)):
            row.eval_curve.append((ev["step"], ev["eval_loss"]))
    if speeds:
        row.tokens_per_s = sum(speeds) / len(speeds)
    if row.eval_loss is None and row.eval_curve:
        row.eval_loss = row.eval_curve[-1][1]
    _read_evaluation(run, row)
    return row


def _read_evaluation(run: RunDir, row: RunRow) -> None:
    try:
        report = json.loads((run.path / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    test = (report.get("evaluation") or {}).get("test") or {}
    metrics = test.get("metrics") or {}
    primary = (test.get("primary") or {}).get("metric")
    tuned = "fine-tuned" if "fine-tuned" in metrics else (list(metrics)[-1] if metrics else None)
    # A preference run answers "does it prefer what the data prefers?": its held-out preference
    # accuracy is its quality, not how its answers score against the chosen ones.
    accuracy = (((report.get("evaluation") or {}).get("preference") or {}).get("paired")
                or {}).get("accuracy") or {}
    # A GRPO run's quality is what it was trained to raise: the held-out reward.
    reward = ((((report.get("evaluation") or {}).get("rewards") or {}).get("greedy") or {})
              .get("total") or {})
    if isinstance(accuracy.get("fine-tuned"), (int, float)):
        row.metric_name, row.metric = PREFERENCE_QUALITY, float(accuracy["fine-tuned"])
        row.three_way = {name: accuracy.get(name) for name in ("base", "fine-tuned")}
    elif isinstance(reward.get("fine-tuned"), (int, float)):
        row.metric_name, row.metric = REWARD_QUALITY, float(reward["fine-tuned"])
        row.three_way = {name: reward.get(name) for name in ("base", "fine-tuned")}
    elif primary and tuned and isinstance(metrics[tuned].get(primary), (int, float)):
        row.metric_name, row.metric = primary, float(metrics[tuned][primary])
        row.three_way = {name: m.get(primary) for name, m in metrics.items()}
    ppl = (test.get("perplexity") or {}).get(tuned or "", {})
    if isinstance(ppl.get("answer_ppl"), (int, float)):
        row.perplexity = float(ppl["answer_ppl"])
    if isinstance(report.get("verdict"), str):
        row.verdict = report["verdict"]


def compare_runs(runs: list[RunDir]) -> Comparison:
    rows = [read_row(r) for r in runs]
    profiles = [_profile_of(r) for r in runs]
    keys: list[str] = []
    for p in profiles:
        keys += [k for k in p if k not in keys]
    differing = [k for k in keys if k not in NOISE_KEYS
                 and len({json.dumps(p.get(k), sort_keys=True) for p in profiles}) > 1]
    for row, p in zip(rows, profiles):
        row.differs = {k: p.get(k) for k in differing}
        hourly = p.get("budget.gpu_hourly_usd")
        if isinstance(hourly, (int, float)) and row.hours is not None:
            row.cost_usd = row.hours * hourly

    ranked = [r for r in rows if r.state in RANKED_STATES]
    names = {r.metric_name for r in ranked}
    use_metric = bool(ranked) and len(names) == 1 and None not in names
    quality_name = next(iter(names)) if use_metric else LOSS_QUALITY
    notes = []
    if not use_metric and any(r.metric is not None for r in ranked):
        notes.append("the runs' evaluations use different task metrics (or some have none): "
                     "quality is 100/perplexity of the final eval loss for all")
    for r in ranked:
        if use_metric:
            r.quality = r.metric
        elif r.eval_loss is not None:
            r.quality = 100 * math.exp(-r.eval_loss)
        if r.quality is not None and r.hours:
            r.quality_per_hour = r.quality / r.hours
    on_gpu = any(r.device == "cuda" for r in rows)
    hour_unit = "GPU-hours" if on_gpu else "CPU-hours"
    if not on_gpu:
        notes.append("these runs trained on the CPU: cost is per hour of the CPU used "
                     "(CPU-hours), not GPU-hours")
    order = sorted([r for r in ranked if r.quality_per_hour is not None],
                   key=lambda r: -r.quality_per_hour)
    rest = [r for r in rows if r not in order]
    comparison = Comparison(order + rest, differing, quality_name, hour_unit, "", notes)
    comparison.recommendation = recommend(comparison)
    if len(rows) == 1:
        comparison.notes.insert(0, f"only one run ({rows[0].name}): nothing to compare it with; "
                                   "name two or more runs to rank them")
    return comparison


def _best_key(r: RunRow):
    """Highest quality; on a tie, the lower eval loss, then the cheaper run."""
    return (r.quality, -(r.eval_loss if r.eval_loss is not None else math.inf), -(r.hours or 0))


def recommend(c: Comparison, within: float = 0.95) -> str:
    ranked = [r for r in c.rows if r.quality is not None and r.hours]
    if not ranked:
        return "no finished run with a quality to rank yet"
    best = max(ranked, key=_best_key)
    if len(ranked) == 1:
        return f"{best.label}: {c.quality_name} {best.quality:{c.quality_format}} (the only finished run)"
    good = [r for r in ranked if r.quality >= within * best.quality]
    cheap = min(good, key=lambda r: r.hours)
    what = "the best " + c.quality_name
    if cheap is best:
        return (f"{best.label} is the best ({c.quality_name} {best.quality:{c.quality_format}}) and no run within "
                f"{within:.0%} of it was cheaper: use it")
    share = cheap.quality / best.quality
    cost = cheap.hours / best.hours
    return (f"{cheap.label} reaches {share:.0%} of {what} at {cost:.0%} of its cost "
            f"({c.hour_unit}); best: {best.label} ({c.quality_name} {best.quality:{c.quality_format}})")


# ---- text ------------------------------------------------------------------------------

def _num(v, fmt: str, missing: str = "-") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else missing


def table_lines(c: Comparison) -> list[str]:
    header = _split_cols(c)
    body = []
    rank = 0
    for r in c.rows:
        if r.quality_per_hour is not None:
            rank += 1
        body.append([str(rank) if r.quality_per_hour is not None else "-",
                     r.label if c.differing_keys else r.name, r.state,
                     _num(r.eval_loss, ".4f"), _num(r.quality, c.quality_format), _num(r.perplexity, ".3f"),
                     (fmt_gib(r.peak_bytes) + ("*" if r.peak_source == "estimated" else ""))
                     if r.peak_bytes else "-",
                     _num(r.tokens_per_s, ".0f"), _num(r.hours, ".4f"), _num(r.cost_usd, ".2f"),
                     _num(r.quality_per_hour, ".0f")])
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in [header] + body]
    if any(r.peak_source == "estimated" for r in c.rows):
        lines.append("* peak memory estimated (no GPU measurement on this device)")
    return lines


# Without colour (a pipe, a file, report.md) runs are told apart by their markers: the line's
# character, and a digit for its eval points.
PLAIN_MARKERS = ("+", "o", "*", "#", "@", "%", "&", "=")


def terminal_plot(c: Comparison, width: int | None = None, height: int = 20,
                  color: bool = False) -> str:
    """Train loss (solid) and eval loss of every run, on one plotext canvas. `width`: the
    terminal's when None (at least 60 columns)."""
    import shutil

    import plotext as plt

    curves = [(r, r.loss_curve, r.eval_curve) for r in c.rows if r.loss_curve or r.eval_curve]
    if not curves:
        return "(no loss curves yet)"
    width = width or max(60, shutil.get_terminal_size((100, 24)).columns)
    room = max(30, width - 24)  # the legend's line, less the axis, the marker and " eval"
    plt.clf()
    plt.limitsize(False, False)  # the width asked for, not the terminal's (a pipe has none)
    plt.plotsize(width, height)
    plt.theme("clear")
    for n, (r, loss, ev) in enumerate(curves):
        label = r.label if len(r.label) <= room else r.label[:room - 1] + "…"
        line = {} if color else {"marker": PLAIN_MARKERS[n % len(PLAIN_MARKERS)]}
        if loss:
            plt.plot([s for s, _ in loss], [v for _, v in loss], label=f"{label} loss", **line)
        if ev and color:
            plt.scatter([s for s, _ in ev], [v for _, v in ev], marker="x")  # legend: the line's
        elif ev:
            plt.scatter([s for s, _ in ev], [v for _, v in ev], marker=str((n + 1) % 10),
                        label=f"{label} eval")
    plt.title("loss (lines) and eval loss (x) by step" if color else "loss and eval loss by step")
    plt.xlabel("step")
    text = plt.build()
    plt.clf()
    return text if color else plt.uncolorize(text)


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def svg_plot(c: Comparison, width: int = 760, height: int = 360) -> str:
    """The same curves as an SVG file for the Markdown report: no plotting library needed."""
    series = [(r, r.loss_curve, r.eval_curve) for r in c.rows if r.loss_curve or r.eval_curve]
    points = [p for _, loss, ev in series for p in loss + ev]
    left, right, top, bottom = 60, 220, 30, 40
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = 0.0, max(ys) * 1.05 or 1
    pw, ph = width - left - right, height - top - bottom

    def X(x):
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def Y(y):
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13">loss (lines) and eval loss (dashed) by step</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{left - 6}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.2f}</text>')
        xv = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{X(xv):.1f}" y="{top + ph + 16}" text-anchor="middle">{xv:.0f}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">step</text>')
    for n, (r, loss, ev) in enumerate(series):
        color = PALETTE[n % len(PALETTE)]
        for curve, dash in ((loss, ""), (ev, ' stroke-dasharray="5,3"')):
            if curve:
                pts = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in curve)
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{pts}"/>')
        label = r.label.replace("&", "&amp;").replace("<", "&lt;")[:34]
        out.append(f'<line x1="{left + pw + 12}" y1="{top + 10 + 16 * n}" x2="{left + pw + 30}" '
                   f'y2="{top + 10 + 16 * n}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left + pw + 34}" y="{top + 14 + 16 * n}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def three_way_lines(c: Comparison) -> list[str]:
    best = c.best()
    if best is None or not best.three_way:
        return []
    parts = ", ".join(f"{name} {_num(v, c.quality_format)}" for name, v in best.three_way.items())
    lines = [f"best run {best.name} ({best.label}), {best.metric_name}: {parts}"]
    if best.verdict:
        lines.append(f"  verdict: {best.verdict}")
    return lines


def format_comparison(c: Comparison, plot: bool = True, color: bool = False) -> str:
    lines = []
    if c.differing_keys:
        lines.append("what differs: " + ", ".join(c.differing_keys))
    elif len(c.rows) > 1:
        lines.append("what differs: nothing in the profiles (same configuration; seeds, data "
                     "or library versions may still differ)")
    lines += table_lines(c)
    lines.append(f"quality: {_quality_text(c.quality_name)}; ranked by quality per "
                 f"{c.hour_unit[:-1]}")
    lines.append(f"recommendation: {c.recommendation}")
    lines += three_way_lines(c)
    lines += [f"note: {n}" for n in c.notes]
    if plot:
        lines += ["", terminal_plot(c, color=color)]
    return "\n".join(lines)


def _quality_text(name: str) -> str:
    if name == LOSS_QUALITY:
        return "100/perplexity of the final eval loss (100*exp(-eval_loss), higher is better)"
    return f"{name} of the fine-tuned model in the run's evaluation (higher is better)"


def markdown(c: Comparison, title: str, svg_name: str | None) -> str:
    out = [f"# {title}", ""]
    if c.differing_keys:
        out += ["What differs: " + ", ".join(f"`{k}`" for k in c.differing_keys), ""]
    out += [f"**Recommendation:** {c.recommendation}", ""]
    cells = _split_cols(c)
    out.append("| " + " | ".join(cells) + " |")
    out.append("|" + "---|" * len(cells))
    for r, rank in zip(c.rows, _ranks(c)):
        out.append("| " + " | ".join([
            rank, f"{r.label if c.differing_keys else r.name} (`{r.name}`)", r.state,
            _num(r.eval_loss, ".4f"), _num(r.quality, c.quality_format), _num(r.perplexity, ".3f"),
            (fmt_gib(r.peak_bytes) + (" (est.)" if r.peak_source == "estimated" else ""))
            if r.peak_bytes else "-", _num(r.tokens_per_s, ".0f"), _num(r.hours, ".4f"),
            _num(r.cost_usd, ".2f"), _num(r.quality_per_hour, ".0f")]) + " |")
    out += ["", f"Quality: {_quality_text(c.quality_name)}. Ranked by quality per "
                f"{c.hour_unit[:-1]}.", ""]
    three = three_way_lines(c)
    if three:
        out += ["## The best run against its base model", ""] + [f"- {line.strip()}" for line in three] + [""]
    if c.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in c.notes] + [""]
    out += ["## Loss curves", ""]
    out += [f"![loss curves]({svg_name})", ""] if svg_name else ["(no curves yet)", ""]
    out += ["```", terminal_plot(c, width=100, height=22), "```", ""]
    return "\n".join(out)


def _split_cols(c: Comparison) -> list[str]:
    unit = "GPU-h" if c.hour_unit == "GPU-hours" else "CPU-h"
    return ["#", "run / what differs", "state", "eval loss", c.quality_name, "ppl", "peak mem",
            "tok/s", unit, "cost $", f"quality/{unit}"]


def _ranks(c: Comparison) -> list[str]:
    out, n = [], 0
    for r in c.rows:
        if r.quality_per_hour is not None:
            n += 1
            out.append(str(n))
        else:
            out.append("-")
    return out
