"""Peak GPU memory of one training step, from a model's config.json: an analytic model with
named terms, no torch import, well under 5 ms per call.

What is predicted: `reserved_bytes`, comparable with `torch.cuda.max_memory_reserved()` over
a step (forward, backward, optimizer step) in steady state (optimizer states exist, grads were
set to None by the previous step), and `peak_bytes` = that plus the CUDA context, which is what
must fit in the GPU's free memory.

The step modeled is the workbench runner's (workbench/train/runner.py): weights in the
precision dtype (`from_pretrained(dtype=...)`), or 4-bit nf4 with double quantization for
QLoRA followed by peft's `prepare_model_for_kbit_training`; peft LoRA adapters in fp32; bf16
autocast; SDPA; non-reentrant gradient checkpointing per decoder layer; labels on every token.
Each term below says which code it follows (versions in the venv: torch 2.13, transformers
5.24, peft 0.21, trl 1.16, bitsandbytes):

- peft `prepare_model_for_kbit_training` (peft/utils/other.py) casts every fp16/bf16
  parameter that is not a `Params4bit` to fp32: embeddings, the output layer, norms, biases.
  So in QLoRA the residual stream is fp32 (fp32 embedding output, fp32 norms), and
  bitsandbytes' `Linear4bit.forward` returns its input's dtype (`.to(inp_dtype)`), so the
  frozen matmul outputs are fp32 too: QLoRA activations are about twice LoRA's.
- peft's LoRA `Linear.forward` casts its input to the adapter dtype (fp32) and autocast casts
  it back to bf16 for `lora_A`: every adapted layer saves its own bf16 copy of its input, and
  with dropout > 0 a 1-byte mask as well.
- Frozen matmuls save no input: autograd saves `mat1` of mm/addmm only when `mat2` requires
  grad. bnb's `MatMul4Bit` saves only the quantized weight.
- RMSNorm (Llama, Qwen2, Mistral, Phi-3, Gemma-2) saves its fp32 upcast input: 4 bytes/elem.
- SDPA (flash / memory-efficient kernels) saves q, k, v, output and an fp32 logsumexp; with
  no mask, transformers passes `enable_gqa` so k and v stay at the kv-head size
  (transformers/integrations/sdpa_attention.py `use_gqa_in_sdpa`); with a mask (sliding
  window shorter than the sequence, or packing) k and v are repeated to every head.
- A fused q/k/v projection (Phi-3's qkv_proj): v is a view of the projection's output, so the
  v attention saves keeps all of q/k/v alive, unless the KV cache copied v first (transformers
  builds one in training when checkpointing is off and the model's own forward runs; trl's fused
  head passes use_cache=False). Found by tracing the runner's step (bench/estimate_runner_trace.md).
- Gated MLP: the activation saves its input, the product saves both factors: 3 x intermediate.
- Loss, two paths (`loss_path`):
  * "trl_fused": trl 1.16's SFTTrainer (which the runner uses) patches the model with
    `add_fused_lm_head` and calls `model(..., fused_lm_head=True)`: `ChunkedLogProbFunction`
    (trl/kernels/chunked_logprob.py) never builds the (tokens x vocab) logits; it keeps a
    4096 x 32768 tile, the selected hidden states and an fp32 hidden-state gradient.
  * "full_logits": plain transformers `ForCausalLMLoss` in a loop that keeps the model output
    (`out = model(...)`, `out.loss.backward()`, the optimizer step, then `del out`: the step
    the H200 calibration measured): bf16 logits held by the output, an fp32 upcast,
    log_softmax output saved; the backward's first moment holds the saved log-probs, their
    gradient and log_softmax's input gradient: 14 bytes x vocab per token (Gemma-2's final
    softcapping adds a saved bf16 tanh output).
- Training method (`train_method`, the profile's train.method; `method` is the adapter), as
  trl 1.16's trainers run it with a peft model and no separate reference model (the workbench's
  preference trainers, workbench/train/methods/preference.py):
  * every trainer's config defaults to `disable_dropout=True` (dpo_trainer.py:933): LoRA's
    dropout runs with p = 0, no masks;
  * DPO (dpo_trainer.py:1285 `_compute_loss`): the collator stacks each pair's chosen and
    rejected rows (DataCollatorForPreference, padded to the longest of the 2 x batch), so the
    policy's step is SFT's at twice the rows, through the same fused LM head
    (`fused_lm_head=True`, dpo_trainer.py:1299: trl/trainer/utils.py `add_fused_lm_head`, which
    projects the scored positions tile by tile and never builds the logits). Then, before the
    loss, the reference forward (dpo_trainer.py:1327-1336): `torch.no_grad()`, checkpointing
    switched off, `use_adapter(model, None)` (peft's `disable_adapter`: the same weights, no
    copy): it saves nothing, so its cost is a transient beside the policy's saved activations
    and the fused head's saved hidden states ("reference pass (no grad)"): one layer's no-grad
    activations or the head's tile, whichever is larger. Named, at 0 bytes, where it is not the
    peak (with checkpointing the backward's recomputation is larger; without, it holds the peak
    for large MLPs or eager attention). precompute_ref (`precompute_ref_log_probs`) drops it:
    the reference log-probs are read from the batch (dpo_trainer.py:1318), scored in a
    no-grad pass over the data before training;
  * KTO (kto_trainer.py:1370): `batch` rows (one answer each) through the fused head; a no-grad
    KL pass of the policy over mismatched completions before the policy forward (kto_trainer.py
    :1364, below every later moment: not counted); the reference's KL and completion forwards,
    each `batch` rows, one after the other (kto_trainer.py:1426-1433): the reference moment;
  * ORPO and SimPO (trl/experimental/orpo/orpo_trainer.py:745 and cpo/cpo_trainer.py:792
    `concatenated_forward`): 2 x batch rows with full logits (no fused head), made fp32 by
    accelerate's `convert_outputs_to_fp32` (the Trainer's prepared forward); ORPO's NLL on the
    chosen rows (`cross_entropy_loss`) and `selective_log_softmax` (trl's Triton kernel on
    CUDA, trl/kernels/logprob_entropy.py) over them: 10 bytes per token per vocabulary entry
    at the backward's start for ORPO, 8 for SimPO (`_pair_logits_peak`), plus a reserve for
    their logits-sized blocks (LOGITS_RESERVE_SHARE). No reference. Below DPO only for small
    vocabularies.
  * GRPO (trl/trainer/grpo_trainer.py, workbench/train/methods/grpo.py; `_grpo_settings`):
    `batch` counts completions, a row is max_prompt_len + max_completion_len tokens (estimated
    full: the longest prompt, every completion to the end), and GRPOConfig keeps dropout
    (`disable_dropout=False`). Once a step, at its first micro-batch, the trainer generates
    the whole generation batch (N = batch x grad_accum completions, num_generations a prompt),
    scores it, then trains its micro-batches; generation and training do not coexist (only
    the weights, adapters and optimizer states span both), so the peak is the larger of:
    - the generation ("the completions are generated", `_generation_peak`): transformers'
      `generate` on the peft model (use_cache on, no grad, checkpointing off, and no autocast:
      peft's `generate` reaches the model's own forward, not the one accelerate wrapped, so the
      cache and activations take the weights' dtype, fp32 for QLoRA). The larger of the
      prefill (the prompts' KV cache, N x P x layers x 2 x kv_dim x width, and one layer's
      activations over the N x P prompt tokens, peft's LoRA branches in fp32,
      `_generation_layer`) and the last decoding step (the KV cache of N x (P + C - 1) tokens,
      and the larger of DynamicCache's torch.cat growth, one layer's keys copied, and the last
      position's logits: the output, its fp32 copy, the previous step's fp32 logits and
      probabilities still referenced). Named at 0 where the training holds the peak, and the
      training named at 0 ("training phase") where the generation does;
    - the reference pass when beta > 0 (the adapter disabled by `use_adapter(model, None)`: no
      second copy of the weights), no grad, autocast, in chunks of `batch` rows, through the
      fused head over the completions, before any training forward: `_reference_pass` with
      nothing of the policy alive beside it, so never the peak in practice (named at 0);
    - the training micro-batches: SFT's step at `batch` rows through the fused LM head, which
      gathers and scores the completion positions only (logits_to_keep, trl's compact path on
      CUDA: `hidden_states[mask]`, then per-token log-probs and entropies, no logits);
    - with grpo.generation = "vllm" (colocated): vLLM holds vllm_gpu_memory_utilization (trl's
      default 0.3) of the GPU's total memory from the start ("vLLM (colocated)": its own weights,
      its KV cache, where the generation then happens instead, its activations; counted for
      the GPU given, 0 without one), trl re-scores the samples with the policy
      (`vllm_importance_sampling_correction`: "the old log-probs are scored (no grad)") and
      merges the adapter one linear at a time to push the weights ("adapter merge").
    The generation terms were checked against the traced step (trace_grpo.py: transformers'
    own `generate` under FakeTensorMode) on 10 steps (8 small, 2 of the full SmolLM2-360M):
    within 1% of the traced generation phase and -1% / +3% on the step's allocated peak; the
    allocator reserve adds RESERVE_GENERATION_SHARE of the generation phase and
    RESERVE_KV_SHARE of its full KV cache (a rule from those traces, -6% / +12% of the traced
    max_memory_reserved, not measured on a GPU: bench/grpo_gpu_step.py measures it).
- Gradient checkpointing (transformers' GradientCheckpointingLayer, use_reentrant=False)
  keeps each layer's input; the backward recomputes one layer at a time.
- Gradients: the previous step set them to None, so when the loss is computed no adapter
  gradient exists; they appear layer by layer as the backward frees that layer's activations.
- AdamW (torch, foreach): two fp32 states per trainable parameter, plus one fp32 temporary
  per parameter during the step; 8-bit AdamW (bitsandbytes) keeps 2 bytes per parameter.
- cuBLAS workspaces: one per thread that runs matmuls (the forward's, and autograd's backward
  thread), 32 MiB each on Hopper, allocated through the caching allocator (so they count in
  `memory_allocated`).
- Allocator reserve (`max_memory_reserved` - `max_memory_allocated`): freed blocks the caching
  allocator keeps, split by later smaller requests; rule: 10% of the step's transient bytes +
  50% of the trainable parameters' bytes (gradients and foreach optimizer temporaries are
  allocated between activations and pin the segments they land in). `workbench estimate
  --trace` replaces the rule by the replayed reserve (workbench/estimate/trace.py: the real
  step traced on the CPU, its allocations run through the allocator's own rules).
- CUDA context: not part of `max_memory_reserved`, but it occupies the GPU: 600 MiB.

What the H200 measurements showed, term by term (`../shared/data/gpu-truth`, 56 points, one
factor changed at a time; `bench/estimate_accuracy.md` has every point):
- Static bytes (`memory_allocated` before the first step) matched the weights, quantization
  constants and adapters to within 0.1%, plus 64 MiB once a step had run: the two cuBLAS
  workspaces, now counted as allocated rather than as reserve.
- The allocated peak was under-estimated by exactly one bf16 (tokens x vocab) tensor wherever
  the logits moment held the peak (Qwen2.5-0.5B at 4 x 2048: 2.32 GiB of the 2.35 GiB gap;
  SmolLM2-135M: 0.75 of 0.79; Llama-3.1-8B: 1.96 for a 1.82 GiB gap): the logits the model
  output keeps.
- Points with many adapters (r64, all linear layers) were over-estimated by 4 bytes per
  trainable parameter at the loss moment (Llama-3.1-8B r64: 0.63 GiB): adapter gradients do
  not exist yet there.
- With these, the allocated peak (max_memory_allocated) is within -1.4% / +4.0% on every point,
  median 0.3%.
  The remaining error is the allocator reserve: measured from 0.01 to 4.94 GiB, and not a
  function of the step's shape alone (Qwen2.5-0.5B at 4 x 2048 without checkpointing: 0.23 GiB
  with r16 attention-only, 4.94 GiB with r64 all-linear, the same logits); the rule above is
  the simplest that keeps every point within 10% and leans over (mean +1.5%); two points are
  still under-estimated by 6%.
- Why the reserve is not a function of the shape (`bench/allocator_replay.md`): the step's
  allocations, traced on the CPU under FakeTensorMode and replayed through a model of torch's
  caching allocator (best fit, block splitting, 2 MiB rounding, 20 MiB segments), reproduce the
  measured `max_memory_reserved` within 0.7% on 36 of the 40 LoRA points, including the 4.94 vs
  0.23 GiB pair. The first step gives each logits-sized tensor its own segment; in the second,
  when one activation-sized request finds no free block of its size (Qwen r64 all-linear: a
  76 MiB bf16 copy made for down_proj's LoRA), best fit splits the bf16-logits segment, and the
  loss then needs a new fp32-logits segment. Whether that happens depends on the order and sizes
  of every transient, not on layers, hidden, vocab, r, targets or tokens: no rule over those
  met the targets (bench/allocator_replay.md lists the ones tried). So the reserve is replayed
  rather than estimated when it matters (`--trace`, 4-20 s): with it, median |error| 0.6%,
  worst 9.7% (a QLoRA point, which keeps this rule), worst under-estimate 4.6% on the 56 points.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

from workbench.estimate.params import (Architecture, ConfigError, lora_params, resolve_targets,
                                       trained_embedding_params)
from workbench.fmt import fmt_gib

MIB = 1024 ** 2
GIB = 1024 ** 3

METHODS = ("lora", "qlora", "dora", "full")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
              "paged_adamw_32bit", "adafactor", "sgd")
PRECISIONS = ("bf16", "fp16", "fp32")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
FLASH_ATTENTIONS = ("flash_attention_2", "flash_attention_3")  # the same saved tensors, no mask
LOSS_PATHS = ("trl_fused", "full_logits", "liger_fused")
# train.kernels as counted (workbench/train/kernels.py resolves "auto" and "hub"): Liger's Triton
# RMSNorm saves its input in the residual dtype and one fp32 rstd a row (torch's saves the fp32
# upcast), its SwiGLU saves gate and up only and recomputes the SiLU in the backward (torch's
# saves 3 x intermediate). Its RoPE saves cos/sin, as torch's does: no change. Liger's fused
# linear cross-entropy is the "liger_fused" loss path; trl's trainers switch it off (their fused
# LM head takes its place), so with loss_path "trl_fused" liger changes the layers only.
KERNELS = ("none", "liger")
LIGER_NOTE_OFF = ("Liger's fused linear cross-entropy is off under trl (its fused LM head "
                  "already builds no logits): liger counted for RMSNorm and SwiGLU")
GENERATIONS = ("transformers", "vllm")  # grpo.generation
TRAIN_METHODS = ("sft", "dpo", "orpo", "kto", "simpo", "grpo")
PREFERENCE_METHODS = ("dpo", "orpo", "kto", "simpo")
PAIRED_METHODS = ("dpo", "orpo", "simpo")     # chosen + rejected stacked: 2 x batch rows a step
METHOD_TITLES = {"sft": "SFT", "dpo": "DPO", "orpo": "ORPO", "kto": "KTO", "simpo": "SimPO",
                 "grpo": "GRPO"}
REFERENCE_METHODS = ("dpo", "kto")            # a reference forward in the step (unless precomputed)
FULL_LOGITS_METHODS = ("orpo", "simpo")       # trl's experimental trainers build full logits
STEP_MODELED = {
    "trl_fused": "the workbench runner's (trl SFTTrainer with its fused LM head, no full logits); "
                 "the H200 calibration measured the full-logits step (--loss-path full_logits)",
    "full_logits": "a plain loop with transformers' own loss over full logits, the model output "
                   "kept through the step (the H200 calibration step, bench/estimate_accuracy.md)",
    "liger_fused": "a plain loop (transformers' Trainer outside trl) with Liger's fused linear "
                   "cross-entropy (use_liger_kernel): the logits are never built, a chunk of rows "
                   "at a time, the hidden-state gradient computed in the forward",
}
# Preference methods: the step of trl 1.16's trainer, whatever --loss-path says.
STEP_MODELED_METHOD = {
    "dpo": "trl DPOTrainer's: chosen and rejected as one batch of 2 x batch rows through the "
           "fused LM head, then the reference forward (the adapter disabled, no grad), the loss, "
           "the backward",
    "kto": "trl KTOTrainer's: a no-grad KL pass of the policy over mismatched completions, the "
           "policy forward (batch rows, fused LM head), the reference's KL and completion forwards "
           "(the adapter disabled, no grad), the loss, the backward",
    "orpo": "trl ORPOTrainer's (trl.experimental): chosen and rejected as one batch of 2 x batch "
            "rows with full logits, made fp32 by accelerate, the chosen rows' NLL and the "
            "log-probabilities over them; no reference",
    "simpo": "trl CPOTrainer's with loss_type=\"simpo\", cpo_alpha=0 (trl.experimental): chosen "
             "and rejected as one batch of 2 x batch rows with full logits, made fp32 by "
             "accelerate, the length-normalized log-probabilities; no reference",
    "grpo": "trl GRPOTrainer's: transformers' generate samples the generation batch (batch x "
            "grad_accum completions, KV cache on, no grad), the reference scores them when beta "
            "> 0 (the adapter disabled, no grad), then each micro-batch of batch completions "
            "trains through the fused LM head over the completion tokens",
    "grpo-vllm": "trl GRPOTrainer's with colocated vLLM: vLLM samples the generation batch in "
                 "its own share of the GPU, the policy re-scores the samples (no grad) and the "
                 "reference when beta > 0, then each micro-batch of batch completions trains "
                 "through the fused LM head over the completion tokens",
}


def step_modeled(settings) -> str:
    method = getattr(settings, "train_method", "sft")
    if method == "grpo" and getattr(settings, "generation", "transformers") == "vllm":
        return STEP_MODELED_METHOD["grpo-vllm"]
    return STEP_MODELED[settings.loss_path] if method == "sft" else STEP_MODELED_METHOD[method]

# Model types whose SDPA path transformers removed, and the release that removed it: from then
# on the model runs eager attention, asking for sdpa is an error, and the runner falls back to
# eager. Gemma-2 (attention softcapping, which SDPA cannot apply) lost it in 5.21; before, it ran
# SDPA without the softcapping (the H200 calibration's transformers 5.17 did).
NO_SDPA_SINCE = {"gemma2": (5, 21)}


@lru_cache(maxsize=1)
def installed_transformers() -> str | None:
    """The installed transformers' version, read from its metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def runs_eager(model_type: str, transformers_version: str | None = None) -> bool:
    """Whether `model_type` has no SDPA path in that transformers (default: the installed one;
    without transformers, the newest behaviour)."""
    since = NO_SDPA_SINCE.get(model_type)
    if since is None:
        return False
    version = transformers_version or installed_transformers()
    return version is None or _release(version) >= since

