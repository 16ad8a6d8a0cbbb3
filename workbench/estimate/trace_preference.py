"""The preference methods' training step, as the tracer runs it under FakeTensorMode
(workbench/estimate/trace.py): DPO, KTO, ORPO and SimPO on trl 1.16, the step the workbench's
trainers take (workbench/train/methods/preference.py: a peft model handed to the trainer, no
separate reference model, TRL's default `disable_dropout=True`).

What runs is TRL's own code where it can run on fake tensors, and a faithful copy where it
cannot:

- ORPO and SimPO: TRL's own `ORPOTrainer.concatenated_forward` / `odds_ratio_loss` and
  `CPOTrainer.concatenated_forward` / `cpo_loss` (trl/experimental/orpo/orpo_trainer.py,
  trl/experimental/cpo/cpo_trainer.py), called on a stand-in for the trainer that holds only
  the attributes they read. Chosen and rejected go through the model as one batch of 2 x batch
  rows with full logits; accelerate's `convert_outputs_to_fp32` (the Trainer prepares the model
  with bf16 autocast and wraps its forward) turns the logits into fp32 before TRL's loss; on
  CUDA `selective_log_softmax` runs trl's Triton kernel (trl/kernels/logprob_entropy.py),
  emulated here by what it allocates (`LogProbEntropy`).
- DPO and KTO: their `_compute_loss` (trl/trainer/dpo_trainer.py:1285, kto_trainer.py:1370)
  cannot run on fake tensors as written (it logs metrics with `.item()` and boolean-mask
  indexing, whose shapes depend on the data), so its tensor work is reproduced call for call
  (`dpo_loss`, `kto_loss`): the same model calls with the same arguments
  (`fused_lm_head=True`, `use_cache=False`, labels), the reference forward under
  `torch.no_grad()`, TRL's own `disable_gradient_checkpointing` and `use_adapter(model, None)`
  (the adapter disabled: the base model is the reference), the sums of per-token
  log-probabilities and the loss (DPO's sigmoid loss; KTO's with its KL estimate). The metrics
  (a few per-row scalars) are left out.

The rows are full (every row `seq` tokens, so no attention mask: transformers skips an all-ones
mask for SDPA on CUDA, which this mirrors by passing none) and every position is scored, as in
the SFT trace.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

DPO_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # dpo_trainer.py:957
KTO_OUTPUTS = ("log_probs", "entropy", "mean_logits")              # kto_trainer.py:969
FUSED_OUTPUTS = {"dpo": DPO_OUTPUTS, "kto": KTO_OUTPUTS}
BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1, "simpo": 2.0}
SIMPO_GAMMA = 0.5


def uses_fused_head(train_method: str) -> bool:
    """DPO and KTO score with trl's fused LM head; ORPO and SimPO (CPO) build full logits."""
    return train_method in FUSED_OUTPUTS


def logprob_kernel_patches(torch) -> list[tuple]:
    """`selective_log_softmax` on CUDA (trl/trainer/utils.py:572): with Triton, for logits on
    the GPU, trl's `_LogProbEntropyFunction` (trl/kernels/logprob_entropy.py), which saves the
    logits it was given (a view: the whole logits stay alive) and four fp32 per-token vectors,
    and whose backward writes the logits' gradient into one contiguous tensor of the logits'
    shape. Here the same allocations, the Triton kernels left out."""
    import trl.trainer.utils as trl_utils

    class LogProbEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, index, temperature=1.0, row_mask=None):
            shape = logits.shape[:-1]
            logprobs = torch.empty(shape, device=logits.device, dtype=torch.float32)
            entropy = torch.empty_like(logprobs)
            log_z = torch.empty_like(logprobs)
            expected_logit = torch.empty_like(logprobs)
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(logits, index, log_z, expected_logit)
            return logprobs, entropy

        @staticmethod
        def backward(ctx, grad_logprobs, grad_entropy):
            logits, _index, _log_z, _expected = ctx.saved_tensors
            grad_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
            if grad_logprobs is not None:
                grad_logprobs = grad_logprobs.contiguous()
            return grad_logits, None, None, None

    def fused(logits, index, temperature=1.0, row_mask=None):
        return LogProbEntropy.apply(logits, index, temperature, row_mask)

    return [(trl_utils, "is_triton_available", lambda: True),
            (trl_utils, "_supports_trl_loss_kernel", _supported_anywhere(trl_utils)),
            (trl_utils, "_fused_logprob_entropy", fused)]


