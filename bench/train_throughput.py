"""Trained tokens per second and peak RSS: TRL's SFTTrainer used directly vs `workbench --run`.

Issue 25's workload: SmolLM2-135M-Instruct, ../shared/data/alpaca_en_demo.json rendered
through the model's chat template (answers trained on), max_seq_len 512, LoRA r=16 alpha 32
all-linear dropout 0.05, batch 4, grad_accum 1, fp32, no gradient checkpointing, lr 2e-4,
seed 42, the same number of optimizer steps for every configuration:

  (a) trl_default   TRL's SFTTrainer with its batching defaults (each batch padded to its
                    longest row, random order)
  (b) trl_bfd       TRL with packing="bfd" (best-fit packs of max_length, padding-free: the
                    packs of a batch flattened into one sequence)
      trl_pf        TRL with padding_free=True (the batch's rows flattened, no packing)
  (c) workbench     `workbench --run` with its defaults (train.packing = "auto")
      workbench_pad `workbench --run` with train.packing = false (padded as TRL pads)

TRL trains on the workbench's rendered rows (the same token ids and labels), so every
configuration sees identical tokens; what differs is how they are batched. Each one runs in its
own process (its peak RSS is its own). Tokens/s = real (non-padding) tokens of steps 3..N over
the time from the end of step 2 to the end of step N; the loss is the mean logged loss of the
last three steps (packed steps hold more rows, so it is read with the tokens seen).

    HF_HUB_OFFLINE=1 python bench/train_throughput.py [--steps 12] [--only trl_default,...]
        [--write bench/train_throughput.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import header_lines

REPO = Path(__file__).resolve().parent.parent
MODEL = Path(os.environ.get("WORKBENCH_SMOLLM2", Path.home() / ".cache/workbench/models/SmolLM2-135M-Instruct"))
DATA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"
CONFIGS = ("trl_default", "trl_bfd", "trl_pf", "workbench", "workbench_pad")
SEQ, BATCH, LR, SEED = 512, 4, 2e-4, 42


def profile_text(steps: int, packing: str, runs: Path) -> str:
    return f"""
name = "throughput"
[model]
name_or_path = "{MODEL}"
[data]
train = "{DATA}"
validation_split = 0
[lora]
r = 16
alpha = 32
dropout = 0.05
target_modules = "all-linear"
[train]
max_steps = {steps}
batch_size = {BATCH}
grad_accum = 1
learning_rate = {LR}
warmup_ratio = 0
logging_steps = 1
eval_steps = 0
save_steps = 100000
max_seq_len = {SEQ}
precision = "fp32"
gradient_checkpointing = false
device = "cpu"
seed = {SEED}
packing = {packing}
runs_dir = "{runs}"
[eval]
after_training = false
"""


def rendered_rows(profile_path: Path):
    """The workbench's own rendering of the data (token ids and labels), for TRL to train on."""
    from workbench.profile import load_profile
    from workbench.train.methods.sft import with_labels
    from workbench.train.plan import plan_run

    plan = plan_run(load_profile(str(profile_path)))
    return with_labels(plan.train_rows), plan.tokenizer


def run_trl(config: str, steps: int, tmp: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from workbench.train.threads import size_torch_threads

    size_torch_threads()  # the workbench sizes its threads the same way (train/threads.py)
    profile = tmp / "p.toml"
    profile.write_text(profile_text(steps, "false", tmp / "runs"))
    rows, tokenizer = rendered_rows(profile)
    set_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="sdpa")
    marks: dict[int, tuple[float, int]] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks[state.global_step] = (time.perf_counter(), 0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs and state.global_step in marks:
                marks[state.global_step] = (marks[state.global_step][0], int(logs["num_tokens"]))

    extra = {"trl_default": {}, "trl_bfd": {"packing": True, "packing_strategy": "bfd"},
             "trl_pf": {"padding_free": True, "max_length": None}}[config]
    args = SFTConfig(output_dir=str(tmp / "out"), max_steps=steps, per_device_train_batch_size=BATCH,
                     gradient_accumulation_steps=1, learning_rate=LR, warmup_steps=0,
                     lr_scheduler_type="cosine", max_grad_norm=0.3, logging_steps=1, save_strategy="no",
                     report_to="none", use_cpu=True, bf16=False, fp16=False,
                     gradient_checkpointing=False, seed=SEED, data_seed=SEED, disable_tqdm=True,
                     dataloader_num_workers=0, **{"max_length": SEQ, **extra})
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft, callbacks=[Clock()])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return _result(marks, losses, steps)


