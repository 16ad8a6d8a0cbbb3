"""From `workbench --run PROFILE` to the first optimizer step (issue 25 item 2, issue 29 item 3).

Each run is the real command in a subprocess (foreground, as a user types it; PYTHONUNBUFFERED
so every printed line is timestamped as it comes), and the phases are read from the printed
lines and the run's events (events.jsonl, each with its `time`):

- start -> "planning ...": the interpreter, the command line's imports, the profile;
- -> "device ...": planning (hardware, tokenizer, data read and tokenized, or read back from
  the tokenized-data cache);
- -> "loading model": the run folder, the runner's imports (torch, transformers, trl...);
- -> model loaded: the memory estimate, the weights, the adapter (the runner's next status);
- -> first step: the trainer built (TRL's dataset preparation), the first optimizer step
  itself (the "log" event of step 1; `logging_first_step` is always on).

Each profile runs twice with one tokenized-data cache (WORKBENCH_TOKEN_CACHE, a fresh folder):
the first run tokenizes and fills it, the second should read it back. The evaluation after
training stays on (the default), so the run times its cost after the first step as a user's
run does; once that cost is stated (or 60 s after the first step), the bench stops the run
(SIGTERM: checkpoint, stopped) rather than wait for the evaluation itself.

Apart, in one process each (imports done first, not counted): the model load alone
(from_pretrained + the LoRA adapter, as the runner does it) and the tokenization alone (the
method's prepare_data: the file read, split and rendered to token ids, no cache), so that
"model load + tokenization + at most 2 s" can be checked; and a second step's time (log of
step 3 - log of step 2; the probes run between steps 1 and 2) as the cost of one step's
compute, the first step's share of the total.

    flock -x /tmp/bench.lock python bench/time_to_first_step.py --write bench/time_to_first_step.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from _shared import cpu_machine

REPO = Path(__file__).resolve().parent.parent
SMOLLM2 = Path.home() / ".cache" / "workbench" / "models" / "SmolLM2-135M-Instruct"
ALPACA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"
TARGET_OVERHEAD_S = 2.0
MAX_STEPS = 4


def profiles() -> dict[str, list[str]]:
    """name -> `workbench --run` arguments."""
    return {
        "demo": ["demo", "--set", f"train.max_steps={MAX_STEPS}", "--set", "train.logging_steps=1"],
        "smollm2": ["demo", "--set", f"model.name_or_path={SMOLLM2}",
                    "--set", f"data.train={ALPACA}", "--set", "train.max_seq_len=512",
                    "--set", "lora.r=16", "--set", "lora.target_modules=all-linear",
                    "--set", "train.batch_size=4", "--set", "train.grad_accum=1",
                    "--set", f"train.max_steps={MAX_STEPS}", "--set", "train.logging_steps=1",
                    "--set", "train.learning_rate=2e-4",
                    "--set", "eval.prompts=", "--set", "name=smollm2"],
    }


def one_run(args: list[str], runs: Path, cache: Path) -> dict:
    """Start the command, timestamp its lines, follow its events until the first step (and
    the evaluation's stated cost), then stop it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               WORKBENCH_TOKEN_CACHE=str(cache))
    lines: list[tuple[float, str]] = []
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "--run", *args,
                             "--runs-dir", str(runs)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    events: list[dict] = []
    first_step = stated = None
    while proc.poll() is None:
        time.sleep(0.2)
        folders = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
        if not folders or not (folders[0] / "events.jsonl").exists():
            continue
        events = [json.loads(x) for x in (folders[0] / "events.jsonl").read_text().splitlines()
                  if x.strip()]
        first_step = first_step or next((e["time"] for e in events if e["type"] == "log"), None)
        stated = next((e["time"] for e in events if e["type"] == "status" and (
            e.get("message") or "").startswith("evaluation after training: ")), None)
        steps = [e for e in events if e["type"] == "log"]
        if first_step and len(steps) >= 3 and (stated or time.time() - first_step > 60):
            proc.send_signal(signal.SIGTERM)  # checkpoint, stopped: the evaluation is not timed here
            break
    proc.wait(timeout=600)
    reader.join(timeout=10)
    folder = next(p for p in runs.iterdir() if p.is_dir())
    events = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines() if x.strip()]
    return {"started": started, "lines": lines, "events": events, "code": proc.returncode}


