"""`workbench estimate`: peak GPU memory, time and cost of a training step, before anything
is loaded.

    workbench estimate PROFILE [--gpu NAME] [--json]
    workbench estimate --model PATH_OR_ID_OR_NAME [--method lora|qlora|dora|full]
        [--train-method sft|dpo|orpo|kto|simpo|grpo] [--precompute-ref]
        [--num-generations N] [--max-prompt-len N] [--max-completion-len N] [--beta X]
        [--generation transformers|vllm] [--r N]
        [--alpha N] [--dropout X] [--targets a,b,c|all-linear] [--batch N] [--seq N]
        [--grad-ckpt|--no-grad-ckpt] [--optimizer NAME] [--precision bf16|fp16|fp32]
        [--attn sdpa|eager|flash_attention_2|flash_attention_3] [--kernels none|liger]
        [--packing] [--grad-accum N] [--loss-path trl_fused|full_logits|liger_fused]
        [--dataset-tokens N] [--epochs X] [--usd-per-hour X] [--gpu NAME] [--trace] [--json]

Flags given with a PROFILE override the profile's values. `--model` takes a folder with a
config.json, a hub id (from the local cache; fetched only when online), or a shipped name
from assets/configs (`llama-3.1-8b`, `qwen2.5-0.5b`, ...).

JSON output (`--json`), one object:

    method            str   the training method: "sft", "dpo", "orpo", "kto", "simpo" or
                      "grpo" (train.method; the adapter is settings.method)
    peak_bytes        int   GPU memory the step needs, CUDA context included
    reserved_bytes    int   the part torch.cuda.max_memory_reserved() would report
    breakdown         {term: bytes}, in order, summing to peak_bytes; terms among
                      "frozen weights", "quantization constants", "trainable params",
                      "optimizer states", "gradients", "optimizer step temporaries",
                      "autocast weight cache", "saved activations", "logits and loss",
                      "recomputation", "backward gradient buffers", "policy log-probs held" and
                      "reference pass (no grad)" (DPO, KTO, GRPO with beta > 0: 0 where the
                      reference forward is not the peak); GRPO: "generation KV cache" and
                      "generation activations" (0 / absent where the generation is not the
                      peak), "training phase" (0: named where a phase before training holds
                      the peak), "old log-probs pass (no grad)", "adapter merge (weight sync)"
                      and "vLLM (colocated)" (generation = "vllm": its share of the GPU);
                      "traced vs the terms" (--trace), "allocator reserve", "CUDA context"
    explain           {term: one line saying how it was computed}
    peak_phase        str   the moment of the step that holds the peak
    kernels_counted   str   the kernels the estimate counts (settings.kernels "none" | "liger",
                      settings.attn, a fused AdamW) and what each changes
    trainable_params  int;  total_params int (the model's);  all_params int (with the
                      adapters, as peft counts);  trainable_share float (of all_params)
    tokens_per_step   int   batch x seq x grad_accum
    model_type, model_source, settings {method, r, alpha, ...}, notes [str]
    trace             null without --trace; else {traced: true, peak_allocated,
                      peak_reserved, reserve, segments_created, peak_at, trainable_params,
                      events, seconds, stands_in_for ("qlora": the bf16 LoRA twin traced
                      for a QLoRA step, whose reserve x 1.4 is used), analytic_allocated}:
                      peak_bytes, reserved_bytes and the verdicts then follow the trace (the
                      "allocator reserve" term is the replayed reserve, "traced vs the terms"
                      what the trace allocates beyond the analytic terms) or {traced: false, why}
    gpu               {key, name, memory_bytes, available_bytes, source} or null
    fits              bool, or null when no GPU was given or found
    verdict           "fits" | "tight" | "does not fit" | null
    fits_on           {gpu key: bool} for every GPU of the table
    remedies          [{change, peak_bytes, fits, cost}] (ranked; empty when it fits)
    dataset_tokens, dataset_rows   one epoch of the rendered data (null: not counted,
                      dataset_tokens_source says why)
    time              {gpu, tokens_per_step, steps, tokens_total, flops_per_token,
                       tokens_per_second, step_seconds, seconds, usd, usd_per_hour, mfu, plan,
                       generation_seconds (GRPO: sampling, once a step, in step_seconds)}
                      for the GPU (or the first table GPU it fits on), null if none; steps are
                      counted from the data's rows (each micro-batch padded to its longest
                      row) as transformers counts them; steps, tokens_total, seconds and usd
                      are null when neither the data nor max_steps gives a count (plan says)
    cost              {gpu key: {seconds, usd, step_seconds, usd_per_hour, fits}} for every
                      table GPU (seconds and usd null as above)

Exit codes: 0 the answer was printed; 2 a mistake in the input (message on stderr, no
traceback).
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.estimate.gpus import GPUS, UnknownGpu, find_gpu
from workbench.estimate.speed import DataCount
from workbench.fmt import fmt_gib, fmt_span
from workbench.estimate.params import ConfigError

EXIT_USAGE = 2
TRACE_STEPS_TEXT = "two training steps"


def add_estimate_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "estimate", help="peak GPU memory, time and cost of training, from config.json only",
        description="Estimate peak GPU memory (term by term), time and cost of a training "
                    "step from the model's config.json, without loading weights.")
    p.add_argument("profile", nargs="?", help="a profile path or name (optional with --model)")
    p.add_argument("--model", help="folder with config.json, hub id, or a shipped name "
                   "such as llama-3.1-8b")
    p.add_argument("--method", choices=("lora", "qlora", "dora", "full"),
                   help="the adapter (lora.method), or a full fine-tune")
    p.add_argument("--train-method", choices=("sft", "dpo", "orpo", "kto", "simpo", "grpo"),
                   help="how to train (train.method): supervised, a preference method (DPO, "
                        "ORPO and SimPO put 2 x batch rows, chosen and rejected, through the "
                        "model), or GRPO (--batch counts completions)")
    p.add_argument("--precompute-ref", dest="precompute_ref", action="store_true", default=None,
                   help="DPO / KTO: the reference log-probs scored once before training "
                        "([preference] precompute_ref)")
    p.add_argument("--num-generations", type=int,
                   help="GRPO: completions sampled per prompt ([grpo] num_generations)")
    p.add_argument("--max-prompt-len", type=int, help="GRPO: [grpo] max_prompt_len")
    p.add_argument("--max-completion-len", type=int, help="GRPO: [grpo] max_completion_len")
    p.add_argument("--beta", type=float,
                   help="GRPO: the KL coefficient ([grpo] beta); > 0 adds the reference pass")
    p.add_argument("--generation", choices=("transformers", "vllm"),
                   help="GRPO: who samples the completions ([grpo] generation); vllm colocated "
                        "takes trl's vllm_gpu_memory_utilization (0.3) of the GPU")
    p.add_argument("--r", type=int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--targets", help="comma-separated module names, or all-linear")
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int)
    p.add_argument("--grad-ckpt", dest="grad_ckpt", action="store_true", default=None)
    p.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    p.add_argument("--optimizer")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--attn", choices=("sdpa", "eager", "flash_attention_2", "flash_attention_3"))
    p.add_argument("--kernels", choices=("none", "liger"),
                   help="GPU kernels to count (train.kernels): liger's RMSNorm / SwiGLU, and its "
                        "fused linear cross-entropy with --loss-path full_logits or liger_fused")
    p.add_argument("--packing", action="store_true", default=None)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--loss-path", choices=("trl_fused", "full_logits", "liger_fused"),
                   help="trl_fused: the runner's SFTTrainer (default); full_logits: plain "
                        "transformers loss; liger_fused: Liger's fused linear cross-entropy")
    p.add_argument("--dataset-tokens", type=int, help="tokens in one epoch of the rendered data "
                   "(with a PROFILE, counted from its data unless --no-count-data)")
    p.add_argument("--no-count-data", action="store_true",
                   help="with a PROFILE: do not load its data to count tokens (faster)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--usd-per-hour", type=float)
    p.add_argument("--gpu", help="a GPU from the table (h100, a100-40gb, rtx4090, ...) "
                   "or an NVML name; default: the GPU found here")
    p.add_argument("--gpus", type=int, help="GPUs of one run (torchrun): adds per-GPU memory "
                   "for DDP, FSDP2 and DeepSpeed ZeRO-2/3, time and cost for that many GPUs")
    p.add_argument("--strategy", choices=("auto", "ddp", "fsdp", "deepspeed"),
                   help="the strategy the verdict is for (default: the profile's, else auto)")
    p.add_argument("--zero-stage", type=int, choices=(2, 3))
    p.add_argument("--cpu-offload", action="store_true", default=None)
    p.add_argument("--nnodes", type=int, help="machines the GPUs are spread over (time only)")
    p.add_argument("--trace", action="store_true",
                   help="trace the step on the CPU (FakeTensorMode, 2-20 s) and replay its "
                        "allocations through torch's caching-allocator rules: the peak and "
                        "verdicts follow the trace (LoRA, DoRA, full; QLoRA with checkpointing "
                        "through its bf16 LoRA twin's reserve; GRPO with transformers generation "
                        "and LoRA: its generation is traced token by token, minutes for a full "
                        "model's long completions)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_estimate)
    return p


class _InputError(Exception):
    pass


def _settings_and_model(args):
    from dataclasses import replace

    from workbench.estimate.config import load_model_config
    from workbench.estimate.memory import EstimateSettings

    profile = None
    if args.profile:
        from workbench.profile import ProfileError, load_profile

        try:
            profile = load_profile(args.profile)
        except ProfileError as exc:
            raise _InputError(f"invalid profile\n{exc}") from exc
        settings = EstimateSettings.from_profile(profile)
        model_ref = args.model or profile.model.name_or_path
        revision = profile.model.revision
    elif args.model:
        settings, model_ref, revision = EstimateSettings(), args.model, "main"
    else:
        raise _InputError("give a PROFILE or --model PATH_OR_ID (e.g. --model llama-3.1-8b)")

    flags = {"method": args.method, "r": args.r, "alpha": args.alpha, "dropout": args.dropout,
             "batch": args.batch, "seq": args.seq, "grad_ckpt": args.grad_ckpt,
             "optimizer": args.optimizer, "precision": args.precision, "attn": args.attn,
             "packing": args.packing, "grad_accum": args.grad_accum, "loss_path": args.loss_path,
             "kernels": args.kernels,
             "train_method": args.train_method, "precompute_ref": args.precompute_ref,
             "num_generations": args.num_generations, "max_prompt_len": args.max_prompt_len,
             "max_completion_len": args.max_completion_len, "beta": args.beta,
             "generation": args.generation}
    if args.targets:
        flags["targets"] = ("all-linear" if args.targets.strip() == "all-linear"
                            else tuple(t.strip() for t in args.targets.split(",") if t.strip()))
    settings = replace(settings, **{k: v for k, v in flags.items() if v is not None})
    if settings.train_method == "grpo":  # a row is a prompt and its completion
        settings = replace(settings, seq=settings.max_prompt_len + settings.max_completion_len)
    if profile is not None and args.train_method:  # the data is then counted as it trains
        profile.train.method = args.train_method
    if profile is not None and settings.train_method == "grpo" and hasattr(profile, "grpo"):
        for key, name in (("num_generations", "num_generations"),
                          ("max_prompt_len", "max_prompt_len"),
                          ("max_completion_len", "max_completion_len")):
            setattr(profile.grpo, key, getattr(settings, name))
    config, source = load_model_config(model_ref, revision)
    return profile, settings, config, source


def _choose_gpu(args, profile):
    """(GpuSpec or None, bytes available, where the number came from)."""
    from workbench.estimate.gpu import telemetry

    wanted = args.gpu or (profile.budget.gpu if profile is not None else "")
    if wanted:
        gpu = find_gpu(wanted)
        return gpu, gpu.memory_bytes, "table"
    state = telemetry()
    if state.available and state.gpus:
        here = state.gpus[0]
        try:
            gpu = find_gpu(here.name)
        except UnknownGpu:
            gpu = None
        free = here.memory_free if here.memory_free is not None else here.memory_total
        if gpu is not None and free is not None:
            return gpu, free, f"free memory now on GPU 0 ({here.name})"
    return None, None, ""


def build_report(args) -> dict:
    from workbench.estimate.advice import remedies, verdict
    from workbench.estimate.memory import estimate_memory
    from dataclasses import replace

    from workbench.estimate.params import architecture_from_config
    from workbench.estimate.speed import estimate_time

    profile, settings, config, source = _settings_and_model(args)
    arch = architecture_from_config(config)
    gpu, available, gpu_source = _choose_gpu(args, profile)
    if gpu is not None and _shares_gpu(settings):  # colocated vLLM takes a share of that GPU
        settings = replace(settings, gpu_memory_bytes=gpu.memory_bytes)
    est = estimate_memory(arch, settings)
    trace = None
    if args.trace:
        est, trace = _replayed(config, settings, est)

    out = est.to_dict()
    out["trace"] = trace
    out["model_source"] = source
    out["gpu"] = None
    out["fits"] = out["verdict"] = None
    out["remedies"] = []
    if gpu is not None:
        out["gpu"] = {"key": gpu.key, "name": gpu.name, "memory_bytes": gpu.memory_bytes,
                      "available_bytes": available, "source": gpu_source}
        out["verdict"] = verdict(est.peak_bytes, available)
        out["fits"] = out["verdict"] != "does not fit"
        if out["verdict"] != "fits":
            out["remedies"] = [r.to_dict() for r in remedies(arch, settings, available)]
    out["fits_on"] = {g.key: _peak_on(arch, settings, est, g) <= g.memory_bytes for g in GPUS}

    epochs = args.epochs if args.epochs is not None else (profile.train.epochs if profile else 1.0)
    max_steps = profile.train.max_steps if profile else -1
    price = args.usd_per_hour
    if price is None and profile is not None and profile.budget.gpu_hourly_usd:
        price = profile.budget.gpu_hourly_usd
    data, out["dataset_tokens_source"] = None, "--dataset-tokens"
    if args.dataset_tokens is not None:
        data = DataCount(tokens=args.dataset_tokens)
    elif profile is not None and not args.no_count_data:
        data, out["dataset_tokens_source"] = count_dataset_tokens(profile)
    elif profile is not None:
        out["dataset_tokens_source"] = "not counted (--no-count-data)"
    else:
        out["dataset_tokens_source"] = "not counted (no profile and no --dataset-tokens)"
    out["dataset_tokens"] = data.tokens if data else None
    out["dataset_rows"] = data.rows if data else None
    timing = dict(data=data, epochs=epochs, max_steps=max_steps)
    out["cost"] = {}
    for g in GPUS:
        t = estimate_time(arch, settings, g, **timing)
        out["cost"][g.key] = {"seconds": _round(t.seconds, 1), "usd": _round(t.usd, 4),
                              "step_seconds": round(t.step_seconds, 4),
                              "usd_per_hour": t.usd_per_hour, "fits": out["fits_on"][g.key]}
    timed_gpu = gpu or next((g for g in GPUS if out["fits_on"][g.key]), None)
    out["time"] = (estimate_time(arch, settings, timed_gpu, usd_per_hour=price, **timing).to_dict()
                   if timed_gpu else None)
    out["time_note"] = TIME_NOTE + (f"; {GENERATION_NOTE}" if settings.train_method == "grpo"
                                    else "")
    out["distributed"] = distributed_report(args, profile, arch, est, settings, gpu, available,
                                            out["time"], timing)
    out["_estimate"] = est
    return out


def _shares_gpu(settings) -> bool:
    return settings.train_method == "grpo" and settings.generation == "vllm"


def _peak_on(arch, settings, est, gpu) -> int:
    """The peak on `gpu`: the estimate's, but with colocated vLLM's share of that GPU."""
    if not _shares_gpu(settings):
        return est.peak_bytes
    from dataclasses import replace

    from workbench.estimate.memory import estimate_memory

    vllm = est.breakdown.get("vLLM (colocated)", 0)
    return est.peak_bytes - vllm + estimate_memory(
        arch, replace(settings, gpu_memory_bytes=gpu.memory_bytes)).breakdown["vLLM (colocated)"]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _replayed(config: dict, settings, est):
    """(estimate, trace report): the estimate with the replayed allocator reserve, or the
    analytic one and the reason the step could not be traced."""
    from workbench.estimate.trace import TraceUnsupported, trace_step, with_trace

    try:
        traced = trace_step(config, settings)
    except TraceUnsupported as exc:
        return est, {"traced": False, "why": str(exc)}
    except ImportError as exc:  # torch / transformers / peft missing from this install
        return est, {"traced": False, "why": f"tracing needs {exc.name}: pip install torch "
                                             "transformers peft"}
    except Exception as exc:  # noqa: BLE001 - a model transformers cannot build, say so
        first = str(exc).split(". ")[0][:200]  # transformers lists every model type it knows
        return est, {"traced": False, "why": f"the trace failed ({type(exc).__name__}: {first}); "
                                             "the estimate keeps the analytic allocator reserve"}
    analytic_allocated = est.reserved_bytes - est.breakdown["allocator reserve"]
    return with_trace(est, traced), {"traced": True, **traced.to_dict(),
                                     "analytic_allocated": analytic_allocated}


def _world_size(args, profile) -> int:
    if args.gpus is not None:
        if args.gpus < 1:
            raise _InputError(f"--gpus must be at least 1, got {args.gpus}")
        return args.gpus
    spec = profile.distributed.gpus if profile is not None else 1
    if isinstance(spec, int):
        return spec
    if spec != "auto":
        return len(spec.split(","))
    from workbench.estimate.gpu import telemetry

    state = telemetry()
    return len(state.gpus) if state.available and state.gpus else 1


def distributed_report(args, profile, arch, est, settings, gpu, available, one_gpu_time,
                       timing) -> dict | None:
    """Per-GPU memory of every strategy, the verdict for the chosen one, and time / cost on
    N GPUs; None for a one-GPU run."""
    from workbench.estimate.advice import strategy_verdict
    from workbench.estimate.pergpu import (choose_strategy, estimate_time_multi,
                                           per_gpu_memory, strategy_key)
    from workbench.estimate.speed import estimate_time

    world = _world_size(args, profile)
    if world <= 1:
        return None
    d = profile.distributed if profile is not None else None
    strategy = args.strategy or (d.strategy if d else "auto")
    zero = args.zero_stage or (d.zero_stage if d else 3)
    offload = args.cpu_offload if args.cpu_offload is not None else (d.cpu_offload if d else False)
    nnodes = args.nnodes or (d.nnodes if d else 1)
    per_gpu = {strategy_key(s, z): per_gpu_memory(est, arch, s, world, z, offload)
               for s, z in (("ddp", 3), ("fsdp", 3), ("deepspeed", 2), ("deepspeed", 3))}
    why = f"strategy = {strategy!r} as asked"
    if strategy == "auto":
        strategy, why = choose_strategy(per_gpu["ddp"].peak_bytes, available)
    chosen = strategy_key(strategy, zero)
    out = {"gpus": world, "nnodes": nnodes, "strategy": chosen, "why": why,
           "cpu_offload": offload, "per_gpu": {k: e.to_dict() for k, e in per_gpu.items()},
           "verdict": strategy_verdict(per_gpu, available, chosen) if available else None,
           "time": None, "cost": {}}
    timed = gpu or (next((g for g in GPUS if per_gpu[chosen].peak_bytes <= g.memory_bytes), None))
    if timed is not None:
        one = estimate_time(arch, settings, timed, usd_per_hour=(one_gpu_time or {}).get(
            "usd_per_hour") if gpu else None, **timing)
        out["time"] = estimate_time_multi(one, settings, world, strategy, zero, nnodes,
                                          **timing).to_dict()
    for g in GPUS:
        t = estimate_time_multi(estimate_time(arch, settings, g, **timing), settings, world,
                                strategy, zero, nnodes, **timing)
        out["cost"][g.key] = {"seconds": _round(t.seconds, 1), "usd": _round(t.usd, 4),
                              "usd_per_hour": t.usd_per_hour,
                              "fits": per_gpu[chosen].peak_bytes <= g.memory_bytes}
    out["_per_gpu"] = per_gpu
    return out


SAMPLE_ROWS = 2000
GENERATION_NOTE = ("GRPO's sampling, once a step: the prefill and every completion decoded to "
                   "max_completion_len, bound by memory bandwidth or compute plus, for "
                   "transformers' generate, the per-layer overhead of each decoding step; a "
                   "guess, not measured")
TIME_NOTE = ("times: compute at 53% of the bf16 peak plus a per-layer overhead, measured on an "
             "H200 (error per point in bench/estimate_accuracy.md); other GPUs are derived from "
             "their datasheet bf16 throughput and memory bandwidth, not measured")


def count_dataset_tokens(profile) -> tuple[DataCount | None, str]:
    """One epoch of the profile's training data, rendered exactly as training will render it
    (a seeded sample of SAMPLE_ROWS rows scaled up for larger sets): rows, tokens and the
    sample's row lengths. None with the reason when the tokenizer or the data cannot be read
    here (e.g. a hub model offline). Preference methods: see `count_preference_tokens`."""
    import random

    if getattr(profile.train, "method", "sft") == "grpo":
        return count_grpo_tokens(profile)
    if getattr(profile.train, "method", "sft") != "sft":
        return count_preference_tokens(profile)

    from workbench.train.streaming import streams

    if streams(profile):  # counting would read the whole stream (train/streaming.py)
        return None, ("not counted (data.streaming: the data is read row by row and not "
                      "counted; train.max_steps sets the run's length)")
    try:
        from workbench.data.render import render_dataset
        from workbench.train.plan import load_tokenizer, load_training_data

        tokenizer = load_tokenizer(profile)
        records = load_training_data(profile).train
    except Exception as exc:  # noqa: BLE001 - the reason is printed; time is then not priced
        return None, f"not counted ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    sample = records if len(records) <= SAMPLE_ROWS else random.Random(0).sample(records, SAMPLE_ROWS)
    from workbench.train.plan import profile_chat_format

    rows, stats = render_dataset(tokenizer, sample, profile.data.train_on, profile.train.max_seq_len,
                                 fmt=profile_chat_format(tokenizer, profile))
    if not stats.rows_out:
        return None, "not counted (no trainable rows)"
    scale = len(records) / len(sample)
    how = "rendered" if len(sample) == len(records) else f"rendered sample of {len(sample)} rows"
    how = f"{how} from {len(records)} training rows"
    data = DataCount(tokens=round(stats.total_tokens * scale), rows=round(stats.rows_out * scale),
                     lengths=tuple(len(r["input_ids"]) for r in rows))
    return data, how


def count_preference_tokens(profile) -> tuple[DataCount | None, str]:
    """A preference method's training examples as its trainer gets them (the data room's
    `load_preference_training_data`, then rendering, as the method's `prepare_data` does), on a
    seeded sample of SAMPLE_ROWS examples scaled up. Rows are
    examples (pairs for DPO / ORPO / SimPO; answers for KTO, which trains a pair as its two
    answers), a row's length the longer of its sides (the collator pads chosen and rejected to
    the longest sequence of the batch), tokens both sides' (2 x that length a pair)."""
    import random

    try:
        from workbench.data.preference_render import render_preference_dataset
        from workbench.data.preference_training import load_preference_training_data
        from workbench.estimate.memory import METHOD_TITLES
        from workbench.train.plan import load_tokenizer, profile_chat_format

        t = profile.train
        records = load_preference_training_data(profile).train
        sample = (records if len(records) <= SAMPLE_ROWS
                  else random.Random(0).sample(records, SAMPLE_ROWS))
        tokenizer = load_tokenizer(profile)
        rows, _stats = render_preference_dataset(tokenizer, sample, t.max_seq_len,
                                                 profile_chat_format(tokenizer, profile))
    except Exception as exc:  # noqa: BLE001 - the reason is printed; time is then not priced
        first = (str(exc).splitlines() or [""])[0]
        return None, f"not counted ({type(exc).__name__}: {first})"
    if not rows:
        return None, "not counted (no trainable rows)"
    if "chosen_ids" in rows[0]:
        lengths = tuple(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))
                        for r in rows)
        sides, unit = 2, "pairs"
    else:
        lengths = tuple(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows)
        sides, unit = 1, "answers"
    scale = len(records) / len(sample)
    how = ("rendered" if len(sample) == len(records) else f"rendered sample of {len(sample)}")
    how = f"{how} training {unit} of {len(records)}, as {METHOD_TITLES[t.method]} trains on them"
    return DataCount(tokens=round(sides * sum(lengths) * scale), rows=round(len(rows) * scale),
                     lengths=lengths), how


