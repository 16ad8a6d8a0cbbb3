"""Benchmark the GRPO demo as shipped: `workbench --run profiles/grpo-demo.toml`, 100 steps.

Does the demo learn, and how long does it take? Each run is the CLI in a fresh temporary folder,
as a user runs it, with the evaluation after training left out (`--set
eval.after_training=false`; `--eval` keeps it). From the run's events.jsonl: the mean reward over
the first 20 and the last 20 logged steps (the demo logs every 2 steps and step 1: 51 logs in
100 steps, each the mean over the steps since the previous log), and over steps 1-20 and
the last 20 steps; the share of groups whose completions all scored the same (`frac_reward_zero_std`:
they teach nothing); the completion length; wall and training time.

    HF_HUB_OFFLINE=1 python bench/grpo_demo.py [--repeat 2] [--steps N] [--eval]
        [--write bench/grpo_demo.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from _shared import cpu_machine

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "profiles" / "grpo-demo.toml"
WINDOW = 20  # logged steps at each end


def one_run(steps: int | None, evaluate: bool, seed: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="grpo-demo-") as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        cmd = [sys.executable, "-m", "workbench", "--run", str(DEMO), "--runs-dir", "runs"]
        if not evaluate:
            cmd += ["--set", "eval.after_training=false"]
        if steps:
            cmd += ["--set", f"train.max_steps={steps}"]
        if seed is not None:
            cmd += ["--set", f"train.seed={seed}"]
        load = os.getloadavg()
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        if proc.returncode != 0:
            raise SystemExit(f"demo run failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
        run = next(p for p in (Path(tmp) / "runs").iterdir() if p.is_dir())
        status = json.loads((run / "status.json").read_text())
        events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
        logs = [e for e in events if e["type"] == "log"]
        threads = ""
        for log_file in run.glob("*.log"):
            found = re.search(r"cpu: torch uses .*", log_file.read_text(errors="replace"))
            if found:
                threads = found.group(0)
        return {"wall_s": wall, "train_s": status.get("train_seconds"), "steps": status.get("step"),
                "state": status.get("state"), "logs": logs, "load": load, "load_after": load_after,
                "threads": threads,
                "samples": sum(1 for e in events if e["type"] == "samples"),
                "last_samples": next((e["samples"] for e in reversed(events)
                                      if e["type"] == "samples"), [])}


def signal(logs: list[dict], name: str) -> list[float]:
    return [e["signals"][name] for e in logs if e.get("signals", {}).get(name) is not None]


def mean(xs: list[float]) -> float | None:
    return statistics.mean(xs) if xs else None


def summarize(r: dict) -> dict:
    logs = r["logs"]
    first, last = logs[:WINDOW], logs[-WINDOW:]
    steps = r["steps"] or 0
    early = [e for e in logs if e["step"] <= 20]
    late = [e for e in logs if e["step"] > max(steps - 20, 20)]
    out = {"n_logs": len(logs), "first_steps": (first[0]["step"], first[-1]["step"]) if first else None,
           "last_steps": (last[0]["step"], last[-1]["step"]) if last else None}
    for key, name in (("reward", "reward"), ("zero", "frac_reward_zero_std"),
                      ("length", "completions/mean_length"), ("clipped", "completions/clipped_ratio"),
                      ("overlap", "rewards/rewards.py:french_overlap/mean"),
                      ("exact", "rewards/answer:exact/mean")):
        out[f"{key}_first"] = mean(signal(first, name))
        out[f"{key}_last"] = mean(signal(last, name))
        out[f"{key}_early"] = mean(signal(early, name))
        out[f"{key}_late"] = mean(signal(late, name))
    out["loss_first"] = mean([e["loss"] for e in first if e.get("loss") is not None])
    out["loss_last"] = mean([e["loss"] for e in last if e.get("loss") is not None])
    return out


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--steps", type=int, help="train.max_steps (default: the demo's 100)")
    parser.add_argument("--longer", type=int, default=0, metavar="STEPS",
                        help="and one more run of the demo with train.max_steps=STEPS (its rewards "
                             "past step 100; 0: none)")
    parser.add_argument("--seeds", default="",
                        help="and one more run of the demo for each of these train.seed values "
                             "(comma-separated): how much the result owes to the seed")
    parser.add_argument("--eval", action="store_true", help="keep the evaluation after training")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    command = "HF_HUB_OFFLINE=1 python bench/grpo_demo.py " + " ".join(sys.argv[1:])
    runs = []
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    from workbench.profile import load_profile

    demo_seed = load_profile(DEMO, []).train.seed
    plan = ([(args.steps, None)] * args.repeat + [(args.steps, seed) for seed in seeds]
            + ([(args.longer, None)] if args.longer else []))
    for i, (steps, seed) in enumerate(plan):
        r = one_run(steps, args.eval, seed)
        r["seed"] = seed
        r["summary"] = summarize(r)
        s = r["summary"]
        print(f"run {i + 1}: {r['state']} at step {r['steps']} in {r['wall_s']:.0f} s (load "
              f"{r['load'][0]:.1f}); reward first {WINDOW} logs {_f(s['reward_first'])}, last "
              f"{WINDOW} {_f(s['reward_last'])}", flush=True)
        runs.append(r)
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in
                         ("torch", "transformers", "trl", "peft", "accelerate", "datasets"))
    lines = [
        "# The GRPO demo as shipped: `workbench --run profiles/grpo-demo.toml`",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_machine()}, no GPU; other engineers' tests shared the cores (1-minute "
        "load average at each run's start and end below)",
        f"- Python {platform.python_version()}; {versions}",
        f"- command: `{command}`; each run: `workbench --run profiles/grpo-demo.toml --runs-dir runs"
        + ("" if args.eval else " --set eval.after_training=false")
        + (f" --set train.max_steps={args.steps}" if args.steps else "") + "` in a fresh folder"
        + (f"; then one run for each of `--set train.seed=` {', '.join(map(str, seeds))}" if seeds else "")
        + (f"; the last run with `--set train.max_steps={args.longer}`" if args.longer else ""),
        "- the demo: assets/tiny-model + LoRA r 16, EN->FR prompts (600, 10% held out), 4 "
        "completions a prompt, batch 8 x grad_accum 2 (4 prompts a step), up to 16 completion "
        "tokens, temperature 1, beta 0, rewards rewards.py:french_overlap x1.0 + answer:exact x0.5 "
        "(the reward below is the weighted sum: at most 1.5), lr 5e-4, 100 steps, a log every 2 "
        "steps and at step 1",
        f"- first / last {WINDOW} logs: the mean of the first and the last {WINDOW} logged values "
        "(each logged value is the mean over the steps since the previous log); steps 1-20 / "
        "the last 20 steps: the logs at those steps; zero-variance groups: `frac_reward_zero_std`, the "
        "share of prompts whose 4 completions scored the same (no signal); wall: the whole "
        "command (imports, planning, loading, training, saving); train: status.json's train_seconds "
        "(from loading the model to the end of training)",
        "",
        f"| run | steps | seed | mean reward: first {WINDOW} logs -> last {WINDOW} | steps 1-20 -> last 20 steps | "
        "french_overlap first -> last | answer:exact first -> last | zero-variance groups first -> "
        "last | completion length (tokens) first -> last | cut at 16 tokens first -> last | "
        "loss first -> last | wall s | train s | load at start, end | torch threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        s = r["summary"]
        lines.append(
            f"| {i} | {r['steps']} | {demo_seed if r['seed'] is None else r['seed']} | "
            f"{_f(s['reward_first'])} -> **{_f(s['reward_last'])}** | "
            f"{_f(s['reward_early'])} -> {_f(s['reward_late'])} | {_f(s['overlap_first'])} -> "
            f"{_f(s['overlap_last'])} | {_f(s['exact_first'])} -> {_f(s['exact_last'])} | "
            f"{_f(s['zero_first'], 2)} -> {_f(s['zero_last'], 2)} | {_f(s['length_first'], 1)} -> "
            f"{_f(s['length_last'], 1)} | {_f(s['clipped_first'], 2)} -> {_f(s['clipped_last'], 2)} | "
            f"{_f(s['loss_first'])} -> {_f(s['loss_last'])} | {r['wall_s']:.0f} | "
            f"{_f(r['train_s'], 0)} | {r['load'][0]:.1f}, {r['load_after'][0]:.1f} | "
            f"{r['threads'].removeprefix('cpu: torch uses ') or '?'} |")
    by_seed = {}
    for r in runs:
        if r["steps"] == runs[0]["steps"]:
            by_seed[demo_seed if r["seed"] is None else r["seed"]] = r["summary"]
    if len(by_seed) > 1:
        last = [x["reward_last"] for x in by_seed.values()]
        late = [x["reward_late"] for x in by_seed.values()]
        lines += ["", f"Over the {len(by_seed)} seeds of the {runs[0]['steps']}-step runs: mean reward "
                  f"over the last {WINDOW} logs {statistics.mean(last):.3f} (from {min(last):.3f} to "
                  f"{max(last):.3f}), over the last 20 steps {statistics.mean(late):.3f} (from "
                  f"{min(late):.3f} to {max(late):.3f}). A run is deterministic for a given seed: "
                  "the repeats of one seed agree to the digit."]
    chosen = {r["threads"] for r in runs}
    if len(chosen) > 1:
        lines += ["", "The runs chose different torch thread counts: the workbench sizes them once, "
                  "at a run's start, from the other processes' load at that moment "
                  "(workbench/train/threads.py), and keeps them for the whole run: "
                  + "; ".join(f"run {i}: {r['threads'].removeprefix('cpu: torch uses ')}, train "
                              f"{_f(r['train_s'], 0)} s, 1-minute load {r['load'][0]:.1f} at its "
                              f"start and {r['load_after'][0]:.1f} at its end"
                              for i, r in enumerate(runs, 1)) + "."]
    lines += ["", f"The first {WINDOW} logs are steps {runs[0]['summary']['first_steps']}, the last "
              f"{WINDOW} steps {runs[0]['summary']['last_steps']} ({runs[0]['summary']['n_logs']} logs "
              f"a run); every run also wrote {runs[0]['samples']} samples events.", "",
              "Mean reward at each log (run 1), step: reward:", ""]
    logs = runs[0]["logs"]
    lines.append(", ".join(f"{e['step']}: {_f(e.get('signals', {}).get('reward'), 2)}" for e in logs))
    if args.longer:
        longer = runs[-1]
        lines += ["", f"The {longer['steps']}-step run (the last row): mean reward by 20 steps, "
                  "window: mean of its logs:", ""]
        windows = []
        for start in range(0, longer["steps"] or 0, 20):
            vals = signal([e for e in longer["logs"] if start < e["step"] <= start + 20], "reward")
            windows.append(f"{start + 1}-{start + 20}: {_f(mean(vals), 2)}")
        lines.append(", ".join(windows))
    if runs[0]["last_samples"]:
        lines += ["", "The last samples event of run 1 (the monitor's latest completions):", ""]
        for smp in runs[0]["last_samples"][:4]:
            lines.append(f"- {smp.get('prompt')!r} -> {smp.get('completion')!r}: total "
                         f"{smp.get('total')}, advantage {smp.get('advantage')}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