def phases(r: dict) -> dict:
    """Seconds of each phase (see the module's docstring) and what was said."""
    t0, lines, events = r["started"], r["lines"], r["events"]

    def line_at(prefix: str) -> float | None:
        return next((t for t, text in lines if text.startswith(prefix)), None)

    def status_at(message: str, after: float = 0.0) -> float | None:
        return next((e["time"] for e in events if e["type"] == "status"
                     and (e.get("message") or "").startswith(message) and e["time"] >= after), None)

    planning = line_at("planning ")
    planned = line_at("device ")
    loading = status_at("loading model")
    after_load = next((e["time"] for e in events if e["type"] == "status" and loading
                       and e["time"] > loading and e.get("message") != "loading model"), None)
    logs = [e for e in events if e["type"] == "log"]
    first = logs[0]["time"] if logs else None
    # one step's compute: steps 2 -> 3 (the probes run between steps 1 and 2)
    second, third = (logs[1]["time"], logs[2]["time"]) if len(logs) > 2 else (None, None)
    timing = status_at("timing the evaluation")
    stated = status_at("evaluation after training: ", timing or 0.0)
    cache_line = next((text for _, text in lines if "cache" in text.lower()), "")
    return {
        "cli": planning - t0 if planning else None,
        "plan": planned - planning if planned and planning else None,
        "to_loading": loading - planned if loading and planned else None,
        "load": after_load - loading if after_load and loading else None,
        "to_first_step": first - after_load if first and after_load else None,
        "total": first - t0 if first else None,
        "step": third - second if second and third else None,
        "probe": stated - timing if stated and timing else None,
        # events' times are to the millisecond: the file's order says which came first
        "probe_after_step": bool(timing and first and timing >= first),
        "stated": next((e["message"] for e in events if e["type"] == "status" and (
            e.get("message") or "").startswith("evaluation after training: ") and timing
            and e["time"] >= timing), ""),
        "cache_line": cache_line,
        "said": [(round(e["time"] - t0, 2), e.get("message")) for e in events
                 if e["type"] == "status"][:12],
        "printed": [(round(t - t0, 2), text) for t, text in lines][:14],
    }


ALONE = r"""
import json, sys, time
from workbench.profile import load_profile
from workbench.train.plan import plan_run, profile_chat_format, load_tokenizer
from workbench.train.runner import add_adapters, load_model
from workbench.quiet import quiet_libraries
import torch, transformers, peft, trl  # imports first: not the load's nor the tokenization's
quiet_libraries()
from workbench.train.threads import size_torch_threads
size_torch_threads()
profile = load_profile(sys.argv[1], json.loads(sys.argv[2]))
plan = plan_run(profile)
tok = load_tokenizer(profile)
fmt = profile_chat_format(tok, profile)
t = time.perf_counter(); plan.method.prepare_data(profile, tok, fmt, lambda s: None)
tokenize = time.perf_counter() - t
t = time.perf_counter(); model = add_adapters(load_model(plan), plan)
load = time.perf_counter() - t
print(json.dumps({"tokenize": tokenize, "load": load, "rows": len(plan.train_rows) + len(plan.eval_rows)}))
"""


