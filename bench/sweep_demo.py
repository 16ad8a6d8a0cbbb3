"""Benchmark the issue's sweep command on the CPU, end to end, as a user runs it:

    workbench sweep demo --grid lora.r=4,16 --grid train.learning_rate=5e-4,2e-3

Measures the sweep's wall time (command start to exit), each trial's process wall time (from
its start by the sweep to the sweep seeing it end: imports, planning, training, evaluation),
each trial's run time (the run folder's started_at -> ended_at) and the overhead of the sweep
machinery: the sweep's wall time minus the time its trial processes ran, per trial, as a share
of a trial. Target (issue 14): under 5% of the trial time.

    HF_HUB_OFFLINE=1 python bench/sweep_demo.py [--set train.max_steps=60] [--write bench/sweep_demo.md]
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

COMMAND = ["sweep", "demo", "--grid", "lora.r=4,16", "--grid", "train.learning_rate=5e-4,2e-3"]


def run_sweep(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        cmd = [sys.executable, "-m", "workbench", *COMMAND, *extra, "--runs-dir", "runs",
               "--sweeps-dir", "sweeps"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed:\n{proc.stdout}\n{proc.stderr}")
        (sweep,) = (Path(tmp) / "sweeps").iterdir()
        trials = json.loads((sweep / "trials.json").read_text())
        status = json.loads((sweep / "status.json").read_text())
        loop = (datetime.fromisoformat(status["ended_at"])
                - datetime.fromisoformat(status["started_at"])).total_seconds()
        rows = []
        for t in trials:
            run = json.loads((Path(t["run"]) / "status.json").read_text())
            run_s = (datetime.fromisoformat(run["ended_at"])
                     - datetime.fromisoformat(run["started_at"])).total_seconds()
            rows.append({"label": t["label"], "state": t["state"], "process_s": t["process_s"],
                         "run_s": run_s, "train_s": run.get("train_seconds"),
                         "eval_loss": run.get("eval_loss"), "steps": run.get("step")})
        ranked = [line for line in proc.stdout.splitlines() if line.startswith("recommendation:")]
        return {"wall_s": wall, "loop_s": loop, "trials": rows,
                "recommendation": ranked[0] if ranked else "", "stdout": proc.stdout}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    extra = [a for s in args.overrides for a in ("--set", s)]
    r = run_sweep(extra)
    n = len(r["trials"])
    in_trials = sum(t["process_s"] for t in r["trials"])
    overhead = (r["wall_s"] - in_trials) / n
    mean_trial = in_trials / n
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "transformers", "peft",
                                                                 "trl", "optuna"))
    lines = [
        "# `workbench sweep demo --grid lora.r=4,16 --grid train.learning_rate=5e-4,2e-3`", "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_machine()}, no GPU; other processes were using the same cores",
        f"- Python {platform.python_version()}; {versions}",
        f"- command: `HF_HUB_OFFLINE=1 python bench/sweep_demo.py{' ' + ' '.join('--set ' + s for s in args.overrides) if args.overrides else ''} --write bench/sweep_demo.md`",
        "- trial process: from its start by the sweep to the sweep seeing it end (imports, "
        "planning, training, evaluation after training); run: the run folder's started_at -> ended_at",
        "- overhead of the sweep machinery per trial: (sweep wall - sum of trial process times) / "
        "trials: starting Python and Optuna, the memory check, the study (SQLite), bookkeeping, "
        "polling, the report", "",
        "| trial | state | steps | eval loss | trial process s | run s | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in r["trials"]:
        lines.append(f"| {t['label']} | {t['state']} | {t['steps']} | "
                     f"{t['eval_loss']:.4f} | {t['process_s']:.1f} | {t['run_s']:.0f} | "
                     f"{t['train_s'] if t['train_s'] is not None else '-'} |")
    lines += ["",
              f"- sweep wall time: {r['wall_s']:.1f} s for {n} trials (the loop itself: {r['loop_s']:.0f} s)",
              f"- mean trial process time: {mean_trial:.1f} s",
              f"- sweep overhead per trial: {overhead:.2f} s = {overhead / mean_trial:.1%} of a trial "
              f"(target: under 5%)",
              f"- {r['recommendation']}", ""]
    text = "\n".join(lines)
    print(text)
    print(r["stdout"])
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
