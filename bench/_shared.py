"""Helpers the benchmark scripts share (run as `python bench/NAME.py`, so this folder is on
sys.path and `from _shared import ...` works)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_machine() -> str:
    """`2 CPU cores (AMD EPYC ...), Linux 6.x`: the CPU's model name from /proc/cpuinfo when
    there is one, for a results table's machine line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}"


def same_token_share(left: dict, right: dict) -> float:
    """Share of generated tokens that agree position by position between two {key: token ids}
    maps (1.0 = identical answers)."""
    agree = total = 0
    for key, ids in left.items():
        other = right.get(key, [])
        total += max(len(ids), len(other))
        agree += sum(1 for i, j in zip(ids, other) if i == j)
    return agree / total if total else 1.0


def header_lines(title: str, command: str,
                 packages: tuple[str, ...] = ("torch", "transformers", "trl", "peft")) -> list[str]:
    """A results file's head: title, date, machine, versions and the command that wrote it."""
    import sys
    from datetime import datetime, timezone
    from importlib import metadata

    versions = ", ".join(f"{p} {metadata.version(p)}" for p in packages)
    return [f"# {title}", "",
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {cpu_machine()}, no GPU",
            f"- Python {sys.version.split()[0]}; {versions}",
            f"- command: `{command}`"]
