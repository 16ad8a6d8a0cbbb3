"""The replayed estimate (`workbench estimate --trace`): run the real transformers + peft
model through two training steps under torch's FakeTensorMode on the CPU (no GPU, no
weights, no real arithmetic), record every device allocation and free in order, and replay
them through the caching-allocator model (workbench/estimate/allocator.py).

What it answers that the analytic model cannot: the allocator's reserve. On the 40 H200 LoRA
points it reproduces `max_memory_reserved` within 2.2% (bench/estimate_accuracy.md), where
the analytic rule is off by up to 6% because fragmentation is a yes/no event decided by the
order of every transient (bench/allocator_replay.md).

Two steps, on the CUDA code paths:
- `loss_path="full_logits"`: the H200 calibration's loop (transformers' loss over full
  logits, the model output kept until the optimizer has stepped);
  `loss_path="trl_fused"`: the runner's SFTTrainer step, trl's fused LM head as it runs with
  Triton on CUDA (see `_trl_triton_patches`), only the loss kept;
  `train_method` "dpo", "kto", "orpo", "simpo": that trl trainer's step, with its reference
  forward where it has one (workbench/estimate/trace_preference.py says what runs: TRL's own
  ORPO / CPO code, a call-for-call copy of DPO's and KTO's `_compute_loss`); autograd's
  in-place gradient sums are kept in place there (`_accumulates_in_place`);
  `train_method` "grpo": trl's GRPOTrainer's step, transformers' own `generate` for the
  generation batch, the reference pass when beta > 0, the micro-batches through the fused head
  over the completions (workbench/estimate/trace_grpo.py);
- bf16/fp16 autocast (the CPU autocast: it casts linear and matmul exactly as CUDA's does);
- SDPA's CUDA kernels are emulated by what they allocate: flash attention (causal, no mask:
  output, fp32 log-sum-exp; in backward dq/dk/dv, fp32 softmax_d and dq_accum, and k/v
  gradients expanded to every head for GQA) and, with a mask, the memory-efficient kernel;
  model types without an SDPA path in transformers run eager, as the runner does;
- AdamW is foreach (what torch picks on CUDA) or fused; its `step` counters live on the host;
- two cuBLAS workspaces (forward thread, autograd's backward thread) exist before the step;
- every position is trained (labels on every token), like the analytic estimate.

Two steps suffice: on all 40 LoRA points the peak reserved of a 4-step trace equals that of
the first two (the second step finds the first one's freed segments, which is where
fragmentation shows). Tracing takes 4-20 s on a CPU core (Llama-3.1-8B at 4 x 2048: 18 s).

QLoRA: bitsandbytes' Params4bit cannot wrap a FakeTensor (an emulated nf4 layer got the
allocated peak within 1.1% on the Qwen2.5-0.5B QLoRA points but the reserve off by -7% to +15%,
worse than the analytic rule). With gradient checkpointing the same step with bf16 LoRA weights
is traced instead, and its replayed reserve, scaled by QLORA_RESERVE_FACTOR, stands in for
QLoRA's; the allocated terms stay analytic. Without checkpointing QLoRA keeps the analytic
estimate: there the bf16 step's fragmentation is not QLoRA's.

Not traceable (TraceUnsupported says which): QLoRA without checkpointing, 8-bit and paged
optimizers, the flash_attention_2 package, GRPO with vLLM or QLoRA. Those keep the
analytic estimate. Packing (train.packing, on by default for SFT) is traced with two rows a
pack, so transformers builds the block-diagonal mask a packed step has.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

from workbench.estimate.allocator import Replay, replay
from workbench.estimate.memory import (CUBLAS_WORKSPACE_BYTES, CUBLAS_WORKSPACES,
                                       ORPO_RESERVE_NOTE, SPILL_NOTE, Estimate, EstimateSettings,
                                       Term, runs_eager)
from workbench.fmt import fmt_gib
from workbench.estimate.params import ConfigError, architecture_from_config, resolve_targets

TRACE_STEPS = 2
_ABSENT = object()  # a patched attribute the module did not have (trl's Triton-only names)
TRACEABLE_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd")


class TraceUnsupported(ConfigError):
    """The step cannot be traced on this machine; the message says why."""


class TraceCancelled(Exception):
    """`cancel()` said stop: the trace ended between two ops, the libraries restored."""


@dataclass(frozen=True)
class TracedStep(Replay):
    """The replay's peaks (Replay) and what the trace adds: the trainable parameters peft
    made, how many allocation events the step had, how long the trace took."""

    trainable_params: int
    events: int
    seconds: float
    stands_in_for: str = ""  # "qlora": the same step with bf16 LoRA weights, traced for QLoRA

    def to_dict(self) -> dict:
        return {"peak_allocated": self.peak_allocated, "peak_reserved": self.peak_reserved,
                "reserve": self.reserve, "segments_created": self.segments_created,
                "peak_at": self.peak_label, "trainable_params": self.trainable_params,
                "events": self.events, "seconds": round(self.seconds, 1),
                "stands_in_for": self.stands_in_for}


def check_traceable(settings: EstimateSettings) -> None:
    why = []
    if settings.method == "qlora" and not settings.grad_ckpt:
        why.append("QLoRA without gradient checkpointing (bitsandbytes' 4-bit layers cannot be "
                   "traced, and there the bf16 LoRA step's reserve does not stand in for "
                   "QLoRA's: 5.0 vs 0.2 GiB measured on Qwen2.5-0.5B r64 at 4 x 2048)")
    if settings.optimizer not in TRACEABLE_OPTIMIZERS:
        why.append(f"optimizer {settings.optimizer} (traceable: {', '.join(TRACEABLE_OPTIMIZERS)})")
    if settings.attn in ("flash_attention_2", "flash_attention_3"):
        why.append(f"the {settings.attn} package (use sdpa: the same kernel's allocations)")
    if getattr(settings, "kernels", "none") == "liger" or settings.loss_path == "liger_fused":
        why.append("Liger's Triton kernels (CUDA only)")
    if getattr(settings, "train_method", "sft") == "grpo":
        if settings.generation == "vllm":
            why.append("GRPO with colocated vLLM (its generation is vLLM's own, not traced)")
        if settings.method == "qlora":
            why.append("GRPO with QLoRA (its generation keeps an fp32 KV cache and fp32 "
                       "activations; the bf16 LoRA twin's trace would not stand in for them)")
    if why:
        raise TraceUnsupported("the step cannot be traced with " + "; ".join(why)
                               + ": the estimate keeps the analytic allocator reserve")


def trace_step(config: dict, settings: EstimateSettings, steps: int = TRACE_STEPS,
               transformers_version: str | None = None,
               cancel: Callable[[], bool] | None = None) -> TracedStep:
    """Trace `steps` training steps of the model `config` (a config.json dict) with
    `settings` and replay them. `transformers_version`: the release whose attention choice to
    follow (a measurement made with an older one), default the installed one. `cancel`:
    asked before every op; when it says True the trace raises TraceCancelled."""
    settings.check()
    check_traceable(settings)
    start = time.monotonic()
    qlora = settings.method == "qlora"
    if qlora:  # bitsandbytes cannot run under FakeTensorMode: its bf16 LoRA twin stands in
        settings = replace(settings, method="lora")
    events, trainable = record_step(config, settings, steps, transformers_version, cancel)
    result = replay(events, preallocated=(CUBLAS_WORKSPACE_BYTES,) * CUBLAS_WORKSPACES)
    return TracedStep(result.peak_allocated, result.peak_reserved, result.segments_created,
                      result.peak_label, trainable, len(events), time.monotonic() - start,
                      "qlora" if qlora else "")


@contextlib.contextmanager
def _quiet():
    """The libraries' import-time and deprecation chatter is not the user's business here
    (bitsandbytes' CPU kernel hint, transformers' checkpointing notices)."""
    loggers = [logging.getLogger(name) for name in ("bitsandbytes", "transformers", "peft")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _dtype(settings: EstimateSettings):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[settings.precision]


def record_step(config: dict, settings: EstimateSettings, steps: int = TRACE_STEPS,
                transformers_version: str | None = None,
                cancel: Callable[[], bool] | None = None) -> tuple[list[tuple], int]:
    """(events, trainable parameters): the device allocations and frees of building the
    model and running `steps` training steps, in order, as `allocator.replay` takes them."""
    import torch
    import torch.nn.functional as F
    from torch.utils import _pytree as pytree
    from torch.utils._python_dispatch import TorchDispatchMode

    events: list[tuple] = []
    live: dict[int, bool] = {}
    state = {"phase": "build", "skip_scalars": False,
             "inplace_accumulate": settings.train_method != "sft"}

    def on_free(key: int) -> None:
        if live.pop(key, None) is not None:
            events.append(("f", key))

    class Recorder(TorchDispatchMode):
        """Logs each op's output storages (a storage once, so views do not count twice);
        a finalizer logs the free when the storage really dies, which autograd's saved
        tensors delay exactly as on the device."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if cancel is not None and cancel():
                raise TraceCancelled("the trace was cancelled")
            if state.get("inplace_accumulate") and _accumulates_in_place(func, args, kwargs,
                                                                          state, torch):
                return args[0].add_(args[1])  # the buffer is reused: nothing allocated
            if state.get("scalars") is not None:  # GRPO's generation: see trace_grpo.scalar
                from workbench.estimate.trace_grpo import scalar

                if func is torch.ops.aten._local_scalar_dense.default:
                    return scalar(args[0], state["scalars"])
                if func.overloadpacket is torch.ops.aten.all:
                    out = func(*args, **(kwargs or {}))
                    state["scalars"].add(id(out))
                    self.record(out, "all")
                    return out
            if state.get("grpo_keep"):  # GRPO: the gather of the completion's positions
                from workbench.estimate.trace_grpo import fixed_mask_ops

                fixed = fixed_mask_ops(func, args, kwargs, state["grpo_keep"], torch)
                if fixed is not None:
                    if fixed is not args[0]:
                        self.record(fixed, func.overloadpacket.__name__)
                    return fixed
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.record(t, name)
            return out

        def record(self, t, name: str) -> None:
            storage = t.untyped_storage()
            key = storage._cdata
            if key in live or (state["skip_scalars"] and t.dim() == 0):
                return
            live[key] = True
            events.append(("a", key, storage.nbytes(),
                           f"{state['phase']}:{name}:{tuple(t.shape)}:{str(t.dtype)[6:]}"))
            weakref.finalize(storage, on_free, key)

    with _quiet():
        patches = _cuda_path_patches(torch, F)
        if settings.train_method == "sft" and settings.loss_path == "trl_fused":
            patches += _trl_triton_patches()
        elif settings.train_method == "grpo":
            from workbench.estimate import trace_grpo

            patches += _trl_triton_patches() + trace_grpo.grpo_patches(torch, settings)
        elif settings.train_method != "sft":
            from workbench.estimate import trace_preference

            patches += (_trl_triton_patches() if trace_preference.uses_fused_head(settings.train_method)
                        else trace_preference.logprob_kernel_patches(torch))
        saved = [(obj, name, getattr(obj, name, _ABSENT)) for obj, name, _ in patches]
        for obj, name, value in patches:
            setattr(obj, name, value)
        try:
            return _run_steps(config, settings, steps, events, state, Recorder(),
                              transformers_version)
        finally:  # the patches are global: leave torch, transformers, peft and trl as they were
            for obj, name, value in reversed(saved):
                if value is _ABSENT:
                    delattr(obj, name)
                else:
                    setattr(obj, name, value)


