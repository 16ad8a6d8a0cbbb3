"""Measure a GRPO step's peak GPU memory and time against `workbench estimate`.

For each point: build the model from a shipped config.json (assets/configs) with random weights
in bf16 on the GPU (memory does not depend on weight values), add LoRA adapters as the workbench
runner does (workbench/train/runner.py `add_adapters`: attention projections, r 16, dropout
0.05), and train a few steps through trl's GRPOTrainer as the workbench builds it
(workbench/train/methods/grpo.py `build_trainer`: the pretokenized-prompt trainer, GRPOConfig
with num_generations, max_completion_length, beta, loss "dapo", transformers generation), bf16,
gradient checkpointing (use_reentrant=False), AdamW (torch), max_grad_norm 1.0. Every prompt is
`max_prompt_len` random token ids (nothing padded); the reward is a constant, so every group's
advantage is 0 (the loss and its backward still run on every token). Completions are sampled
from a random model, so an end-of-sequence token is rare: the generation runs to
max_completion_len as the estimate assumes (the step prints the completions' mean length).

Measured: `torch.cuda.max_memory_reserved()` / `max_memory_allocated()` over the steps after the
first (the peak is reset when step 2 begins: the AdamW states exist, as in the estimate's steady
state; a step generates the generation batch at its first micro-batch, so its window holds both
the generation and the training), and the mean seconds of those steps. Compared with the
analytic estimate (`reserved_bytes`, its allocated bytes: reserved less the allocator reserve,
and the moment it says holds the peak: the generation or the training), with the estimated
step time on this GPU (generation included: workbench/estimate/speed.py `generation_seconds`,
a guess this measures), and, where committed, with the CPU trace of the same step
(bench/grpo_gpu_step_traces.json, `--trace-cpu`; workbench/estimate/trace_grpo.py).

    python bench/grpo_gpu_step.py                  # the default points (~2 min on an H100)
    python bench/grpo_gpu_step.py --budget-s 90
    python bench/grpo_gpu_step.py --dry-run        # the bundled tiny model on the CPU
    python bench/grpo_gpu_step.py --trace-cpu      # write the traces file (CPU, minutes)

Writes $OUT/grpo_gpu_step.json and .md (OUT defaults to bench/out).
"""

from __future__ import annotations

import argparse
import json
import os
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The DPO step's GPU check measures the same way: its errors, formats and machine line.
from preference_gpu_step import _gib, _pct, errors, machine_info  # noqa: E402

TRACES = REPO / "bench" / "grpo_gpu_step_traces.json"
TINY = REPO / "assets" / "tiny-model"


@dataclass
class Point:
    model: str            # a folder name under assets/configs, or "tiny"
    layers: int | None    # decoder layers kept (None: all)
    batch: int            # completions a micro-batch (train.batch_size)
    grad_accum: int
    num_generations: int
    max_prompt_len: int
    max_completion_len: int
    beta: float = 0.0
    grad_ckpt: bool = True
    r: int = 16
    steps: int = 3
    status: str = "planned"
    measured_reserved: int | None = None
    measured_allocated: int | None = None
    first_step_reserved: int | None = None
    step_seconds: float | None = None
    completion_tokens: float | None = None  # the mean completion length sampled
    estimate_reserved: int | None = None
    estimate_allocated: int | None = None
    estimate_phase: str = ""
    estimate_generation: int | None = None   # the generation moment (static included)
    estimate_training: int | None = None     # the largest training moment (static included)
    estimate_step_seconds: float | None = None
    estimate_generation_seconds: float | None = None
    traced_reserved: int | None = None
    traced_allocated: int | None = None
    errors: dict = field(default_factory=dict)

    def key(self) -> str:
        return (f"{self.model}/L{self.layers or 'all'}/grpo/g{self.num_generations}/"
                f"{self.batch}x{self.grad_accum}/p{self.max_prompt_len}c{self.max_completion_len}"
                f"/b{self.beta:g}/ck{int(self.grad_ckpt)}")


# Two settings of num_generations / max_completion_len on SmolLM2-360M (32 layers, GQA 5 kv
# heads): a short-completion point where the training holds the peak, and a long-completion,
# large generation batch point where the generation's KV cache does.
# The second point runs 2 steps (the second measured): a generation of 32 x 512 tokens takes
# ~15 s by the estimate's guess, more if transformers' decoding is slower than guessed.
POINTS = (
    Point("smollm2-360m", None, 8, 2, 4, 128, 128),
    Point("smollm2-360m", None, 8, 4, 8, 128, 512, steps=2),
)