def count_grpo_tokens(profile) -> tuple[DataCount | None, str]:
    """GRPO's training prompts as its trainer gets them (the data room's
    `load_prompt_training_data`, rendered by the run's chat format and filtered to
    grpo.max_prompt_len, as the method's `prepare_data` does), on a seeded sample of
    SAMPLE_ROWS prompts scaled up. Rows are completions (num_generations a prompt), a row's
    length its prompt's + max_completion_len (every completion assumed to run to the end),
    tokens those rows'."""
    import random

    try:
        from workbench.data.prompts import load_prompt_training_data, render_prompts
        from workbench.train.plan import load_tokenizer, profile_chat_format

        g = profile.grpo
        records = load_prompt_training_data(profile).train
        sample = (records if len(records) <= SAMPLE_ROWS
                  else random.Random(0).sample(records, SAMPLE_ROWS))
        tokenizer = load_tokenizer(profile)
        rows, _too_long = render_prompts(tokenizer, profile_chat_format(tokenizer, profile),
                                         sample, g.max_prompt_len)
    except Exception as exc:  # noqa: BLE001 - the reason is printed; time is then not priced
        first = (str(exc).splitlines() or [""])[0]
        return None, f"not counted ({type(exc).__name__}: {first})"
    if not rows:
        return None, "not counted (no prompts within grpo.max_prompt_len)"
    lengths = tuple(len(r["prompt_ids"]) + g.max_completion_len for r in rows)
    scale = len(records) / len(sample)
    how = ("rendered" if len(sample) == len(records) else f"rendered sample of {len(sample)}")
    how = (f"{how} training prompts of {len(records)}, x {g.num_generations} completions of up "
           f"to {g.max_completion_len} tokens, as GRPO trains on them")
    return DataCount(tokens=round(g.num_generations * sum(lengths) * scale),
                     rows=round(g.num_generations * len(rows) * scale), lengths=lengths), how