def _accumulates_in_place(func, args, kwargs, state, torch) -> bool:
    """Autograd's gradient accumulation (torch/csrc/autograd/input_buffer.cpp `accumulate`):
    when a tensor feeds several ops, their gradients are summed into the first one in place
    (`old_var.add_(var)`) if it is a dense, non-view tensor of its own, which fresh gradients
    are; but never when either is a tensor subclass, and FakeTensors are one, so a fake trace
    would allocate every such sum anew. That costs one logits-sized tensor in ORPO's backward
    (the chosen rows' NLL and the log-probabilities both read the logits), so preference
    traces sum in place where the device would. (The SFT trace keeps the fake behaviour: its
    sums are activation-sized, and its committed traces stay as measured.)"""
    if func is not torch.ops.aten.add.Tensor or torch.is_grad_enabled():
        return False
    if not state["phase"].endswith("backward") or (kwargs or {}).get("alpha", 1) != 1:
        return False
    old, new = args[0], args[1] if len(args) > 1 else None
    return (isinstance(new, torch.Tensor) and old.shape == new.shape and old.dtype == new.dtype
            and old.is_contiguous() and not old._is_view()
            and old.untyped_storage().nbytes() == old.numel() * old.element_size())


def _cuda_path_patches(torch, F) -> list[tuple]:
    """What differs between the CPU under FakeTensorMode and the CUDA step, patched back."""
    import peft.tuners.tuners_utils as tuners_utils
    import transformers.masking_utils as masking_utils

    class FlashSDPA(torch.autograd.Function):
        """aten._scaled_dot_product_flash_attention's allocations (causal, no mask)."""

        @staticmethod
        def forward(ctx, q, k, v):
            b, h, s, d = q.shape
            out = torch.empty((b, s, h, d), dtype=q.dtype, device=q.device).transpose(1, 2)
            lse = torch.empty((b, h, s), dtype=torch.float32, device=q.device)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, dout):
            q, k, v, _out, _lse = ctx.saved_tensors
            b, h, s, d = q.shape
            hk = k.shape[1]
            dout_t = dout.transpose(1, 2)
            if dout_t.stride(-1) != 1:
                dout_t = dout_t.contiguous()
            s128 = -(-s // 128) * 128
            d_round = -(-d // 32) * 32 if d <= 192 else 256
            dq = torch.empty((b, s, h, d), dtype=q.dtype, device=q.device)
            dk = torch.empty((b, s, hk, d), dtype=q.dtype, device=q.device)
            dv = torch.empty((b, s, hk, d), dtype=q.dtype, device=q.device)
            softmax_d = torch.empty((b, h, s128), dtype=torch.float32, device=q.device)
            dq_accum = torch.empty((b, s128, h, d_round), dtype=torch.float32, device=q.device)
            if hk != h:  # GQA: the kernel writes per-head k/v gradients, then sums groups
                dk_all = torch.empty((b, s, h, d), dtype=q.dtype, device=q.device)
                dv_all = torch.empty((b, s, h, d), dtype=q.dtype, device=q.device)
                torch.sum(dk_all.view(b, s, hk, h // hk, d), dim=3, out=dk)
                torch.sum(dv_all.view(b, s, hk, h // hk, d), dim=3, out=dv)
                del dk_all, dv_all
            del softmax_d, dq_accum, dout_t
            return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)

    class MemEfficientSDPA(torch.autograd.Function):
        """aten._scaled_dot_product_efficient_attention's allocations (with a mask)."""

        @staticmethod
        def forward(ctx, q, k, v, mask):
            b, h, s, d = q.shape
            out = torch.empty((b, s, h, d), dtype=q.dtype, device=q.device).transpose(1, 2)
            lse = torch.empty((b, h, -(-s // 32) * 32), dtype=torch.float32, device=q.device)
            ctx.save_for_backward(q, k, v, out, lse, mask)
            return out

        @staticmethod
        def backward(ctx, dout):
            q, k, v, _out, _lse, _mask = ctx.saved_tensors
            dq = torch.empty_like(q)
            dk = torch.empty_like(k)
            dv = torch.empty_like(v)
            delta = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
            del delta
            return dq, dk, dv, None

    class FusedDropout(torch.autograd.Function):
        """at::native_dropout's allocations, the kernel torch picks on CUDA: the output and a
        1-byte mask, the mask saved for backward. (On the CPU torch multiplies by a noise
        tensor of the input's dtype and saves it: 4 bytes an element for peft's fp32 LoRA
        input, which would count a GPU's dropout four times over.)"""

        @staticmethod
        def forward(ctx, x):
            mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
            ctx.save_for_backward(mask)
            return torch.empty_like(x)

        @staticmethod
        def backward(ctx, grad):
            return torch.empty_like(grad)

    cpu_dropout = F.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if training and 0 < p < 1 and not inplace and input.numel():
            return FusedDropout.apply(input)
        return cpu_dropout(input, p, training, inplace)

    class HalfToFloatSoftmax(torch.autograd.Function):
        """softmax(x_bf16, dtype=float32) as CUDA runs it (eager attention's upcast softmax):
        one kernel writes the fp32 output from the half input, saved for backward, and the
        backward writes the gradient straight in the input's dtype. (The CPU copies the input
        to fp32 first and returns an fp32 gradient that is then cast back.)"""

        @staticmethod
        def forward(ctx, x, dim):
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
            ctx.save_for_backward(out)
            ctx.input_dtype = x.dtype
            return out

        @staticmethod
        def backward(ctx, grad):
            return torch.empty(grad.shape, dtype=ctx.input_dtype, device=grad.device), None

    cpu_softmax = F.softmax

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32 and input.dtype in (torch.bfloat16, torch.float16):
            return HalfToFloatSoftmax.apply(input, dim)
        return cpu_softmax(input, dim, _stacklevel, dtype)

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):
        if q.dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        if attn_mask is None and q.dtype != torch.float32:
            return FlashSDPA.apply(q, k, v)
        if attn_mask is None:  # fp32 has no flash kernel: memory-efficient, causal
            attn_mask = torch.ones((), dtype=torch.bool, device=q.device)
        return MemEfficientSDPA.apply(q, k, v, attn_mask)

    return [
        (F, "scaled_dot_product_attention", sdpa),
        (F, "dropout", dropout),
        (F, "softmax", softmax),
        # transformers treats FakeTensors as tracing and then keeps an explicit causal mask;
        # on the device the mask is skipped and SDPA runs causal.
        (masking_utils, "is_tracing", lambda *a, **k: False),
        # the rows are plain positions, not packed sequences
        (masking_utils, "find_packed_sequence_indices", lambda *a, **k: None),
        # everything already sits on the (fake) CPU; Module._apply's swap refuses FakeTensors
        (tuners_utils.BaseTunerLayer, "_move_adapter_to_device_of_base_layer",
         lambda self, *a, **k: None),
    ]


def _trl_triton_patches() -> list[tuple]:
    """trl's fused LM head on a CUDA machine with Triton: the positions are projected tile by
    tile into one reused buffer; its Triton kernels and the fp32-output addmm
    (torch.addmm(..., out_dtype=float32, out=acc)) write in place and allocate nothing. Here
    the tile folds run as no-ops on the driver's own buffers. On CUDA trl gathers the trained
    positions (`hidden[mask]`, a data-dependent shape FakeTensorMode cannot follow); the path
    traced reshapes all of them instead: with every position trained, the same copy (batch > 1)."""
    import trl.kernels.chunked_logprob as chunked

    def in_place(*args, **kwargs) -> None:
        return None

    return [(chunked, "_use_triton", lambda device: False),    # the tile folds below
            (chunked, "_forward_tile", in_place),
            (chunked, "_backward_tile", in_place),
            (chunked, "_addmm_fp32", in_place)]


def _run_steps(config, settings, steps, events, state, recorder, transformers_version=None):
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = architecture_from_config(config)
    cfg_dict = {k: v for k, v in config.items() if k not in ("quantization_config",)}
    model_type = cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    # transformers 5 has no SDPA path for some model types: they run eager, as in the runner
    eager = settings.attn == "eager" or runs_eager(model_type, transformers_version)
    attn = "eager" if eager else "sdpa"
    # a release that still ran this model with SDPA (without its attention softcapping)
    sdpa_then = attn == "sdpa" and runs_eager(model_type)
    dtype = _dtype(settings)
    with FakeTensorMode(allow_non_fake_inputs=False), recorder:
        with torch.device("cpu"):
            model = AutoModelForCausalLM.from_config(
                cfg, dtype=dtype, attn_implementation="eager" if sdpa_then else attn)
        if sdpa_then:
            model.config._attn_implementation = "sdpa"
            for module in model.modules():
                if getattr(module, "attn_logit_softcapping", None) is not None:
                    module.attn_logit_softcapping = None
        # the probe built the model, then emptied the cache before the adapters and the step
        events.append(("mark", "empty_cache"))
        state["phase"] = "adapters"
        model.train()
        if settings.grad_ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        grpo = None
        if settings.train_method == "grpo":  # workbench/estimate/trace_grpo.py
            from workbench.estimate.trace_grpo import GrpoStep

            grpo = GrpoStep(config, settings, state, dtype, settings.precision != "fp32")
            grpo.add_fused_head(model)
        preference = settings.train_method != "sft"
        fused = settings.loss_path == "trl_fused" if not preference else False
        if fused:  # what the runner's SFTTrainer patches in (trl/trainer/sft_trainer.py)
            from trl.trainer.utils import add_fused_lm_head

            add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        if preference and grpo is None:
            step_loss = _preference_step(model, arch, settings, state)
        model = _trainable(model, arch, settings, torch)
        if preference and grpo is None:  # trl's preference configs default to
            # disable_dropout=True: on the peft model, so LoRA's dropout gets p = 0 too
            # (dpo_trainer.py:933); GRPOConfig keeps dropout (disable_dropout=False)
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = _optimizer(settings, trainable, torch)
        ids = torch.randint(0, arch.vocab, (settings.batch, settings.seq))
        packed = {}
        if settings.packing:  # two rows a pack: positions restart, so the block mask is built
            half = settings.seq // 2
            positions = torch.cat([torch.arange(half), torch.arange(settings.seq - half)])
            packed = {"position_ids": positions.expand(settings.batch, -1), "use_cache": False}
        events.append(("mark", "reset_peak"))
        autocast = settings.precision != "fp32"
        for step in range(steps):
            for micro in range(min(settings.grad_accum, 2)):
                state["phase"] = f"step{step}.{micro}.forward"
                if grpo is not None:
                    state["grpo_keep"] = settings.max_completion_len
                    if micro == 0:  # the whole generation batch, for the step's micro-batches
                        grpo.generate_and_score(model, state["phase"])
                    out = grpo.loss(model, micro)
                elif preference:  # the trainer keeps only the loss, as SFTTrainer does
                    out = step_loss(model, dtype, autocast, f"step{step}.{micro}.forward")
                else:
                    with torch.autocast("cpu", dtype=dtype, enabled=autocast):
                        if fused:  # the trainer keeps only the loss: the output dies here
                            out = model(input_ids=ids, labels=ids, fused_lm_head=True,
                                        **packed).loss
                        else:      # the calibration loop keeps the output until after the step
                            out = model(input_ids=ids, labels=ids, **packed)
                state["phase"] = f"step{step}.{micro}.backward"
                (out if (fused or preference) else out.loss).backward()
                if micro + 1 < min(settings.grad_accum, 2):
                    del out
                    gc.collect()
            state["phase"] = f"step{step}.optimizer"
            state["skip_scalars"] = True  # the step counters live on the host
            if fused or preference:  # the trainer clips gradients (max_grad_norm) before each step
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["skip_scalars"] = False
            if grpo is not None:
                grpo.end_step()
            del out
            gc.collect()
        count = sum(p.numel() for p in trainable)
        del optimizer, trainable, model, ids, grpo
        gc.collect()
    return events, count


def _preference_step(model, arch, settings: EstimateSettings, state):
    """Prepare the model as the preference trainer does and return the micro-step's loss
    function (workbench/estimate/trace_preference.py)."""
    import torch
    import torch.nn.functional as F
    from trl.trainer.utils import add_fused_lm_head

    from workbench.estimate import trace_preference as tp

    method = settings.train_method
    if tp.uses_fused_head(method):  # on the base model, before peft (dpo_trainer.py:960)
        add_fused_lm_head(model, outputs=tp.FUSED_OUTPUTS[method])
    rows = settings.batch
    vocab = arch.vocab

    def loss(peft_model, dtype, autocast, phase):
        forward = tp.prepared_forward(peft_model, torch, dtype, autocast)
        if method == "dpo":  # the collator stacks [chosen; rejected]: 2 x batch rows
            ids = torch.randint(0, vocab, (2 * rows, settings.seq))
            return tp.dpo_loss(peft_model, forward, ids, settings, torch, F, state, phase)
        if method == "kto":
            ids = torch.randint(0, vocab, (rows, settings.seq))
            kl_ids = torch.randint(0, vocab, (rows, settings.seq))
            return tp.kto_loss(peft_model, forward, ids, kl_ids, settings, torch, F, state, phase)
        chosen = torch.randint(0, vocab, (rows, settings.seq))
        rejected = torch.randint(0, vocab, (rows, settings.seq))
        return tp.pair_logits_loss(method, forward, chosen, rejected, torch)
    return loss


def _trainable(model, arch, settings: EstimateSettings, torch):
    if settings.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    names = [lin.name for lin in resolve_targets(arch, settings.targets)]
    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=names, use_dora=settings.method == "dora",
                      task_type="CAUSAL_LM")
    move = torch.nn.Module.to

    def keep_device(self, *args, **kwargs):  # device moves are no-ops: all is fake CPU
        if any(isinstance(x, torch.dtype) for x in (*args, *kwargs.values())):
            return move(self, *args, **kwargs)
        return self

    torch.nn.Module.to = keep_device
    try:
        return get_peft_model(model, lora)
    finally:
        torch.nn.Module.to = move


def _optimizer(settings: EstimateSettings, params, torch):
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-4, foreach=True)
    fused = settings.optimizer == "adamw_torch_fused"
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=settings.weight_decay,
                             foreach=not fused, fused=fused or None)


TRACE_DISAGREES = 0.05  # beyond this the output says the analytic terms and the trace disagree
# QLoRA with checkpointing: its allocator reserve over the replayed reserve of the same step with
# bf16 LoRA weights. Measured on the 8 H200 QLoRA points with checkpointing (Llama-3.1-8B,
# Qwen2.5-0.5B): 0.84 to 1.93, median 1.45; 1.4 puts them within -0.7% / +5.8%
# (bench/estimate_accuracy.md). The 4-bit step keeps fp32 activations and dequantizes a weight
# per matmul, on the bf16 step's layer structure: more fragments of the same pattern.
QLORA_RESERVE_FACTOR = 1.4


def with_trace(est: Estimate, traced: TracedStep) -> Estimate:
    """The estimate as the traced step has it: the headline (`reserved_bytes`, `peak_bytes`) is
    the trace's peak reserved, which is the real transformers + peft code's allocations replayed
    through the allocator, plus the CUDA context. The named analytic terms stay, to say where
    the bytes go; "allocator reserve" becomes the replayed reserve, and "traced vs the terms"
    carries what the trace allocates at its peak beyond (or, negative, short of) what the terms
    count, so the terms still add up to `peak_bytes`."""
    if traced.stands_in_for == "qlora":
        return _with_qlora_reserve(est, traced)
    analytic_alloc = est.reserved_bytes - est.breakdown["allocator reserve"]
    gap = traced.peak_allocated - analytic_alloc
    terms = []
    for t in est.terms:
        if t.name == "allocator reserve":
            if gap:
                terms.append(Term("traced vs the terms", gap,
                                  f"the traced step allocates {fmt_gib(traced.peak_allocated)} at "
                                  f"its peak ({traced.peak_label.split(':')[0]}), the terms above "
                                  f"count {fmt_gib(analytic_alloc)}"))
            t = Term("allocator reserve", traced.reserve,
                     f"replayed: the traced step's {traced.events:,} allocations through torch's "
                     f"caching-allocator rules reserve {fmt_gib(traced.peak_reserved)} for "
                     f"{fmt_gib(traced.peak_allocated)} allocated at the peak")
        terms.append(t)
    notes = []
    if analytic_alloc and abs(gap) > TRACE_DISAGREES * analytic_alloc:
        notes.append(f"the analytic terms and the trace disagree by {100 * gap / analytic_alloc:+.0f}% "
                     f"on the allocated peak ({fmt_gib(analytic_alloc)} counted, "
                     f"{fmt_gib(traced.peak_allocated)} traced): the headline uses the trace, "
                     "which runs the real transformers + peft code")
    return _with_terms(est, terms, notes)


def _with_terms(est: Estimate, terms: list[Term], notes: list[str]) -> Estimate:
    """`est` with these terms (the headline their sum) and these notes added; the note of a
    possible extra logits block is settled by the trace."""
    reserved = sum(t.bytes for t in terms if t.name != "CUDA context")
    return replace(est, terms=terms, breakdown=OrderedDict((t.name, t.bytes) for t in terms),
                   reserved_bytes=reserved, peak_bytes=sum(t.bytes for t in terms),
                   notes=[n for n in est.notes if not n.startswith((SPILL_NOTE, ORPO_RESERVE_NOTE))]
                   + notes)


def _with_qlora_reserve(est: Estimate, traced: TracedStep) -> Estimate:
    """QLoRA: the analytic allocated terms (bitsandbytes' step cannot be traced), with the
    reserve of the traced bf16 LoRA twin scaled by QLORA_RESERVE_FACTOR."""
    reserve = int(QLORA_RESERVE_FACTOR * traced.reserve)
    terms = [Term("allocator reserve", reserve,
                  f"{QLORA_RESERVE_FACTOR:g} x the replayed reserve of the same step with bf16 "
                  f"LoRA weights ({fmt_gib(traced.reserve, digits=2)}; QLoRA's 4-bit step cannot be "
                  "traced; the factor is measured on 8 H200 QLoRA steps with checkpointing)")
             if t.name == "allocator reserve" else t for t in est.terms]
    return _with_terms(est, terms, [])
