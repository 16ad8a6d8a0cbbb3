"""How long one memory estimate takes (the app recomputes it on every keystroke; the issue
asks for under 5 ms per call). Pure Python, no GPU. Prints a markdown table.

    python bench/estimate_speed.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.estimate.advice import remedies  # noqa: E402
from workbench.estimate.config import load_model_config  # noqa: E402
from workbench.estimate.gpus import find_gpu  # noqa: E402
from workbench.estimate.memory import EstimateSettings, estimate_memory  # noqa: E402
from workbench.estimate.params import architecture_from_config  # noqa: E402

CASES = [
    ("llama-3.1-8b", EstimateSettings()),
    ("gemma-2-9b", EstimateSettings(method="qlora", targets="all-linear", r=64)),
    ("phi-3-mini-4k", EstimateSettings(targets="all-linear", grad_ckpt=False, batch=8)),
    ("qwen2.5-0.5b", EstimateSettings(loss_path="full_logits", seq=4096)),
]


def timed(fn, calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[int(0.99 * len(samples)) - 1] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    print(f"Machine: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, {calls} calls per row\n")
    print("| model | settings | estimate median ms | p99 ms | estimate + remedies median ms |")
    print("|---|---|---|---|---|")
    gpu = find_gpu("rtx4090")
    for name, s in CASES:
        arch = architecture_from_config(load_model_config(name)[0])
        med, p99 = timed(lambda: estimate_memory(arch, s), calls)
        med_r, _ = timed(lambda: remedies(arch, s, gpu.memory_bytes), max(1, calls // 10))
        desc = f"{s.method} r={s.r} {'all-linear' if s.targets == 'all-linear' else 'attn'} " \
               f"b={s.batch} s={s.seq} ckpt={'on' if s.grad_ckpt else 'off'}"
        print(f"| {name} | {desc} | {med:.3f} | {p99:.3f} | {med_r:.3f} |")
    t0 = time.perf_counter()
    for _ in range(200):
        architecture_from_config(load_model_config("llama-3.1-8b")[0])
    print(f"\nReading + parsing config.json: {(time.perf_counter() - t0) / 200 * 1e3:.3f} ms per call")


if __name__ == "__main__":
    main()
