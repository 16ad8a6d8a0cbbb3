"""Verdict and remedies: does the step fit on a GPU, and what would make it fit.

Verdict against the memory available (the GPU's free memory now when it is the GPU we run
on, else the table's total): "fits" with at least 10% headroom, "tight" under 10%, "does not
fit" above. Remedies are single changes from the current settings, each re-estimated, ranked
by what they cost the run: free ones first (gradient checkpointing costs ~30% time, half
batch with double accumulation keeps the effective batch), then ones that change the run
(QLoRA, 8-bit optimizer, fewer targets, shorter sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from workbench.estimate.memory import (REFERENCE_METHODS, REFERENCE_MOMENT, Estimate,
                                       EstimateSettings, estimate_memory)
from workbench.estimate.params import Architecture, attention_only_targets

TIGHT_HEADROOM = 0.10


@dataclass
class Remedy:
    change: str
    settings: EstimateSettings
    estimate: Estimate
    fits: bool
    cost: str

    def to_dict(self) -> dict:
        return {"change": self.change, "peak_bytes": self.estimate.peak_bytes,
                "fits": self.fits, "cost": self.cost}


def verdict(peak_bytes: int, available_bytes: int) -> str:
    if peak_bytes > available_bytes:
        return "does not fit"
    if available_bytes - peak_bytes < TIGHT_HEADROOM * available_bytes:
        return "tight"
    return "fits"


def remedies(arch: Architecture, s: EstimateSettings, available_bytes: int) -> list[Remedy]:
    candidates: list[tuple[str, EstimateSettings, str]] = []
    if s.train_method in REFERENCE_METHODS and not s.precompute_ref:
        # only worth saying where the reference forward holds the peak
        if estimate_memory(arch, s).phase == REFERENCE_MOMENT:
            candidates.append(("precompute the reference log-probs ([preference] "
                               "precompute_ref = true)", replace(s, precompute_ref=True),
                               "one reference pass over the data before training; faster steps"))
    if not s.grad_ckpt:
        candidates.append(("turn on gradient checkpointing", replace(s, grad_ckpt=True),
                           "about 30% slower (one extra forward)"))
    if s.batch > (2 if s.train_method == "kto" else 1):  # KTO needs 2 rows a batch
        candidates.append((f"batch {s.batch // 2} with gradient accumulation {s.grad_accum * 2}",
                           replace(s, batch=s.batch // 2, grad_accum=s.grad_accum * 2),
                           "same effective batch, somewhat slower"))
    if s.optimizer in ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"):
        candidates.append(("8-bit optimizer (adamw_8bit)", replace(s, optimizer="adamw_8bit"),
                           "needs bitsandbytes; usually no quality change"))
    if s.method in ("lora", "dora"):
        candidates.append(("QLoRA (4-bit base weights)", replace(s, method="qlora"),
                           "slower steps, small quality cost"))
    attention = attention_only_targets(arch)
    if s.targets == "all-linear" or (not isinstance(s.targets, str)
                                     and set(s.targets) - set(attention)):
        candidates.append((f"adapt attention only ({', '.join(attention)})",
                           replace(s, targets=attention), "fewer trainable parameters"))
    if s.train_method == "grpo":  # its rows are prompt + completion: seq follows them
        if s.max_completion_len > 64:
            half = s.max_completion_len // 2
            candidates.append((f"grpo.max_completion_len {half}",
                               replace(s, max_completion_len=half),
                               "completions cut at half the length; check the rewards still "
                               "score them (`workbench rewards test`)"))
        if s.max_prompt_len > 256:
            half = s.max_prompt_len // 2
            candidates.append((f"grpo.max_prompt_len {half}", replace(s, max_prompt_len=half),
                               "longer prompts are dropped; check the data's lengths first"))
    elif s.seq > 256:
        candidates.append((f"sequence length {s.seq // 2}", replace(s, seq=s.seq // 2),
                           "longer rows get truncated; check the data's lengths first"))
    out = []
    for change, settings, cost in candidates:
        est = estimate_memory(arch, settings)
        out.append(Remedy(change, settings, est, est.peak_bytes <= available_bytes, cost))
    # Keep the order of cost, but those that fit on their own come first.
    return sorted(out, key=lambda r: not r.fits)


def strategy_verdict(per_gpu: dict, available_bytes: int, chosen: str) -> str:
    """One sentence over the per-GPU estimates of every strategy ({"ddp": PerGpuEstimate,
    "fsdp": ..., "deepspeed-2": ..., "deepspeed-3": ...}): whether the chosen strategy fits,
    and when a full replica does not fit but a sharded one does, that it fits only sharded."""
    fits = {k: verdict(e.peak_bytes, available_bytes) != "does not fit" for k, e in per_gpu.items()}
    chosen_verdict = verdict(per_gpu[chosen].peak_bytes, available_bytes)
    sharded_ok = [k for k in ("fsdp", "deepspeed-3", "deepspeed-2") if fits.get(k)]
    if fits.get("ddp"):
        return f"{chosen}: {chosen_verdict}" + ("" if chosen == "ddp" else
                                               "; a full replica (ddp) fits too and is faster")
    if sharded_ok:
        tail = "" if fits.get(chosen) else f"; {chosen} does not fit, use {sharded_ok[0]}"
        return (f"{chosen}: {chosen_verdict}; fits only sharded ({', '.join(sharded_ok)}), "
                "not as a full replica (ddp)" + tail)
    return f"{chosen}: does not fit with any strategy on these GPUs"
