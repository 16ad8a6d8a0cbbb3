"""The evaluation's stated cost against what the evaluation then took, on whole runs (issue 25).

A run states the cost of its evaluation after training right after its first optimizer step
(workbench/pipeline/timing.py, from the small probes of workbench/evaluate/cost.py). This runs
`workbench --run PROFILE` to the end and compares that statement (status.json's
eval_estimate_s, and how long the probes took) with the evaluation's measured span: from the
last training event (the last log or checkpoint) to the final status. The span includes saving
the adapter (well under a second here) and the report.

Runs: the demo profile (tiny model, 60 held-out rows x 3 systems and the 40-prompt suite),
shortened to `--demo-steps`; and SmolLM2-135M-Instruct on the Alpaca demo file with
eval.max_test_rows `--smollm2-rows` and eval.max_new_tokens 32, 4 training steps (the answers
of a barely trained model run long, as the estimate assumes).

    flock -x /tmp/bench.lock python bench/eval_cost_check.py --write bench/eval_cost_check.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _shared import cpu_machine

REPO = Path(__file__).resolve().parent.parent
SMOLLM2 = Path.home() / ".cache" / "workbench" / "models" / "SmolLM2-135M-Instruct"
ALPACA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"


def one(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1", WORKBENCH_TOKEN_CACHE=str(Path(tmp) / "cache"))
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "workbench", "--run", *args, "--runs-dir",
                               str(Path(tmp) / "runs")], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=3600)
        wall = time.time() - started
        if proc.returncode != 0:
            raise SystemExit(f"the run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        run = next(p for p in (Path(tmp) / "runs").iterdir() if p.is_dir())
        status = json.loads((run / "status.json").read_text())
        events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    timing = next(e["time"] for e in events if e.get("message", "").startswith("timing the eval"))
    stated = next(e for e in events if e["type"] == "status" and e["time"] >= timing
                  and e.get("message", "").startswith("evaluation after training: "))
    trained = max(e["time"] for e in events if e["type"] in ("log", "checkpoint"))
    return {"estimate": status["eval_estimate_s"], "measured": events[-1]["time"] - trained,
            "probe": stated["time"] - timing, "message": stated["message"], "wall": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-steps", type=int, default=20)
    ap.add_argument("--smollm2-rows", type=int, default=24)
    ap.add_argument("--profiles", default="demo,smollm2")
    ap.add_argument("--write", type=Path)
    opts = ap.parse_args()
    runs = {
        "demo": ["demo", "--set", f"train.max_steps={opts.demo_steps}"],
        "smollm2": ["demo", "--set", f"model.name_or_path={SMOLLM2}", "--set",
                    f"data.train={ALPACA}", "--set", "train.max_seq_len=512", "--set",
                    "lora.target_modules=all-linear", "--set", "train.grad_accum=1", "--set",
                    "train.max_steps=4", "--set", "train.eval_steps=0", "--set", "eval.prompts=",
                    "--set", f"eval.max_test_rows={opts.smollm2_rows}", "--set",
                    "eval.max_new_tokens=32", "--set", "train.learning_rate=2e-4"],
    }
    rows = []
    for name in opts.profiles.split(","):
        r = one(runs[name])
        print(f"{name}: stated {r['estimate']:.1f} s, measured {r['measured']:.1f} s, probes "
              f"{r['probe']:.2f} s", flush=True)
        rows.append((name, r))
    lines = ["# The evaluation's stated cost vs the evaluation", "",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {cpu_machine()}",
             "- command: `flock -x /tmp/bench.lock python bench/eval_cost_check.py`"
             f" (--demo-steps {opts.demo_steps}, --smollm2-rows {opts.smollm2_rows})",
             "- stated: status.json eval_estimate_s, said after the first optimizer step; "
             "measured: the last training event to the final status", "",
             "| run | probes s | stated s | measured s | stated / measured |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['probe']:.2f} | {r['estimate']:.1f} | {r['measured']:.1f} | "
                     f"{r['estimate'] / r['measured']:.2f}x |")
    lines += [""] + [f"- {name}: `{r['message']}`" for name, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if opts.write:
        opts.write.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
