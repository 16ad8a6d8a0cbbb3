"""Measure the memory estimate against real training steps on a GPU (issue 4, point 3).

For each point (architecture x LoRA/QLoRA x r x targets x batch x seq x gradient
checkpointing x loss path): build the model from its shipped config.json with random weights
(memory does not depend on weight values), run two training steps exactly like the reference
step, and compare torch.cuda.max_memory_reserved() over them with the estimate's
`reserved_bytes`.

Reference step: bf16 weights from `from_config` on the GPU (QLoRA: every decoder nn.Linear
replaced by a bitsandbytes Linear4bit, nf4, double quantization, bf16 compute and storage,
which is what from_pretrained with BitsAndBytesConfig builds, then peft's
prepare_model_for_kbit_training); peft LoRA adapters (fp32); torch.optim.AdamW; bf16
autocast; SDPA; full-length rows with labels on every token; model.train(). The loss is
either plain transformers (`full_logits`, the model's own loss on fp32-upcast logits) or
trl's fused LM head (`trl_fused`, what the workbench runner's SFTTrainer calls).

Measured: before step 1, empty the cache and reset the peak; run step 1 (creates the AdamW
states), zero_grad(set_to_none=True), step 2; read max_memory_reserved. That is the
steady-state peak the estimate predicts.

    python bench/estimate_memory_gpu.py                # all points, time-boxed (~7 min on H200)
    python bench/estimate_memory_gpu.py --budget-s 300 --only qwen2.5-0.5b,tinyllama-1.1b
    python bench/estimate_memory_gpu.py --dry-run      # 3 tiny points on CPU, no measurement

Writes $OUT/estimate_memory_gpu.json and .md (OUT defaults to bench/out): every point with
measured and estimated bytes and the error, then the accuracy summary (median absolute
error, max, worst under-estimate) against the target (median <= 5%, all within 15%, no
under-estimate beyond 10%).

The runner's step (`trl_fused`) points also carry the `workbench estimate --trace` estimate,
traced on a CPU beforehand and committed (`bench/estimate_memory_gpu_traces.json`, made by
`python bench/estimate_memory_gpu.py --trace-cpu`) so the GPU's minutes go to measuring.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.estimate.config import load_model_config  # noqa: E402
from workbench.estimate.memory import EstimateSettings, estimate_memory, runs_eager  # noqa: E402
from workbench.estimate.params import architecture_from_config, attention_only_targets  # noqa: E402

MODELS = ("smollm2-360m", "qwen2.5-0.5b", "tinyllama-1.1b", "smollm2-1.7b", "phi-3-mini-4k",
          "mistral-7b-v0.3", "qwen2.5-7b", "llama-3.1-8b", "gemma-2-9b")

# (method, r, targets, batch, seq, grad_ckpt, loss_path): the same eight shapes per model,
# spanning r 8..64, attention-only and all-linear, batch 1..8, seq 256..4096, ckpt on/off.
SHAPES = (
    ("lora", 8, "attention", 1, 256, False, "full_logits"),
    ("lora", 16, "all-linear", 2, 512, False, "trl_fused"),
    ("lora", 64, "all-linear", 1, 2048, True, "full_logits"),
    ("lora", 32, "attention", 8, 1024, True, "trl_fused"),
    ("lora", 16, "attention", 4, 4096, True, "full_logits"),
    ("qlora", 16, "attention", 2, 512, False, "full_logits"),
    ("qlora", 64, "all-linear", 4, 1024, True, "full_logits"),
    ("qlora", 8, "all-linear", 1, 4096, True, "trl_fused"),
)


@dataclass
class Point:
    model: str
    method: str
    r: int
    targets: str  # "attention" or "all-linear"
    batch: int
    seq: int
    grad_ckpt: bool
    loss_path: str
    estimated_bytes: int = 0
    measured_bytes: int | None = None
    error_pct: float | None = None
    traced_bytes: int | None = None       # `workbench estimate --trace`, runner's step only
    traced_error_pct: float | None = None
    status: str = "planned"
    seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return (f"{self.model}/{self.method}/r{self.r}/{self.targets}/{self.batch}x{self.seq}/"
                f"ck{int(self.grad_ckpt)}/{self.loss_path}")

    def settings(self, arch) -> EstimateSettings:
        targets = "all-linear" if self.targets == "all-linear" else attention_only_targets(arch)
        return EstimateSettings(method=self.method, r=self.r, alpha=2 * self.r, dropout=0.05,
                                targets=targets, batch=self.batch, seq=self.seq,
                                grad_ckpt=self.grad_ckpt, optimizer="adamw_torch",
                                precision="bf16", attn="sdpa", loss_path=self.loss_path)


TRACES = REPO / "bench" / "estimate_memory_gpu_traces.json"


def traced_estimates() -> dict[str, int]:
    return json.loads(TRACES.read_text())["points"] if TRACES.is_file() else {}


def plan_points(models=MODELS) -> list[Point]:
    points = []
    traced = traced_estimates()
    for model in models:
        config, _ = load_model_config(model)
        arch = architecture_from_config(config)
        for shape in SHAPES:
            p = Point(model, *shape)
            p.estimated_bytes = estimate_memory(arch, p.settings(arch)).reserved_bytes
            p.traced_bytes = traced.get(p.key)
            points.append(p)
    # Small to large within each model (models are already ordered small to large), so a
    # time-out or an OOM costs the biggest points only.
    order = {m: i for i, m in enumerate(models)}
    return sorted(points, key=lambda p: (order[p.model], p.method, p.estimated_bytes))


# ---- building models ---------------------------------------------------------------------

def build_model(config: dict, method: str, device: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**config)
    hf_config.use_cache = False
    dtype = torch.bfloat16
    # as the runner and the estimate do: eager where this transformers has no SDPA path (Gemma-2)
    attn = "eager" if runs_eager(hf_config.model_type) else "sdpa"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attn)
    if method == "qlora":  # bitsandbytes >= 0.48 quantizes on the CPU too (the dry run)
        quantize_in_place(model)
    return model


def quantize_in_place(model) -> None:
    """What from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit, nf4,
    double quant, bf16 compute, bf16 storage)) builds, without weights on disk: every
    decoder nn.Linear becomes a Linear4bit; the output layer stays (transformers skips it)."""
    import bitsandbytes as bnb
    import torch

    output = model.get_output_embeddings()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear) or child is output:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, compress_statistics=True,
                                  quant_type="nf4", quant_storage=torch.bfloat16, device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False,
                                         quant_type="nf4", compress_statistics=True,
                                         quant_storage=torch.bfloat16).to(child.weight.device)
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, q)
            del child
    model.is_loaded_in_4bit = True
    model.is_quantized = True
    gc.collect()
    torch.cuda.empty_cache()


def prepare(model, point: Point, arch):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    ckpt_kwargs = {"use_reentrant": False}
    if point.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=point.grad_ckpt,
                                                gradient_checkpointing_kwargs=ckpt_kwargs)
    elif point.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    if not point.grad_ckpt and getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()
    if point.loss_path == "trl_fused":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    targets = "all-linear" if point.targets == "all-linear" else list(attention_only_targets(arch))
    peft_model = get_peft_model(model, LoraConfig(r=point.r, lora_alpha=2 * point.r,
                                                  lora_dropout=0.05, target_modules=targets,
                                                  task_type="CAUSAL_LM"))
    if point.grad_ckpt:
        peft_model.enable_input_require_grads()
    peft_model.train()
    return peft_model


def train_steps(model, point: Point, vocab: int, device: str, steps: int = 2) -> None:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, vocab, (point.batch, point.seq), device=device)
    for _ in range(steps):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            if point.loss_path == "trl_fused":
                loss = model(input_ids=ids, labels=ids, fused_lm_head=True).loss
            else:
                loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss


# ---- running ------------------------------------------------------------------------------

def measure_all(points: list[Point], budget_s: float, device: str, tiny: bool = False) -> None:
    import torch

    start = time.time()
    total_memory = torch.cuda.get_device_properties(0).total_memory if device == "cuda" else None
    groups: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.model, p.method), []).append(p)
    for (model_name, method), group in groups.items():
        if time.time() - start > budget_s:
            for p in group:
                p.status = "skipped: time budget"
            continue
        config, _ = load_model_config(model_name)
        if tiny:
            config = {**config, "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                      "vocab_size": 512}
        arch = architecture_from_config(config)
        base = None
        for p in group:
            if time.time() - start > budget_s:
                p.status = "skipped: time budget"
                continue
            if total_memory and p.estimated_bytes > 0.92 * total_memory:
                p.status = "skipped: estimate above 92% of the GPU"
                continue
            t0 = time.time()
            model = None
            try:
                if base is None:
                    base = build_model(config, method, device)
                model = prepare(base, p, arch)
                if device == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                train_steps(model, p, arch.vocab, device)
                if device == "cuda":
                    torch.cuda.synchronize()
                    p.measured_bytes = torch.cuda.max_memory_reserved()
                    p.extra["max_allocated"] = torch.cuda.max_memory_allocated()
                if tiny:
                    p.estimated_bytes = estimate_memory(arch, p.settings(arch)).reserved_bytes
                p.status = "measured" if p.measured_bytes else "ran (dry run: not measured)"
            except torch.OutOfMemoryError:
                p.status = "oom"
            except Exception as exc:  # keep going; the table says what happened
                p.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            finally:
                p.seconds = round(time.time() - t0, 1)
                if model is not None:
                    # Take the adapters out so the next point starts from the same base.
                    try:
                        base = model.unload()
                        base.disable_input_require_grads()  # a checkpointing point's hook
                    except Exception:
                        base = None
                    del model
                gc.collect()
                if device == "cuda":
                    torch.cuda.empty_cache()
            if p.measured_bytes:
                p.error_pct = round(100 * (p.estimated_bytes - p.measured_bytes) / p.measured_bytes, 2)
                if p.traced_bytes:
                    p.traced_error_pct = round(
                        100 * (p.traced_bytes - p.measured_bytes) / p.measured_bytes, 2)
            print(f"{p.model:16} {p.method:5} r={p.r:<2} {p.targets:10} b={p.batch} s={p.seq:<4} "
                  f"ckpt={int(p.grad_ckpt)} {p.loss_path:11} est={p.estimated_bytes / 2**30:6.2f} "
                  f"meas={(p.measured_bytes or 0) / 2**30:6.2f} err={p.error_pct} {p.status} "
                  f"({p.seconds}s)", flush=True)
        del base
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def summarize(points: list[Point]) -> dict:
    errors = [p.error_pct for p in points if p.error_pct is not None]
    if not errors:
        return {"measured_points": 0}
    abs_errors = [abs(e) for e in errors]
    worst_under = min(errors)
    summary = {
        "measured_points": len(errors),
        "models": len({p.model for p in points if p.error_pct is not None}),
        "median_abs_error_pct": round(statistics.median(abs_errors), 2),
        "max_abs_error_pct": round(max(abs_errors), 2),
        "worst_under_estimate_pct": round(worst_under, 2),
    }
    summary["meets_target"] = (summary["median_abs_error_pct"] <= 5 and summary["max_abs_error_pct"] <= 15
                               and worst_under >= -10 and len(errors) >= 60 and summary["models"] >= 8)
    traced = [p.traced_error_pct for p in points if p.traced_error_pct is not None]
    if traced:  # the runner's step, `--trace` estimate against the same measurements
        summary["traced_points"] = len(traced)
        summary["traced_median_abs_error_pct"] = round(statistics.median(abs(e) for e in traced), 2)
        summary["traced_max_abs_error_pct"] = round(max(abs(e) for e in traced), 2)
        summary["traced_worst_under_estimate_pct"] = round(min(traced), 2)
    return summary


def trace_on_cpu(models=MODELS) -> None:
    """The `--trace` estimate of every traceable runner's-step point, written to TRACES."""
    import platform

    import torch
    import transformers

    from workbench.estimate.trace import TraceUnsupported, check_traceable, trace_step, with_trace

    found = {}
    for p in plan_points(models):
        config, _ = load_model_config(p.model)
        arch = architecture_from_config(config)
        settings = p.settings(arch)
        try:
            check_traceable(settings)
        except TraceUnsupported:
            continue
        if p.loss_path != "trl_fused":  # this script's full-logits step drops the output early
            continue
        traced = trace_step(config, settings)
        found[p.key] = with_trace(estimate_memory(arch, settings), traced).reserved_bytes
        print(f"{p.key}: analytic {p.estimated_bytes / 2**30:.2f} GiB, --trace "
              f"{found[p.key] / 2**30:.2f} GiB ({traced.seconds:.0f} s)", flush=True)
    TRACES.write_text(json.dumps({"machine": f"{platform.machine()} CPU", "torch": torch.__version__,
                                  "transformers": transformers.__version__,
                                  "command": "python bench/estimate_memory_gpu.py --trace-cpu",
                                  "points": found}, indent=1) + "\n")