def load_config(point: Point) -> dict:
    folder = TINY if point.model == "tiny" else REPO / "assets" / "configs" / point.model
    config = json.loads((folder / "config.json").read_text())
    if point.layers:
        config["num_hidden_layers"] = point.layers
    return config


def settings_for(point: Point, precision: str = "bf16") -> EstimateSettings:
    from workbench.estimate.params import attention_only_targets

    arch = architecture_from_config(load_config(point))
    return EstimateSettings(method="lora", r=point.r, alpha=2.0 * point.r, dropout=0.05,
                            targets=attention_only_targets(arch), batch=point.batch,
                            grad_accum=point.grad_accum, grad_ckpt=point.grad_ckpt,
                            optimizer="adamw_torch", precision=precision, train_method="grpo",
                            num_generations=point.num_generations,
                            max_prompt_len=point.max_prompt_len,
                            max_completion_len=point.max_completion_len, beta=point.beta,
                            seq=point.max_prompt_len + point.max_completion_len)


def estimate_point(point: Point, gpu_name: str | None, precision: str = "bf16") -> None:
    from workbench.estimate.memory import GENERATION_MOMENT, TRAINING_MOMENTS

    arch = architecture_from_config(load_config(point))
    s = settings_for(point, precision)
    est = estimate_memory(arch, s)
    point.estimate_reserved = est.reserved_bytes
    point.estimate_allocated = est.reserved_bytes - est.breakdown["allocator reserve"]
    point.estimate_phase = est.phase
    point.estimate_generation = est.moments.get(GENERATION_MOMENT)
    point.estimate_training = max(est.moments[m] for m in TRAINING_MOMENTS)
    if gpu_name:
        from workbench.estimate.gpus import UnknownGpu, find_gpu
        from workbench.estimate.speed import generation_seconds, step_seconds

        try:
            gpu = find_gpu(gpu_name)
        except UnknownGpu:
            gpu = None
        if gpu is not None:
            point.estimate_generation_seconds = generation_seconds(arch, s, gpu)
            point.estimate_step_seconds = (step_seconds(arch, s, gpu)[0] * s.grad_accum
                                           + point.estimate_generation_seconds)
    traced = load_traces().get(point.key())
    if traced:
        point.traced_reserved, point.traced_allocated = traced["peak_reserved"], traced["peak_allocated"]


def load_traces() -> dict:
    return json.loads(TRACES.read_text()) if TRACES.is_file() else {}


def build_trainer(point: Point, device: str, out_dir: str):
    import random
    from types import SimpleNamespace

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    from workbench.train.methods import drop_fresh_reference_copy
    from workbench.train.methods.grpo_trainer import _PretokenizedGRPOTrainer, to_dataset

    config = load_config(point)
    cfg_dict = {k: v for k, v in config.items() if k != "quantization_config"}
    cfg = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    bf16 = device == "cuda"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if bf16 else torch.float32,
                                                 attn_implementation="sdpa")
    model.config.use_cache = False  # as the runner sets it (generate still uses its cache)
    s = settings_for(point)
    model = get_peft_model(model, LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                                             target_modules=list(s.targets), task_type="CAUSAL_LM"))
    if point.grad_ckpt:
        model.enable_input_require_grads()
    tokenizer = AutoTokenizer.from_pretrained(TINY)  # only its pad / eos ids are used
    rng = random.Random(0)
    prompts = point.batch * point.grad_accum // point.num_generations * (point.steps + 1)
    rows = [{"prompt": [{"role": "user", "content": f"prompt {i}"}],
             "prompt_ids": [rng.randrange(8, cfg.vocab_size) for _ in range(point.max_prompt_len)],
             "source": f"random:{i}", "columns": {}} for i in range(prompts)]
    args = GRPOConfig(
        output_dir=out_dir, max_steps=point.steps, per_device_train_batch_size=point.batch,
        gradient_accumulation_steps=point.grad_accum, learning_rate=1e-5,
        lr_scheduler_type="constant", max_grad_norm=1.0, optim="adamw_torch", bf16=bf16,
        use_cpu=device == "cpu", gradient_checkpointing=point.grad_ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1,
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, seed=0, num_generations=point.num_generations,
        max_completion_length=point.max_completion_len, temperature=1.0, top_p=1.0,
        beta=point.beta, loss_type="dapo", use_vllm=False, log_completions=False,
        remove_unused_columns=False)
    lengths: list[float] = []

    def reward(prompts, completions, completion_ids=None, **kwargs):
        if completion_ids is not None:
            lengths.append(statistics.mean(len(c) for c in completion_ids))
        return [0.0 for _ in completions]

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
    trainer = _PretokenizedGRPOTrainer(model=model, reward_funcs=[reward], args=args,
                                       train_dataset=to_dataset(rows),
                                       processing_class=tokenizer, callbacks=[peaks])
    trainer.run = SimpleNamespace(append_event=lambda *a, **k: None)  # the samples panel's sink
    # as build_trainer: beta > 0 made trl copy the fresh adapter into a frozen "ref"; dropped
    trainer = drop_fresh_reference_copy(trainer, SimpleNamespace(start_adapter=None))
    return trainer, peaks, lengths


