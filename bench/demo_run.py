"""Benchmark the README's main command: `workbench --run demo`, end to end, as a user runs it.

Measures wall time from the command's start to its exit (imports, planning, training,
the prompt suite, saving), the loss first -> last, and base vs fine-tuned exact match on the
40 held-out prompts. Target (issue 2): finished within 5 minutes on 2 CPU cores.

    HF_HUB_OFFLINE=1 python bench/demo_run.py [--repeat 3] [--write bench/demo_run.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from _shared import cpu_machine


def one_run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "workbench", "--run", "demo", "--runs-dir",
                               "runs"], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"demo run failed:\n{proc.stdout}\n{proc.stderr}")
        run = next(p for p in (Path(tmp) / "runs").iterdir() if p.is_dir())
        status = json.loads((run / "status.json").read_text())
        events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
        losses = [e["loss"] for e in events if e["type"] == "log"]
        suite = json.loads((run / "prompt_suite.json").read_text())
        return {"wall_s": wall, "train_s": status["train_seconds"], "steps": status["step"],
                "loss_first": losses[0], "loss_last": losses[-1],
                "base": suite["base_correct"], "tuned": suite["fine_tuned_correct"],
                "scored": suite["scored"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows = [one_run() for _ in range(args.repeat)]
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in
                         ("torch", "transformers", "peft", "trl", "datasets"))
    lines = [
        "# `workbench --run demo`, end to end",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_machine()}, no GPU",
        f"- Python {platform.python_version()}; {versions}",
        "- command: `HF_HUB_OFFLINE=1 python bench/demo_run.py --repeat "
        f"{args.repeat} --write bench/demo_run.md`",
        "- wall: the whole command (imports, planning, training, prompt suite, saving); "
        "train: the runner's own training time",
        "- target: finished within 300 s on 2 cores; fine-tuned beats base on held-out prompts",
        "",
        "| run | wall s | train s | steps | loss first -> last | base correct | fine-tuned correct |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['steps']} | "
                     f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} | {r['base']}/{r['scored']} | "
                     f"{r['tuned']}/{r['scored']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
