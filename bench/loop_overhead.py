"""Benchmark: does the workbench's training loop cost time that TRL's SFTTrainer does not?

    HF_HUB_OFFLINE=1 flock -x /tmp/bench.lock python bench/loop_overhead.py
        [--model DIR] [--data FILE] [--steps 15] [--from-step 3] [--arms trl,ours]
        [--max-seq-len 512] [--batch-size 4] [--cprofile DIR] [--json FILE]

Issue 25: on SmolLM2-135M-Instruct, the Alpaca sample, LoRA r=16 all-linear, batch 4,
max_seq_len 512, fp32 without gradient checkpointing on 2 cores, optimizer steps 3..15 took
TRL's SFTTrainer 105-107 s and `workbench --run` 115-139 s.

Each arm runs in a fresh process, one after the other (take the exclusive lock: the two must
not share the cores):

- trl: `trl.SFTTrainer` + `SFTConfig` used directly, as a user would: the model loaded with
  `AutoModelForCausalLM.from_pretrained` (fp32), a `peft.LoraConfig` passed as `peft_config`,
  TRL's default collator (each batch padded to its longest row), TRL's default ordering (the
  HF Trainer's seeded random sampler), torch's default thread count. The dataset is the
  workbench plan's rendered training rows (input_ids, and labels -100 outside the answers), in
  the plan's order, so both arms train on identical tokens. Every numeric setting is the
  workbench's (lr, schedule, warm-up, clipping, optimizer, seed, data seed, logging steps).
- ours: `workbench --run PROFILE` in this process (`workbench.cli.main`): plan, run folder,
  thread sizing (train/threads.py), the run recorder, the NaN check, status and events.
  The profile (written to a temporary folder) says the same settings; evaluation after
  training is off (it runs after the timed steps anyway) and no checkpoint falls in the run.

Both arms get the same extra callback (a timestamp at every `on_step_end`, torch's thread
count at `on_train_begin`) and the same wrapper on `Trainer.training_step` recording each
micro-batch's padded shape and real tokens, so the report can show that both saw the same
batches. Timed: from the end of optimizer step `from-step - 1` to the end of the last step.

--cprofile DIR: each arm's `trainer.train()` (ours: the whole `workbench --run`) under
cProfile, stats in DIR/ARM.prof (`python -m pstats`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = Path.home() / ".cache/workbench/models/SmolLM2-135M-Instruct"
ALPACA = Path("/work/shared/data/alpaca_en_demo.json")

# What the two arms share, written into the workbench profile and the SFTConfig alike.
SETTINGS = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "targets": "all-linear",
                "grad_accum": 1, "learning_rate": 2e-4, "scheduler": "cosine", "warmup_ratio": 0.03,
                "weight_decay": 0.0, "max_grad_norm": 0.3, "optimizer": "adamw_torch", "seed": 42,
                "logging_steps": 10}


def profile_toml(a, folder: Path) -> Path:
    s = SETTINGS
    text = f"""name = "loop-overhead"