def _supported_anywhere(trl_utils):
    """trl's own check, the device type aside (the fake tensors sit on the CPU)."""
    import torch

    def supported(logits, index=None, row_mask=None):
        return (logits.dtype in (torch.float16, torch.bfloat16, torch.float32)
                and 1 <= logits.ndim <= 3 and logits.stride(-1) == 1 and logits.shape[-1] > 0
                and (index is None or (index.shape == logits.shape[:-1]
                                       and index.dtype in (torch.int32, torch.int64))))
    return supported


def prepared_forward(model, torch, dtype, autocast: bool):
    """The model's forward as the Trainer runs it after `accelerator.prepare`: under autocast,
    its floating outputs converted to fp32 (accelerate/accelerator.py `prepare_model`,
    accelerate/utils/operations.py `convert_outputs_to_fp32`). An all-ones attention mask is
    dropped (see the module docstring)."""
    from accelerate.utils.operations import convert_to_fp32

    def forward(*args, attention_mask=None, **kwargs):
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            out = model(*args, **kwargs)
        return convert_to_fp32(out) if autocast else out
    return forward


def _reference(model, settings, torch):
    """The reference forward's context in DPO and KTO (dpo_trainer.py:1327-1336): no grad,
    gradient checkpointing switched off, the adapter disabled (peft model, no `ref` adapter)."""
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(disable_gradient_checkpointing(
        model, {"use_reentrant": False} if settings.grad_ckpt else None))
    stack.enter_context(use_adapter(model, adapter_name=None))
    return stack


def dpo_loss(model, forward, ids, settings, torch, F, state, phase: str):
    """DPOTrainer._compute_loss (trl/trainer/dpo_trainer.py:1285-1345, sigmoid loss): the policy
    forward over [chosen; rejected] (2 x batch rows), the reference forward, the loss."""
    labels = ids  # every position scored
    seq_len = ids.shape[1] - 1
    outputs = forward(input_ids=ids, use_cache=False, labels=labels, fused_lm_head=True)
    per_token_logps = outputs.log_probs[:, -seq_len:]
    logps = per_token_logps.sum(dim=1)
    chosen_logps, rejected_logps = logps.chunk(2, dim=0)
    if settings.precompute_ref:  # read from the batch (dpo_trainer.py:1318)
        ref_chosen_logps = torch.zeros(chosen_logps.shape, dtype=torch.float32)
        ref_rejected_logps = torch.zeros(rejected_logps.shape, dtype=torch.float32)
    else:
        state["phase"] = phase + ".reference"
        with _reference(model, settings, torch):
            ref_outputs = forward(input_ids=ids, use_cache=False, labels=labels, fused_lm_head=True)
        ref_logps = ref_outputs.log_probs[:, -seq_len:].sum(dim=1)
        ref_chosen_logps, ref_rejected_logps = ref_logps.chunk(2, dim=0)
        del ref_outputs
        state["phase"] = phase
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    delta_score = chosen_logratios - rejected_logratios
    loss = 0.0
    loss += (-F.logsigmoid(BETA["dpo"] * delta_score)).mean() * 1.0
    return loss


