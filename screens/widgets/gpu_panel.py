"""Every GPU's memory bar, utilization, temperature and power. Given data by the screen
(live NVML telemetry on the Runs screen, the run's `gpu` events on the Train screen); a
missing value reads "n/a", no GPU reads as the reason."""

from __future__ import annotations

from textual.markup import escape
from textual.widget import Widget

from screens.widgets.format import NA, bar


def _value(gpu: dict, key: str, unit: str = "", fmt: str = "") -> str:
    value = gpu.get(key)
    return NA if value is None else f"{format(value, fmt)}{unit}"


class GpuPanel(Widget):
    DEFAULT_CSS = """
    GpuPanel { height: auto; min-height: 3; padding: 0 1; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gpus: list[dict] | None = None  # None: not read yet
        self.reason = "reading GPU telemetry..."

    def show_gpus(self, gpus: list[dict], reason: str = "") -> None:
        if gpus == self.gpus and reason == self.reason:
            return  # nothing changed: no repaint, which keeps the idle app idle
        self.gpus, self.reason = gpus, reason
        self.refresh(layout=True)

    def render(self) -> str:
        if not self.gpus:
            return f"[$text-muted]{escape(self.reason or 'no NVIDIA GPU found')}[/]"
        width = max(self.size.width - 2, 20)
        lines = []
        for gpu in self.gpus:
            total, used = gpu.get("memory_total"), gpu.get("memory_used")
            frac = used / total if total and used is not None else None
            mem = (f"{used / 1024 ** 3:.1f}/{total / 1024 ** 3:.0f} GiB"
                   if frac is not None else NA)
            power = _value(gpu, "power_w", " W", ".0f")
            if gpu.get("power_limit_w") is not None:
                power += f"/{gpu['power_limit_w']:.0f} W"
            stats = (f"util {_value(gpu, 'utilization', '%')}  "
                     f"{_value(gpu, 'temperature_c', '°C')}  {power}")
            name = escape(f"{gpu.get('index', '?')} {gpu.get('name') or NA}")
            bar_width = max(width - len(mem) - 6, 6)
            color = "$error" if frac and frac > 0.9 else "$warning" if frac and frac > 0.75 else "$success"
            lines.append(f"[b]{name}[/b]")
            lines.append(f"mem [{color}]{bar(frac, bar_width)}[/] {mem}")
            lines.append(f"    {stats}")
        return "\n".join(lines)