def _print_text(report: dict) -> None:
    est = report["_estimate"]
    print(f"model: {report['model_source']} ({report['model_type']})")
    print(est.explain())
    trace = report.get("trace")
    if trace and trace["traced"] and trace.get("stands_in_for") == "qlora":
        print(f"Traced the same step with bf16 LoRA weights ({trace['events']:,} allocations of "
              f"{TRACE_STEPS_TEXT} in {trace['seconds']:.1f} s; QLoRA's 4-bit layers cannot be "
              f"traced): its replayed reserve, {fmt_gib(trace['reserve'], digits=2)}, scaled as measured "
              "on QLoRA steps with checkpointing, is the allocator reserve above")
    elif trace and trace["traced"]:
        print(f"Traced: {trace['events']:,} allocations of {TRACE_STEPS_TEXT} replayed through "
              f"the caching allocator in {trace['seconds']:.1f} s: max_memory_allocated "
              f"{fmt_gib(trace['peak_allocated'])} (the analytic terms say "
              f"{fmt_gib(trace['analytic_allocated'])}), max_memory_reserved "
              f"{fmt_gib(trace['peak_reserved'])}: the peak above and the verdicts below "
              "follow the trace")
    elif trace:
        print(f"Not traced: {trace['why']}")
    if report["gpu"]:
        g = report["gpu"]
        print(f"\n{g['name']}: {fmt_gib(g['available_bytes'])} available "
              f"({g['source']}) -> {report['verdict']}")
        for r in report["remedies"]:
            mark = "fits" if r["fits"] else "not enough alone"
            print(f"  - {r['change']}: {fmt_gib(r['peak_bytes'])} ({mark}; {r['cost']})")
    else:
        print("\nno GPU given (--gpu NAME) or found here; fits on: "
              + ", ".join(k for k, ok in report["fits_on"].items() if ok))
    if report.get("dataset_tokens"):
        rows = f"{report['dataset_rows']:,} rows, " if report.get("dataset_rows") else ""
        print(f"\ndata: {rows}{report['dataset_tokens']:,} tokens per epoch "
              f"({report['dataset_tokens_source']})")
    else:
        print(f"\ndata: {report['dataset_tokens_source']}")
    t = report["time"]
    if t and t["seconds"] is not None:
        print(f"\ntime on {t['gpu']}: {fmt_span(t['seconds'])} for {t['steps']:,} steps "
              f"({t['plan']}), ${t['usd']:.2f} at ${t['usd_per_hour']:.2f}/h; "
              f"{t['tokens_per_second']:,.0f} tokens/s on full batch x seq micro-batches "
              f"(model FLOPs utilization {100 * t['mfu']:.2g}%)")
    if t and t["seconds"] is not None and t.get("generation_seconds"):
        print(f"  of which generation: {t['generation_seconds']:.3g} s a step ({GENERATION_NOTE})")
    elif t and t["seconds"] is None:  # timed above, or said here why not: never both
        print(f"\ntime on {t['gpu']}: {t['step_seconds']:.2f} s per optimizer step of full "
              f"batch x seq micro-batches; the run is not timed or priced: {t['plan']} "
              "(give --dataset-tokens N, or a profile whose tokenizer and data can be read here)")
    print("\n  GPU          fits   time      cost      s/step")
    for key, c in report["cost"].items():
        print(f"  {_cost_cells(key, c)}  {c['step_seconds']:.3g}")
    print(f"({report['time_note']})")
    if report.get("distributed"):
        _print_distributed(report["distributed"])


