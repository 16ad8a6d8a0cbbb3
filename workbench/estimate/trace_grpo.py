"""GRPO's training step, as the tracer runs it under FakeTensorMode (workbench/estimate/trace.py):
trl 1.16's GRPOTrainer with a peft model and transformers generation, the step the workbench's
GRPO method takes (workbench/train/methods/grpo.py: the peft model handed to the trainer, no
separate reference model, GRPOConfig's default `disable_dropout=False` (LoRA's dropout runs,
in generation too: the trainer keeps the model in training mode), `steps_per_generation` =
`grad_accum`, `num_iterations` = 1).

One optimizer step, in TRL's order (grpo_trainer.py `_prepare_inputs`,
`_generate_and_score_completions`, `_compute_loss`), with TRL's and transformers' own code
where it runs on fake tensors:

1. Generation, at the step's first micro-batch, for the whole generation batch: N = batch x
   grad_accum rows (num_generations completions of N / num_generations prompts), each of
   `max_prompt_len` prompt tokens, `max_completion_len` new tokens. transformers' own
   `generate` (sampling, DynamicCache) on the peft model with TRL's generation config
   (`generation_config`), under `torch.no_grad()`, gradient checkpointing switched off (trl's
   `unwrap_model_for_generation`), and without autocast: peft's `generate` reaches the
   transformers model's own forward, not the forward accelerate wrapped in autocast, so the
   activations and the KV cache take the weights' dtype. What fake tensors cannot answer is
   answered as for full rows (`grpo_patches`, `scalar`): the stop check reads the length, not
   the data (`StopCheck`: every completion runs to max_completion_len, the worst case), the
   padding mask is all ones (`fast_all`, and every `.all()` generate reads is True, every
   `.any()` False: no prompt is padded, so transformers drops the mask).
2. The reference log-probabilities, when beta > 0: TRL's own
   `_get_per_token_logps_and_entropies`, under `torch.no_grad()`, checkpointing off,
   `use_adapter(model, None)` (the adapter disabled), in chunks of `batch` rows.
3. Each micro-batch of `batch` rows: the same function with grad and entropies, then the
   loss's tensor work (`GrpoStep.loss`, a copy of `_compute_loss` for the dapo / grpo / bnpo /
   dr_grpo / cispo / sapo losses without its metrics, whose `.item()` calls fake tensors cannot
   answer), the backward; then the gradient clipping and the optimizer step.

Not traced: colocated vLLM (its generation runs outside torch's view here) and QLoRA (the
bf16 twin the SFT trace stands in with generates in bf16 where QLoRA's cache is fp32); those
keep the analytic estimate (trace.py `check_traceable`).

The fused LM head (trl/trainer/utils.py `add_fused_lm_head`, which TRL's GRPOTrainer adds to
the base model) runs as on a CUDA machine with Triton: only the scored positions (the
completion's) are gathered (`hidden_states[mask]`) and projected tile by tile. That gather and
its backward have data-dependent shapes; with every completion token valid the mask is the last
`max_completion_len` positions of each row, and `fixed_mask_ops` answers those ops with that
slice (a copy, as the gather is) and no data.
"""

from __future__ import annotations

from types import SimpleNamespace

GRPO_OUTPUTS = ("log_probs", "entropy")  # grpo_trainer.py: add_fused_lm_head(..., outputs=...)
EPSILON = 0.2                            # GRPOConfig.epsilon (low and high)


def grpo_patches(torch, settings) -> list[tuple]:
    """The data-dependent reads of transformers' generation, answered without data."""
    import transformers.generation.utils as gen_utils
    import transformers.masking_utils as masking_utils
    import trl.trainer.utils as trl_utils

    max_length = settings.max_prompt_len + settings.max_completion_len

    def stop(self, unfinished_sequences, tokens, length):
        return length >= max_length  # no completion ends early: all run to max_completion_len

    return [(gen_utils.StopCheck, "__call__", stop),
            (masking_utils, "fast_all", lambda tensor: True),
            # the fused head's compact path, as with Triton on CUDA: the scored positions gathered
            (trl_utils, "_use_triton", lambda device: True)]


def fixed_mask_ops(func, args, kwargs, keep: int, torch):
    """The gather of the scored positions (`hidden_states[mask]`, `labels[mask]`), its backward
    (`index_put_` into zeros) and `masked_select`: with the mask known to be the last `keep`
    positions of each row, their results without reading the mask. None: not such an op."""
    aten = torch.ops.aten
    if func is aten.index.Tensor:
        src, indices = args[0], args[1]
        if (len(indices) == 1 and indices[0] is not None and indices[0].dtype == torch.bool
                and tuple(indices[0].shape) == tuple(src.shape[:2])):
            sel = src[:, -keep:]
            return sel.reshape((-1, *src.shape[2:])).clone()  # a gather writes a new tensor
    if func in (aten.index_put_.default, aten._index_put_impl_.default):
        indices = args[1]
        if len(indices) == 1 and indices[0] is not None and indices[0].dtype == torch.bool:
            return args[0]  # in place
    if func is aten.masked_select.default:
        src, mask = args[0], args[1]
        if mask.dtype == torch.bool and src.dim() >= 2 and tuple(mask.shape) == tuple(src.shape):
            return src[:, -keep:].reshape(-1).clone()
    return None