def alone(args: list[str], cache: Path) -> dict:
    """Model load and tokenization alone, in a process of their own (imports excluded)."""
    ref, sets = args[0], [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WORKBENCH_TOKEN_CACHE=str(cache))
    profile = REPO / "profiles" / f"{ref}.toml"
    proc = subprocess.run([sys.executable, "-c", ALONE, str(profile), json.dumps(sets)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"the model load / tokenization probe failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="demo,smollm2", help="comma-separated: demo, smollm2")
    ap.add_argument("--write", type=Path)
    opts = ap.parse_args()
    chosen = opts.profiles.split(",")
    if "smollm2" in chosen and not ((SMOLLM2 / "config.json").is_file() and ALPACA.is_file()):
        print(f"time_to_first_step: {SMOLLM2} or {ALPACA} is missing; run with --profiles demo. "
              "Nothing was measured.", file=sys.stderr)
        return 2
    rows, alones = [], {}
    for name in chosen:
        args = profiles()[name]
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "token-cache"
            for attempt in ("first", "second"):
                r = one_run(args, Path(tmp) / f"runs-{attempt}", cache)
                p = phases(r)
                print(f"{name} {attempt}: {fmt(p['total'])} s to the first step "
                      f"(exit {r['code']})", flush=True)
                rows.append((name, attempt, p))
            alones[name] = alone(args, Path(tmp) / "cold-cache")
            print(f"{name} alone: {alones[name]}", flush=True)
    import torch
    import transformers
    import trl

    lines = ["# Time to the first optimizer step", "",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {cpu_machine()}; load average before: {os.getloadavg()[0]:.2f}",
             f"- versions: Python {sys.version.split()[0]}, torch {torch.__version__}, "
             f"transformers {transformers.__version__}, trl {trl.__version__}, peft "
             f"{metadata.version('peft')}",
             "- command: `flock -x /tmp/bench.lock python bench/time_to_first_step.py"
             + (f" --profiles {opts.profiles}" if opts.profiles != "demo,smollm2" else "") + "`",
             "- demo: `workbench --run demo --set train.max_steps=4 --set train.logging_steps=1` "
             "(the bundled tiny model, 600 EN->FR rows, batch 4 x grad_accum 4)",
             f"- smollm2: the demo profile with model.name_or_path={SMOLLM2}, data.train="
             f"{ALPACA}, train.max_seq_len=512, lora.r=16, lora.target_modules=all-linear, "
             "train.batch_size=4, train.grad_accum=1, train.max_steps=4, no prompt suite",
             "- eval.after_training stays true (its cost is timed after the first step, as in "
             "a user's run); the bench stops each run (SIGTERM) once that cost is stated",
             "- first run: an empty tokenized-data cache; second run: the same cache, warm", "",
             "Seconds from the command's start. cli: to the \"planning\" line (interpreter, "
             "imports, profile); plan: planning (tokenizer, data read and tokenized); to "
             "loading: run folder, runner imports; load: memory estimate, weights, adapter; to "
             "step 1: trainer built (TRL's dataset preparation) and the first step's own "
             "compute; one step: log of step 3 - log of step 2 (one step's compute; the "
             "evaluation's probes run between steps 1 and 2).", "",
             "| profile | run | cli | plan | to loading | load | to step 1 | **total** | one step "
             "| probe after step 1 (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, attempt, p in rows:
        probe = (f"yes ({fmt(p['probe'])})" if p["probe_after_step"] else "no")
        lines.append(f"| {name} | {attempt} | {fmt(p['cli'])} | {fmt(p['plan'])} | "
                     f"{fmt(p['to_loading'])} | {fmt(p['load'])} | {fmt(p['to_first_step'])} | "
                     f"**{fmt(p['total'])}** | {fmt(p['step'])} | {probe} |")
    lines += ["", "Alone, in a process of their own after the imports: model load = "
              "from_pretrained + LoRA adapter (runner.load_model, add_adapters); tokenization = "
              "the method's prepare_data (read, split, render to token ids; no cache).", "",
              "| profile | rows | model load s | tokenization s | first run total s | "
              "other overhead s (total - load - tokenization - one step) | target <= 2 s |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for name in chosen:
        first = next(p for n, a, p in rows if n == name and a == "first")
        a = alones[name]
        other = (first["total"] - a["load"] - a["tokenize"] - (first["step"] or 0.0)
                 if first["total"] else None)
        lines.append(f"| {name} | {a['rows']} | {a['load']:.2f} | {a['tokenize']:.2f} | "
                     f"{fmt(first['total'])} | {fmt(other)} | "
                     + ("met" if other is not None and other <= TARGET_OVERHEAD_S else "NOT met")
                     + " |")
    lines += ["", "## What each run said, and when", ""]
    for name, attempt, p in rows:
        lines += [f"{name}, {attempt} run: printed "
                  + "; ".join(f"{t:.2f} s `{text[:90]}`" for t, text in p["printed"]
                              if text.strip()), "",
                  f"{name}, {attempt} run: status events "
                  + "; ".join(f"{t:.2f} s `{(m or '')[:90]}`" for t, m in p["said"]), ""]
        if p["stated"]:
            lines += [f"stated: `{p['stated']}`", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if opts.write:
        opts.write.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