def _liger_layers(arch: Architecture, s: EstimateSettings) -> bool:
    """Whether Liger's layer kernels (RMSNorm, SwiGLU) are counted: asked for, and a model type
    liger patches."""
    from workbench.train.kernels import LIGER_MODEL_TYPES

    return s.kernels == "liger" and arch.model_type in LIGER_MODEL_TYPES


def kernels_counted(s: EstimateSettings, model_type: str) -> str:
    """One line: which kernels the estimate counts, and what each changes."""
    from workbench.train.kernels import LIGER_MODEL_TYPES

    parts = []
    if s.kernels == "liger" and model_type in LIGER_MODEL_TYPES:
        what = "RMSNorm (input + rstd, no fp32 upcast), SwiGLU (gate and up, no activation copy)"
        if s.loss_path == "liger_fused":
            what += ", fused linear cross-entropy (no logits)"
        elif s.loss_path == "trl_fused":
            what += "; trl's fused LM head in place of its fused linear cross-entropy"
        parts.append(f"liger: {what}")
    elif s.kernels == "liger":
        parts.append(f"liger asked for, but liger has no kernels for {model_type}: none counted")
    else:
        parts.append("no Liger kernels (torch's RMSNorm and MLP; train.kernels \"auto\" counts "
                     "liger where liger-kernel is installed)")
    if s.attn in FLASH_ATTENTIONS:
        parts.append(f"{s.attn} (no attention mask, k/v at their own head count)")
    else:
        parts.append(f"{s.attn} attention")
    if s.optimizer == "adamw_torch_fused":
        parts.append("fused AdamW (same states as adamw_torch, no foreach temporaries; its speed "
                     "is not modelled)")
    return "; ".join(parts)


