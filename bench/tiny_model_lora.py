"""Benchmark: does a ~1 minute LoRA run on 2 CPU cores visibly change the tiny model?

    HF_HUB_OFFLINE=1 python bench/tiny_model_lora.py [--seconds 60] [--lr 1e-3] [--write bench/tiny_model_lora.md]

1. Loads the bundled base model ``assets/tiny-model`` and scores exact match (after strip)
   on the held-out prompts ``assets/demo/prompts.jsonl`` with greedy decoding through the chat
   template (add_generation_prompt=True, stop at <|im_end|>, at most 24 new tokens).
2. LoRA fine-tunes it with peft on ``assets/demo/translate_en_fr.jsonl`` (loss only on the
   assistant tokens, including the closing <|im_end|>) with a plain AdamW loop, until the step
   budget or the wall-clock budget is used up.
3. Scores again, prints a results table and (with --write) writes a markdown report.

Self-contained on purpose (plain torch + peft), so it measures the model and the data, not
the workbench trainer.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encode_example(tokenizer, messages: list[dict], max_len: int = 128) -> tuple[list[int], list[int]]:
    """input_ids and labels; labels are -100 except on the last assistant turn (+ <|im_end|>)."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full.startswith(prompt)
    enc = tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)
    end_of_answer = len(prompt) + len(messages[-1]["content"].strip()) + len("<|im_end|>")
    labels = [
        tok if (start >= len(prompt) and end <= end_of_answer) else -100
        for tok, (start, end) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    return enc["input_ids"][:max_len], labels[:max_len]


def score(model, tokenizer, prompts: list[dict], max_new_tokens: int = 24, show: int = 0) -> tuple[int, list[str]]:
    import torch

    model.eval()
    answers = []
    correct = 0
    for i, row in enumerate(prompts):
        text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        ans = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        answers.append(ans)
        correct += ans == row["reference"].strip()
        if i < show:
            print(f"    {row['prompt']!r} -> {ans!r}  (ref {row['reference']!r})")
    return correct, answers


def lora_train(model, tokenizer, rows: list[dict], args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    examples = [encode_example(tokenizer, r["messages"]) for r in rows]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    total_steps = args.max_steps
    warmup = max(1, int(0.05 * total_steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        prog = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return args.lr * 0.5 * (1 + math.cos(math.pi * prog)) if args.cosine else args.lr

    order: list[int] = []
    losses: list[float] = []
    model.train()
    t0 = time.process_time()
    w0 = time.time()
    step = 0
    epochs_seen = 0.0
    while step < total_steps:
        if time.time() - w0 > args.seconds:
            break
        step_loss = 0.0
        for _ in range(args.grad_accum):
            if len(order) < args.batch_size:
                perm = list(range(len(examples)))
                rng.shuffle(perm)
                order += perm
            batch = [examples[order.pop(0)] for _ in range(args.batch_size)]
            epochs_seen += args.batch_size / len(examples)
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (x, y) in enumerate(batch):
                ids[i, :len(x)] = torch.tensor(x)
                labels[i, :len(y)] = torch.tensor(y)
                mask[i, :len(x)] = 1
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            (out.loss / args.grad_accum).backward()
            step_loss += out.loss.item() / args.grad_accum
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        step += 1
        if step % 10 == 0 or step == 1:
            print(f"  step {step:4d}  loss {step_loss:.4f}  lr {lr_at(step - 1):.2e}  {time.time() - w0:5.1f}s",
                  flush=True)
    model.eval()
    return {
        "steps": step,
        "epochs": epochs_seen,
        "wall_s": time.time() - w0,
        "cpu_s": time.process_time() - t0,
        "loss_first": losses[0],
        "loss_last": sum(losses[-5:]) / len(losses[-5:]),
        "losses": losses,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets/tiny-model"))
    ap.add_argument("--train", default=str(ROOT / "assets/demo/translate_en_fr.jsonl"))
    ap.add_argument("--prompts", default=str(ROOT / "assets/demo/prompts.jsonl"))
    ap.add_argument("--seconds", type=float, default=60.0, help="wall-clock budget for training")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj",
                    help="comma separated module names, or 'all-linear'")
    ap.add_argument("--cosine", action="store_true", help="cosine decay instead of constant lr after warmup")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", default=None, help="write a markdown report to this path")
    args = ap.parse_args(argv)

    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    prompts = load_jsonl(Path(args.prompts))
    rows = load_jsonl(Path(args.train))

    print(f"base model on {len(prompts)} held-out prompts:")
    base_correct, _ = score(model, tokenizer, prompts, show=3)
    print(f"  base correct: {base_correct}/{len(prompts)}")

    targets = "all-linear" if args.targets == "all-linear" else args.targets.split(",")
    lcfg = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"LoRA r={args.r} alpha={args.alpha} targets={args.targets}: {trainable:,} trainable parameters")
    stats = lora_train(model, tokenizer, rows, args)

    print("fine-tuned model:")
    ft_correct, _ = score(model, tokenizer, prompts, show=3)
    n = len(prompts)
    table = [
        "| base correct | fine-tuned correct | train seconds (wall / CPU) | steps (epochs) | loss first -> last |",
        "|---|---|---|---|---|",
        f"| {base_correct}/{n} ({100 * base_correct / n:.0f}%) | {ft_correct}/{n} ({100 * ft_correct / n:.0f}%) "
        f"| {stats['wall_s']:.0f} / {stats['cpu_s']:.0f} | {stats['steps']} ({stats['epochs']:.2f}) "
        f"| {stats['loss_first']:.3f} -> {stats['loss_last']:.3f} |",
    ]
    print("\n".join(table))

    result = dict(base_correct=base_correct, ft_correct=ft_correct, n=n, **{k: v for k, v in stats.items()
                                                                             if k != "losses"})
    if args.write:
        cmd = "HF_HUB_OFFLINE=1 python bench/tiny_model_lora.py " + " ".join(argv if argv is not None else sys.argv[1:])
        hp = (f"LoRA r={args.r}, alpha={args.alpha}, dropout={args.dropout}, targets={args.targets}; "
              f"AdamW lr={args.lr} ({'cosine' if args.cosine else 'constant'} after 5% warmup), no weight decay, "
              f"grad clip 1.0; batch {args.batch_size} x grad-accum {args.grad_accum} "
              f"(effective {args.batch_size * args.grad_accum}); max {args.max_steps} optimizer steps "
              f"or {args.seconds:.0f} s wall clock; loss on assistant tokens only (incl. <|im_end|>); seed {args.seed}.")
        report = f"""# Tiny model: LoRA on the demo task

Date: {_dt.date.today().isoformat()}  
Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), no GPU, torch threads {args.threads}  
Versions: python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}

Command:

```
{cmd.strip()}
```

Model `assets/tiny-model`, train `assets/demo/translate_en_fr.jsonl` ({len(rows)} rows), held-out
`assets/demo/prompts.jsonl` ({n} prompts, exact match after strip, greedy, chat template with
generation prompt, stop at `<|im_end|>`, max 24 new tokens).

Hyperparameters: {hp}

{chr(10).join(table)}

Trainable LoRA parameters: {trainable:,}.
"""
        Path(args.write).write_text(report, encoding="utf-8")
        print(f"wrote {args.write}")
    return result


if __name__ == "__main__":
    main()