def _cost_cells(key: str, c: dict) -> str:
    """One GPU's row of a cost table: fits, time, cost ("-" where the run is not priced)."""
    span = fmt_span(c["seconds"]) if c["seconds"] is not None else "-"
    usd = f"${c['usd']:.2f}" if c["usd"] is not None else "-"
    return f"{key:<11}  {'yes' if c['fits'] else 'no ':<5}  {span:<8}  {usd:<8}"


def _print_distributed(d: dict) -> None:
    from workbench.estimate.pergpu import INTER_NODE_SCALING, SCALING

    print(f"\n{d['gpus']} GPUs" + (f" on {d['nnodes']} machines" if d["nnodes"] > 1 else "")
          + f": strategy {d['strategy']} ({d['why']})")
    print("  per GPU:  " + "   ".join(f"{k} {fmt_gib(e.peak_bytes)}"
                                      for k, e in d["_per_gpu"].items()))
    print(d["_per_gpu"][d["strategy"]].explain())
    if d["verdict"]:
        print(f"verdict: {d['verdict']}")
    t = d["time"]
    if t and t["seconds"] is not None:
        print(f"time on {d['gpus']} x {t['gpu']}: {fmt_span(t['seconds'])} for {t['steps']:,} "
              f"steps ({t['tokens_per_second']:,.0f} tokens/s over all GPUs on full micro-batches, "
              f"scaling factor {t['scaling']:.2f}), ${t['usd']:.2f} at ${t['usd_per_hour']:.2f}/h "
              f"for the {d['gpus']} GPUs")
    elif t:
        print(f"time on {d['gpus']} x {t['gpu']}: not timed or priced: {t['plan']}")
    print(f"  {d['gpus']} x GPU    fits   time      cost")
    for key, c in d["cost"].items():
        print(f"  {_cost_cells(key, c)}".rstrip())
    print("(scaling factors are assumptions, not measured by workbench: "
          + ", ".join(f"{k} {v:.2f}" for k, v in SCALING.items())
          + f", x{INTER_NODE_SCALING:.2f} across machines)")


def cmd_estimate(args) -> int:
    try:
        report = build_report(args)
    except (ConfigError, UnknownGpu, _InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        report.pop("_estimate")
        if report.get("distributed"):
            report["distributed"].pop("_per_gpu")
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry for tests and `python -m workbench.estimate.cli`."""
    from workbench.hub import quiet_offline_kernel_notice

    quiet_offline_kernel_notice()
    parser = argparse.ArgumentParser(prog="workbench")
    add_estimate_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["estimate", *(argv or [])])
    return cmd_estimate(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
