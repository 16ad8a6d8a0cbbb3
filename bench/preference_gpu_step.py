"""Measure a preference-tuning step's peak GPU memory and time against `workbench estimate`.

For each point: build the model from a shipped config.json (assets/configs, optionally cut to
fewer decoder layers) with random weights in bf16 on the GPU (memory does not depend on weight
values), add LoRA adapters as the workbench runner does (workbench/train/runner.py
`add_adapters`), and train a few steps through the trainer the workbench builds for the
method (workbench/train/methods/preference_trainers.py: trl's DPOTrainer, KTOTrainer,
ORPOTrainer, CPOTrainer fed token ids), bf16, gradient checkpointing as the point says
(use_reentrant=False), AdamW (torch), max_grad_norm 1.0. Every row is `seq` tokens long (a
prompt and answers of fixed lengths, random ids), so nothing is padded.

Measured: `torch.cuda.max_memory_reserved()` / `max_memory_allocated()` over the steps after
the first (the peak is reset when step 2 begins: the AdamW states exist, as in the estimate's
steady state) and over all steps, and the mean seconds of those steps. Compared with the
analytic estimate (`reserved_bytes`, and its allocated bytes: reserved less the allocator
reserve) and, where committed, the `workbench estimate --trace` estimate traced on a CPU
beforehand (bench/preference_gpu_step_traces.json, `--trace-cpu`), and with the estimated
step time on this GPU (workbench/estimate/speed.py).

    python bench/preference_gpu_step.py                 # the default points (~2 min on an H100)
    python bench/preference_gpu_step.py --only dpo,kto --budget-s 90
    python bench/preference_gpu_step.py --dry-run       # the bundled tiny model on the CPU
    python bench/preference_gpu_step.py --trace-cpu     # write the traces file (CPU, minutes)

Writes $OUT/preference_gpu_step.json and .md (OUT defaults to bench/out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.estimate.memory import EstimateSettings, estimate_memory  # noqa: E402
from workbench.estimate.params import architecture_from_config  # noqa: E402

TRACES = REPO / "bench" / "preference_gpu_step_traces.json"
TINY = REPO / "assets" / "tiny-model"
PROMPT_SHARE = 0.25  # of each row; the rest is the answer (DPO / ORPO / SimPO: both answers)


@dataclass
class Point:
    model: str            # a folder name under assets/configs
    layers: int | None    # decoder layers kept (None: all)
    train_method: str     # dpo, kto, orpo, simpo
    batch: int
    seq: int
    grad_ckpt: bool
    precompute_ref: bool = False
    r: int = 16
    targets: str = "attention"
    steps: int = 3
    status: str = "planned"
    measured_reserved: int | None = None
    measured_allocated: int | None = None
    first_step_reserved: int | None = None    # over all steps, the first included
    step_seconds: float | None = None
    estimate_reserved: int | None = None
    estimate_allocated: int | None = None
    estimate_phase: str = ""
    estimate_step_seconds: float | None = None
    traced_reserved: int | None = None
    traced_allocated: int | None = None
    errors: dict = field(default_factory=dict)

    def key(self) -> str:
        return (f"{self.model}/L{self.layers or 'all'}/{self.train_method}"
                f"{'+pre' if self.precompute_ref else ''}/r{self.r}{self.targets[:3]}/"
                f"{self.batch}x{self.seq}/ck{int(self.grad_ckpt)}")


# Small first: each point builds its model and trainer (5-20 s on an H100).
POINTS = (
    Point("qwen2.5-0.5b", None, "dpo", 2, 1024, True),
    Point("qwen2.5-0.5b", None, "dpo", 2, 1024, False),
    Point("qwen2.5-0.5b", None, "dpo", 2, 1024, False, precompute_ref=True),
    Point("qwen2.5-0.5b", None, "kto", 4, 1024, True),
    Point("qwen2.5-0.5b", None, "orpo", 2, 1024, True),
    Point("qwen2.5-0.5b", None, "simpo", 2, 1024, True),
    Point("llama-3.1-8b", 4, "dpo", 2, 2048, False),
    Point("llama-3.1-8b", 4, "dpo", 2, 2048, True),
)


def load_config(point: Point) -> dict:
    folder = TINY if point.model == "tiny" else REPO / "assets" / "configs" / point.model
    config = json.loads((folder / "config.json").read_text())
    if point.layers:
        config["num_hidden_layers"] = point.layers
        for key in ("layer_types",):  # per-layer lists must match the kept layers
            if isinstance(config.get(key), list):
                config[key] = config[key][:point.layers]
    return config


def settings_for(point: Point, precision: str = "bf16") -> EstimateSettings:
    arch = architecture_from_config(load_config(point))
    from workbench.estimate.params import attention_only_targets

    targets = "all-linear" if point.targets == "all-linear" else attention_only_targets(arch)
    return EstimateSettings(method="lora", r=point.r, alpha=2.0 * point.r, dropout=0.05,
                            targets=targets, batch=point.batch, seq=point.seq,
                            grad_ckpt=point.grad_ckpt, optimizer="adamw_torch",
                            precision=precision, train_method=point.train_method,
                            precompute_ref=point.precompute_ref)


def estimate_point(point: Point, gpu_name: str | None, precision: str = "bf16") -> None:
    config = load_config(point)
    arch = architecture_from_config(config)
    s = settings_for(point, precision)
    est = estimate_memory(arch, s)
    point.estimate_reserved = est.reserved_bytes
    point.estimate_allocated = est.reserved_bytes - est.breakdown["allocator reserve"]
    point.estimate_phase = est.phase
    if gpu_name:
        from workbench.estimate.gpus import UnknownGpu, find_gpu
        from workbench.estimate.speed import step_seconds

        try:
            point.estimate_step_seconds = step_seconds(arch, s, find_gpu(gpu_name))[0]
        except UnknownGpu:
            pass
    traced = load_traces().get(point.key())
    if traced:
        point.traced_reserved, point.traced_allocated = traced["peak_reserved"], traced["peak_allocated"]


def load_traces() -> dict:
    return json.loads(TRACES.read_text()) if TRACES.is_file() else {}


def _rows(point: Point, vocab: int, n: int, seed: int) -> list[dict]:
    """`n` examples whose every row is exactly `seq` tokens: prompt + answer."""
    import random

    rng = random.Random(seed)
    prompt = max(1, int(point.seq * PROMPT_SHARE))
    answer = point.seq - prompt

    def ids(k: int) -> list[int]:
        return [rng.randrange(8, vocab) for _ in range(k)]
    if point.train_method == "kto":
        return [{"prompt_ids": ids(prompt), "completion_ids": ids(answer), "label": i % 2 == 0}
                for i in range(n)]
    return [{"prompt_ids": ids(prompt), "chosen_ids": ids(answer), "rejected_ids": ids(answer)}
            for i in range(n)]


def build_trainer(point: Point, device: str, out_dir: str):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from workbench.train.methods import preference_trainers as pt

    config = load_config(point)
    cfg_dict = {k: v for k, v in config.items() if k != "quantization_config"}
    cfg = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    bf16 = device == "cuda"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if bf16 else torch.float32,
                                                 attn_implementation="sdpa")
    model.config.use_cache = False
    s = settings_for(point)
    targets = list(s.targets) if not isinstance(s.targets, str) else s.targets
    model = get_peft_model(model, LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    if point.grad_ckpt:
        model.enable_input_require_grads()
    tokenizer = AutoTokenizer.from_pretrained(TINY)  # only its pad / eos ids are used
    rows = _rows(point, cfg.vocab_size, point.batch * point.steps, seed=0)
    dataset = Dataset.from_list(rows)
    common = dict(output_dir=out_dir, max_steps=point.steps, per_device_train_batch_size=point.batch,
                  gradient_accumulation_steps=1, learning_rate=1e-5, lr_scheduler_type="constant",
                  max_grad_norm=1.0, optim="adamw_torch", bf16=bf16, use_cpu=device == "cpu",
                  gradient_checkpointing=point.grad_ckpt,
                  gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1,
                  save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                  dataloader_num_workers=0, max_length=point.seq, seed=0)
    if point.train_method == "dpo":
        from trl import DPOConfig

        args, cls = (DPOConfig(**common, beta=0.1, precompute_ref_log_probs=point.precompute_ref,
                               dataset_num_proc=None), pt.PretokenizedDPOTrainer)
    elif point.train_method == "kto":
        from trl import KTOConfig

        args, cls = (KTOConfig(**common, beta=0.1, precompute_ref_log_probs=point.precompute_ref,
                               dataset_num_proc=None), pt.PretokenizedKTOTrainer)
    elif point.train_method == "orpo":
        args, cls = pt.orpo_config(**common, beta=0.1), pt.PretokenizedORPOTrainer
    else:
        args, cls = (pt.cpo_config(**common, beta=2.0, loss_type="simpo", cpo_alpha=0.0,
                                   simpo_gamma=0.5), pt.PretokenizedCPOTrainer)

    class Peaks(TrainerCallback):
        """Reset the peak when step 2 begins; time every step."""

        def __init__(self):
            self.started = None
            self.seconds: list[float] = []
            self.first_reserved = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
                if state.global_step == 1:
                    self.first_reserved = torch.cuda.max_memory_reserved()
                    torch.cuda.reset_peak_memory_stats()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.started)

    peaks = Peaks()
    trainer = cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                  callbacks=[peaks])
    return trainer, peaks


def measure(point: Point, device: str) -> None:
    import gc

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer, peaks = build_trainer(point, device, tmp)
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        if device == "cuda":
            point.measured_reserved = torch.cuda.max_memory_reserved()
            point.measured_allocated = torch.cuda.max_memory_allocated()
            point.first_step_reserved = max(peaks.first_reserved, point.measured_reserved)
        later = peaks.seconds[1:] or peaks.seconds
        point.step_seconds = statistics.mean(later) if later else None
        del trainer
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _err(measured, estimated) -> float | None:
    return None if not measured or estimated is None else estimated / measured - 1


def errors(point: Point) -> None:
    point.errors = {k: (round(v, 4) if v is not None else None) for k, v in {
        "reserved_vs_analytic": _err(point.measured_reserved, point.estimate_reserved),
        "allocated_vs_analytic": _err(point.measured_allocated, point.estimate_allocated),
        "reserved_vs_traced": _err(point.measured_reserved, point.traced_reserved),
        "step_seconds_vs_estimate": _err(point.step_seconds, point.estimate_step_seconds),
    }.items()}


def run_points(points: list[Point], device: str, budget_s: float, gpu_name: str | None) -> None:
    start = time.monotonic()
    for p in points:
        if time.monotonic() - start > budget_s:
            p.status = "skipped (time budget)"
            continue
        try:
            estimate_point(p, gpu_name, "bf16" if device == "cuda" else "fp32")
            measure(p, device)
            errors(p)
            p.status = "measured" if p.measured_reserved else "ran (dry run: not measured)"
        except Exception as exc:  # noqa: BLE001 - one point's failure must not lose the rest
            p.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        print(f"{p.key()}: {p.status} {json.dumps(p.errors)}", flush=True)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def write_tables(points: list[Point], out_dir: Path, info: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    measured = [p for p in points if p.measured_reserved]
    errs = [p.errors["reserved_vs_analytic"] for p in measured
            if p.errors.get("reserved_vs_analytic") is not None]
    summary = {"points": len(points), "measured": len(measured),
               "median_abs_error": round(statistics.median(abs(e) for e in errs), 4) if errs else None,
               "worst_under": round(min(errs), 4) if errs else None,
               "worst_over": round(max(errs), 4) if errs else None}
    (out_dir / "preference_gpu_step.json").write_text(json.dumps(
        {"machine": info, "summary": summary, "points": [asdict(p) | {"key": p.key()} for p in points]},
        indent=2))
    lines = ["# Preference step: measured peak memory and step time vs `workbench estimate`", "",
             f"Machine: {info.get('gpu')}; torch {info.get('torch')}, transformers "
             f"{info.get('transformers')}, peft {info.get('peft')}, trl {info.get('trl')}. "
             "Command: `python bench/preference_gpu_step.py` (see its docstring for the step).", "",
             f"Summary: {summary}", "",
             "| point | status | measured reserved GiB | analytic GiB | error | traced GiB | error | "
             "measured allocated GiB | analytic allocated | error | s/step | estimated s/step | "
             "error | analytic peak moment |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in points:
        e = p.errors
        lines.append(
            f"| {p.key()} | {p.status} | {_gib(p.measured_reserved)} | {_gib(p.estimate_reserved)} | "
            f"{_pct(e.get('reserved_vs_analytic'))} | {_gib(p.traced_reserved)} | "
            f"{_pct(e.get('reserved_vs_traced'))} | {_gib(p.measured_allocated)} | "
            f"{_gib(p.estimate_allocated)} | {_pct(e.get('allocated_vs_analytic'))} | "
            f"{p.step_seconds if p.step_seconds is None else round(p.step_seconds, 3)} | "
            f"{p.estimate_step_seconds if p.estimate_step_seconds is None else round(p.estimate_step_seconds, 3)} | "
            f"{_pct(e.get('step_seconds_vs_estimate'))} | {p.estimate_phase} |")
    (out_dir / "preference_gpu_step.md").write_text("\n".join(lines) + "\n")
    return summary


def machine_info(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__}
    for lib in ("transformers", "peft", "trl", "accelerate"):
        try:
            info[lib] = __import__(lib).__version__
        except Exception:  # noqa: BLE001
            info[lib] = None
    info["gpu"] = torch.cuda.get_device_name(0) if device == "cuda" else "none (dry run on CPU)"
    return info


def trace_on_cpu(points: list[Point]) -> None:
    """`workbench estimate --trace` for every point, on this CPU, into TRACES."""
    from workbench.estimate.trace import trace_step

    traces = load_traces()
    for p in points:
        t = trace_step(load_config(p), settings_for(p))
        traces[p.key()] = {"peak_reserved": t.peak_reserved, "peak_allocated": t.peak_allocated,
                           "peak_at": t.peak_label, "seconds": round(t.seconds, 1)}
        print(p.key(), traces[p.key()], flush=True)
    TRACES.write_text(json.dumps(traces, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the bundled tiny model, one point a method, 2 steps on the CPU: "
                             "checks the script, measures nothing")
    parser.add_argument("--only", help="comma-separated methods (dpo, kto, orpo, simpo)")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="stop starting new points after this many seconds (default 150)")
    parser.add_argument("--trace-cpu", action="store_true",
                        help=f"trace the points on this CPU and write {TRACES.name}")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(os.environ.get("OUT") or REPO / "bench" / "out")
    only = {m.strip() for m in args.only.split(",")} if args.only else None
    points = [Point(**{k: v for k, v in asdict(p).items()}) for p in POINTS
              if only is None or p.train_method in only]

    if args.trace_cpu:
        trace_on_cpu(points)
        return 0
    if args.dry_run:
        points = [Point("tiny", None, m, 2, 32, ck, steps=2)
                  for m, ck in (("dpo", True), ("kto", False), ("orpo", False), ("simpo", True))
                  if only is None or m in only]
        run_points(points, "cpu", budget_s=300, gpu_name=None)
        write_tables(points, out_dir, machine_info("cpu"))
        return 1 if any(p.status.startswith("error") for p in points) else 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    run_points(points, "cuda", args.budget_s, torch.cuda.get_device_name(0))
    summary = write_tables(points, out_dir, machine_info("cuda"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
