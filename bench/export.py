"""Export times, file sizes and quantization agreement, measured with the real tools.

    python bench/export.py RUN [--quant q4_K_M,q5_K_M,q8_0] [--write bench/export.md]
    python bench/export.py --smollm2 [--prompts 40] [--write bench/export.md]

Runs `workbench export` as a user would (a subprocess per format, on the CPU), timing each:
merged (with its proof), gguf (llama.cpp's converter, then its quantizer for each --quant, then
the proof: every file answers the prompt suite with llama-cpp-python), ollama, vllm. Sizes are
the files on disk; agreement comes from RUN/export/gguf/verify.json.

RUN is any finished run, e.g. the demo's (`workbench --run demo`: the bundled tiny model, whose
SentencePiece tokenizer llama.cpp converts). `--smollm2` makes the run first:
SmolLM2-135M-Instruct with a LoRA (r 8, q/v projections) whose B matrices are random (std 0.02),
so the merged model answers differently from the base; the prompts are the demo's held-out
suite. `--append` adds the section to the --write file instead of replacing it.
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
sys.path.insert(0, str(ROOT))


def smollm2_run(runs_dir: Path, n_prompts: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.smollm2 import ensure_smollm2
    from workbench.profile import load_profile, save_profile
    from workbench.rundir import RunDir

    model = ensure_smollm2()
    prompts = runs_dir / "prompts.jsonl"
    rows = (ROOT / "assets" / "demo" / "prompts.jsonl").read_text().splitlines()[:n_prompts]
    runs_dir.mkdir(parents=True, exist_ok=True)
    prompts.write_text("\n".join(rows) + "\n")
    profile = load_profile(ROOT / "profiles" / "demo.toml")
    profile.model.name_or_path = str(model)
    profile.data.system_prompt = ""
    profile.eval.prompts = str(prompts)
    profile.lora.r, profile.lora.target_modules = 8, ["q_proj", "v_proj"]
    profile.resolved = {"precision": "fp32", "device": "cpu", "seed": 0}
    run = RunDir.create(runs_dir, "smollm2-bench")
    save_profile(profile, run.profile_path)
    run.write_status(state="finished", pid=None, step=1, total_steps=1, profile="smollm2-bench")
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                   task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(str(run.adapter_dir))
    AutoTokenizer.from_pretrained(str(model)).save_pretrained(str(run.adapter_dir))
    return run.path


def export(run: Path, *args: str) -> tuple[float, dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "workbench", "export", str(run), *args,
                           "--json", "--force"], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"workbench export {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", type=Path)
    ap.add_argument("--smollm2", action="store_true")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--quant", default="q4_K_M,q5_K_M,q8_0")
    ap.add_argument("--write", type=Path)
    ap.add_argument("--append", action="store_true", help="append to --write instead of replacing")
    args = ap.parse_args()
    keep = None
    if args.smollm2:
        keep = tempfile.TemporaryDirectory(prefix="bench-export-")
        run = smollm2_run(Path(keep.name), args.prompts)
    elif args.run:
        run = args.run
    else:
        ap.error("give RUN or --smollm2")

    times = {}
    times["merged"], _ = export(run, "--format", "merged")
    times["gguf"], out = export(run, "--format", "gguf", "--quant", args.quant)
    gguf = json.loads((run / "export" / "gguf" / "verify.json").read_text())
    files = out["formats"]["gguf"]["files"]
    # (this redoes the GGUF export with one --quant: read the full one's proof first, above)
    times["ollama"], _ = export(run, "--format", "gguf,ollama", "--quant", args.quant.split(",")[0])
    times["vllm"], _ = export(run, "--format", "vllm")
    merged_bytes = sum(p.stat().st_size for p in (run / "export" / "merged").glob("*.safetensors"))

    import llama_cpp

    n, scored = gguf["prompts"], gguf["scored"]
    base = Path(json.loads((run / "export" / "merged" / "verify.json").read_text())["base"]).name
    adapter = (" + a LoRA r 8 on q/v (random B, std 0.02: the answers differ from the base "
               "model's)" if args.smollm2 else f" + the run's trained LoRA ({run.name})")
    lines = [
        f"## {base}",
        "",
        f"Measured {dt.date.today()} by `python bench/export.py {'--smollm2' if args.smollm2 else 'RUN'}`"
        f" on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"llama-cpp-python {llama_cpp.__version__} (llama.cpp vendored in it).",
        "",
        f"Model: {base}{adapter}. "
        f"Prompt suite: {n} prompts, {scored} with references, greedy, "
        f"{gguf['max_new_tokens']} new tokens at most.",
        "",
        "| export | wall time (s) | what it includes |",
        "|---|---|---|",
        f"| merged | {times['merged']:.0f} | load, merge, save, reload, proof against the adapter model |",
        f"| gguf + {args.quant} | {times['gguf']:.0f} | convert, quantize each, answer the suite "
        f"with every file and with the trained model |",
        f"| ollama (FROM the {args.quant.split(',')[0]} GGUF) | {times['ollama']:.0f} | "
        "redoes that GGUF export, then the Modelfile |",
        f"| vllm | {times['vllm']:.0f} | scripts and commands |",
        "",
        "| file | size (MB) | made in (s) | answers identical to the trained model | "
        "answer followed | exact match (trained model) | answering the suite (s) |",
        "|---|---|---|---|---|---|---|",
        f"| merged safetensors (float32) | {merged_bytes / 1e6:.1f} | - | - | - | "
        f"{gguf['trained_exact_match']}/{scored} | {gguf['trained_seconds']} (transformers) |",
    ]
    for kind, f in files.items():
        r = gguf["files"][kind]
        ties = f" (+{len(r['near_ties'])} near-ties)" if r.get("near_ties") else ""
        lines.append(f"| {f['file']} | {f['bytes'] / 1e6:.1f} | {f['seconds']} | "
                     f"{r['identical']}/{n}{ties} | {r['prefix_agreement']:.0%} | "
                     f"{r['exact_match']}/{scored} | {r['seconds']} |")
    lines += ["", "Answer followed: the mean share of the trained model's answer tokens a file "
              "reproduces before its first different token.", ""]
    if args.smollm2:
        lines += ["Exact match is the demo's metric against the suite's references; a random "
                  "LoRA on SmolLM2 does not translate well, so the point is the agreement column "
                  "and that the quantized files' scores stay next to the trained model's.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        title = "# Export: times, sizes, agreement\n\n"
        old = args.write.read_text() if args.append and args.write.exists() else title
        args.write.write_text(old + ("\n" if old != title else "") + text)
    if keep:
        keep.cleanup()


if __name__ == "__main__":
    main()
