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

from dataclasses import dataclass

from workbench.estimate.gpus import GPUS, GpuSpec
from workbench.estimate.memory import EstimateSettings
from workbench.estimate.params import Architecture, lora_params, resolve_targets

COMPUTE_EFFICIENCY = 0.53    # share of the bf16 peak a compute-bound LoRA / QLoRA step reaches
LAYER_OVERHEAD_S = 2.5e-3    # per decoder layer per step
ADAPTER_OVERHEAD_S = 0.49e-3  # per LoRA-adapted linear per layer per step
QUANT_OVERHEAD_S = 0.24e-3   # per 4-bit linear per layer per step
RECOMPUTE_OVERHEAD = 0.75    # gradient checkpointing: extra share of the per-step overhead
DEQUANT_BYTES = 12.8         # memory traffic per 4-bit weight per step (dequantize, re-read)


@dataclass(frozen=True)
class TimeEstimate:
    gpu: str
    tokens_per_step: int
    steps: int
    tokens_total: int
    flops_per_token: float
    tokens_per_second: float
    seconds: float
    usd: float
    usd_per_hour: float
    mfu: float

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def flops_per_token(arch: Architecture, s: EstimateSettings) -> float:
    n_matmul = arch.total_params - arch.embedding_params + (
        arch.embedding_params if arch.tied_embeddings else 0)  # tied: the head still multiplies
    n_matmul -= arch.layers * arch.layer_norm_params + arch.hidden  # norms are not matmuls
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
    """(seconds of one micro-batch step, FLOPs per token)."""
    tokens = s.batch * s.seq
    fpt = flops_per_token(arch, s)
    compute = fpt * tokens / (gpu.bf16_tflops * 1e12 * (efficiency or COMPUTE_EFFICIENCY))
    again = 1 + RECOMPUTE_OVERHEAD * s.grad_ckpt
    adapted = len(resolve_targets(arch, s.targets)) if s.method not in ("full",) else 0
    quantized = len(arch.linears) if s.method == "qlora" else 0
    overhead = arch.layers * again * (LAYER_OVERHEAD_S + ADAPTER_OVERHEAD_S * adapted
                                      + QUANT_OVERHEAD_S * quantized)
    dequant = (arch.quantizable_params * DEQUANT_BYTES * again / (gpu.bandwidth_tbs * 1e12)
               if quantized else 0.0)
    return compute + overhead + dequant, fpt


def estimate_time(arch: Architecture, s: EstimateSettings, gpu: GpuSpec, *,
                  dataset_tokens: int | None = None, epochs: float = 1.0,
                  max_steps: int = -1, usd_per_hour: float | None = None,
                  mfu: float | None = None) -> TimeEstimate:
    """ETA and cost. `dataset_tokens`: tokens in one epoch of the rendered training set
    (padding included when not packing); without it, one step's worth (batch x seq x accum).
    `mfu` overrides the compute efficiency (the share of the bf16 peak of compute-bound steps)."""
    per_step = s.batch * s.seq * s.grad_accum
    if dataset_tokens:
        steps_per_epoch = max(1, -(-dataset_tokens // per_step))
        tokens_epoch = dataset_tokens
    else:
        steps_per_epoch, tokens_epoch = 1, per_step
    steps = max_steps if max_steps and max_steps > 0 else max(1, round(steps_per_epoch * epochs))
    tokens_total = (steps * per_step if max_steps and max_steps > 0
                    else int(tokens_epoch * epochs))
    seconds_micro, fpt = step_seconds(arch, s, gpu, mfu)
    throughput = s.batch * s.seq / seconds_micro
    seconds = tokens_total / throughput
    price = gpu.usd_per_hour if usd_per_hour is None else usd_per_hour
    achieved = throughput * fpt / (gpu.bf16_tflops * 1e12)  # the model FLOPs utilization
    return TimeEstimate(gpu=gpu.key, tokens_per_step=per_step, steps=steps,
                        tokens_total=tokens_total, flops_per_token=fpt,
                        tokens_per_second=throughput, seconds=seconds,
                        usd=seconds / 3600 * price, usd_per_hour=price, mfu=achieved)


def time_table(arch: Architecture, s: EstimateSettings, **kwargs) -> list[TimeEstimate]:
    """The same run on every GPU of the table, for side-by-side planning."""
    kwargs.pop("usd_per_hour", None)
    return [estimate_time(arch, s, gpu, **kwargs) for gpu in GPUS]
