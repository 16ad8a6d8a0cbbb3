"""Time and cost of a run: a step's compute at a measured efficiency, plus the per-step overhead
that small models and small batches are bound by, plus QLoRA's dequantization traffic.

    step seconds = FLOPs per step / (bf16 peak x COMPUTE_EFFICIENCY)
                 + layers x (1 + RECOMPUTE_OVERHEAD x checkpointing)
                   x (LAYER_OVERHEAD_S + ADAPTER_OVERHEAD_S x adapted linears per layer
                      + QUANT_OVERHEAD_S x 4-bit linears per layer)
                 + 4-bit weights x DEQUANT_BYTES x (1 + RECOMPUTE_OVERHEAD x checkpointing)
                   / memory bandwidth

FLOPs per token (multiply-add = 2 FLOPs), for N_frozen frozen matmul weights, N_lora adapter
weights, L layers, sequence S, attention width q_dim:
- forward: 2 * (N_frozen + N_lora) for the matmuls + attention 4 * L * S/2 * q_dim (QK^T and
  PV, causal: half the positions on average; flash kernels skip the masked half);
- backward: frozen layers need only activation gradients, 2 * N_frozen (no weight gradients);
  adapters need both, 4 * N_lora; attention backward costs 2x its forward;
  a full fine-tune pays 4 * N for every weight;
- gradient checkpointing recomputes the forward of the decoder layers: + forward again.
The output layer (vocab x hidden) counts as a frozen matmul (N includes it; embeddings are a
lookup, no FLOPs).

Preference methods (trl 1.16's trainers; workbench/estimate/memory.py says what each step holds):
- DPO, ORPO, SimPO put each pair's chosen and rejected rows through the model as one batch: a
  micro-batch of `batch` pairs is 2 x batch rows, every one trained (forward + backward), so a
  step does twice SFT's work at the same batch; the tokens counted are both sides';
- DPO's reference forward (dpo_trainer.py:1327) runs the same 2 x batch rows through the base
  model (the adapter disabled), no grad, no recomputation: one forward, 2 * N_frozen per token
  + attention, about a third of a training pass with checkpointing;
- KTO (kto_trainer.py:1370) trains `batch` rows and runs three no-grad forwards of `batch` rows:
  the policy over the mismatched KL completions, then the reference over those and over the
  completions;
- precompute_ref (DPO, KTO) drops the reference forwards from the step; they run once, over one
  epoch of the data, before training (`_precompute_ref_logps`), counted in the run's time;
- each no-grad forward pays the per-layer overhead of a forward (RECOMPUTE_OVERHEAD, the share
  the recomputed forward was measured at) and, for QLoRA, a forward's share of the dequantization.

GRPO (trl 1.16's GRPOTrainer, workbench/train/methods/grpo.py): a micro-batch trains `batch`
completions of max_prompt_len + max_completion_len tokens (forward + backward, as SFT's rows);
with beta > 0 the reference forward (adapter off, no grad) scores the same rows, and with vLLM
the policy re-scores them (no grad, adapter on). Once per optimizer step the generation batch
(batch x grad_accum completions) is sampled (`generation_seconds`), a guess not yet measured:
- the prefill: one no-grad forward over the prompts, compute-bound at COMPUTE_EFFICIENCY, plus
  a forward's per-layer overhead;
- max_completion_len decoding steps (every completion assumed to run to the end), each the
  larger of reading the weights and the KV cache from memory at the datasheet bandwidth and the
  step's matmul FLOPs at COMPUTE_EFFICIENCY; transformers' generate (eager PyTorch, one token
  at a time through peft's unmerged adapters) also pays a launch-bound cost every step:
  DECODE_LAYER_OVERHEAD_S a layer (about 40 kernel launches at ~10 us), DECODE_ADAPTER_OVERHEAD_S
  an adapted linear (peft's cast, dropout, two matmuls, scale, add), the training's
  QUANT_OVERHEAD_S share of a forward a 4-bit linear, and QLoRA's dequantization of every 4-bit
  weight: what bounds the decoding of small models. These two constants are guesses from kernel
  counts, not fits (the training's per-layer overhead, 2.5 ms, includes autograd and
  checkpointing: a decoding step has neither); bench/grpo_gpu_step.py measures them. vLLM
  (CUDA graphs, fused kernels) is taken as bound by bandwidth or compute alone.

What the H200 measurements showed (56 points, `../shared/data/gpu-truth`, fitted by non-negative
least squares on relative error; `bench/estimate_accuracy.md` has every point): the measured
utilization runs from 0.2% (SmolLM2-135M, 512 tokens a step) to 45% (Llama-3.1-8B, 8192 tokens),
so no single utilization figure can describe it. Large steps are compute-bound at 53% of the
bf16 peak. Small steps are bound by a fixed cost per layer and per adapted / quantized linear
layer (kernel launches and Python dispatch of eager PyTorch, peft and bitsandbytes: 2.5 ms per
layer, 0.49 ms per LoRA-adapted linear, 0.24 ms per 4-bit linear, per step), which runs on the
host CPU and does not shrink with a faster GPU; checkpointing adds 75% of it (the recomputed
forward). QLoRA's dequantization moves about 12.8 bytes per 4-bit weight per step, bound by
memory bandwidth. Other GPUs are derived from their datasheet bf16 throughput and memory
bandwidth (gpus.py), not measured; the output says so.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from workbench.estimate.gpus import GpuSpec
from workbench.estimate.memory import EstimateSettings
from workbench.estimate.params import Architecture, lora_params, resolve_targets

COMPUTE_EFFICIENCY = 0.53    # share of the bf16 peak a compute-bound LoRA / QLoRA step reaches
LAYER_OVERHEAD_S = 2.5e-3    # per decoder layer per step
ADAPTER_OVERHEAD_S = 0.49e-3  # per LoRA-adapted linear per layer per step
QUANT_OVERHEAD_S = 0.24e-3   # per 4-bit linear per layer per step
RECOMPUTE_OVERHEAD = 0.75    # gradient checkpointing: extra share of the per-step overhead
DEQUANT_BYTES = 12.8         # memory traffic per 4-bit weight per step (dequantize, re-read)
# GRPO's transformers generation, per decoding step (guesses, not fits: see the docstring)
DECODE_LAYER_OVERHEAD_S = 0.5e-3    # per decoder layer
DECODE_ADAPTER_OVERHEAD_S = 0.1e-3  # per LoRA-adapted linear per layer


@dataclass(frozen=True)
class DataCount:
    """One epoch of the training data as the trainer will batch it: how many rows, how many
    tokens, and the token lengths of a sample of rows (to know how much padding a micro-batch
    of random rows carries). `rows` is None when only a token total is known (--dataset-tokens):
    the steps are then counted as if rows filled batch x seq."""

    tokens: int
    rows: int | None = None
    lengths: tuple[int, ...] = ()

    def padded_row_tokens(self, batch: int, seq: int, seed: int = 0) -> float:
        """Mean tokens per row once each micro-batch of `batch` random rows is padded to its
        longest row (the collator's default), from the sample of lengths."""
        if not self.lengths:
            return float(seq)
        order = list(self.lengths)
        random.Random(seed).shuffle(order)
        padded = sum(max(order[i:i + batch]) * len(order[i:i + batch])
                     for i in range(0, len(order), batch))
        return min(padded / len(order), float(seq))


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a run takes and what each micro-batch holds."""

    steps: int | None          # None: no data counted and no max_steps, so nothing to count
    micro_batches: int | None  # per GPU, over the run
    row_tokens: float          # tokens per row of a micro-batch (padding included)
    why: str


def plan_steps(s: EstimateSettings, data: DataCount | None, epochs: float = 1.0,
               max_steps: int = -1, world: int = 1) -> StepPlan:
    """transformers' count: micro-batches per epoch = ceil(rows / (batch x GPUs)), optimizer
    steps per epoch = ceil(micro-batches / grad_accum), steps = ceil(epochs x that), unless
    max_steps is set. Without packing every micro-batch is padded to its longest row; with
    packing (or only a token total) rows fill batch x seq."""
    if data is not None and data.rows and not s.packing:
        micro_epoch = -(-data.rows // (s.batch * world))
        row_tokens = data.padded_row_tokens(s.batch, s.seq)
        if getattr(s, "train_method", "sft") == "grpo":
            # rows are completions (num_generations a prompt) whose lengths are their prompt's
            # + max_completion_len; TRL pads the generation batch's prompts to its longest
            group = max(1, s.batch * s.grad_accum // max(1, s.num_generations))
            row_tokens = data.padded_row_tokens(group, s.seq)
        why = (f"{data.rows:,} rows in micro-batches of {s.batch}"
               + (f" on each of {world} GPUs" if world > 1 else "")
               + (", each padded to its generation batch's longest prompt"
                  if getattr(s, "train_method", "sft") == "grpo" else
                  ", each padded to its longest row")
               + f": {row_tokens:,.0f} tokens a row on average")
    elif data is not None and data.rows and data.lengths and s.packing:
        # the runner's own packing (train/packing.py, best fit decreasing, rows never cut) of
        # the counted lengths, scaled from the sample to every row
        from workbench.train.packing import pack

        lengths = [min(n, s.seq) for n in data.lengths]
        packs = math.ceil(len(pack(lengths, s.seq)) * data.rows / len(lengths))
        micro_epoch = -(-packs // (s.batch * world))
        row_tokens = sum(lengths) / len(lengths) * data.rows / packs
        why = (f"{data.rows:,} rows packed into {packs:,} packs of up to {s.seq} tokens "
               f"({row_tokens / s.seq:.0%} full), micro-batches of {s.batch} pack{'s' if s.batch > 1 else ''}"
               + (f" on each of {world} GPUs" if world > 1 else ""))
    elif data is not None:
        # a micro-batch holds its trained rows' tokens: both sides of each pair for DPO / ORPO
        # / SimPO (DataCount.tokens counts both, as count_preference_tokens does)
        micro_epoch = max(1, -(-data.tokens // (passes(s).trained * s.seq * world)))
        row_tokens = float(s.seq)
        why = (f"{data.tokens:,} tokens packed into rows of {s.seq}" if s.packing else
               f"{data.tokens:,} tokens as if rows filled batch x seq (no row count)")
    else:
        micro_epoch, row_tokens, why = None, float(s.seq), "the data was not counted"
    if max_steps and max_steps > 0:
        return StepPlan(max_steps, max_steps * s.grad_accum, row_tokens,
                        f"max_steps = {max_steps}" + (f"; {why}" if data is not None else ""))
    if micro_epoch is None:
        return StepPlan(None, None, row_tokens, why)
    per_epoch = -(-micro_epoch // s.grad_accum)
    steps = max(1, math.ceil(per_epoch * epochs))
    return StepPlan(steps, min(steps * s.grad_accum, math.ceil(micro_epoch * epochs)), row_tokens,
                    f"{per_epoch:,} steps an epoch x {epochs:g} epochs: {why}")


@dataclass(frozen=True)
class TimeEstimate:
    """Throughput of a full batch x seq micro-batch, and the run's time and cost; `seconds`,
    `usd`, `steps` and `tokens_total` are None when there is nothing to count (`plan.why`)."""

    gpu: str
    tokens_per_step: int
    steps: int | None
    tokens_total: int | None
    flops_per_token: float
    tokens_per_second: float
    step_seconds: float  # one optimizer step of the run's micro-batches (padding included)
    seconds: float | None
    usd: float | None
    usd_per_hour: float
    mfu: float
    plan: str
    generation_seconds: float = 0.0  # GRPO: sampling the generation batch, once a step

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


PAIRED_METHODS = ("dpo", "orpo", "simpo")


@dataclass(frozen=True)
class Passes:
    """What one micro-batch of `batch` examples runs, in rows of `seq` tokens: trained rows
    (forward + backward), no-grad forwards with the adapter (KTO's KL pass) and without it
    (the reference), and the reference forwards run once before training (precompute_ref)."""

    trained: int
    forward_adapter: int = 0
    forward_reference: int = 0
    precomputed_reference: int = 0


def passes(s: EstimateSettings) -> Passes:
    method = getattr(s, "train_method", "sft")
    b = s.batch
    if method == "grpo":  # the reference (beta > 0) and vLLM's re-scoring: the same rows, no grad
        return Passes(b, forward_adapter=b if getattr(s, "generation", "") == "vllm" else 0,
                      forward_reference=b if getattr(s, "beta", 0) > 0 else 0)
    if method in ("orpo", "simpo"):
        return Passes(2 * b)
    if method == "dpo":
        return (Passes(2 * b, precomputed_reference=2 * b) if s.precompute_ref
                else Passes(2 * b, forward_reference=2 * b))
    if method == "kto":
        return (Passes(b, forward_adapter=b, precomputed_reference=2 * b) if s.precompute_ref
                else Passes(b, forward_adapter=b, forward_reference=2 * b))
    return Passes(b)


def _matmul_params(arch: Architecture) -> int:
    n_matmul = arch.total_params - arch.embedding_params + (
        arch.embedding_params if arch.tied_embeddings else 0)  # tied: the head still multiplies
    return n_matmul - (arch.layers * arch.layer_norm_params + arch.hidden)  # norms are not matmuls


def forward_flops_per_token(arch: Architecture, s: EstimateSettings, adapter: bool) -> float:
    """One no-grad forward: the frozen matmuls, the adapters' when they are on, attention."""
    n_lora = (lora_params(arch, s.targets, s.r, dora=s.method == "dora")
              if adapter and s.method != "full" else 0)
    return 2 * (_matmul_params(arch) + n_lora) + 4 * arch.layers * (s.seq / 2) * arch.q_dim


def flops_per_token(arch: Architecture, s: EstimateSettings) -> float:
    """FLOPs per trained token of a step: its forward, backward and recomputation, plus the
    no-grad forwards a preference step runs beside them (DPO's reference; KTO's KL pass and
    reference), spread over the trained tokens."""
    training = _training_flops_per_token(arch, s)
    p = passes(s)
    extra = 0.0
    if p.forward_adapter:
        extra += p.forward_adapter / p.trained * forward_flops_per_token(arch, s, adapter=True)
    if p.forward_reference:
        extra += p.forward_reference / p.trained * forward_flops_per_token(arch, s, adapter=False)
    return training + extra


def _training_flops_per_token(arch: Architecture, s: EstimateSettings) -> float:
    n_matmul = _matmul_params(arch)
    attn_fwd = 4 * arch.layers * (s.seq / 2) * arch.q_dim
    if s.method == "full":
        fwd = 2 * n_matmul + attn_fwd
        bwd = 4 * n_matmul + 2 * attn_fwd
    else:
        n_lora = lora_params(arch, s.targets, s.r, dora=s.method == "dora")
        fwd = 2 * (n_matmul + n_lora) + attn_fwd
        bwd = 2 * n_matmul + 4 * n_lora + 2 * attn_fwd
    recompute = fwd if s.grad_ckpt else 0.0
    return fwd + bwd + recompute


def step_seconds(arch: Architecture, s: EstimateSettings, gpu: GpuSpec,
                 efficiency: float | None = None) -> tuple[float, float]:
    """(seconds of one micro-batch step, FLOPs per trained token)."""
    p = passes(s)
    tokens = p.trained * s.seq
    fpt = flops_per_token(arch, s)
    compute = fpt * tokens / (gpu.bf16_tflops * 1e12 * (efficiency or COMPUTE_EFFICIENCY))
    again = 1 + RECOMPUTE_OVERHEAD * s.grad_ckpt
    adapted = len(resolve_targets(arch, s.targets)) if s.method not in ("full",) else 0
    quantized = len(arch.linears) if s.method == "qlora" else 0
    overhead = arch.layers * again * (LAYER_OVERHEAD_S + ADAPTER_OVERHEAD_S * adapted
                                      + QUANT_OVERHEAD_S * quantized)
    # the no-grad forwards: a pass each (KTO's three are each its own call), whatever its rows
    forwards_adapter = 1 if p.forward_adapter else 0
    forwards_reference = (2 if getattr(s, "train_method", "sft") == "kto" else 1) if p.forward_reference else 0
    overhead += arch.layers * RECOMPUTE_OVERHEAD * (
        forwards_adapter * (LAYER_OVERHEAD_S + ADAPTER_OVERHEAD_S * adapted + QUANT_OVERHEAD_S * quantized)
        + forwards_reference * (LAYER_OVERHEAD_S + QUANT_OVERHEAD_S * quantized))
    again_dequant = again + RECOMPUTE_OVERHEAD * (forwards_adapter + forwards_reference)
    dequant = (arch.quantizable_params * DEQUANT_BYTES * again_dequant / (gpu.bandwidth_tbs * 1e12)
               if quantized else 0.0)
    return compute + overhead + dequant, fpt


def grpo_settings(s: EstimateSettings) -> EstimateSettings:
    """A GRPO micro-batch row is a prompt and its completion."""
    if getattr(s, "train_method", "sft") != "grpo":
        return s
    return replace(s, seq=s.max_prompt_len + s.max_completion_len)


def generation_seconds(arch: Architecture, s: EstimateSettings, gpu: GpuSpec,
                       prompt_tokens: float | None = None,
                       efficiency: float | None = None) -> float:
    """GRPO: one generation batch (batch x grad_accum sequences, `prompt_tokens` each, default
    max_prompt_len, then max_completion_len new tokens), as the module docstring says. 0 for
    other methods."""
    if getattr(s, "train_method", "sft") != "grpo":
        return 0.0
    n = s.batch * s.grad_accum
    p = max(1, round(prompt_tokens if prompt_tokens is not None else s.max_prompt_len))
    c = s.max_completion_len
    eff = efficiency or COMPUTE_EFFICIENCY
    peak = gpu.bf16_tflops * 1e12
    bandwidth = gpu.bandwidth_tbs * 1e12
    transformers = s.generation == "transformers"
    adapted = len(resolve_targets(arch, s.targets)) if s.method != "full" else 0
    quantized = len(arch.linears) if s.method == "qlora" else 0
    forward_overhead = arch.layers * RECOMPUTE_OVERHEAD * (
        LAYER_OVERHEAD_S + ADAPTER_OVERHEAD_S * adapted + QUANT_OVERHEAD_S * quantized)
    decode_overhead = arch.layers * (DECODE_LAYER_OVERHEAD_S + DECODE_ADAPTER_OVERHEAD_S * adapted
                                     + RECOMPUTE_OVERHEAD * QUANT_OVERHEAD_S * quantized)
    dequant = (arch.quantizable_params * DEQUANT_BYTES * RECOMPUTE_OVERHEAD / bandwidth
               if quantized and transformers else 0.0)
    prefill = (forward_flops_per_token(arch, replace(s, seq=p), adapter=True) * n * p / (peak * eff)
               + forward_overhead + dequant)
    wide = s.method == "qlora" or s.precision == "fp32"
    w = 4 if wide else 2
    weights = (arch.quantizable_params // 2 + (arch.total_params - arch.quantizable_params) * 4
               if s.method == "qlora" else arch.total_params * w)
    kv_token = arch.layers * 2 * arch.kv_dim * w
    context = p + c / 2  # the mean length the decoding steps attend to
    step_bytes = weights + n * context * kv_token
    step_flops = n * forward_flops_per_token(arch, replace(s, seq=round(2 * context)), adapter=True)
    step = max(step_bytes / bandwidth, step_flops / (peak * eff))
    if transformers:
        step += decode_overhead + dequant
    return prefill + c * step


def precompute_seconds(arch: Architecture, s: EstimateSettings, gpu: GpuSpec, rows: int,
                       row_tokens: float, efficiency: float | None = None) -> float:
    """precompute_ref: the reference forwards over one epoch of `rows` examples, before
    training, in micro-batches of `batch` (trl's precompute_ref_batch_size defaults to it)."""
    p = passes(s)
    if not p.precomputed_reference or not rows:
        return 0.0
    seq = max(1, round(row_tokens))
    one = replace(s, seq=seq)
    fwd = forward_flops_per_token(arch, one, adapter=False)
    micro = -(-rows // s.batch)
    tokens = micro * p.precomputed_reference * seq
    compute = fwd * tokens / (gpu.bf16_tflops * 1e12 * (efficiency or COMPUTE_EFFICIENCY))
    quantized = len(arch.linears) if s.method == "qlora" else 0
    calls = 2 if getattr(s, "train_method", "sft") == "kto" else 1
    overhead = micro * calls * arch.layers * RECOMPUTE_OVERHEAD * (
        LAYER_OVERHEAD_S + QUANT_OVERHEAD_S * quantized)
    dequant = (micro * calls * arch.quantizable_params * DEQUANT_BYTES * RECOMPUTE_OVERHEAD
               / (gpu.bandwidth_tbs * 1e12) if quantized else 0.0)
    return compute + overhead + dequant


def estimate_time(arch: Architecture, s: EstimateSettings, gpu: GpuSpec, *,
                  data: DataCount | None = None, epochs: float = 1.0,
                  max_steps: int = -1, usd_per_hour: float | None = None,
                  mfu: float | None = None) -> TimeEstimate:
    """ETA and cost of the run on one GPU (`plan_steps` counts the steps from the data). `mfu`
    overrides the compute efficiency (the share of the bf16 peak of compute-bound steps)."""
    s = grpo_settings(s)
    plan = plan_steps(s, data, epochs, max_steps)
    seconds_full, fpt = step_seconds(arch, s, gpu, mfu)
    trained_rows = passes(s).trained  # 2 x batch for pairs: both sides are trained tokens
    throughput = trained_rows * s.seq / seconds_full
    row_seq = max(1, round(plan.row_tokens))
    seconds_micro = step_seconds(arch, replace(s, seq=row_seq), gpu, mfu)[0]
    price = gpu.usd_per_hour if usd_per_hour is None else usd_per_hour
    seconds = plan.micro_batches * seconds_micro if plan.micro_batches is not None else None
    if seconds is not None and passes(s).precomputed_reference:
        # the whole training set once, whatever the epochs or max_steps
        rows = (data.rows or -(-data.tokens // s.seq)) if data is not None else (
            plan.micro_batches * s.batch)
        seconds += precompute_seconds(arch, s, gpu, rows, plan.row_tokens, mfu)
    # GRPO: the generation batch is sampled once a step, its prompts padded to the longest
    generating = generation_seconds(arch, s, gpu, (plan.row_tokens - s.max_completion_len
                                                   if data is not None and data.lengths else None),
                                    mfu) if s.train_method == "grpo" else 0.0
    if seconds is not None and generating:
        seconds += plan.steps * generating
    achieved = throughput * fpt / (gpu.bf16_tflops * 1e12)  # the model FLOPs utilization
    return TimeEstimate(gpu=gpu.key, tokens_per_step=trained_rows * s.seq * s.grad_accum,
                        steps=plan.steps,
                        tokens_total=(round(plan.micro_batches * trained_rows * plan.row_tokens)
                                      if plan.micro_batches is not None else None),
                        flops_per_token=fpt, tokens_per_second=throughput,
                        step_seconds=seconds_micro * s.grad_accum + generating, seconds=seconds,
                        usd=seconds / 3600 * price if seconds is not None else None,
                        usd_per_hour=price, mfu=achieved, plan=plan.why,
                        generation_seconds=generating)
