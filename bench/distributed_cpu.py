"""One process vs two processes (torchrun, gloo) on the CPU demo, at the same global batch.

What it measures, per run, through the real command line: wall time of the command, the
runner's own training time, training throughput (tokens/s as logged by the run: trl's
token count over all ranks, per logging window, averaged over the run) and the final loss.
One process: batch 4 x grad_accum 4; two processes: batch 4 x grad_accum 2 each: 16 rows
per optimizer step either way. Evaluation after training is off (it is not distributed).

On a 2-core machine two processes split the same cores: this shows what the launch path
costs (process start-up, rendezvous, gradient all-reduce over gloo), not a speed-up.

    HF_HUB_OFFLINE=1 python bench/distributed_cpu.py [--steps 60] [--repeat 2]
        [--write bench/distributed_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from _shared import cpu_machine

COMMON = ["--set", "eval.after_training=false", "--set", "train.eval_steps=0",
          "--set", "train.logging_steps=5", "--set", "train.save_steps=100000"]


def one_run(procs: int, steps: int) -> dict:
    accum = 4 // procs
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "workbench", "run", "demo", "--runs-dir", "runs",
               "--set", f"train.max_steps={steps}", "--set", f"train.grad_accum={accum}", *COMMON]
        if procs > 1:
            cmd += ["--procs", str(procs)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        run = next(p for p in (Path(tmp) / "runs").iterdir() if p.is_dir())
        status = json.loads((run / "status.json").read_text())
        events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
        logs = [e for e in events if e["type"] == "log"]
        rates = [e["tokens_per_s"] for e in logs if e.get("tokens_per_s")]
        threads = [line.split("torch uses ")[1].split(" ")[0]
                   for line in (run / "stdout.log").read_text().splitlines()
                   if "torch uses " in line]
        return {"procs": procs, "accum": accum, "wall_s": wall, "train_s": status["train_seconds"],
                "steps": status["step"], "tokens_per_s": statistics.mean(rates) if rates else None,
                "loss_last": logs[-1]["loss"], "threads": "+".join(threads) or "?"}


def table(results: list[dict], steps: int, repeat: int) -> str:
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in ("torch", "transformers", "trl"))
    lines = [
        "# One vs two CPU processes (torchrun, gloo) on the demo",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_machine()}, no GPU; load from other processes: "
        f"{os.getloadavg()[0]:.1f} (1-minute load average at the end)",
        f"- Python {platform.python_version()}; {versions}",
        f"- command: `HF_HUB_OFFLINE=1 python bench/distributed_cpu.py --steps {steps} "
        f"--repeat {repeat} --write bench/distributed_cpu.md`",
        "- same global batch: 1 process x batch 4 x accum 4 = 2 processes x batch 4 x accum 2 "
        "= 16 rows per step; tokens/s is the run's own logged throughput (all ranks), "
        "averaged over its logging windows; wall includes start-up (planning, torchrun "
        "rendezvous, model load on every rank)",
        "",
        "| processes | torch threads | run | wall s | train s | steps | tokens/s | final loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results):
        tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "n/a"
        lines.append(f"| {r['procs']} | {r['threads']} | {i % repeat + 1} | {r['wall_s']:.1f} | {r['train_s']:.1f} | "
                     f"{r['steps']} | {tps} | {r['loss_last']:.4f} |")
    lines += ["", "Reading it: the two processes share the machine's cores. Each process sizes "
              "its torch threads from the cores left idle by others (threads.py); two ranks get "
              "the cores divided between them. So a higher tokens/s with two processes means "
              "more cores were put to work (e.g. one thread each instead of one in all on a busy "
              "machine), not that the distributed path is faster; the wall time also pays two "
              "model loads and the torchrun rendezvous. The final loss at the same global "
              "batch is the check that matters here: the two runs learn the same way. On GPUs "
              "each rank has its own device; `workbench estimate PROFILE --gpus N` states the "
              "scaling factor it assumes there (not measured: no multi-GPU machine here).", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    results = [one_run(procs, args.steps) for procs in (1, 2) for _ in range(args.repeat)]
    text = table(results, args.steps, args.repeat)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