def measure(point: Point, device: str) -> None:
    import gc

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer, peaks, lengths = build_trainer(point, device, tmp)
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
        point.completion_tokens = round(statistics.mean(lengths), 1) if lengths else None
        del trainer
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def run_points(points: list[Point], device: str, budget_s: float, gpu_name: str | None,
               after_each=None) -> None:
    """Estimate and measure each point; `after_each()` after every point (the tables are
    written as the points finish, so a run cut short by its timeout keeps what it measured)."""
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
        if after_each is not None:
            after_each()


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def write_tables(points: list[Point], out_dir: Path, info: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    measured = [p for p in points if p.measured_reserved]
    errs = [p.errors["reserved_vs_analytic"] for p in measured
            if p.errors.get("reserved_vs_analytic") is not None]
    summary = {"points": len(points), "measured": len(measured),
               "median_abs_error": round(statistics.median(abs(e) for e in errs), 4) if errs else None,
               "worst_under": round(min(errs), 4) if errs else None,
               "worst_over": round(max(errs), 4) if errs else None}
    (out_dir / "grpo_gpu_step.json").write_text(json.dumps(
        {"machine": info, "summary": summary, "points": [asdict(p) | {"key": p.key()} for p in points]},
        indent=2))
    lines = ["# GRPO step: measured peak memory and step time vs `workbench estimate`", "",
             f"Machine: {info.get('gpu')}; torch {info.get('torch')}, transformers "
             f"{info.get('transformers')}, peft {info.get('peft')}, trl {info.get('trl')}. "
             "Command: `python bench/grpo_gpu_step.py` (see its docstring for the step).", "",
             f"Summary: {summary}", "",
             "| point | status | measured reserved GiB | analytic GiB | error | traced GiB | error | "
             "measured allocated GiB | analytic allocated | error | analytic generation / "
             "training GiB | analytic peak moment | completion tokens | s/step | estimated "
             "s/step (generation) | error |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for p in points:
        e = p.errors
        lines.append(
            f"| {p.key()} | {p.status} | {_gib(p.measured_reserved)} | {_gib(p.estimate_reserved)} | "
            f"{_pct(e.get('reserved_vs_analytic'))} | {_gib(p.traced_reserved)} | "
            f"{_pct(e.get('reserved_vs_traced'))} | {_gib(p.measured_allocated)} | "
            f"{_gib(p.estimate_allocated)} | {_pct(e.get('allocated_vs_analytic'))} | "
            f"{_gib(p.estimate_generation)} / {_gib(p.estimate_training)} | {p.estimate_phase} | "
            f"{_num(p.completion_tokens)} | {_num(p.step_seconds)} | "
            f"{_num(p.estimate_step_seconds)} ({_num(p.estimate_generation_seconds)}) | "
            f"{_pct(e.get('step_seconds_vs_estimate'))} |")
    (out_dir / "grpo_gpu_step.md").write_text("\n".join(lines) + "\n")
    return summary


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
                        help="the bundled tiny model, 2 steps on the CPU: checks the script, "
                             "measures nothing")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="stop starting new points after this many seconds (default 150)")
    parser.add_argument("--trace-cpu", action="store_true",
                        help=f"trace the points on this CPU and write {TRACES.name}")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(os.environ.get("OUT") or REPO / "bench" / "out")
    points = [Point(**asdict(p)) for p in POINTS]

    if args.trace_cpu:
        trace_on_cpu(points)
        return 0
    if args.dry_run:
        points = [Point("tiny", None, 4, 2, 4, 16, 8, steps=2),
                  Point("tiny", None, 4, 1, 2, 16, 8, beta=0.04, grad_ckpt=False, steps=2)]
        run_points(points, "cpu", budget_s=300, gpu_name=None)
        write_tables(points, out_dir, machine_info("cpu"))
        return 1 if any(p.status.startswith("error") for p in points) else 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    info = machine_info("cuda")
    run_points(points, "cuda", args.budget_s, torch.cuda.get_device_name(0),
               after_each=lambda: write_tables(points, out_dir, info))
    summary = write_tables(points, out_dir, info)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