CUDA_CONTEXT_BYTES = 600 * MIB
CUBLAS_WORKSPACE_BYTES = 32 * MIB
CUBLAS_WORKSPACES = 2
RESERVE_DYNAMIC_SHARE = 0.10
RESERVE_TRAINABLE_SHARE = 0.5
SPILL_NOTE = "without checkpointing torch's caching allocator may keep one more fp32 logits block"
# ORPO and SimPO (full logits, 2 x batch rows): the reserve their logits-sized blocks leave, in
# fp32 logits blocks, on top of the rule above. From 40 steps traced and replayed through the
# allocator model (Qwen2.5-0.5B, Llama-3.1-8B, SmolLM2-360M, Phi-3-mini; batch 1-4 x seq
# 512-4096; not yet measured on a GPU: bench/preference_gpu_step.py will): what the rule above
# lacked was 0.3-0.6 block for SimPO (1.4 on three Phi-3 points, whose allocated terms lean over
# by 2-6%) and, for ORPO, either about none (-0.2 to +0.3) or 1.3-1.5 blocks: a fragmentation
# event or not, as the SFT calibration found for its full-logits loop (bench/allocator_replay.md).
# One block for ORPO leans over (worst under-estimate 10.5% of the traced reserved, worst over
# +45% where no fragmentation happens); `--trace` replays the step and settles it.
LOGITS_RESERVE_SHARE = {"orpo": 1.0, "simpo": 0.5}
# GRPO with transformers generation: what the rule above lacks is the generation's freed blocks,
# which stay reserved and which later requests do not all fit: the prefill's layer activations
# (spanning all the prompts) and DynamicCache's keys and values, grown by torch.cat a token at a
# time (each layer's a little larger every step than the block it frees). From 10 traced steps
# replayed through the allocator model (2-layer Qwen2.5-0.5B, 4- and 8-layer and full SmolLM2-
# 360M, a 1-layer Llama-3.1-8B, the tiny model; 8-64 sequences, prompts 16-512, completions
# 32-512; not yet measured on a GPU: bench/grpo_gpu_step.py will) the missing reserve was 0.15-
# 1.2 x the generation phase's bytes above the static ones and 0.2-15 x the full KV cache: no
# one of them; half of each puts 9 of the 10 within -6% / +12% of the traced
# max_memory_reserved (the tiny model -16%: its 24 MiB fused-head tile in 20 MiB segments).
# Half of the generation phase alone left the full SmolLM2-360M at 32 x (128 + 512) tokens,
# where the cache holds the generation's peak, 20% short.
RESERVE_GENERATION_SHARE = 0.5
RESERVE_KV_SHARE = 0.5
ORPO_RESERVE_NOTE = "ORPO's allocator reserve is a fragmentation event or not"

# trl/kernels/chunked_logprob.py: TOKEN_CHUNK_SIZE, and _CHUNKED_LOGPROB_CHUNK_SIZE in
# trl/trainer/utils.py (the vocabulary tile).
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768

NF4_BLOCK = 64          # bitsandbytes 4-bit blocksize (transformers' default)
DOUBLE_QUANT_BLOCK = 256  # absmax values quantized in blocks of 256