def scalar(tensor, true_scalars: set) -> bool:
    """A value `generate` reads from the data (`.item()`, `bool()`), which fake tensors do not
    hold, answered as for full rows: every `.all()` is True (the attention mask is all ones, so
    transformers drops it), every `.any()` False (no right padding, no negative token id)."""
    import torch

    if tensor.dtype != torch.bool:
        raise RuntimeError(f"generate read a {tensor.dtype} value from the data; the GRPO trace "
                           "answers only boolean reads")
    return id(tensor) in true_scalars


def generation_config(settings, config: dict):
    """TRL's generation config for transformers generation (grpo_trainer.py:1155): sampling at
    the profile's temperature, no top-k (TRL's top_k = 0), the workbench's top_p (1.0)."""
    from transformers import GenerationConfig

    eos = config.get("eos_token_id")
    eos = eos if isinstance(eos, list) else [eos if eos is not None else 2]
    return GenerationConfig(max_new_tokens=settings.max_completion_len, do_sample=True,
                            pad_token_id=config.get("pad_token_id") or 0,
                            bos_token_id=config.get("bos_token_id"), eos_token_id=eos,
                            temperature=settings.grpo_temperature, top_p=1.0, top_k=0, min_p=None,
                            repetition_penalty=1.0, cache_implementation=None,
                            disable_compile=True)


class GrpoStep:
    """The GRPO step's pieces, on the peft model the tracer built."""

    def __init__(self, config: dict, settings, state, dtype, autocast: bool):
        import torch

        self.torch = torch
        self.s = settings
        self.state = state
        self.config = config
        self.vocab = config["vocab_size"]
        self.dtype = dtype
        self.autocast = autocast
        self.rows = settings.batch * settings.grad_accum  # the generation batch
        self.buffered = None

    def add_fused_head(self, model) -> None:
        """On the base model, before peft (grpo_trainer.py:1068)."""
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, temperature=self.s.grpo_temperature, outputs=GRPO_OUTPUTS)

    def _trainer(self):
        torch = self.torch
        return SimpleNamespace(accelerator=SimpleNamespace(
            autocast=lambda: torch.autocast("cpu", dtype=self.dtype, enabled=self.autocast)))

    def _logps(self, model, ids, compute_entropy: bool):
        from trl import GRPOTrainer

        fn = GRPOTrainer._get_per_token_logps_and_entropies
        fn = getattr(fn, "__wrapped__", fn)  # without the profiling decorator
        mask = self.torch.ones(ids.shape, dtype=self.torch.long)
        return fn(self._trainer(), model, ids, mask, self.s.max_completion_len,
                  batch_size=self.s.batch, compute_entropy=compute_entropy)

    def generate_and_score(self, model, phase: str) -> None:
        """`_generate_and_score_completions` for the generation batch: the completions, then
        the reference log-probabilities (beta > 0); kept for the step's micro-batches."""
        import torch
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        s, state = self.s, self.state
        prompts = torch.randint(0, self.vocab, (self.rows, s.max_prompt_len))
        ckpt = {"use_reentrant": False} if s.grad_ckpt else None
        state["phase"] = phase + ".generate"
        state["scalars"] = set()
        try:
            with torch.no_grad(), disable_gradient_checkpointing(model, ckpt):
                ids = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                                     generation_config=generation_config(s, self.config))
        finally:
            state["scalars"] = None
        del prompts
        ref = None
        if s.beta > 0:
            state["phase"] = phase + ".reference"
            with torch.no_grad(), disable_gradient_checkpointing(model, ckpt), \
                    use_adapter(model, adapter_name=None):
                ref, _, _ = self._logps(model, ids, compute_entropy=False)
        state["phase"] = phase
        advantages = torch.zeros((self.rows,), dtype=torch.float32)
        self.buffered = {"ids": ids, "ref": ref, "advantages": advantages}

    def micro_batch(self, micro: int) -> dict:
        b = self.s.batch
        start = micro * b
        return {k: (None if v is None else v[start:start + b]) for k, v in self.buffered.items()}

    def loss(self, model, micro: int):
        """`_compute_loss` (grpo_trainer.py:3020) for a micro-batch, token-level importance
        sampling, the profile's loss type; its metrics left out."""
        torch = self.torch
        s = self.s
        inputs = self.micro_batch(micro)
        logps, entropies, _ = self._logps(model, inputs["ids"], compute_entropy=True)
        mask = torch.ones(logps.shape, dtype=torch.long)
        advantages = inputs["advantages"].unsqueeze(1)
        old = logps.detach()
        log_ratio = logps - old
        coef_1 = torch.exp(log_ratio)
        if s.beta > 0:
            ref = inputs["ref"]
            per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
        if s.grpo_loss == "cispo":
            clamped = torch.clamp(coef_1, max=EPSILON).detach()
            per_token_loss = -clamped * advantages * logps
        elif s.grpo_loss == "sapo":
            per_token_loss = -(torch.sigmoid(1.0 * (coef_1 - 1)) * 4 / 1.0) * advantages
        else:
            coef_2 = torch.clamp(coef_1, 1 - EPSILON, 1 + EPSILON)
            per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
        if s.beta > 0:
            per_token_loss = per_token_loss + s.beta * per_token_kl
        if s.grpo_loss in ("grpo", "sapo"):
            loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
            loss = loss / s.grad_accum
        elif s.grpo_loss == "dr_grpo":
            loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * s.max_completion_len)
            loss = loss / s.grad_accum
        else:  # dapo, bnpo, cispo: a token-count normalizer
            loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
        # the entropy metric reads the entropies before the backward (global_masked_mean)
        (entropies * mask).sum()
        return loss

    def end_step(self) -> None:
        self.buffered = None

