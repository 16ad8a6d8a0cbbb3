"""The demo run on a machine another process keeps busy: with the thread sizing of
workbench/train/threads.py, as before it (torch's default of one thread per core), and with
OpenMP's passive waiting (an alternative that was measured and left out).

    python bench/demo_under_load.py [--steps 40] [--hogs 1] [--write bench/demo_under_load.md]

`--hogs N` starts N busy-looping processes (one core each) for the duration of each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"


def run_demo(steps: int, hogs: int, env_extra: dict) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the run, its cpu log line)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_extra}
        burners = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        try:
            time.sleep(1.0)  # let the load show
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "workbench", "run", "demo", "--runs-dir", "runs",
                                   "--set", f"train.max_steps={steps}", "--set", "train.eval_steps=0",
                                   "--set", "eval.max_test_rows=5", "--set", "eval.prompts="],
                                  cwd=tmp, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
        finally:
            for b in burners:
                b.kill()
        if proc.returncode != 0:
            raise SystemExit(f"demo failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        run = next((Path(tmp) / "runs").iterdir())
        log = (run / "stdout.log").read_text()
        cpu_line = next((l for l in log.splitlines() if l.startswith("cpu:")), "")
        events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines() if x.strip()]
        train_s = next((e.get("train_runtime_s") for e in events if e.get("train_runtime_s")), None)
        return wall, train_s or 0.0, cpu_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--hogs", type=int, default=1)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    variants = {
        "sized to the idle cores (now)": {},
        f"one per core, {cores} (before)": {"WORKBENCH_CPU_THREADS": str(cores)},
        "sized, with OMP_WAIT_POLICY=PASSIVE (tried, left out)": {"OMP_WAIT_POLICY": "PASSIVE"},
    }
    rows = []
    for name, env in variants.items():
        for hogs in (0, args.hogs):
            wall, _, line = run_demo(args.steps, hogs, env)
            rows.append((name, hogs, wall, line))
            print(f"{name:55s} busy processes {hogs}: {wall:6.1f} s  {line}", flush=True)
    text = "\n".join([
        "# The demo under load from another process", "",
        f"Date: {dt.date.today().isoformat()}. {platform.machine()}, {cores} usable cores, Python "
        f"{platform.python_version()}. `workbench run demo --set train.max_steps={args.steps}` "
        "(no evaluation during training, 5 test rows at the end), wall time of the whole command.",
        f"Command: `python bench/demo_under_load.py --steps {args.steps} --hogs {args.hogs}`.", "",
        "| threads | busy processes | wall s | run log |", "|---|---:|---:|---|",
        *[f"| {n} | {h} | {w:.1f} | {l} |" for n, h, w, l in rows], ""])
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
