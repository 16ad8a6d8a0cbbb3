"""One batched 3-system generate call (per-row adapter selection) vs three separate calls.

Trains a small demo adapter with the real runner (or reuses --run), then answers the demo
prompt suite with base, few-shot and fine-tuned: once in mixed batches, once system by
system. Same prompts, greedy, same max_new_tokens; the answers are checked to be identical.

    HF_HUB_OFFLINE=1 python bench/compare_batched.py --write bench/compare_batched.md
    python bench/compare_batched.py --device cuda --run RUN_DIR   # on the GPU machine
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def peak_memory(device: str) -> str:
    if device == "cuda":
        import torch

        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="an existing run folder (default: train a demo run)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    tmp = tempfile.mkdtemp(prefix="wb-bench-")
    run_dir = args.run
    if not run_dir:
        subprocess.run([sys.executable, "-m", "workbench", "run", str(REPO / "profiles/demo.toml"),
                        "--set", "train.max_steps=30", "--set", "eval.prompts=", "--set",
                        f"train.device={args.device}", "--runs-dir", f"{tmp}/runs"],
                       check=True, cwd=tmp, capture_output=True)
        run_dir = next(p for p in Path(tmp, "runs").iterdir() if p.is_dir())

    from workbench.evaluate.cli import _quiet
    from workbench.evaluate.compare import ComparisonEngine, default_systems
    from workbench.evaluate.fewshot import FewShotPicker
    from workbench.evaluate.suite import load_prompts
    from workbench.evaluate.testset import load_splits
    from workbench.profile import load_profile
    from workbench.train.rundir import RunDir

    _quiet()
    run = RunDir(Path(run_dir))
    profile = load_profile(run.profile_path)
    prompts = [p["prompt"] for p in load_prompts(REPO / "assets/demo/prompts.jsonl")][: args.prompts]
    engine = ComparisonEngine.from_run(run, profile, device=args.device)
    picker = FewShotPicker(load_splits(profile).train, 3, exclude_prompts=prompts)
    rows = engine.rows(prompts, default_systems(3), picker)
    kw = dict(max_new_tokens=args.max_new_tokens, batch_size=len(rows))
    engine.generate(rows[:3], max_new_tokens=4)  # warm-up
    results = []
    for _ in range(args.repeat):
        t = time.perf_counter(); b = engine.generate(rows, **kw); tb = time.perf_counter() - t
        t = time.perf_counter(); s = engine.generate_separately(rows, **kw); ts = time.perf_counter() - t
        same = ({(a.system, a.prompt_index): a.token_ids for a in b.answers}
                == {(a.system, a.prompt_index): a.token_ids for a in s.answers})
        results.append((tb, ts, same))
    mem = peak_memory(args.device)
    import peft
    import torch
    import transformers

    lines = ["# Batched 3-system compare vs three separate generate calls", "",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
             f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
             f"- Python {platform.python_version()}; torch {torch.__version__}, transformers "
             f"{transformers.__version__}, peft {peft.__version__}",
             f"- command: `python bench/compare_batched.py --device {args.device} --prompts {args.prompts} "
             f"--max-new-tokens {args.max_new_tokens} --repeat {args.repeat}`",
             f"- workload: {len(prompts)} demo prompts x 3 systems (base, few-shot k=3, fine-tuned), "
             f"greedy, max_new_tokens {args.max_new_tokens}, tiny model + a 30-step LoRA adapter",
             f"- peak memory of the whole process (one base model + adapter): {mem}", "",
             "| repeat | batched s | separate s | speed-up | same tokens |", "|---|---|---|---|---|"]
    for i, (tb, ts, same) in enumerate(results, 1):
        lines.append(f"| {i} | {tb:.2f} | {ts:.2f} | {ts / tb:.2f}x | {same} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)
    return 0 if all(r[2] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
