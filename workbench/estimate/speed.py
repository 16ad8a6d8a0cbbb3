"""Time and cost of a run from a FLOPs model: tokens x FLOPs per token / (peak x utilization).

FLOPs per token (multiply-add = 2 FLOPs), for N_frozen frozen matmul weights, N_lora adapter
weights, L layers, sequence S, attention width q_dim:
- forward: 2 * (N_frozen + N_lora) for the matmuls + attention 4 * L * S/2 * q_dim (QK^T and
  PV, causal: half the positions on average; flash kernels skip the masked half);
- backward: frozen layers need only activation gradients, 2 * N_frozen (no weight gradients);
  adapters need both, 4 * N_lora; attention backward costs 2x its forward;
  a full fine-tune pays 4 * N for every weight;
- gradient checkpointing recomputes the forward of the decoder layers: + forward again.
The output layer (vocab x hidden) counts as a frozen matmul (N includes it; embeddings are a
lookup, no FLOPs). QLoRA dequantizes weights on the fly: same FLOPs, lower utilization (the
default MFU is multiplied by 0.7, a placeholder until measured).

Utilization (MFU) per GPU lives in gpus.py and is a placeholder until bench/estimate_speed
measures it on that GPU; say so wherever a time is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.estimate.gpus import GPUS, GpuSpec
from workbench.estimate.memory import EstimateSettings
from workbench.estimate.params import Architecture, lora_params

QLORA_MFU_FACTOR = 0.7


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


def estimate_time(arch: Architecture, s: EstimateSettings, gpu: GpuSpec, *,
                  dataset_tokens: int | None = None, epochs: float = 1.0,
                  max_steps: int = -1, usd_per_hour: float | None = None,
                  mfu: float | None = None) -> TimeEstimate:
    """ETA and cost. `dataset_tokens`: tokens in one epoch of the rendered training set
    (padding included when not packing); without it, one step's worth (batch x seq x accum)."""
    per_step = s.batch * s.seq * s.grad_accum
    if dataset_tokens:
        steps_per_epoch = max(1, -(-dataset_tokens // per_step))
        tokens_epoch = dataset_tokens
    else:
        steps_per_epoch, tokens_epoch = 1, per_step
    steps = max_steps if max_steps and max_steps > 0 else max(1, round(steps_per_epoch * epochs))
    tokens_total = (steps * per_step if max_steps and max_steps > 0
                    else int(tokens_epoch * epochs))
    util = mfu if mfu is not None else gpu.mfu * (QLORA_MFU_FACTOR if s.method == "qlora" else 1)
    fpt = flops_per_token(arch, s)
    throughput = gpu.bf16_tflops * 1e12 * util / fpt
    seconds = tokens_total / throughput
    price = gpu.usd_per_hour if usd_per_hour is None else usd_per_hour
    return TimeEstimate(gpu=gpu.key, tokens_per_step=per_step, steps=steps,
                        tokens_total=tokens_total, flops_per_token=fpt,
                        tokens_per_second=throughput, seconds=seconds,
                        usd=seconds / 3600 * price, usd_per_hour=price, mfu=util)


def time_table(arch: Architecture, s: EstimateSettings, **kwargs) -> list[TimeEstimate]:
    """The same run on every GPU of the table, for side-by-side planning."""
    kwargs.pop("usd_per_hour", None)
    return [estimate_time(arch, s, gpu, **kwargs) for gpu in GPUS]