@dataclass(frozen=True)
class EstimateSettings:
    method: str = "lora"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")
    batch: int = 4
    seq: int = 2048
    grad_ckpt: bool = True
    optimizer: str = "adamw_torch"
    precision: str = "bf16"
    attn: str = "sdpa"
    packing: bool = False
    grad_accum: int = 1
    weight_decay: float = 0.0
    loss_path: str = "trl_fused"
    kernels: str = "none"  # train.kernels as counted: "none" | "liger"
    # train.method: "sft" or a preference method (TRL's trainers); `method` above is the
    # adapter (lora.method). precompute_ref: [preference] precompute_ref (DPO, KTO).
    train_method: str = "sft"
    precompute_ref: bool = False
    # lora.train_embeddings: the embedding and output layer fully trained (a copy of each).
    train_embeddings: bool = False
    # GRPO ([grpo]): `batch` counts completions (TRL's per_device_train_batch_size), `seq` is
    # max_prompt_len + max_completion_len; the generation batch is batch x grad_accum
    # completions, num_generations of each prompt. beta > 0: a reference pass (the adapter
    # disabled). generation "vllm": colocated vLLM holding vllm_memory_share of the GPU's
    # memory (TRL's vllm_gpu_memory_utilization), counted for a GPU of gpu_memory_bytes.
    num_generations: int = 8
    max_prompt_len: int = 512
    max_completion_len: int = 256
    beta: float = 0.0
    grpo_loss: str = "dapo"
    grpo_temperature: float = 1.0
    generation: str = "transformers"
    vllm_memory_share: float = 0.3
    gpu_memory_bytes: int = 0

    def check(self) -> None:
        problems = []
        for name, value, options in (("method", self.method, METHODS),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("precision", self.precision, PRECISIONS),
                                     ("attention", self.attn, ATTENTIONS),
                                     ("loss_path", self.loss_path, LOSS_PATHS),
                                     ("kernels", self.kernels, KERNELS),
                                     ("train method", self.train_method, TRAIN_METHODS)):
            if value not in options:
                problems.append(f"{name} {value!r} is not one of {', '.join(options)}")
        for name in ("r", "batch", "seq", "grad_accum"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.train_method != "sft" and self.packing:
            rows = "prompts and completions" if self.train_method == "grpo" else "pairs"
            problems.append(f"packing is for supervised fine-tuning; train method "
                            f"{self.train_method!r} trains on whole {rows} (packing off)")
        if self.train_method == "grpo":
            for name in ("num_generations", "max_prompt_len", "max_completion_len"):
                if int(getattr(self, name)) < 1:
                    problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
            if self.generation not in GENERATIONS:
                problems.append(f"generation {self.generation!r} is not one of "
                                f"{', '.join(GENERATIONS)}")
            if not 0 < self.vllm_memory_share < 1:
                problems.append(f"vllm_memory_share must be in (0, 1), got "
                                f"{self.vllm_memory_share}")
            if self.beta < 0:
                problems.append(f"beta must be at least 0, got {self.beta}")
        if self.train_method == "grpo" and self.method == "full" and self.beta > 0:
            problems.append("GRPO with beta > 0 is estimated for LoRA adapters (the reference is "
                            "the model with its adapter disabled); a full fine-tune would need a "
                            "second copy of the weights")
        elif self.train_method not in ("sft", "grpo") and self.method == "full":
            problems.append(f"train method {self.train_method!r} is estimated for LoRA adapters "
                            "(the reference is the model with its adapter disabled); a full "
                            "fine-tune would need a second copy of the weights")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_profile(cls, profile) -> EstimateSettings:
        """Settings from a workbench Profile (duck-typed: no import of profile.py needed)."""
        from workbench.profile import packs_rows

        t, lo = profile.train, profile.lora
        precision = t.precision if t.precision != "auto" else "bf16"
        grad_ckpt = t.gradient_checkpointing
        # getattr: profiles from before train.method, [preference] and [grpo] existed
        preference = getattr(profile, "preference", None)
        train_method = getattr(t, "method", "sft")
        g = getattr(profile, "grpo", None)
        grpo = {}
        if g is not None:
            defaults = cls()
            grpo = {name: getattr(g, key, getattr(defaults, name)) for name, key in (
                ("num_generations", "num_generations"), ("max_prompt_len", "max_prompt_len"),
                ("max_completion_len", "max_completion_len"), ("beta", "beta"),
                ("grpo_loss", "loss"), ("grpo_temperature", "temperature"),
                ("generation", "generation"))}
        seq = t.max_seq_len
        if train_method == "grpo":  # a row is a prompt and its completion
            seq = (grpo.get("max_prompt_len", cls.max_prompt_len)
                   + grpo.get("max_completion_len", cls.max_completion_len))
        # "auto" choices as a GPU run here resolves them (workbench/train/kernels.py)
        from workbench.train.kernels import estimate_attention, estimate_kernels

        optimizer = "adamw_torch_fused" if t.optimizer == "auto" else t.optimizer
        return cls(method=lo.method, r=lo.r, alpha=lo.alpha, dropout=lo.dropout,
                   targets=lo.target_modules if isinstance(lo.target_modules, str)
                   else tuple(lo.target_modules),
                   batch=t.batch_size, seq=seq,
                   grad_ckpt=True if grad_ckpt == "auto" else bool(grad_ckpt),
                   optimizer=optimizer, precision=precision,
                   attn=estimate_attention(profile.model.attn_implementation),
                   kernels=estimate_kernels(getattr(t, "kernels", "none")), packing=packs_rows(t),
                   grad_accum=t.grad_accum, weight_decay=t.weight_decay,
                   train_method=train_method,
                   precompute_ref=bool(getattr(preference, "precompute_ref", False)),
                   train_embeddings=bool(getattr(lo, "train_embeddings", False)), **grpo)


@dataclass
class Term:
    name: str
    bytes: int
    why: str


@dataclass
class Estimate:
    """The answer. `breakdown` maps term name -> bytes, in the order terms add up to
    `peak_bytes`; `terms` holds the same with one line of why each."""

    peak_bytes: int
    reserved_bytes: int
    breakdown: "OrderedDict[str, int]"
    terms: list[Term]
    trainable_params: int
    total_params: int
    tokens_per_step: int
    settings: EstimateSettings
    model_type: str
    phase: str  # which moment of the step holds the peak
    notes: list[str] = field(default_factory=list)
    # settings a person most likely did not mean (a rank above the hidden size): said as
    # "Warning:" by `workbench estimate` and on the Configure screen
    warnings: list[str] = field(default_factory=list)
    # every moment of the step: the bytes allocated then (static bytes and cuBLAS workspaces
    # included, the allocator reserve not), the peak's among them
    moments: dict[str, int] = field(default_factory=dict)

    @property
    def all_params(self) -> int:
        """The model's parameters with the adapters, as peft counts "all params"."""
        full = self.settings.method == "full"
        return self.total_params + (0 if full else self.trainable_params)

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.all_params if self.all_params else 0.0

    def explain(self) -> str:
        width = max(len(t.name) for t in self.terms)
        training = ("" if self.settings.train_method == "sft" else
                    f"{METHOD_TITLES[self.settings.train_method]}"
                    + (" (reference precomputed)" if self.settings.precompute_ref
                       and self.settings.train_method in REFERENCE_METHODS else "") + ", ")
        s = self.settings
        shape = f"batch {s.batch} x seq {s.seq}"
        if s.train_method == "grpo":
            shape = (f"batch {s.batch} completions x ({s.max_prompt_len} prompt + "
                     f"{s.max_completion_len} completion tokens), generation batch "
                     f"{s.batch * s.grad_accum} ({s.num_generations} a prompt) by {s.generation}"
                     + (f", beta {s.beta:g}" if s.beta else ""))
        lines = [f"Peak GPU memory for one training step: {_gib(self.peak_bytes)} "
                 f"({training}{self.settings.method}, r={self.settings.r}, {shape}, "
                 f"gradient checkpointing "
                 f"{'on' if self.settings.grad_ckpt else 'off'}, {self.settings.optimizer}, "
                 f"{self.settings.precision}, {self.settings.attn} attention, kernels "
                 f"{self.settings.kernels})"]
        for t in self.terms:
            lines.append(f"  {t.name:<{width}}  {_gib(t.bytes):>10}  {t.why}")
        lines.append(f"  {'total':<{width}}  {_gib(self.peak_bytes):>10}  peak while {self.phase}; "
                     f"torch's max_memory_reserved would read {_gib(self.reserved_bytes)}")
        lines.append("Step modeled: " + step_modeled(self.settings))
        lines.append("Kernels counted: " + kernels_counted(self.settings, self.model_type))
        lines.append(f"Trainable parameters: {self.trainable_params:,} of {self.all_params:,} "
                     f"({100 * self.trainable_share:.3f}%); tokens per step: "
                     f"{self.tokens_per_step:,}")
        lines.extend(f"Note: {n}" for n in self.notes)
        lines.extend(f"Warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "peak_bytes": self.peak_bytes,
            "reserved_bytes": self.reserved_bytes,
            "breakdown": dict(self.breakdown),
            "explain": {t.name: t.why for t in self.terms},
            "peak_phase": self.phase,
            "step_modeled": step_modeled(self.settings),
            "kernels_counted": kernels_counted(self.settings, self.model_type),
            "method": self.settings.train_method,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "all_params": self.all_params,
            "trainable_share": round(self.trainable_share, 6),
            "tokens_per_step": self.tokens_per_step,
            "model_type": self.model_type,
            "settings": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in asdict(self.settings).items()},
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _gib(n: int) -> str:
    return fmt_gib(n, digits=2)


def _width(precision: str) -> int:
    return 4 if precision == "fp32" else 2


# ---- the terms ------------------------------------------------------------------------


def _weights(arch: Architecture, s: EstimateSettings) -> tuple[int, int, str, str]:
    """(frozen weight bytes, quantization constant bytes, why, why constants)."""
    w = _width(s.precision)
    total = arch.total_params
    if s.method != "qlora":
        if s.method == "full":
            return 0, 0, "", ""
        return total * w, 0, f"{total:,} params x {w} bytes ({s.precision})", ""
    quantized = arch.quantizable_params
    rest = total - quantized
    packed = quantized // 2  # nf4: two weights per byte (stored in bf16 elements: same bytes)
    absmax = quantized // NF4_BLOCK  # one uint8 absmax per 64 weights after double quant
    second = (quantized // (NF4_BLOCK * DOUBLE_QUANT_BLOCK)) * 4 + 2 * 256 * 4  # fp32 + codes
    why = (f"{quantized:,} decoder linear weights in nf4 (0.5 byte) + {rest:,} others "
           f"(embeddings, output layer, norms, biases) upcast to fp32 by "
           f"prepare_model_for_kbit_training (4 bytes)")
    return (packed + rest * 4, absmax + second,
            why, "double-quantized absmax: 1 byte per 64 weights + fp32 per 256 blocks")


def _optimizer_bytes_per_param(s: EstimateSettings, param_bytes: int) -> tuple[float, float]:
    """(persistent state bytes, temporary bytes during the step) per trainable parameter."""
    opt = s.optimizer
    if opt in ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"):
        # States have the parameter's dtype (fp32 adapters; bf16 for a full bf16 model).
        temp = 0 if opt == "adamw_torch_fused" else param_bytes * (2 if s.weight_decay else 1)
        return 2 * param_bytes, temp
    if opt in ("adamw_8bit", "paged_adamw_8bit"):
        return 2 + 0.07, 0  # 2 x uint8 + per-2048-block fp32 absmax (bnb blockwise)
    if opt == "adafactor":
        return 0.1 * param_bytes, param_bytes  # factored second moments: rows + columns
    return 0, 0  # sgd without momentum (the HF default)


def _per_layer_activations(arch: Architecture, s: EstimateSettings) -> tuple[int, dict[str, int]]:
    """Bytes saved for backward by one decoder layer, per token (except attention-score
    terms, which scale with seq and are returned per token too)."""
    h, i = arch.hidden, arch.intermediate
    qlora = s.method == "qlora"
    a = _width(s.precision)  # autocast matmul output width
    # Frozen matmul outputs: fp32 in QLoRA (Linear4bit returns its fp32 input's dtype).
    mw = 4 if (qlora or s.precision == "fp32") else a
    parts: dict[str, int] = {}
    liger = _liger_layers(arch, s)
    if liger:  # Liger's RMSNorm: its input (the residual's width) and an fp32 rstd a row
        rs = 4 if (qlora or s.precision == "fp32") else a
        parts["norms (Liger: input + rstd)"] = arch.norms_per_layer * (rs * h + 4)
    else:
        parts["norms (fp32 upcast)"] = arch.norms_per_layer * 4 * h

    mask = _attention_mask_materialized(arch, s)
    k_width = arch.q_dim if (mask or s.attn == "eager") else arch.kv_dim
    # SDPA under autocast casts q, k, v to bf16 and saves them with the output; logsumexp fp32.
    parts["attention q/k/v/out"] = a * (2 * arch.q_dim + 2 * k_width) + 4 * arch.heads
    # A fused q/k/v projection (Phi-3): v is a view of its output, so the v saved for attention
    # keeps the whole q/k/v output alive, unless v was copied first: into the KV cache (built in
    # training when checkpointing is off and the model's own forward runs, the full-logits
    # loop; trl's fused head passes use_cache=False) or by repeat_kv for grouped heads.
    repeated = (mask or s.attn == "eager") and arch.kv_heads != arch.heads
    kv_cache = s.loss_path == "full_logits" and not s.grad_ckpt and s.train_method == "sft"
    if any(lin.name == "qkv_proj" for lin in arch.linears) and not (kv_cache or repeated):
        parts["fused q/k/v output held by v"] = mw * (arch.q_dim + arch.kv_dim)
    if s.attn == "eager":
        # scores: fp32 softmax output + its bf16 copy saved for the matmul with v.
        extra = 2 if arch.attn_logit_softcapping else 0
        parts["attention scores (eager)"] = (6 + extra) * arch.heads * s.seq
    if liger:  # Liger's SwiGLU saves gate and up, recomputes the activation in the backward
        parts["MLP (Liger SwiGLU: gate, up)"] = 2 * mw * i
    else:
        parts["MLP (activation input/output, up)"] = 3 * mw * i

    adapted = resolve_targets(arch, s.targets) if s.method != "full" else ()
    lora = 0
    for lin in adapted:
        lora += 2 * lin.d_in + (lin.d_in if s.dropout > 0 else 0) + 2 * s.r
        if s.method == "dora":
            lora += mw * lin.d_out + 2 * lin.d_out  # base output and lora output, scaled
    if lora:
        parts["LoRA inputs (bf16 copies, dropout masks)"] = lora
    if s.method == "full":
        # Weights require grad: every linear saves its input; norm weights save their input.
        parts["full fine-tune matmul inputs"] = (a * (2 * h + arch.q_dim + i)
                                                 + arch.norms_per_layer * a * h)
    return sum(parts.values()), parts


def _attention_mask_materialized(arch: Architecture, s: EstimateSettings) -> bool:
    """transformers skips the mask (is_causal) for sdpa unless a sliding window is shorter
    than the sequence, or packing needs block-diagonal masks."""
    if s.attn in FLASH_ATTENTIONS:
        return False
    if s.attn == "eager" or s.packing:
        return True
    return bool(arch.sliding_window and arch.sliding_window < s.seq)


def _layer_backward_transient(arch: Architecture, s: EstimateSettings) -> int:
    """Gradient buffers alive while one layer's backward runs, per token: the MLP's
    intermediate gradients (down input, both factors, gate) and the residual gradient
    twice (before and after an add). Attention's dq/dk/dv + fp32 dq accumulator are smaller
    than the MLP's for every listed model, so the larger of the two is taken."""
    h, i = arch.hidden, arch.intermediate
    mw = 4 if (s.method == "qlora" or s.precision == "fp32") else _width(s.precision)
    rs = 4 if (s.method == "qlora" or s.precision == "fp32") else _width(s.precision)
    mlp = 3 * mw * i
    attn = 4 * arch.q_dim + 2 * (arch.q_dim + 2 * arch.kv_dim)
    if s.attn == "eager":
        # The softmax backward: the probabilities' gradient (bf16, in the place of the bf16
        # probabilities the matmul's backward has just freed) and its fp32 upcast, beside the
        # saved fp32 softmax output (counted in the saved / recomputed activations).
        attn += 4 * arch.heads * s.seq
    return max(mlp, attn) + 2 * rs * h


REFERENCE_MOMENT = "the reference forward runs"


def _preference_settings(s: EstimateSettings) -> tuple[EstimateSettings, list[str]]:
    """The settings a preference trainer really trains with, and what changed, said.
    - trl's DPOConfig, KTOConfig, ORPOConfig and CPOConfig default to `disable_dropout=True`
      (dpo_trainer.py:933 `disable_dropout_in_model`): every nn.Dropout, LoRA's included, gets
      p = 0, which torch runs as the identity (no mask, no copy).
    - the log-probabilities: DPO and KTO call `model(..., fused_lm_head=True)`
      (dpo_trainer.py:1299, kto_trainer.py:1397), the chunked head SFT uses; ORPO and CPO
      (trl.experimental) call the model for full logits (orpo_trainer.py:771, cpo_trainer.py:818)."""
    if s.train_method == "grpo":
        return _grpo_settings(s)
    notes = []
    changes: dict = {"loss_path": "full_logits" if s.train_method in FULL_LOGITS_METHODS
                     else "trl_fused"}
    if s.dropout:
        changes["dropout"] = 0.0
        notes.append(f"LoRA dropout {s.dropout:g} is not applied: trl's {METHOD_TITLES[s.train_method]} "
                     "trainer disables dropout (disable_dropout=True), so no dropout masks")
    if s.train_method == "kto" and s.batch < 2:
        notes.append("KTO needs batch_size >= 2 (its KL estimate pairs each prompt with another "
                     "row's answer; trl refuses batch 1)")
    return replace(s, **changes), notes


def _pair_logits_peak(arch: Architecture, s: EstimateSettings, tokens: int,
                      rows: int) -> tuple[int, int, str]:
    """ORPO and SimPO (trl.experimental ORPOTrainer / CPOTrainer `concatenated_forward`):
    (bytes at the loss/backward-start moment on top of saved activations, bytes still held
    during the layers' backward, why). Per token of the 2 x batch rows, per vocabulary entry:
    - forward: the model's bf16 logits, made fp32 by accelerate's `convert_outputs_to_fp32`
      (the bf16 ones then die): 4 bytes, alive until the backward reaches them. ORPO's NLL on
      the chosen rows (orpo_trainer.py:779 `cross_entropy_loss`) copies their shifted logits
      (`.contiguous()`, 2 a token of the stacked batch) and saves log_softmax's fp32 output (2).
    - backward: trl's log-prob kernel (trl/kernels/logprob_entropy.py, `selective_log_softmax`
      on CUDA) writes a contiguous fp32 gradient of the logits (4) beside them; the slices'
      backwards (`logits[:, :-1]`, `all_logits[:len_chosen]`) each write a zero-filled fp32
      tensor of the whole logits' shape (4 each), summed in place by autograd. At ORPO's largest
      moment the first slice's gradient, the chosen rows' (2) and the second whole one are alive:
      10 bytes; SimPO (no NLL, cpo_alpha = 0): the logits and their gradient, 8 bytes.
    Gemma-2's final softcapping keeps its bf16 tanh output (+2)."""
    V, h = arch.vocab, arch.hidden
    a = _width(s.precision)
    qlora = s.method == "qlora"
    rs = 4 if (qlora or s.precision == "fp32") else a
    per_tok = (10 if s.train_method == "orpo" else 8) + (2 if arch.final_logit_softcapping else 0)
    lm_cast = V * h * 2 if qlora else 0  # the fp32 output layer's bf16 cast, saved by its mm
    grad_hidden = tokens * (rs + 4) * h
    nll = "the chosen rows' NLL (a shifted copy and log_softmax's output), " if s.train_method == "orpo" else ""
    return (per_tok * V * tokens + lm_cast + grad_hidden, grad_hidden,
            f"full logits: {tokens:,} tokens (chosen and rejected) x {V:,} vocab x {per_tok} bytes "
            f"(the fp32 logits accelerate returns, {nll}trl's log-prob kernel's fp32 gradient and "
            "the slices' fp32 gradients)")


def _reference_pass(arch: Architecture, s: EstimateSettings, tokens: int,
                    rows: int, scored: int | None = None) -> tuple[int, int, str]:
    """DPO's and KTO's reference forward (dpo_trainer.py:1327-1338, kto_trainer.py:1426-1433):
    under torch.no_grad(), gradient checkpointing switched off, the adapter disabled (peft's
    `disable_adapter`: the base model, no second copy of the weights), through the fused LM
    head. Nothing is saved for a backward: one layer's activations at a time (the MLP's
    activation, up projection and their product beside the residual and its normed copy; eager
    attention's scores and their fp32 softmax) or the head's (the backbone's
    output, the scored positions' copy, a 4096 x 32768 tile). KTO runs it twice (its KL rows,
    then its completions), one after the other, each `batch` rows.
    Returns (the reference's transient bytes, the policy head's bytes kept meanwhile, why)."""
    h, i, V = arch.hidden, arch.intermediate, arch.vocab
    a = _width(s.precision)
    wide = s.method == "qlora" or s.precision == "fp32"
    mw = rs = 4 if wide else a
    mlp = 3 * mw * i + 2 * rs * h
    attn = 2 * rs * h + mw * (3 * arch.q_dim + 4 * arch.kv_dim)
    if s.attn == "eager":
        # the scaled scores with the mask added (a new tensor each, the last one alive), the
        # fp32 softmax, then its copy in the compute dtype
        attn += (2 * a + 4) * arch.heads * s.seq
    layer = tokens * max(mlp, attn)
    scored = rows * (s.seq - 1) if scored is None else scored
    tile = min(scored, TRL_TOKEN_CHUNK) * TRL_VOCAB_CHUNK * a
    weight_chunk = min(V, TRL_VOCAB_CHUNK) * h * a if s.method == "qlora" else 0
    head = tokens * rs * h + scored * (rs * h + 44) + tile + weight_chunk
    kept = scored * rs * h + scored * 4 * 10  # as _loss_peak's: the policy head's saved tensors
    where = ("one layer's activations" if layer >= head else
             "the fused LM head's tile and hidden states")
    return (max(layer, head), kept,
            f"{tokens:,} tokens through the base model, nothing saved: {where} at a time")


GENERATION_MOMENT = "the completions are generated"
OLD_LOGPS_MOMENT = "the old log-probs are scored (no grad)"
MERGE_MOMENT = "the adapter is merged for vLLM's weight sync"
GENERATION_TERMS = ("generation KV cache", "generation activations")
GRPO_PHASES = (GENERATION_MOMENT, OLD_LOGPS_MOMENT, MERGE_MOMENT)
TRAINING_MOMENTS = ("the loss is computed and its backward starts", "the layers' backward runs",
                    "the optimizer steps")


def _grpo_settings(s: EstimateSettings) -> tuple[EstimateSettings, list[str]]:
    """The settings trl's GRPOTrainer trains with (workbench/train/methods/grpo.py): every
    micro-batch row is a prompt and its completion, max_prompt_len + max_completion_len tokens
    (the rows are estimated full: the longest prompt, every completion to the end); the fused
    LM head scores the completions (grpo_trainer.py:1068); GRPOConfig keeps dropout
    (`disable_dropout=False`)."""
    notes = []
    per_step = s.batch * s.grad_accum
    if per_step % s.num_generations:
        notes.append(f"trl's GRPOTrainer needs batch_size x grad_accum ({per_step}) to be a "
                     f"multiple of num_generations ({s.num_generations}); it refuses these "
                     "settings")
    return replace(s, loss_path="trl_fused", seq=s.max_prompt_len + s.max_completion_len), notes


def _generation_layer(arch: Architecture, s: EstimateSettings, w: int) -> tuple[int, str]:
    """Bytes per token of one decoder layer's forward in transformers' generation (no grad, no
    autocast: peft's `generate` reaches the model's own forward, not the forward accelerate wraps
    in autocast), and which part holds them. The embedding output, the layer's input, its
    residual and normed copy, plus the largest of: the gated MLP's activation, up projection
    and product (3 x intermediate); an adapted linear's call, where peft's LoRA branch runs in
    fp32 (its input cast to fp32 beside the frozen output, then either, with dropout > 0, the
    dropout's output and mask, since the trainer keeps the model in training mode, or lora_B's
    fp32 output and its scaled copy, then the scaled copy and the fp32 sum) while the activation
    it runs beside stays alive (up_proj: the gate's activation; down_proj, o_proj: their input);
    the attention's q/k/v and their rotated copies. Checked against the traced generation
    (workbench/estimate/trace_grpo.py) on 2-layer Qwen2.5-0.5B steps."""
    h, i = arch.hidden, arch.intermediate
    mw = w  # matmul outputs take their input's dtype (QLoRA's Linear4bit returns its fp32 input's)
    parts = {"the MLP's activation, up projection and product": 3 * mw * i,
             "attention q/k/v and their rotated copies": mw * (3 * arch.q_dim + 4 * arch.kv_dim)}
    adapted = resolve_targets(arch, s.targets) if s.method != "full" else ()
    for lin in adapted:
        beside = {"up_proj": mw * i, "down_proj": mw * lin.d_in, "o_proj": mw * lin.d_in}
        # the fp32 input and the frozen output, then either the dropout's output and mask
        # (before lora_A) or lora_B's fp32 output with its scaled copy (then the scaled copy
        # and the fp32 sum)
        lora = (4 * lin.d_in + mw * lin.d_out
                + max(5 * lin.d_in if s.dropout > 0 else 0, 8 * lin.d_out))
        parts[f"{lin.name} with its fp32 LoRA branch"] = beside.get(lin.name, 0) + lora
    where = max(parts, key=parts.get)
    # the embedding output (the model's forward holds it), the layer's input, the residual
    # after attention, the normed MLP input
    return 4 * w * h + parts[where], where


def _generation_peak(arch: Architecture,
                     s: EstimateSettings) -> tuple[int, dict[str, tuple[int, str]]]:
    """transformers generation of the generation batch (trl grpo_trainer.py
    `_generate_single_turn`: `generate` with TRL's sampling config, use_cache on, under no_grad,
    gradient checkpointing switched off): N = batch x grad_accum sequences of P prompt tokens
    and C new ones. Returns (bytes above the static ones at generation's largest moment,
    {term: (bytes, why)}). The larger of:
    - the prefill: the KV cache of the prompts (N x P tokens) and one layer's activations over
      the N x P tokens (`_generation_layer`);
    - the last decoding step: the KV cache of N x (P + C - 1) tokens, and the larger of
      DynamicCache's growth (each step `torch.cat` copies one layer's keys, then its values, one
      token longer: one layer's keys alive twice) and the last position's logits
      (logits_to_keep = 1): the model's output, transformers' fp32 copy
      (`.to(copy=True, dtype=float32)`), beside the previous step's fp32 logits and sampling
      probabilities (softmax), still referenced while the next step runs; a temperature other
      than 1 keeps its warper's copy as well.
    The cache and the activations take the weights' dtype (no autocast): bf16 for LoRA, fp32
    for QLoRA (its residual stream and Linear4bit outputs are fp32) and fp32 training."""
    n = s.batch * s.grad_accum
    p, c = s.max_prompt_len, s.max_completion_len
    wide = s.method == "qlora" or s.precision == "fp32"
    w = 4 if wide else _width(s.precision)
    kv_token = arch.layers * 2 * arch.kv_dim * w
    layer, where = _generation_layer(arch, s, w)
    prefill_kv, prefill_act = n * p * kv_token, n * p * layer
    # the previous step's fp32 logits and probabilities stay referenced through the next
    # forward; at the fp32 copy of the new logits: the output, the copy and those two
    held_logits = n * arch.vocab * (8 + (4 if s.grpo_temperature != 1 else 0))
    logits = n * arch.vocab * (w + 4) + held_logits
    decode_kv = n * (p + c - 1) * kv_token  # the last token sampled is never fed back
    grow = n * (p + c - 1) * arch.kv_dim * w
    decode_act = max(grow + held_logits, logits)
    kv_why = (f"{n} sequences ({s.batch} x {s.grad_accum} accumulated: "
              f"{_count(n // max(s.num_generations, 1), 'prompt')} x {s.num_generations} "
              f"completions) x {arch.layers} layers x keys and values x {arch.kv_dim} x {w} bytes")
    if prefill_kv + prefill_act >= decode_kv + decode_act:
        return prefill_kv + prefill_act, {
            "generation KV cache": (prefill_kv,
                                    f"the prefill's: {n} x {p} prompt tokens, {kv_why}"),
            "generation activations": (prefill_act, f"the prefill's: one layer's no-grad "
                                       f"activations over the {n * p:,} prompt tokens, "
                                       f"{layer:,} bytes a token ({where})")}
    act_why = ("the last position's logits ({n} x {v:,} vocab: the output and its fp32 copy "
               "beside the previous step's fp32 logits and probabilities)"
               if logits >= grow + held_logits else
               "one layer's keys copied as the cache grows, beside the previous step's fp32 "
               "logits and probabilities ({n} x {v:,} vocab)")
    return decode_kv + decode_act, {
        "generation KV cache": (decode_kv, f"at the last decoding step: {n} x {p + c - 1} tokens "
                                           f"({p} prompt + {c - 1} completion), {kv_why}"),
        "generation activations": (decode_act, "the last decoding step's: "
                                   + act_why.format(n=n, v=arch.vocab))}


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _kv_cache_bytes(arch: Architecture, s: EstimateSettings, tokens: int) -> int:
    """DynamicCache's keys and values of the generation batch at `tokens` a sequence, in the
    weights' dtype (no autocast in generation: fp32 for QLoRA and fp32 training)."""
    w = 4 if (s.method == "qlora" or s.precision == "fp32") else _width(s.precision)
    return s.batch * s.grad_accum * tokens * arch.layers * 2 * arch.kv_dim * w


def _vllm_weights(arch: Architecture, s: EstimateSettings) -> int:
    """vLLM's own copy of the model: bf16, or bitsandbytes 4-bit for QLoRA (trl passes
    quantization="bitsandbytes", vllm_generation.py:347)."""
    if s.method == "qlora":
        return arch.quantizable_params // 2 + (arch.total_params - arch.quantizable_params) * 2
    return arch.total_params * 2


def _grpo_notes(arch: Architecture, s: EstimateSettings, moments: dict, phase: str,
                static: int, vllm_b: int) -> list[str]:
    """What a GRPO estimate assumes, and where vLLM's share may not hold its model."""
    notes = []
    training = max(moments[m] for m in TRAINING_MOMENTS)
    if s.generation == "transformers":
        generating = moments[GENERATION_MOMENT]
        notes.append(
            f"GRPO generates, then trains: the generation phase ({_gib(static + generating)} "
            f"with the weights and optimizer states) and the training phase "
            f"({_gib(static + training)}) do not coexist, so the peak is the larger, "
            f"{'generation' if generating >= training else 'training'}"
            + ("" if phase in (GENERATION_MOMENT, *TRAINING_MOMENTS) else f" (here: {phase})")
            + "; torch's caching allocator keeps the generation's freed blocks for the training")
    notes.append(f"rows estimated full: every prompt {s.max_prompt_len} tokens and every "
                 f"completion {s.max_completion_len} (TRL pads to the longest of the batch); "
                 "with padding, SDPA gets a mask and repeats grouped k/v heads (not counted)")
    if s.generation == "vllm":
        need = _vllm_weights(arch, s) + (s.batch * s.grad_accum
                                         * (s.max_prompt_len + s.max_completion_len)
                                         * arch.layers * 2 * arch.kv_dim * 2)
        if not s.gpu_memory_bytes:
            notes.append(f"vLLM colocated takes {s.vllm_memory_share:g} of the GPU's total "
                         "memory on top of this estimate (give --gpu NAME to count it); it needs "
                         f"at least {_gib(need)} of it for its weights and the generation "
                         "batch's KV cache")
        elif vllm_b < need:
            notes.append(f"vLLM's share ({_gib(vllm_b)}) is less than its weights and the "
                         f"generation batch's KV cache ({_gib(need)}): vLLM will refuse to start "
                         "or run the batch in parts; raise vllm_gpu_memory_utilization or use "
                         'generation = "transformers"')
        notes.append("time and memory of vLLM's generation are its own (not traced or measured "
                     "here); trl re-scores its samples with the policy (importance sampling "
                     "correction): counted as the old log-probs pass")
    return notes


def _loss_peak(arch: Architecture, s: EstimateSettings, tokens: int, rows: int,
               scored: int | None = None) -> tuple[int, int, str]:
    """(bytes at the loss/backward-start moment on top of saved activations, bytes of it
    still held during the layers' backward, why). `scored`: the positions the fused head
    projects (default every position but each row's last; GRPO: the completions')."""
    V, h = arch.vocab, arch.hidden
    a = _width(s.precision)
    qlora = s.method == "qlora"
    # QLoRA's output layer is fp32 (prepare_model_for_kbit_training): under bf16 autocast
    # its bf16 weight copy is saved by the mm (its input needs a gradient) until the
    # backward passes the output layer.
    lm_cast = V * h * 2 if qlora else 0
    if s.loss_path == "full_logits":
        per_tok = 12 * V + (2 * V if arch.final_logit_softcapping else 0)
        grad_hidden = 4 * h * tokens
        # The model output's logits (autocast width) stay alive while the caller holds the
        # output: a loop that keeps `out = model(...)` until after the optimizer step.
        held = a * V * tokens
        softcap = " and the softcapping's saved tanh" if arch.final_logit_softcapping else ""
        return (per_tok * tokens + held + lm_cast + grad_hidden, held + lm_cast + grad_hidden,
                f"full logits: {tokens:,} tokens x {V:,} vocab x {per_tok // V + a} bytes (the "
                f"output's bf16 logits{softcap}, saved fp32 log-probs, their gradient, "
                "log_softmax's input gradient)")
    if s.loss_path == "liger_fused":
        # liger's fused_linear_cross_entropy_forward (ops/fused_linear_cross_entropy.py): the
        # hidden-state gradient (BT x H, the input's dtype) is computed in the forward and kept
        # for the backward; the logits exist a chunk at a time, chunk = next power of two of
        # BT / ceil(V / H) rows (about BT x H elements), plus an fp32 loss a row.
        w = 4 if qlora else a
        per_chunk = math.ceil(V / h)
        chunk = min(tokens, 1 << max(0, math.ceil(tokens / per_chunk) - 1).bit_length())
        grad_input = tokens * h * w
        return (grad_input + chunk * V * w + tokens * 4 + lm_cast, grad_input + lm_cast,
                f"Liger fused linear cross-entropy: a {chunk:,} x {V:,} logits chunk and the "
                f"hidden-state gradient ({tokens:,} x {h} x {w} bytes) computed in the forward "
                "(no full logits)")
    if scored is None:  # labels shifted by one: the last position of a row scores nothing
        scored = rows * (s.seq - 1)
    rs = 4 if qlora else a
    # the tile buffer is TRL_VOCAB_CHUNK wide whatever the vocabulary (32 MiB in bf16 for a
    # 768-token vocabulary as for a 150k one): found by tracing the bundled tiny model
    tile = min(scored, TRL_TOKEN_CHUNK) * TRL_VOCAB_CHUNK * a
    weight_chunk = min(V, TRL_VOCAB_CHUNK) * h * a if qlora else 0  # fp32 head cast per tile
    kept = scored * rs * h + scored * 4 * 10  # selected hidden states + per-token fp32 stats
    grad = scored * 4 * h + scored * rs * h  # fp32 accumulator + cast to the hidden dtype
    return (kept + tile + weight_chunk + grad, scored * rs * h * 2,
            f"trl fused LM head: one {min(scored, TRL_TOKEN_CHUNK)} x "
            f"{TRL_VOCAB_CHUNK} tile, kept hidden states and an fp32 hidden gradient "
            f"(no full logits)")


def estimate_memory(arch: Architecture, settings: EstimateSettings,
                    transformers_version: str | None = None) -> Estimate:
    """The peak of one steady-state training step, term by term. `transformers_version`: the
    transformers the step runs with, where it decides the attention (default: the installed one)."""
    s = settings
    s.check()
    notes: list[str] = []
    if s.attn == "sdpa" and runs_eager(arch.model_type, transformers_version):
        s = replace(s, attn="eager")
        notes.append(f"{arch.model_type} has no SDPA attention in transformers "
                     f"{transformers_version or installed_transformers() or ''}: estimated with "
                     "eager attention, as the runner will run it")
    if s.kernels == "liger" and s.loss_path == "full_logits" and s.train_method == "sft":
        # transformers' Trainer with use_liger_kernel (outside trl) patches the forward with
        # Liger's fused linear cross-entropy: the plain loop's logits are never built
        s = replace(s, loss_path="liger_fused")
        notes.append("liger: a plain loop with use_liger_kernel runs Liger's fused linear "
                     "cross-entropy: estimated as loss path liger_fused (no full logits)")
    elif s.kernels == "liger" and s.loss_path == "trl_fused":
        notes.append(LIGER_NOTE_OFF)
    preference = s.train_method != "sft"
    grpo = s.train_method == "grpo"
    if preference:
        s, why_changed = _preference_settings(s)
        notes.extend(why_changed)
    # DPO, ORPO and SimPO stack each pair's chosen and rejected rows into one batch
    rows = s.batch * (2 if s.train_method in PAIRED_METHODS else 1)
    tokens = rows * s.seq
    qlora, full = s.method == "qlora", s.method == "full"
    a = _width(s.precision)

    frozen, constants, why_frozen, why_constants = _weights(arch, s)
    if full:
        trainable = arch.total_params
        param_bytes = a  # the runner loads in the precision dtype; states follow it
    else:
        trainable = lora_params(arch, s.targets, s.r, dora=s.method == "dora")
        param_bytes = 4  # peft creates adapters in fp32
    state_pp, temp_pp = _optimizer_bytes_per_param(s, param_bytes)
    params_b = trainable * param_bytes
    grads_b = trainable * param_bytes
    states_b = int(trainable * state_pp)
    opt_temp_b = int(trainable * temp_pp)
    # Autocast caches the bf16 cast of each fp32 leaf that requires grad for the forward.
    autocast_cache_b = trainable * 2 if (param_bytes == 4 and s.precision != "fp32") else 0
    # lora.train_embeddings: peft trains a copy of the embedding (and of an untied output
    # layer) in the weights' dtype (fp32 under QLoRA, whose preparation upcasts them), with
    # its gradient and optimizer states; the frozen original stays in "frozen weights".
    embed_grads_b = 0
    if s.train_embeddings and not full:
        embed = trained_embedding_params(arch)
        embed_bytes = 4 if (qlora or s.precision == "fp32") else a
        embed_state_pp, embed_temp_pp = _optimizer_bytes_per_param(s, embed_bytes)
        embed_grads_b = embed * embed_bytes
        params_b += embed * embed_bytes
        grads_b += embed_grads_b
        states_b += int(embed * embed_state_pp)
        opt_temp_b += int(embed * embed_temp_pp)
        trainable += embed

    per_layer, _parts = _per_layer_activations(arch, s)
    mask_b = 0
    if _attention_mask_materialized(arch, s):
        # A boolean (B, 1, S, S) mask shared by the layers; two with alternating windows.
        kinds = 2 if arch.model_type in {"gemma2", "gemma3_text"} else 1
        mask_b = kinds * rows * s.seq * s.seq * (a if s.attn == "eager" else 1)
    rs = 4 if (qlora or s.precision == "fp32") else a
    # the final norm's fp32 upcast (Liger's: its input and an fp32 rstd a row)
    outside_layers = (tokens * (rs * arch.hidden + 4) if _liger_layers(arch, s)
                      else tokens * 4 * arch.hidden)
    if s.grad_ckpt:
        saved = tokens * rs * arch.hidden * arch.layers + outside_layers
        recompute = tokens * per_layer
        why_saved = (f"checkpointed: each of {arch.layers} layers keeps its input "
                     f"({tokens:,} tokens x {arch.hidden} x {rs} bytes)")
    else:
        saved = tokens * per_layer * arch.layers + outside_layers
        recompute = 0
        why_saved = (f"{arch.layers} layers x {tokens:,} tokens x {per_layer:,} bytes "
                     f"(norm upcasts, q/k/v/out, MLP, LoRA inputs)")
    saved += mask_b

    if s.train_method in FULL_LOGITS_METHODS:
        loss_b, loss_held_b, why_loss = _pair_logits_peak(arch, s, tokens, rows)
        logits_held_b = 0  # the trainer keeps only the loss
    else:
        # GRPO scores the completions only (logits_to_keep = max_completion_len)
        scored = rows * s.max_completion_len if grpo else None
        loss_b, loss_held_b, why_loss = _loss_peak(arch, s, tokens, rows, scored)
        logits_held_b = a * arch.vocab * tokens if s.loss_path == "full_logits" else 0
    layer_bwd_b = tokens * _layer_backward_transient(arch, s)
    # QLoRA: bitsandbytes' MatMul4Bit backward dequantizes its weight to bf16 for the input
    # gradient (as the forward and its recomputation do, one linear at a time): the largest
    # 4-bit linear's bf16 copy sits beside the layer's gradient buffers.
    dequant_b = 2 * max((lin.d_in * lin.d_out for lin in arch.linears), default=0) if qlora else 0

    # The step's moments; the peak is the largest. Gradients were set to None by the previous
    # step, so when the loss is computed no adapter gradient exists yet; they appear layer by
    # layer as the backward runs, while the saved activations of those layers are freed: at
    # the backward's largest moment (its first layer) one layer's gradients exist.
    static = frozen + constants + params_b + states_b
    grads_during_backward = ((grads_b - embed_grads_b) // max(arch.layers, 1) + embed_grads_b
                             if not full else arch.vocab * arch.hidden * a)
    moments = {
        "the loss is computed and its backward starts": saved + loss_b + autocast_cache_b
        + (0 if not full else arch.vocab * arch.hidden * a),
        "the layers' backward runs": saved + recompute + layer_bwd_b + loss_held_b
        + dequant_b + autocast_cache_b + grads_during_backward,
        "the optimizer steps": grads_b + opt_temp_b + logits_held_b,
    }
    reference_b, why_reference = 0, ""
    if s.train_method in REFERENCE_METHODS and not s.precompute_ref:
        # After the policy forward, before the loss: the policy's saved activations and the
        # fused head's saved hidden states are alive while the reference runs beside them.
        reference_b, policy_kept_b, why_reference = _reference_pass(arch, s, tokens, rows)
        moments[REFERENCE_MOMENT] = (saved + policy_kept_b + reference_b + autocast_cache_b
                                     + dequant_b)
    generation_b, generation_terms = 0, {}
    old_logps_b = merge_b = vllm_b = 0
    if grpo:
        # GRPO's step generates the completions of the whole generation batch, scores them (no
        # grad), then trains on its micro-batches: the generation's KV cache and the scoring
        # passes are freed before the first training forward (only their token ids and
        # per-token log-probs are kept), so the peak is the largest of these moments.
        scored = rows * s.max_completion_len
        if s.generation == "transformers":
            generation_b, generation_terms = _generation_peak(arch, s)
            moments[GENERATION_MOMENT] = generation_b + dequant_b
        else:  # vLLM samples inside its own share of the GPU; trl scores the samples again
            # (vllm_importance_sampling_correction) with the adapter on, under autocast
            old_logps_b, _, _ = _reference_pass(arch, s, tokens, rows, scored)
            moments[OLD_LOGPS_MOMENT] = old_logps_b + autocast_cache_b + dequant_b
            # weight sync: peft's merge_adapter, one adapted linear's delta weight at a time
            # (fp32 B @ A, its cast to the weight's dtype; QLoRA: dequantized, summed, requantized)
            adapted = resolve_targets(arch, s.targets) if not full else ()
            merge_b = max((lin.d_in * lin.d_out for lin in adapted), default=0) * (
                10 if qlora else 4 + a)
            moments[MERGE_MOMENT] = merge_b
            vllm_b = int(s.vllm_memory_share * s.gpu_memory_bytes)
        if s.beta > 0:  # the adapter disabled, no grad, before any training forward
            reference_b, _, why_reference = _reference_pass(arch, s, tokens, rows, scored)
            moments[REFERENCE_MOMENT] = reference_b + dequant_b
    phase = max(moments, key=moments.get)
    dynamic = moments[phase]

    terms: list[Term] = []

    def add(name: str, value: int, why: str) -> None:
        terms.append(Term(name, int(value), why))

    if frozen:
        add("frozen weights", frozen, why_frozen)
    if constants:
        add("quantization constants", constants, why_constants)
    what = "full model" if full else f"LoRA r={s.r}" + (" + DoRA magnitudes" if s.method == "dora" else "")
    if s.train_embeddings and not full:
        what += " + trained embeddings"
    add("trainable params", params_b, f"{trainable:,} ({what}) x {param_bytes} bytes")
    add("optimizer states", states_b, f"{s.optimizer}: {state_pp:g} bytes per trainable param")
    dequant_why = " + one 4-bit linear dequantized to bf16" if dequant_b else ""
    before_training = phase in GRPO_PHASES or (grpo and phase == REFERENCE_MOMENT)
    if phase == "the optimizer steps":
        add("gradients", grads_b, f"{param_bytes} bytes per trainable param")
        add("optimizer step temporaries", opt_temp_b, "foreach AdamW intermediate (sqrt of v)")
        if logits_held_b:
            add("logits held by the caller", logits_held_b, "the model output's logits")
    elif phase == GENERATION_MOMENT:
        (kv, why_kv), (act, why_act) = (generation_terms[name] for name in GENERATION_TERMS)
        add("generation KV cache", kv, why_kv)
        add("generation activations", act + dequant_b, why_act + dequant_why)
    elif phase == REFERENCE_MOMENT and grpo:
        add("reference pass (no grad)", reference_b + dequant_b,
            why_reference + " (the adapter disabled), in chunks of batch rows, before any "
            "training forward" + dequant_why)
    elif phase == OLD_LOGPS_MOMENT:
        if autocast_cache_b:
            add("autocast weight cache", autocast_cache_b, "bf16 copies of the fp32 adapters")
        add("old log-probs pass (no grad)", old_logps_b + dequant_b,
            f"trl re-scores vLLM's samples with the policy (vllm_importance_sampling_correction), "
            f"in chunks of batch rows: {tokens:,} tokens a chunk, nothing saved" + dequant_why)
    elif phase == MERGE_MOMENT:
        add("adapter merge (weight sync)", merge_b,
            "peft's merge_adapter before the weights are pushed to vLLM: one adapted linear's "
            "delta weight (fp32 B @ A and its cast) at a time")
    else:
        if phase == "the layers' backward runs" or full:
            add("gradients", grads_during_backward,
                "one layer's adapter gradients (the rest appear as their activations are freed)"
                if not full else "output-layer gradient, allocated first in the backward")
        if autocast_cache_b:
            add("autocast weight cache", autocast_cache_b, "bf16 copies of the fp32 adapters")
        add("saved activations", saved, why_saved + (f"; attention mask {mask_b:,} bytes" if mask_b else ""))
        if phase == REFERENCE_MOMENT:
            add("policy log-probs held", policy_kept_b,
                "the policy forward's fused LM head keeps its hidden states and per-token "
                "statistics for the backward while the reference runs")
            add("reference pass (no grad)", reference_b + dequant_b, why_reference
                + (" + one 4-bit linear dequantized to bf16" if dequant_b else ""))
        elif phase == "the loss is computed and its backward starts":
            add("logits and loss", loss_b, why_loss)
        else:
            add("recomputation", recompute,
                "one layer's activations rebuilt in the backward" if s.grad_ckpt
                else "none (checkpointing off)")
            add("backward gradient buffers", layer_bwd_b + loss_held_b + dequant_b,
                "one layer's intermediate gradients + residual gradient"
                + (" + one 4-bit linear dequantized to bf16" if dequant_b else ""))

    if reference_b and phase != REFERENCE_MOMENT:
        # named even where it is not the peak: it is the method's own term
        add("reference pass (no grad)", 0,
            f"not at the peak: {_gib(reference_b)} while the reference forward runs "
            f"({why_reference}), {_gib(moments[phase] - moments[REFERENCE_MOMENT])} below "
            f"the peak")
    training_peak = max(moments[m] for m in TRAINING_MOMENTS)
    generation_peak = moments.get(GENERATION_MOMENT, 0)
    if grpo and generation_b and phase != GENERATION_MOMENT:
        (kv, why_kv), (act, why_act) = (generation_terms[name] for name in GENERATION_TERMS)
        add("generation KV cache", 0,
            f"not at the peak: the generation phase peaks at {_gib(generation_peak)} above the "
            f"static bytes, {_gib(moments[phase] - generation_peak)} below the peak (KV cache "
            f"{_gib(kv)}, {why_kv}; activations {_gib(act)}, {why_act}); it is freed before "
            "training")
    if grpo and before_training:
        add("training phase", 0,
            f"not at the peak: the training micro-batches ({rows} x {s.seq} tokens) peak at "
            f"{_gib(training_peak)} above the static bytes, "
            f"{_gib(moments[phase] - training_peak)} below this phase")
    if grpo and s.generation == "vllm":
        gpu = (f"of a {fmt_gib(s.gpu_memory_bytes)} GPU" if s.gpu_memory_bytes else
               "of the GPU's memory: no GPU given, not counted here (`--gpu NAME` counts it)")
        add("vLLM (colocated)", vllm_b,
            f"vllm_gpu_memory_utilization = {s.vllm_memory_share:g} (trl's default) {gpu}: "
            f"vLLM's own copy of the weights ({_gib(_vllm_weights(arch, s))}), its KV cache "
            "(the generation happens there) and its activations, allocated when the trainer "
            "starts and held through training")
    add("cuBLAS workspaces", CUBLAS_WORKSPACES * CUBLAS_WORKSPACE_BYTES,
        "one per thread that runs matmuls (the forward's and autograd's backward thread), "
        "allocated through torch's caching allocator")
    subtotal = sum(t.bytes for t in terms)
    reserve = int(RESERVE_DYNAMIC_SHARE * dynamic + RESERVE_TRAINABLE_SHARE * params_b)
    logits_share = LOGITS_RESERVE_SHARE.get(s.train_method, 0.0)
    fp32_logits = 4 * tokens * arch.vocab
    reserve += int(logits_share * fp32_logits)
    generation_reserve = 0
    if GENERATION_MOMENT in moments:
        full_cache = _kv_cache_bytes(arch, s, s.max_prompt_len + s.max_completion_len - 1)
        generation_reserve = int(RESERVE_GENERATION_SHARE * moments[GENERATION_MOMENT]
                                 + RESERVE_KV_SHARE * full_cache)
    reserve += generation_reserve
    add("allocator reserve", reserve, f"{RESERVE_DYNAMIC_SHARE:.0%} of the step's transient bytes "
        f"+ {RESERVE_TRAINABLE_SHARE:.0%} of the trainable parameters' bytes: freed blocks the "
        "caching allocator keeps, split by later smaller requests, and segments pinned by "
        "gradients and optimizer temporaries allocated between activations"
        + (f"; + {logits_share:g} x one fp32 logits block ({_gib(fp32_logits)}): the "
           "logits-sized blocks of slightly different shapes (the whole logits, the shifted "
           "ones, the chosen rows') that do not fit each other's segments" if logits_share else "")
        + (f"; + {RESERVE_GENERATION_SHARE:.0%} of the generation phase's "
           f"{_gib(moments[GENERATION_MOMENT])} and {RESERVE_KV_SHARE:.0%} of its full KV cache "
           f"({_gib(full_cache)}): the prefill's activations and the cache grown a token at a "
           "time leave freed blocks later requests do not fit (`--trace` replays it)"
           if generation_reserve else ""))
    reserved = subtotal + reserve
    add("CUDA context", CUDA_CONTEXT_BYTES, "driver/runtime/kernels; outside torch's counters")

    if s.optimizer.startswith("paged_"):
        notes.append("paged optimizer states live in unified memory: counted here, but torch's "
                     "max_memory_reserved does not see them")
    if qlora and s.precision != "bf16":
        notes.append("QLoRA compute dtype follows precision; estimate assumes bf16-sized activations")
    if s.loss_path == "full_logits" and not s.grad_ckpt and not full and not preference:
        # bench/allocator_replay.md: when one activation splits the bf16-logits segment, the loss
        # needs a new fp32 one; whether it happens depends on how every transient packs.
        notes.append(f"{SPILL_NOTE} ({fmt_gib(4 * tokens * arch.vocab)}) reserved, depending on "
                     "how the step's activations pack into its segments (bench/allocator_replay.md); "
                     "not in the estimate: `workbench estimate --trace` replays the step and "
                     "settles it, or leave that much free, or turn checkpointing on")
    if s.train_method == "orpo":
        notes.append(f"{ORPO_RESERVE_NOTE}: its logits-sized blocks left about none or 1.3-1.5 "
                     f"fp32 logits blocks ({_gib(fp32_logits)} each) reserved on traced steps; "
                     "the estimate counts one; `workbench estimate --trace` replays this step and "
                     "settles it")
    if s.packing and s.attn == "sdpa":
        notes.append("packing with sdpa needs a block mask: counted as a (batch x seq x seq) mask")
    if grpo:
        notes.extend(_grpo_notes(arch, s, moments, phase, static, vllm_b))

    breakdown = OrderedDict((t.name, t.bytes) for t in terms)
    total = reserved + CUDA_CONTEXT_BYTES
    if s.attn == "eager":
        flash = estimate_memory(arch, replace(s, attn="flash_attention_2")).peak_bytes
        notes.append(f"eager attention saves {arch.heads} heads x {s.seq} x {s.seq} scores per "
                     f"layer (the fp32 softmax and its bf16 copy"
                     + (", the softcapping's tanh" if arch.attn_logit_softcapping else "")
                     + f"); flash_attention_2 (pip install flash-attn; model.attn_implementation "
                     f"= \"flash_attention_2\") would need {fmt_gib(total - flash)} less: "
                     f"{fmt_gib(flash)}")
    return Estimate(peak_bytes=int(total), reserved_bytes=int(reserved), breakdown=breakdown,
                    terms=terms, trainable_params=trainable, total_params=arch.total_params,
                    tokens_per_step=tokens * s.grad_accum, settings=s,
                    model_type=arch.model_type, phase=phase, notes=notes,
                    warnings=adapter_warnings(arch, s, trainable),
                    moments={k: int(static + v + CUBLAS_WORKSPACES * CUBLAS_WORKSPACE_BYTES)
                             for k, v in moments.items()})


def adapter_warnings(arch: Architecture, s: EstimateSettings, trainable: int) -> list[str]:
    """A LoRA rank at or above the model's hidden size is no longer low-rank: each adapted
    layer's update can already be full rank at r = min(d_in, d_out), so a larger r only adds
    parameters (r = 1664 on the 192-wide demo model trains 5x the model's own weights)."""
    if s.method == "full" or s.r < arch.hidden:
        return []
    return [(f"lora.r = {s.r} is at or above the model's hidden size ({arch.hidden}): the "
             f"adapters train {trainable:,} parameters, {trainable / max(arch.total_params, 1):.1f}x "
             f"the model's own {arch.total_params:,}, and a rank that high is no longer low-rank "
             f"(no layer's update can use more than {arch.hidden}); lower lora.r (8 to 64 is "
             "usual)")]


def estimate(config: dict | Architecture, settings: EstimateSettings | None = None,
             transformers_version: str | None = None, **overrides) -> Estimate:
    """`estimate(config_dict, method="qlora", r=16, batch=2, seq=4096)`: the one call."""
    from workbench.estimate.params import architecture_from_config

    arch = config if isinstance(config, Architecture) else architecture_from_config(config)
    s = settings or EstimateSettings()
    if overrides:
        if "targets" in overrides and isinstance(overrides["targets"], list):
            overrides["targets"] = tuple(overrides["targets"])
        s = replace(s, **overrides)
    return estimate_memory(arch, s, transformers_version)