def write_tables(points: list[Point], out_dir: Path, machine: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(points)
    (out_dir / "estimate_memory_gpu.json").write_text(json.dumps(
        {"machine": machine, "summary": summary, "points": [asdict(p) for p in points]}, indent=2))
    gib = 2 ** 30
    lines = ["# Memory estimate vs measured peak (torch.cuda.max_memory_reserved)", "",
             f"Machine: {machine}", "",
             "| model | method | r | targets | batch | seq | ckpt | loss | measured GiB | "
             "estimated GiB | error % | --trace GiB | --trace error % | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        measured = f"{p.measured_bytes / gib:.2f}" if p.measured_bytes else "-"
        traced = f"{p.traced_bytes / gib:.2f}" if p.traced_bytes else "-"
        lines.append(f"| {p.model} | {p.method} | {p.r} | {p.targets} | {p.batch} | {p.seq} | "
                     f"{'on' if p.grad_ckpt else 'off'} | {p.loss_path} | {measured} | "
                     f"{p.estimated_bytes / gib:.2f} | "
                     f"{'' if p.error_pct is None else p.error_pct} | {traced} | "
                     f"{'' if p.traced_error_pct is None else p.traced_error_pct} | {p.status} |")
    lines += ["", "## Accuracy", ""]
    lines += [f"- {k}: {v}" for k, v in summary.items()]
    lines += ["", "Target: median absolute error <= 5%, every point within 15%, no point "
              "under-estimated by more than 10%, >= 60 points over >= 8 architectures."]
    (out_dir / "estimate_memory_gpu.md").write_text("\n".join(lines) + "\n")
    return summary


def machine_info(device: str) -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__}
    for lib in ("transformers", "peft", "trl", "bitsandbytes"):
        try:
            info[lib] = __import__(lib).__version__
        except Exception:
            info[lib] = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    else:
        info["gpu"] = "none (dry run on CPU)"
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="3 tiny points (LoRA, fused loss, QLoRA) on CPU: checks the "
                             "script, measures nothing")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting new points after this many seconds (default 420)")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--trace-cpu", action="store_true",
                        help=f"trace the runner's-step points on this CPU and write {TRACES.name}")
    args = parser.parse_args(argv)
    out_dir = Path(os.environ.get("OUT") or REPO / "bench" / "out")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.trace_cpu:
        trace_on_cpu(tuple(m.strip() for m in args.only.split(",")) if args.only else MODELS)
        return 0

    if args.dry_run:
        points = plan_points(("tinyllama-1.1b",))
        points = [points[0], next(p for p in points if p.method == "lora" and p.loss_path == "trl_fused"),
                  next(p for p in points if p.method == "qlora" and p.grad_ckpt)]
        for p in points:
            p.batch, p.seq = 1, 32
            p.traced_bytes = None  # traced for the full-size model, not this tiny one
        measure_all(points, budget_s=120, device="cpu", tiny=True)
        write_tables(points, out_dir, machine_info("cpu"))
        bad = [p for p in points if p.status.startswith("error")]
        return 1 if bad else 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: run with --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    models = tuple(m.strip() for m in args.only.split(",")) if args.only else MODELS
    points = plan_points(models)
    measure_all(points, args.budget_s, "cuda")
    summary = write_tables(points, out_dir, machine_info("cuda"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
