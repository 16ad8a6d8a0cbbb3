"""Training throughput and peak memory on a GPU: TRL's SFTTrainer used directly against the
workbench's own run, and the workbench with each kernel option (issue 25).

Arms, each in its own process (a fresh CUDA context, peaks not shared), on the same random-init
model (a real config.json, bf16 weights saved once as safetensors) and the same alpaca rows:

  trl-default   trl's SFTTrainer with its defaults (padded batches, gradient checkpointing,
                bf16), the workbench's LoRA (r 16, alpha 32, dropout 0.05, q/k/v/o projections)
  trl-bfd       the same with packing=True, packing_strategy="bfd" (padding-free)
  wb-none       `python -m workbench run` with train.kernels = "none", sdpa
  wb-liger      train.kernels = "liger" (needs liger-kernel; on a CPU it falls back with a note)
  wb-auto       train.kernels = "auto", model.attn_implementation = "auto", optimizer "auto"
                (liger, FlashAttention and fused AdamW where installed)
  wb-flash2     model.attn_implementation = "flash_attention_2" (only when flash-attn is installed)

Measured: tokens/s = real (non-padding) tokens trained per second over the steps after the
warm-up (trl's `num_tokens`: the attention mask's sum, or the packed length), and the peak of
`torch.cuda.max_memory_allocated()` / `max_memory_reserved()` over the run (the workbench run
records them in its status and memory event). The same batch size, max length, learning rate
and step count in every arm; everything else is each side's default.

    python bench/gpu_train_throughput.py                  # H100: two models, < 8 minutes
    python bench/gpu_train_throughput.py --budget-s 300
    python bench/gpu_train_throughput.py --cpu-smoke      # the tiny model, 2 steps, on the CPU

Writes gpu_train_throughput.md and .json to $OUT (default bench/out) or --write PATH.md.
The GPU machine has no network: the SmolLM2 tokenizer and the alpaca sample travel in
.whl/assets (bench/fetch_gpu_wheels.sh puts them there); without them the bundled tiny
tokenizer and demo data stand in, and the table says so. The SmolLM2-135M model's config.json
comes with its tokenizer; the 1.7B's is assets/configs/smollm2-1.7b.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "assets" / "tiny-model"
CARRIED = REPO / ".whl" / "assets"  # what fetch_gpu_wheels.sh copies for the offline GPU box
SMOLLM2 = Path.home() / ".cache" / "workbench" / "models" / "SmolLM2-135M-Instruct"
ALPACA_PLACES = (REPO.parent / "shared" / "data" / "alpaca_en_demo.json",
                 Path("/work/shared/data/alpaca_en_demo.json"))
DEMO_DATA = REPO / "assets" / "demo" / "translate_en_fr.jsonl"
ARMS = ("trl-default", "trl-bfd", "wb-none", "wb-liger", "wb-auto", "wb-flash2")
# (name, config.json folder, batch, max length): SmolLM2-135M from the converted model's config,
# a Llama-style 1.7B from assets/configs.
GPU_MODELS = (("smollm2-135m", None, 8, 1024), ("smollm2-1.7b", REPO / "assets/configs/smollm2-1.7b", 4, 1024))
ARM_SECONDS_GUESS = {"smollm2-135m": 35, "smollm2-1.7b": 70, "tiny": 30}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _unzipped(folder: Path, into: Path) -> Path:
    """`folder`'s files with any .gz undone, in `into` (fetch_gpu_wheels.sh gzips what it carries)."""
    into.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.suffix == ".gz":
            (into / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
        elif f.is_file():
            shutil.copy(f, into / f.name)
    return into


def tokenizer_dir(tmp: Path) -> tuple[Path, str]:
    carried = CARRIED / "smollm2-135m"
    if (carried / "tokenizer.json.gz").is_file() or (carried / "tokenizer.json").is_file():
        return _unzipped(carried, tmp / "smollm2-tokenizer"), "SmolLM2-135M-Instruct's (carried)"
    if (SMOLLM2 / "tokenizer.json").is_file():
        return SMOLLM2, "SmolLM2-135M-Instruct's"
    return TINY, "the bundled tiny model's (SmolLM2's was not found)"


def data_file(tmp: Path) -> tuple[Path, str]:
    carried = CARRIED / "alpaca_en_demo.json.gz"
    if carried.is_file():
        path = tmp / "alpaca_en_demo.json"
        path.write_bytes(gzip.decompress(carried.read_bytes()))
        return path, "alpaca_en_demo.json (carried)"
    for path in ALPACA_PLACES:
        if path.is_file():
            return path, "alpaca_en_demo.json"
    return DEMO_DATA, "assets/demo/translate_en_fr.jsonl (the alpaca sample was not found)"


def load_rows(path: Path) -> list[dict]:
    """Alpaca rows or the demo's messages, as chat messages (what trl's SFTTrainer takes)."""
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    out = []
    for r in rows:
        if "messages" in r:
            out.append({"messages": r["messages"]})
        else:
            prompt = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
            out.append({"messages": [{"role": "user", "content": prompt},
                                     {"role": "assistant", "content": r["output"]}]})
    return out


def make_model(name: str, config_dir: Path | None, tok_dir: Path, where: Path, device: str) -> Path:
    """A random-init model of `config_dir`'s config.json in bf16 (fp32 on the CPU), saved with
    the tokenizer so every arm loads the same weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(config_dir or tok_dir)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    folder = where / name
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


# ---- one arm, in a child process -------------------------------------------------------------


def trl_arm(arm: str, model_dir: Path, data: Path, steps: int, warmup: int, batch: int, seq: int,
            device: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa")
    rows = load_rows(data)
    seen: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                seen.append((time.perf_counter(), float(logs["num_tokens"])))

    out = tempfile.mkdtemp(prefix="trl-arm-")
    config = SFTConfig(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, learning_rate=2e-4, max_length=seq, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=42, use_cpu=not cuda,
        bf16=cuda, packing=arm == "trl-bfd", **({"packing_strategy": "bfd"} if arm == "trl-bfd" else {}))
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft, callbacks=[Clock()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    result = {"peak_allocated": torch.cuda.max_memory_allocated() if cuda else None,
              "peak_reserved": torch.cuda.max_memory_reserved() if cuda else None,
              "notes": f"gradient checkpointing {'on' if config.gradient_checkpointing else 'off'}, "
                       f"padding_free {trainer.padding_free}"}
    result.update(_rate(seen, warmup))
    shutil.rmtree(out, ignore_errors=True)
    return result


def _rate(seen: list[tuple[float, float]], warmup: int) -> dict:
    """Tokens a second from (time, cumulative tokens) after each step, after the warm-up."""
    if len(seen) < 2:
        return {"tokens_per_s": None, "tokens": seen[-1][1] if seen else None, "timed_steps": 0}
    start = min(warmup, len(seen) - 2)
    (t0, n0), (t1, n1) = seen[start], seen[-1]
    return {"tokens_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else None, "tokens": n1,
            "timed_steps": len(seen) - 1 - start}


WB_SETTINGS = {"wb-none": {"train.kernels": "none", "model.attn_implementation": "sdpa"},
               "wb-liger": {"train.kernels": "liger", "model.attn_implementation": "sdpa"},
               "wb-auto": {"train.kernels": "auto", "model.attn_implementation": "auto",
                           "train.optimizer": "auto"},
               "wb-flash2": {"train.kernels": "none",
                             "model.attn_implementation": "flash_attention_2"}}


def workbench_arm(arm: str, model_dir: Path, data: Path, steps: int, warmup: int, batch: int,
                  seq: int, device: str, timeout: float) -> dict:
    """`python -m workbench run` on a profile of this model and data, read back from its run
    folder: the log events' tokens/s (trl's num_tokens between logs), the measured peaks."""
    work = Path(tempfile.mkdtemp(prefix="wb-arm-"))
    profile = work / "throughput.toml"
    profile.write_text(
        f'[model]\nname_or_path = "{model_dir.as_posix()}"\n'
        f'[data]\ntrain = "{data.as_posix()}"\nvalidation_split = 0\n'
        f"[train]\nmax_steps = {steps}\nbatch_size = {batch}\ngrad_accum = 1\n"
        f"max_seq_len = {seq}\nlogging_steps = 1\neval_steps = 0\nsave_steps = {steps}\n"
        f'learning_rate = 2e-4\ndevice = "{device}"\n'
        "[eval]\nafter_training = false\n", encoding="utf-8")
    sets = [f"--set={k}={v}" for k, v in WB_SETTINGS[arm].items()]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "workbench", "run", str(profile), *sets,
                           "--runs-dir", str(work / "runs")], check=False, cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)
    runs = sorted((work / "runs").glob("*/status.json"))
    if not runs:
        raise RuntimeError(f"no run folder (exit {proc.returncode}): {proc.stdout[-1500:]}"
                           f"{proc.stderr[-1500:]}")
    folder = runs[-1].parent
    status = json.loads((folder / "status.json").read_text())
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()
              if line.strip()]
    if status.get("state") != "finished":
        raise RuntimeError(f"the run ended {status.get('state')}: {status.get('message')} "
                           f"{status.get('hint') or ''}")
    logs = [e for e in events if e.get("type") == "log"]
    if logs and all(e.get("tokens") is not None for e in logs):
        # the cumulative count trl keeps (padding not counted), read as the trl arms read it
        tokens_per_s = _rate([(e["time"], float(e["tokens"])) for e in logs], warmup)["tokens_per_s"]
    else:  # an event schema without `tokens`: the rate between logs, weighted by their spacing
        tokens = seconds = 0.0
        for before, after in itertools.pairwise(logs):
            if after["step"] > warmup and after.get("tokens_per_s"):
                dt = after["time"] - before["time"]
                tokens += after["tokens_per_s"] * dt
                seconds += dt
        tokens_per_s = tokens / seconds if seconds else None
    memory = next((e for e in events if e.get("type") == "memory"), {})
    text = proc.stdout + proc.stderr
    notes = sorted({line.strip().lstrip("-* ").strip() for line in text.splitlines()
                    if any(k in line for k in ("kernels:", "attention:", "optimizer:"))})
    profile_used = (folder / "profile.toml").read_text() if (folder / "profile.toml").exists() else ""
    packing = next((line.split("=", 1)[1].strip() for line in profile_used.splitlines()
                    if line.strip().startswith("packing")), "?")
    shutil.rmtree(work, ignore_errors=True)
    return {"tokens_per_s": tokens_per_s,
            "timed_steps": sum(1 for e in logs if e["step"] > warmup),
            "peak_reserved": status.get("peak_gpu_mem_bytes"),
            "peak_allocated": memory.get("measured_peak_allocated_bytes"),
            "notes": "; ".join(notes + [f"train.packing = {packing}"])}


# ---- the parent: every arm, the table ----------------------------------------------------------


def run_child(arm: str, model_dir: Path, data: Path, args, device: str, batch: int, seq: int,
              timeout: float) -> dict:
    if arm.startswith("wb-"):
        return workbench_arm(arm, model_dir, data, args.steps, args.warmup, batch, seq, device,
                             timeout)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_file = Path(fh.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", arm, "--model-dir",
           str(model_dir), "--data", str(data), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--batch", str(batch), "--seq", str(seq), "--device", device,
           "--result", str(result_file)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode != 0 or not result_file.stat().st_size:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return result


def versions(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__}
    for lib in ("transformers", "trl", "peft", "accelerate", "liger_kernel", "flash_attn", "kernels"):
        try:
            from importlib.metadata import version

            info[lib] = version(lib.replace("_", "-"))
        except Exception:  # noqa: BLE001 - not installed
            info[lib] = None
    info["gpu"] = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU smoke run)"
    return info


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def write_report(rows: list[dict], meta: dict, md_path: Path) -> None:
    lines = ["# Training throughput and peak memory: trl's SFTTrainer vs the workbench's run",
             "", f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             f"- GPU: {meta['versions']['gpu']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()
                                        if k not in ("gpu",)),
             f"- data: {meta['data']}; tokenizer: {meta['tokenizer']}",
             (f"- {meta['steps']} steps an arm, tokens/s over the steps after the first "
             f"{meta['warmup']} (real, non-padding tokens); peaks over the whole run"),
             f"- command: `{meta['command']}`", "",
             ("| model | arm | batch x max len | tokens/s | vs trl-default | peak allocated GiB "
             "| peak reserved GiB | notes |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = {r["model"]: r.get("tokens_per_s") for r in rows if r["arm"] == "trl-default"}
    for r in rows:
        tps = r.get("tokens_per_s")
        ref = base.get(r["model"])
        ratio = f"{tps / ref:.2f}x" if tps and ref else "-"
        shown = f"{tps:,.0f}" if tps else "-"
        if r.get("status") != "ok":
            shown, ratio = r.get("status", "-"), "-"
        lines.append(f"| {r['model']} | {r['arm']} | {r['batch']} x {r['seq']} | {shown} | {ratio} | "
                     f"{_gib(r.get('peak_allocated'))} | {_gib(r.get('peak_reserved'))} | "
                     f"{(r.get('notes') or '').replace('|', '/')} |")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    md_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1),
                                            encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="the bundled tiny model, 2 steps an arm, on the CPU: proves it runs")
    ap.add_argument("--budget-s", type=float, default=420, help="stop starting arms after this")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--write", help="the markdown file (default $OUT/gpu_train_throughput.md)")
    # one arm in this process (the parent's child)
    ap.add_argument("--child", choices=("trl-default", "trl-bfd"), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--device", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = trl_arm(args.child, Path(args.model_dir), Path(args.data), args.steps,
                         args.warmup, args.batch, args.seq, args.device)
        Path(args.result).write_text(json.dumps(result))
        return 0

    started = time.time()
    import torch

    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --cpu-smoke to check the script on the CPU")
        return 2
    args.steps = args.steps or (2 if args.cpu_smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.cpu_smoke else 4)
    scratch = Path(tempfile.mkdtemp(prefix="throughput-assets-"))
    tok_dir, tok_label = (TINY, "the bundled tiny model's") if args.cpu_smoke else tokenizer_dir(scratch)
    data, data_label = data_file(scratch)
    models = (("tiny", TINY, 2, 128),) if args.cpu_smoke else GPU_MODELS
    if not args.cpu_smoke and tok_dir == TINY:  # no SmolLM2-135M config either: the 360M's
        models = (("smollm2-360m", REPO / "assets/configs/smollm2-360m", 8, 1024),) + models[1:]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    md_path = Path(args.write) if args.write else Path(os.environ.get("OUT", REPO / "bench" / "out")) / "gpu_train_throughput.md"
    from _shared import cpu_machine

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": cpu_machine() + ("" if args.cpu_smoke else f"; {torch.cuda.get_device_name(0)}"),
            "versions": versions(device), "data": data_label, "tokenizer": f"{tok_label} tokenizer",
            "steps": args.steps, "warmup": args.warmup,
            "command": "python bench/gpu_train_throughput.py " + " ".join(argv or sys.argv[1:])}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for name, config_dir, batch, seq in models:
            left = args.budget_s - (time.time() - started)
            if left < ARM_SECONDS_GUESS.get(name, 60):
                rows += [{"model": name, "arm": a, "batch": batch, "seq": seq,
                          "status": "not run (budget)"} for a in arms]
                continue
            model_dir = make_model(name, config_dir, tok_dir, Path(tmp), device)
            for arm in arms:
                row = {"model": name, "arm": arm, "batch": batch, "seq": seq}
                rows.append(row)
                left = args.budget_s - (time.time() - started)
                if arm == "wb-flash2" and not installed("flash_attn"):
                    row["status"] = "not run (flash-attn not installed)"
                    continue
                if left < ARM_SECONDS_GUESS.get(name, 60):
                    row["status"] = "not run (budget)"
                    continue
                t0 = time.time()
                try:
                    row.update(run_child(arm, model_dir, data, args, device, batch, seq,
                                         timeout=max(60.0, left)))
                    row["status"] = "ok"
                except Exception as exc:  # noqa: BLE001 - one arm failing leaves the others
                    row["status"] = f"failed: {type(exc).__name__}"
                    row["notes"] = str(exc).replace("\n", " ")[-400:]
                row["seconds"] = round(time.time() - t0, 1)
                print(f"{name} {arm}: {row['status']} {row.get('tokens_per_s') or 0:,.0f} tok/s "
                      f"peak reserved {_gib(row.get('peak_reserved'))} GiB ({row['seconds']} s) "
                      f"{row.get('notes', '')}", flush=True)
            shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    write_report(rows, meta, md_path)
    print(md_path.read_text())
    return 0 if all(r["status"] == "ok" or r["status"].startswith("not run") for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