[model]
name_or_path = {json.dumps(str(a.model))}
[data]
train = {json.dumps(str(a.data))}
[lora]
method = "lora"
r = {s['lora_r']}
alpha = {s['lora_alpha']}
dropout = {s['lora_dropout']}
target_modules = "{s['targets']}"
[train]
max_steps = {a.steps}
batch_size = {a.batch_size}
grad_accum = {s['grad_accum']}
learning_rate = {s['learning_rate']}
scheduler = "{s['scheduler']}"
warmup_ratio = {s['warmup_ratio']}
weight_decay = {s['weight_decay']}
max_grad_norm = {s['max_grad_norm']}
optimizer = "{s['optimizer']}"
seed = {s['seed']}
logging_steps = {s['logging_steps']}
max_seq_len = {a.max_seq_len}
packing = false
device = "cpu"
precision = "fp32"
gradient_checkpointing = false
save_steps = 100000
eval_steps = {a.eval_steps}
runs_dir = {json.dumps(str(folder / 'runs'))}
[eval]
after_training = false
"""
    path = folder / "loop-overhead.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# what both arms measure


def instruments(record: dict):
    """The shared step clock (a TrainerCallback) and the batch recorder on Trainer.training_step."""
    import torch
    from transformers import Trainer, TrainerCallback

    record.update(step_ends=[], step_threads=[], batches=[], threads=None)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            record["threads"] = torch.get_num_threads()
            record["train_begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            record["step_ends"].append(time.perf_counter())
            record["step_threads"].append(torch.get_num_threads())

    inner = Trainer.training_step

    def training_step(self, model, inputs, *rest, **kw):
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        record["batches"].append([list(ids.shape),
                                  int(mask.sum()) if mask is not None else int(ids.numel()),
                                  int((inputs["labels"] != -100).sum())])
        return inner(self, model, inputs, *rest, **kw)

    Trainer.training_step = training_step
    return Clock()


def _profiled(fn, out: Path | None, name: str):
    if out is None:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        out.mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(out / f"{name}.prof"))


def child_trl(a, cfg: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    record: dict = {"arm": "trl"}
    clock = instruments(record)
    rows = json.loads(Path(cfg["rows"]).read_text())
    s = SETTINGS
    set_seed(s["seed"])
    tokenizer = AutoTokenizer.from_pretrained(str(a.model))
    model = AutoModelForCausalLM.from_pretrained(str(a.model), dtype=torch.float32)
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"],
                             lora_dropout=s["lora_dropout"], target_modules=s["targets"],
                             task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(Path(cfg["tmp"]) / "trl-out"), max_steps=a.steps,
        per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=s["grad_accum"],
        learning_rate=s["learning_rate"], lr_scheduler_type=s["scheduler"],
        warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], optim=s["optimizer"], seed=s["seed"],
        data_seed=s["seed"], use_cpu=True, bf16=False,
        gradient_checkpointing=False,  # SFTConfig's default is on
        logging_steps=s["logging_steps"], logging_first_step=True, save_strategy="steps",
        save_steps=100000, report_to="none", max_length=a.max_seq_len, packing=False)
    dataset = Dataset.from_list(rows)
    if a.eval_steps:  # the workbench evaluates its held-out rows every eval_steps: so does TRL
        args.eval_strategy, args.eval_steps = "steps", a.eval_steps
        args.per_device_eval_batch_size = a.batch_size
    evals = Dataset.from_list(json.loads(Path(cfg["rows"]).with_name("eval_rows.json").read_text()))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         eval_dataset=evals if a.eval_steps else None,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[clock])
    _profiled(trainer.train, a.cprofile, "trl")
    return record


def child_ours(a, cfg: dict) -> dict:
    from workbench import cli
    from workbench.train.methods import sft

    record: dict = {"arm": "ours"}
    clock = instruments(record)
    build = sft.build_trainer

    def build_trainer(method, model, plan, run, callbacks):
        record["run"] = str(run.path)
        return build(method, model, plan, run, list(callbacks) + [clock])

    sft.build_trainer = build_trainer
    code = _profiled(lambda: cli.main(["--run", cfg["profile"]]), a.cprofile, "ours")
    record["exit"] = code
    log = Path(record["run"]) / "stdout.log"
    lines = log.read_text().splitlines() if log.exists() else []
    record["threads_line"] = "; ".join(line for line in lines if line.startswith("cpu:")) or None
    return record


# ---------------------------------------------------------------------------------------------
# which batches each setup trains on (no training)


def padded_schedule(a, rows_path: Path) -> dict:
    """Padded and real tokens of each optimizer step's batch, from the data loader TRL's
    SFTTrainer builds (its collator, its seeded order), for: the plan's rendered rows (what
    both arms above train on) and the Alpaca file given to TRL as a user would (all its rows,
    prompt / completion conversations TRL renders itself), as issue 25's TRL run did. The model
    is the bundled tiny one: the data loader never runs it."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(a.model))
    model = AutoModelForCausalLM.from_pretrained(str(ROOT / "assets" / "tiny-model"))
    raw = json.loads(a.data.read_text())
    user_rows = [{"prompt": [{"role": "user", "content": r["instruction"]
                              + (f"\n{r['input']}" if r.get("input") else "")}],
                  "completion": [{"role": "assistant", "content": r["output"]}]} for r in raw]
    out = {}
    for name, rows in (("plan rows (both arms)", json.loads(rows_path.read_text())),
                       ("the Alpaca file given to TRL", user_rows)):
        args = SFTConfig(output_dir=str(rows_path.parent / "schedule"), max_steps=a.steps,
                         per_device_train_batch_size=a.batch_size, seed=SETTINGS["seed"],
                         data_seed=SETTINGS["seed"], use_cpu=True, bf16=False,
                         gradient_checkpointing=False, report_to="none",
                         max_length=a.max_seq_len, packing=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
        steps = []
        for batch in trainer.get_train_dataloader():
            steps.append([int(batch["input_ids"].numel()), int(batch["attention_mask"].sum())])
            if len(steps) == a.steps:
                break
        timed = steps[a.from_step - 1:]
        out[name] = {"rows": len(rows), "padded": sum(p for p, _ in timed),
                         "real": sum(r for _, r in timed), "per_step": [p for p, _ in steps]}
    return out


# ---------------------------------------------------------------------------------------------
# the parent


def plan_rows(a, folder: Path, toml: Path) -> Path:
    """The plan's rendered training rows, in order, as input_ids + labels: the trl arm's data."""
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run

    plan = plan_run(load_profile(toml, []))
    def labelled(rows):
        return [{"input_ids": r["input_ids"],
                 "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])]}
                for r in rows]

    (folder / "eval_rows.json").write_text(json.dumps(labelled(plan.eval_rows)))
    path = folder / "rows.json"
    path.write_text(json.dumps(labelled(plan.train_rows)))
    return path


def _threads(rec: dict) -> str:
    """torch's threads at the start, and at every step where they changed: "1, 2 from step 4"."""
    text, now = str(rec["threads"]), rec["threads"]
    for step, threads in enumerate(rec.get("step_threads", []), start=2):
        if threads != now:  # set at the end of step - 1: in effect from `step`
            text, now = f"{text}, {threads} from step {step}", threads
    return text


BUSY = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"


def summarize(rec: dict, from_step: int) -> dict:
    ends = rec["step_ends"]
    timed = ends[-1] - ends[from_step - 2]
    steps = len(ends) - from_step + 1
    batches = rec["batches"][from_step - 1:]
    padded = [b[0][0] * b[0][1] for b in batches]
    return {"arm": rec["arm"], "seconds": round(timed, 2), "per_step": round(timed / steps, 3),
                "steps": steps, "threads": _threads(rec),
                "padded_per_step": round(sum(padded) / len(padded), 1),
                "real_per_step": round(sum(b[1] for b in batches) / len(batches), 1),
                "step_times": [round(ends[i] - ends[i - 1], 3) for i in range(1, len(ends))],
                "shapes": [b[0] for b in rec["batches"]], "threads_line": rec.get("threads_line")}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=SMOLLM2)
    p.add_argument("--data", type=Path, default=ALPACA)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--from-step", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--arms", default="trl,ours")
    p.add_argument("--eval-steps", type=int, default=0,
                   help="evaluate the held-out rows every N steps in both arms (the workbench "
                        "profile's default is 50, TRL's is no evaluation; 0 = none)")
    p.add_argument("--cprofile", type=Path)
    p.add_argument("--blip", type=float, default=0.0, metavar="S",
                   help="keep one core busy for S seconds from the start of each arm's process "
                        "(another command running briefly while the run starts)")
    p.add_argument("--schedule", action="store_true",
                   help="only compare the padded tokens per step of the plan's rows and of the "
                        "Alpaca file given to TRL directly (no training)")
    p.add_argument("--json", type=Path, help="append the results to this JSON-lines file")
    p.add_argument("--child", choices=["trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.model, a.data = a.model.resolve(), a.data.resolve()
    if a.child:
        cfg = json.loads(a.config)
        rec = (child_trl if a.child == "trl" else child_ours)(a, cfg)
        Path(cfg["out"]).write_text(json.dumps(rec))
        return 0

    with tempfile.TemporaryDirectory(prefix="loop-overhead-") as tmp:
        folder = Path(tmp)
        toml = profile_toml(a, folder)
        rows = plan_rows(a, folder, toml)
        if a.schedule:
            for name, s in padded_schedule(a, rows).items():
                print(f"{name}: {s['rows']} rows, steps {a.from_step}..{a.steps}: {s['padded']} "
                      f"padded tokens ({s['real']} real); per step {s['per_step']}")
            return 0
        results = []
        for arm in a.arms.split(","):
            out = folder / f"{arm}.json"
            cfg = {"tmp": tmp, "rows": str(rows), "profile": str(toml), "out": str(out)}
            cmd = [sys.executable, __file__, "--child", arm, "--config", json.dumps(cfg),
                   "--model", str(a.model), "--data", str(a.data), "--steps", str(a.steps),
                   "--batch-size", str(a.batch_size), "--max-seq-len", str(a.max_seq_len),
                   "--eval-steps", str(a.eval_steps)]
            if a.cprofile:
                cmd += ["--cprofile", str(a.cprofile)]
            t0 = time.time()
            blip = subprocess.Popen([sys.executable, "-c", BUSY, str(a.blip)]) if a.blip else None
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if blip is not None:
                blip.wait()
            if proc.returncode != 0 or not out.exists():
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                return 1
            res = summarize(json.loads(out.read_text()), a.from_step)
            res["process_s"] = round(time.time() - t0, 1)
            results.append(res)
    base = next((r for r in results if r["arm"] == "trl"), None)
    print(f"{a.model.name}, batch {a.batch_size}, max_seq_len {a.max_seq_len}, steps "
          f"{a.from_step}..{a.steps}")
    print("| arm | s for steps | s/step | ratio vs trl | threads | padded tokens/step | real tokens/step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = f"{r['seconds'] / base['seconds']:.3f}" if base else "-"
        print(f"| {r['arm']} | {r['seconds']:.1f} | {r['per_step']:.3f} | {ratio} | {r['threads']} "
              f"| {r['padded_per_step']:.0f} | {r['real_per_step']:.0f} |")
    if base:
        for r in results:
            if r is not base and r["shapes"] != base["shapes"]:
                print(f"WARNING: {r['arm']} saw other batches than trl: {r['shapes']} vs "
                      f"{base['shapes']}")
    for r in results:
        print(r["arm"], "step times:", r["step_times"], r.get("threads_line") or "")
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M"), "model": a.model.name,
                                 "results": results}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