def kto_loss(model, forward, ids, kl_ids, settings, torch, F, state, phase: str):
    """KTOTrainer._compute_loss (trl/trainer/kto_trainer.py:1370-1490, loss "kto"): the KL
    pass of the policy over mismatched completions (no grad), the policy forward (batch rows),
    then the reference's KL pass and forward; half the rows desirable."""
    seq_len = ids.shape[1] - 1
    rows = ids.shape[0]
    state["phase"] = phase + ".kl"
    with torch.no_grad():  # kto_trainer.py:1364 _compute_kl_logps
        kl_logps = forward(input_ids=kl_ids, use_cache=False, labels=kl_ids,
                           fused_lm_head=True).log_probs[:, -seq_len:].sum(-1)
    state["phase"] = phase
    outputs = forward(input_ids=ids, use_cache=False, labels=ids, fused_lm_head=True)
    completion_logps = outputs.log_probs[:, -seq_len:].sum(-1)
    chosen_idx = torch.arange(0, rows // 2)
    rejected_idx = torch.arange(rows // 2, rows)
    chosen_logps = completion_logps.index_select(0, chosen_idx)
    rejected_logps = completion_logps.index_select(0, rejected_idx)
    if settings.precompute_ref:
        ref_logps = torch.zeros((rows,), dtype=torch.float32)
        ref_kl_logps = torch.zeros((rows,), dtype=torch.float32)
    else:
        state["phase"] = phase + ".reference"
        with _reference(model, settings, torch):
            ref_kl_logps = forward(input_ids=kl_ids, use_cache=False, labels=kl_ids,
                                   fused_lm_head=True).log_probs[:, -seq_len:].sum(-1)
            ref_outputs = forward(input_ids=ids, use_cache=False, labels=ids, fused_lm_head=True)
        ref_logps = ref_outputs.log_probs[:, -seq_len:].sum(-1)
        del ref_outputs
        state["phase"] = phase
    ref_chosen_logps = ref_logps.index_select(0, chosen_idx)
    ref_rejected_logps = ref_logps.index_select(0, rejected_idx)
    kl = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    beta = BETA["kto"]
    chosen_losses = 1 - F.sigmoid(beta * ((chosen_logps - ref_chosen_logps) - kl))
    rejected_losses = 1 - F.sigmoid(beta * (kl - (rejected_logps - ref_rejected_logps)))
    losses = torch.cat((1.0 * chosen_losses, 1.0 * rejected_losses), 0)
    return losses.nanmean()


def pair_logits_loss(train_method: str, forward, chosen, rejected, torch):
    """ORPO's or SimPO's (CPO) loss through TRL's own methods, on a stand-in trainer."""
    import warnings

    with warnings.catch_warnings():  # trl.experimental warns on import that its API may change
        warnings.simplefilter("ignore")
        from trl.experimental.cpo.cpo_trainer import CPOTrainer
        from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    ones = torch.ones(chosen.shape, dtype=torch.long)
    batch = {"chosen_input_ids": chosen, "chosen_attention_mask": ones, "chosen_labels": chosen,
             "rejected_input_ids": rejected, "rejected_attention_mask": ones,
             "rejected_labels": rejected}
    common = dict(is_encoder_decoder=False, aux_loss_enabled=False,
                  accelerator=SimpleNamespace(device=chosen.device))
    if train_method == "orpo":
        this = SimpleNamespace(**common, padding_value=0, beta=BETA["orpo"],
                               concatenated_inputs=ORPOTrainer.concatenated_inputs,
                               get_batch_logps=ORPOTrainer.get_batch_logps)
        (chosen_logps, rejected_logps, chosen_logits, rejected_logits,
         nll_loss) = ORPOTrainer.concatenated_forward(this, forward, batch)
        losses, *_ = ORPOTrainer.odds_ratio_loss(this, chosen_logps, rejected_logps)
        loss = nll_loss - losses.mean()
    else:  # simpo: CPO with loss_type="simpo", cpo_alpha=0 (workbench/train/methods/preference.py)
        this = SimpleNamespace(**common, pad_token_id=0, beta=BETA["simpo"], cpo_alpha=0.0,
                               loss_type="simpo", simpo_gamma=SIMPO_GAMMA, label_smoothing=0.0,
                               alpha=0.0, concatenated_inputs=CPOTrainer.concatenated_inputs,
                               get_batch_logps=CPOTrainer.get_batch_logps)
        (chosen_logps, rejected_logps, chosen_logits, rejected_logits,
         nll_loss) = CPOTrainer.concatenated_forward(this, forward, batch)
        losses, *_ = CPOTrainer.cpo_loss(this, chosen_logps, rejected_logps)
        loss = losses.mean() + 0.0 * nll_loss
    # get_batch_loss_metrics logs the logits' means before the backward
    chosen_logits.detach().mean()
    rejected_logits.detach().mean()
    return loss
