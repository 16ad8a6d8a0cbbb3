"""How the comparison engine batches its three systems, timed three ways on the same rows:

- now: `ComparisonEngine.generate` (issue 12): rows sorted by prompt length, few-shot rows in
  calls of their own, base and fine-tuned rows sharing calls with per-row adapter selection;
- one adapter a call: the same sorting, but each system's rows on their own with the adapter
  switched for the whole call (the alternative issue 12 measured against "now");
- before: the issue 5 scheme, every call mixing all three systems in prompt order, each row
  padded to the longest (few-shot) prompt in its call.

Default: trains a small demo adapter with the real runner (or reuses --run), then answers the
demo prompt suite with base, few-shot and fine-tuned. Same prompts, greedy, same
max_new_tokens, same batch size; the answers are checked to be identical.

With --model-config NAME the model is instead a random-init one built from a shipped
architecture (assets/configs/NAME.json, e.g. qwen2.5-7b or llama-3.1-8b) with a random LoRA
adapter on the attention projections: decode speed and memory do not depend on weight values,
and no weights need to be on disk. Its vocabulary is cut to the bundled tokenizer's (768
tokens) so prompts and answers stay decodable; the LM head is then ~0.1% of the weights read
per step instead of ~8-13%, which favours neither side. A random model's logits are nearly
flat, so bf16 batch-shape differences can flip a greedy choice: the table reports the share of
identical tokens rather than requiring all.

    HF_HUB_OFFLINE=1 python bench/compare_batched.py --write bench/compare_batched.md
    python bench/compare_batched.py --device cuda --run RUN_DIR           # on the GPU machine
    python bench/compare_batched.py --device cuda --model-config qwen2.5-7b --prompts 32

On a GPU the question this answers is whether sharing a call between base and fine-tuned
rows (one read of the weights a step for both) beats one adapter a call by more than on the
CPU (bench/eval_speed.md: 3-9% there).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _shared import same_token_share

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TINY = REPO / "assets" / "tiny-model"


def peak_memory(device: str) -> str:
    if device == "cuda":
        import torch

        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS"


def demo_run_engine(run_dir: str | None, device: str):
    """The engine over a real run: the given one, or a 30-step demo run trained here."""
    from workbench.evaluate.compare import ComparisonEngine
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    what = f"the run {Path(run_dir).name}" if run_dir else "tiny model + a 30-step LoRA adapter"
    if not run_dir:
        tmp = tempfile.mkdtemp(prefix="wb-bench-")
        subprocess.run([sys.executable, "-m", "workbench", "run", str(REPO / "profiles/demo.toml"),
                        "--set", "train.max_steps=30", "--set", "eval.prompts=", "--set",
                        f"train.device={device}", "--runs-dir", f"{tmp}/runs"],
                       check=True, cwd=tmp, capture_output=True)
        run_dir = str(next(p for p in Path(tmp, "runs").iterdir() if p.is_dir()))
    run = RunDir(Path(run_dir))
    profile = load_profile(run.profile_path)
    return ComparisonEngine.from_run(run, profile, device=device), profile, what


def random_model_engine(name: str, device: str):
    """A random-init model of a shipped architecture with a random LoRA adapter (no disk)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workbench.estimate.config import load_model_config
    from workbench.estimate.params import architecture_from_config, attention_only_targets
    from workbench.evaluate.compare import TUNED, ComparisonEngine
    from workbench.profile import load_profile

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    config, _ = load_model_config(name)
    config = {**config, "vocab_size": len(tokenizer), "use_cache": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config[key] = getattr(tokenizer, f"{key[:-3]}_id", None) or tokenizer.eos_token_id
    hf_config = AutoConfig.for_model(**config)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="sdpa")
    targets = list(attention_only_targets(architecture_from_config(config)))
    # init_lora_weights=False: B is random too, so the fine-tuned rows really differ from base.
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets,
                                             init_lora_weights=False, task_type="CAUSAL_LM"),
                           adapter_name=TUNED)
    model.eval()
    params = sum(p.numel() for p in model.parameters()) / 1e9
    return (ComparisonEngine(model, tokenizer, device), load_profile("demo"),
            f"random-init {name} ({params:.2f}B parameters, vocab cut to {len(tokenizer)}) "
            f"+ a random r=16 LoRA adapter on {', '.join(targets)}")


def same_share(a, b) -> float:
    """Share of generated tokens that agree position by position (1.0 = identical answers)."""
    def ids(g) -> dict:
        return {(x.system, x.prompt_index): x.token_ids for x in g.answers}

    return same_token_share(ids(a), ids(b))