def run_workbench(config: str, steps: int, tmp: Path) -> dict:
    from workbench.cli import main

    profile = tmp / "p.toml"
    runs = tmp / "runs"
    profile.write_text(profile_text(steps, '"auto"' if config == "workbench" else "false", runs))
    code = main(["--run", str(profile)])
    if code != 0:
        raise SystemExit(f"workbench --run exited {code}")
    run = next(p for p in runs.iterdir() if p.is_dir())
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    logs = [e for e in events if e["type"] == "log"]
    marks = {e["step"]: (e["time"], e.get("tokens") or 0) for e in logs}
    return _result(marks, [e["loss"] for e in logs], steps)


def _result(marks: dict, losses: list[float], steps: int) -> dict:
    t2, n2 = marks[2]
    tn, nn = marks[steps]
    return {"seconds": round(tn - t2, 2), "tokens": nn - n2,
            "tokens_per_s": round((nn - n2) / (tn - t2), 1) if nn else None,
            "loss_last3": round(sum(losses[-3:]) / 3, 4), "tokens_seen": nn,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child(config: str, steps: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        runner = run_workbench if config.startswith("workbench") else run_trl
        result = runner(config, steps, Path(tmp))
    print("RESULT " + json.dumps(result), flush=True)


def measure(config: str, steps: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", config, "--steps", str(steps)],
                          capture_output=True, text=True, cwd=REPO / "bench")
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{config} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def table(results: dict, steps: int) -> str:
    base = results.get("trl_default", {}).get("tokens_per_s")
    lines = header_lines(
        "Training throughput: TRL used directly vs `workbench --run` (CPU)",
        f"HF_HUB_OFFLINE=1 python bench/train_throughput.py --steps {steps} "
        "--write bench/train_throughput.md") + [
        f"- workload: SmolLM2-135M-Instruct, alpaca_en_demo.json (all rows, the workbench's rendering), "
        f"max_seq_len {SEQ}, LoRA r=16 all-linear, batch {BATCH}, grad_accum 1, fp32, no "
        f"checkpointing, {steps} optimizer steps; timed: steps 3..{steps}",
        "- tokens/s: real (non-padding) tokens through the model per second; x TRL: against (a)",
        "",
        "| config | s (steps 3..N) | tokens | tokens/s | x TRL defaults | peak RSS MiB | loss (last 3 steps) | tokens seen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"trl_default": "(a) TRL SFTTrainer, defaults (padded)",
             "trl_bfd": "(b) TRL, packing=\"bfd\" (padding-free)",
             "trl_pf": "(b) TRL, padding_free=True",
             "workbench": "(c) workbench --run (packing auto)",
             "workbench_pad": "workbench --run, packing = false"}
    for config, r in results.items():
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base and r.get("tokens_per_s") else ""
        lines.append(f"| {names[config]} | {r['seconds']} | {r['tokens']:,} | {r['tokens_per_s']} | "
                     f"{ratio} | {r['peak_rss_mib']} | {r['loss_last3']} | {r['tokens_seen']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--only", default=",".join(CONFIGS))
    parser.add_argument("--child")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps)
    if not (MODEL / "config.json").exists() or not DATA.exists():
        raise SystemExit(f"needs {MODEL} (`python -m workbench.models.smollm2`) and {DATA}")
    results = {}
    for config in args.only.split(","):
        results[config] = measure(config, args.steps)
        print(config, results[config], flush=True)
    text = table(results, args.steps)
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
