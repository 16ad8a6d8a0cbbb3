"""trl's fused LM head on a CPU: its own tile sizes and position choice against the
workbench's (workbench/train/cpu_lm_head.py), alone, forward + backward.

SmolLM2-135M's head shape (hidden 576, vocabulary 49,152), fp32, one packed micro-batch of
2,048 positions of which 55% are trained (an instruction row's answer share in the Alpaca
sample is about that). Each setting runs three times in this process; the table has the
median. Same inputs everywhere; the loss column shows that every setting computes the same
quantity.

    HF_HUB_OFFLINE=1 python bench/lm_head_cpu.py [--write bench/lm_head_cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _shared import header_lines

N, HIDDEN, VOCAB, TRAINED = 2048, 576, 49152, 0.55
# (label, score only trained positions, tokens per tile, vocabulary entries per tile)
SETTINGS = [
    ("trl on a CPU: every position, 4,096 x 32,768 tiles", False, 4096, 32768),
    ("trained positions only, trl's tiles", True, 4096, 32768),
    ("every position, 256 x 4,096 tiles", False, 256, 4096),
    ("trained positions, 1,024 x 16,384 tiles", True, 1024, 16384),
    ("trained positions, 512 x 8,192 tiles", True, 512, 8192),
    ("workbench: trained positions, 256 x 4,096 tiles", True, 256, 4096),
    ("trained positions, 128 x 2,048 tiles", True, 128, 2048),
]


def time_setting(torch, hidden, weight, targets, mask, compact, tokens, vocab):
    import trl.kernels.chunked_logprob as kernel
    from trl.kernels import ChunkedLogProbFunction

    kernel.TOKEN_CHUNK_SIZE = tokens
    h = hidden[mask] if compact else hidden
    t = targets[mask] if compact else targets
    start = time.perf_counter()
    out = ChunkedLogProbFunction.apply(h, weight, None, t, 1.0, vocab, None, 1.0,
                                       ("log_probs", "entropy", "is_top1"))
    log_probs = out[0] if compact else out[0][mask]
    loss = -log_probs.sum() / mask.sum()
    forward = time.perf_counter() - start
    loss.backward()
    total = time.perf_counter() - start
    hidden.grad = None
    return forward, total - forward, loss.item()


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden = torch.randn(N, HIDDEN, requires_grad=True)
    weight = torch.randn(VOCAB, HIDDEN) * 0.02
    targets = torch.randint(0, VOCAB, (N,))
    mask = torch.rand(N) < TRAINED
    rows = []
    for label, compact, tokens, vocab in SETTINGS:
        runs = [time_setting(torch, hidden, weight, targets, mask, compact, tokens, vocab)
                for _ in range(3)]
        fwd = statistics.median(r[0] for r in runs)
        bwd = statistics.median(r[1] for r in runs)
        rows.append((label, fwd, bwd, fwd + bwd, runs[-1][2]))
        print(rows[-1], flush=True)
    base = rows[0][3]
    lines = header_lines("trl's fused LM head on a CPU: tile sizes and scored positions",
                         "HF_HUB_OFFLINE=1 python bench/lm_head_cpu.py --write bench/lm_head_cpu.md")
    lines += [f"- shape: {N} positions ({int(mask.sum())} trained) x hidden {HIDDEN} x "
              f"vocabulary {VOCAB} (SmolLM2-135M's head), fp32, forward + backward, "
              "median of 3", "",
              "| setting | forward s | backward s | total s | x trl | loss |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {label} | {f:.2f} | {b:.2f} | {t:.2f} | {base / t:.2f}x | {loss:.4f} |"
              for label, f, b, t, loss in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
