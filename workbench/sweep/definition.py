"""What a sweep varies: axes written on the command line or in a profile's [sweep] section.

    --grid lora.r=8,16,64                       a grid axis: every value is tried
    --grid lora.r+lora.alpha=8+16,16+32         paired axes: the values change together
    --grid lora.target_modules=attention,all-linear
    --range train.learning_rate=log:1e-5..1e-3  sampled (with --trials N): log / float / int

A grid is the product of its axes. With `--trials N` the study samples N configurations from
the ranges (and the grid axes, as choices). Each configuration becomes `--set` overrides, so
a value means exactly what it means on `workbench run --set`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from workbench.profile import Profile, ProfileError, parse_override

# Words people use for common target sets (`--grid lora.target_modules=attention,all-linear`).
TARGET_ALIASES = {
    "attention": '["q_proj", "k_proj", "v_proj", "o_proj"]',
    "attn": '["q_proj", "k_proj", "v_proj", "o_proj"]',
    "mlp": '["gate_proj", "up_proj", "down_proj"]',
}
RANGE_KINDS = ("log", "float", "int")


class SweepDefinitionError(Exception):
    """A mistake in the axes; the message names the axis and says what is expected."""


@dataclass
class GridAxis:
    keys: list[str]  # one key, or several that change together
    values: list[list[str]]  # per choice, the override text of each key

    @property
    def name(self) -> str:
        return "+".join(self.keys)

    def labels(self) -> list[str]:
        return ["+".join(v) for v in self.values]


@dataclass
class RangeAxis:
    key: str
    kind: str  # log | float | int
    low: float
    high: float

    @property
    def name(self) -> str:
        return self.key


@dataclass
class SweepDefinition:
    grid: list[GridAxis] = field(default_factory=list)
    ranges: list[RangeAxis] = field(default_factory=list)
    trials: int = 0  # 0: the full grid
    parallel: int = 1
    prune: bool = True

    @property
    def sampled(self) -> bool:
        return self.trials > 0

    def grid_points(self) -> list[dict[str, str]]:
        """Every grid configuration as {axis name: choice label}, in the order typed."""
        if not self.grid:
            return []
        return [dict(zip([a.name for a in self.grid], combo))
                for combo in itertools.product(*(a.labels() for a in self.grid))]

    def to_dict(self) -> dict:
        return {"grid": [{"keys": a.keys, "values": a.values} for a in self.grid],
                "ranges": [{"key": r.key, "kind": r.kind, "low": r.low, "high": r.high}
                           for r in self.ranges],
                "trials": self.trials, "parallel": self.parallel, "prune": self.prune}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepDefinition":
        return cls(grid=[GridAxis(list(a["keys"]), [list(v) for v in a["values"]]) for a in d["grid"]],
                   ranges=[RangeAxis(r["key"], r["kind"], r["low"], r["high"]) for r in d["ranges"]],
                   trials=d["trials"], parallel=d.get("parallel", 1), prune=d.get("prune", True))

    def describe(self) -> str:
        parts = [f"{a.name} in {{{', '.join(a.labels())}}}" for a in self.grid]
        parts += [f"{r.key} ~ {r.kind}[{r.low:g}, {r.high:g}]" for r in self.ranges]
        size = f"{self.trials} sampled trials" if self.sampled else f"{len(self.grid_points())} trials (grid)"
        return f"{size}: " + "; ".join(parts)


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes, so a TOML list stays one value:
    `["q_proj","v_proj"],all-linear` is two values."""
    out, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    out.append("".join(current).strip())
    return out


def _value_text(key: str, value: str) -> str:
    if key == "lora.target_modules" and value in TARGET_ALIASES:
        return TARGET_ALIASES[value]
    return value


def parse_grid(text: str) -> GridAxis:
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise SweepDefinitionError(f"--grid {text!r}: expected KEY=V1,V2 (e.g. lora.r=8,16,64) "
                                   "or paired KEY1+KEY2=A1+B1,A2+B2 (e.g. lora.r+lora.alpha=8+16,16+32)")
    keys = [k.strip() for k in name.split("+")]
    choices = []
    for raw in split_values(values):
        parts = [p.strip() for p in raw.split("+")] if len(keys) > 1 else [raw]
        if len(parts) != len(keys) or not all(parts):
            raise SweepDefinitionError(
                f"--grid {name}: the choice {raw!r} has {len(parts)} part(s) for {len(keys)} "
                f"paired keys; write each choice as {'+'.join('V' + str(i + 1) for i in range(len(keys)))}, "
                f"e.g. {name}=8+16,16+32")
        choices.append([_value_text(k, p) for k, p in zip(keys, parts)])
    if len({tuple(c) for c in choices}) != len(choices):
        raise SweepDefinitionError(f"--grid {name}: a value is listed twice ({values})")
    return GridAxis(keys, choices)


def parse_range(text: str) -> RangeAxis:
    key, sep, spec = text.partition("=")
    key, spec = key.strip(), spec.strip()
    kind, colon, bounds = spec.partition(":")
    if not colon:
        kind, bounds = "float", spec
    low, dots, high = bounds.partition("..")
    expected = (f"--range {text!r}: expected KEY=KIND:LOW..HIGH with KIND one of "
                f"{', '.join(RANGE_KINDS)}, e.g. train.learning_rate=log:1e-5..1e-3")
    if not sep or not key or kind not in RANGE_KINDS or not dots:
        raise SweepDefinitionError(expected)
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise SweepDefinitionError(expected) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise SweepDefinitionError(f"--range {key}: LOW must be below HIGH, got {low}..{high}")
    if kind == "log" and lo <= 0:
        raise SweepDefinitionError(f"--range {key}: a log range needs LOW > 0, got {low}")
    if kind == "int" and (lo != int(lo) or hi != int(hi)):
        raise SweepDefinitionError(f"--range {key}: an int range needs whole bounds, got {low}..{high}")
    return RangeAxis(key, kind, lo, hi)