def one_adapter_a_call(rows, lengths, batch_size: int) -> list[list[int]]:
    """Each system's rows on their own, longest prompt first, batch_size a call."""
    by_system: dict = {}
    for i, r in enumerate(rows):
        by_system.setdefault(r.system, []).append(i)
    calls = []
    for idx in by_system.values():
        idx.sort(key=lambda i: -lengths[i])
        calls += [idx[lo:lo + batch_size] for lo in range(0, len(idx), batch_size)]
    return calls


def in_prompt_order(n: int, batch_size: int) -> list[list[int]]:
    """The issue 5 scheme: rows as `engine.rows` lists them (each prompt's systems together)."""
    return [list(range(lo, min(lo + batch_size, n))) for lo in range(0, n, batch_size)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="an existing run folder (default: train a demo run)")
    ap.add_argument("--model-config", help="a shipped architecture (assets/configs), random weights")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=48, help="rows a call (the evaluation's default)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench.evaluate.cli import _quiet
    from workbench.evaluate.compare import default_systems
    from workbench.evaluate.fewshot import FewShotPicker
    from workbench.evaluate.suite import load_prompts
    from workbench.evaluate.testset import load_splits

    _quiet()
    if args.model_config:
        engine, profile, what = random_model_engine(args.model_config, args.device)
    else:
        engine, profile, what = demo_run_engine(args.run, args.device)
    prompts = [p["prompt"] for p in load_prompts(REPO / "assets/demo/prompts.jsonl")]
    prompts = (prompts * (1 + args.prompts // len(prompts)))[: args.prompts]
    picker = FewShotPicker(load_splits(profile).train, 3, exclude_prompts=prompts)
    rows = engine.rows(prompts, default_systems(3), picker)
    lengths = engine.prompt_lengths(rows)
    kw = dict(max_new_tokens=args.max_new_tokens)
    schemes = {"now": lambda: engine.generate(rows, **kw, batch_size=args.batch_size),
               "one adapter a call": lambda: engine.generate_in(
                   rows, one_adapter_a_call(rows, lengths, args.batch_size), **kw),
               "before": lambda: engine.generate_in(rows, in_prompt_order(len(rows), args.batch_size), **kw)}
    engine.generate(rows[:3], max_new_tokens=4)  # warm-up
    results = []
    for rep in range(args.repeat):
        names = list(schemes)[rep % 3:] + list(schemes)[:rep % 3]  # rotate who goes first
        seconds, gens = {}, {}
        for name in names:
            t = time.perf_counter(); gens[name] = schemes[name](); seconds[name] = time.perf_counter() - t
        results.append((seconds, min(same_share(gens["now"], gens[n]) for n in schemes)))
    mem = peak_memory(args.device)
    import peft
    import torch
    import transformers

    command = (f"python bench/compare_batched.py --device {args.device} --prompts {args.prompts} "
               f"--max-new-tokens {args.max_new_tokens} --repeat {args.repeat} --batch-size {args.batch_size}"
               + (f" --model-config {args.model_config}" if args.model_config else ""))
    lines = ["# How the comparison engine batches three systems: now, one adapter a call, before", "",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
             f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
             f"- Python {platform.python_version()}; torch {torch.__version__}, transformers "
             f"{transformers.__version__}, peft {peft.__version__}",
             f"- command: `{command}`",
             f"- workload: {len(prompts)} demo prompts x 3 systems (base, few-shot k=3, fine-tuned), "
             f"greedy, max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}, {what}",
             "- now: sorted by prompt length, few-shot rows apart, base and fine-tuned sharing calls "
             "(per-row adapters); one adapter a call: sorted, each system on its own; before: "
             "every call mixing all three systems in prompt order (issue 5)",
             f"- peak memory of the whole process (one base model + adapter): {mem}", "",
             "| repeat | now s | one adapter a call s | before s | one adapter a call / now "
             "| before / now | same tokens as now |", "|---|---:|---:|---:|---:|---:|---:|"]
    for i, (sec, same) in enumerate(results, 1):
        one, now, old = sec["one adapter a call"], sec["now"], sec["before"]
        lines.append(f"| {i} | {now:.2f} | {one:.2f} | {old:.2f} | {one / now:.2f}x | {old / now:.2f}x "
                     f"| {same:.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)
    # A trained adapter must answer identically either way; a random model may flip near-ties.
    return 0 if args.model_config or all(same == 1.0 for _, same in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
