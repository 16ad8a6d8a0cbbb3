"""Saved-for-backward bytes per decoder layer, counted on the CPU, against the estimator's terms.

The H200 points cover 5 architectures; this checks the activation terms (`_per_layer_activations`)
of every shipped architecture without a GPU: a random-init model of the architecture with 1 and
2 decoder layers (a 512-token vocabulary: the head is not what is checked), peft LoRA r16 on the
attention projections, bf16 autocast, the attention transformers will use on a GPU (SDPA; eager
for Gemma-2, which has no SDPA path); `torch.autograd.graph.saved_tensors_hooks` records every
tensor saved for backward, parameters excluded; the difference between the 2- and 1-layer
models, per token, is one layer's saved bytes.

    python bench/activation_bytes_cpu.py [--seq 256] [--arch NAME ...] [--write bench/activation_bytes_cpu.md]

Limits: CPU kernels, not CUDA ones (the CPU SDPA kernel saves the same q, k, v, output and
logsumexp as the flash / memory-efficient CUDA kernels); no checkpointing; one micro-batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARCHS = ROOT.parent / "shared" / "data" / "gpu-truth" / "archs.json"
CONFIGS = ROOT / "assets" / "configs"


def architectures() -> dict[str, dict]:
    """The gpu-truth architectures when present, else the shipped configs."""
    if ARCHS.is_file():
        return json.loads(ARCHS.read_text())
    return {p.stem: json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json"))}


def saved_bytes(spec: dict, layers: int, targets: list[str], seq: int, attn: str) -> int:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{**spec, "num_hidden_layers": layers, "vocab_size": 512})
    if getattr(cfg, "pad_token_id", None) is not None and cfg.pad_token_id >= 512:
        cfg.pad_token_id = 0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn)
    model.train()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0))
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 512, (1, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


def measure(name: str, spec: dict, seq: int) -> dict:
    from workbench.estimate.memory import EstimateSettings, runs_eager, _per_layer_activations
    from workbench.estimate.params import architecture_from_config, attention_only_targets

    arch = architecture_from_config(spec)
    attn = "eager" if runs_eager(arch.model_type) else "sdpa"
    targets = list(attention_only_targets(arch))
    one, two = (saved_bytes(spec, n, targets, seq, attn) for n in (1, 2))
    measured = (two - one) / seq
    estimated, _ = _per_layer_activations(arch, EstimateSettings(r=16, dropout=0.0, targets=tuple(targets),
                                                                 seq=seq, batch=1, attn=attn))
    return {"arch": name, "attn": attn, "measured": measured, "estimated": estimated,
            "ratio": estimated / measured}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--arch", action="append", help="only these (names in archs.json)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    import torch
    import transformers

    specs = architectures()
    rows = [measure(name, specs[name], args.seq) for name in (args.arch or specs)]
    lines = ["# Saved-for-backward bytes per decoder layer: CPU count vs the estimator", "",
             f"Date: {dt.date.today().isoformat()}. {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, transformers {transformers.__version__}. Sequence {args.seq}, "
             "batch 1, LoRA r16 on the attention projections, bf16 autocast.",
             f"Command: `python bench/activation_bytes_cpu.py --seq {args.seq} --write ...`.", "",
             "| architecture | attention | counted bytes / token / layer | estimated | estimated / counted |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['attn']} | {r['measured']:,.0f} | {r['estimated']:,.0f} | {r['ratio']:.3f} |")
    text = "\n".join(lines) + "\n"
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