def from_profile_section(section: dict) -> tuple[list[str], list[str], dict]:
    """A validated [sweep] table -> (grid texts, range texts, options), the same strings the
    command line takes, so both paths share one parser."""
    grid = []
    for name, values in (section.get("grid") or {}).items():
        grid.append(f"{name}=" + ",".join(_toml_text(v) for v in values))
    ranges = [f"{k}={v}" for k, v in (section.get("ranges") or {}).items()]
    options = {k: section[k] for k in ("trials", "parallel", "prune") if k in section}
    return grid, ranges, options


def _toml_text(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, (list, str, int, float)) for v in value) \
            and not all(isinstance(v, str) for v in value):
        return "+".join(_toml_text(v) for v in value)  # a paired choice: [8, 16]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)


def build_definition(profile: Profile, grid: list[str], ranges: list[str], trials: int | None,
                     parallel: int | None, prune: bool | None) -> SweepDefinition:
    """Command-line axes win over the profile's [sweep] section (axis by axis)."""
    section = getattr(profile, "sweep", None) or {}
    p_grid, p_ranges, options = from_profile_section(section)
    axes = [parse_grid(t) for t in grid]
    typed = {k for a in axes for k in a.keys}
    axes += [a for a in (parse_grid(t) for t in p_grid) if not set(a.keys) & typed]
    rng = [parse_range(t) for t in ranges]
    typed_r = {r.key for r in rng}
    rng += [r for r in (parse_range(t) for t in p_ranges) if r.key not in typed_r]
    d = SweepDefinition(grid=axes, ranges=rng,
                        trials=trials if trials is not None else int(options.get("trials", 0)),
                        parallel=parallel if parallel is not None else int(options.get("parallel", 1)),
                        prune=prune if prune is not None else bool(options.get("prune", True)))
    seen: dict[str, str] = {}
    for axis_name, keys in [(a.name, a.keys) for a in d.grid] + [(r.key, [r.key]) for r in d.ranges]:
        for k in keys:
            if k in seen:
                raise SweepDefinitionError(f"{k} is on two axes ({seen[k]} and {axis_name}); "
                                           "give it once, or pair it with KEY1+KEY2=...")
            seen[k] = axis_name
    if not d.grid and not d.ranges:
        raise SweepDefinitionError(
            "nothing to sweep: give axes with --grid KEY=V1,V2 (e.g. --grid lora.r=8,16) or "
            "--range KEY=log:LOW..HIGH with --trials N, or a [sweep] section in the profile")
    if d.ranges and not d.sampled:
        raise SweepDefinitionError("--range axes are sampled: say how many trials with --trials N")
    if d.trials < 0 or d.parallel < 1:
        raise SweepDefinitionError("--trials must be >= 1 and --parallel >= 1")
    check_axes(profile, d)
    return d


def check_axes(profile: Profile, d: SweepDefinition) -> None:
    """Every choice must make a valid profile: checked now, through the profile's own
    validation (with its did-you-mean), not one failed trial at a time."""
    problems: list[str] = []
    for axis in d.grid:
        for choice in axis.values:
            try:
                profile.with_overrides([f"{k}={v}" for k, v in zip(axis.keys, choice)])
            except ProfileError as exc:
                problems += [f"--grid {axis.name}: {i.key}: {i.message}" for i in exc.issues]
    for r in d.ranges:
        for value in (r.low, r.high):
            text = str(int(value)) if r.kind == "int" else repr(float(value))
            try:
                profile.with_overrides([f"{r.key}={text}"])
            except ProfileError as exc:
                problems += [f"--range {r.key}: {i.key}: {i.message}" for i in exc.issues]
    if problems:
        unique = list(dict.fromkeys(problems))
        raise SweepDefinitionError("the sweep's axes do not make valid profiles:\n  " + "\n  ".join(unique))


def overrides_for(d: SweepDefinition, params: dict[str, Any]) -> list[str]:
    """{axis name: choice label or sampled number} -> `--set` overrides."""
    out = []
    for axis in d.grid:
        label = params[axis.name]
        choice = axis.values[axis.labels().index(label)]
        out += [f"{k}={v}" for k, v in zip(axis.keys, choice)]
    for r in d.ranges:
        value = params[r.key]
        out.append(f"{r.key}={int(value)}" if r.kind == "int" else f"{r.key}={float(value)!r}")
    return out


def short_label(overrides: list[str]) -> str:
    """`lora.r=16 train.learning_rate=0.0005` -> `r=16 learning_rate=5e-04`: for tables."""
    parts = []
    for text in overrides:
        key, value = parse_override(text)
        short = key.split(".")[-1]
        if isinstance(value, float):
            parts.append(f"{short}={value:.3g}")
        elif isinstance(value, list):
            parts.append(f"{short}=" + ("attention" if value == ["q_proj", "k_proj", "v_proj", "o_proj"]
                                         else ",".join(map(str, value))))
        else:
            parts.append(f"{short}={value}")
    return " ".join(parts)
