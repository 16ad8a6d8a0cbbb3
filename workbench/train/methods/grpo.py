"""Reinforcement learning with rewards you write: GRPO through TRL's GRPOTrainer.

Each step samples `grpo.num_generations` completions per prompt, scores them with the
profile's reward functions (workbench/rewards/), and pushes the policy towards the completions
that scored above their group's mean. A group whose completions all score the same teaches
nothing: `workbench rewards test` finds that before the GPU hour, and the monitor plots the
share of such groups while training runs.

The prompts are rendered once, here, by the run's chat format (what `workbench data show`
shows); the trainer is handed those token ids (grpo_trainer.py) and never applies a chat
template of its own, so what is inspected is what is sampled from.
"""

from __future__ import annotations

from workbench.train.methods import PreparedData, drop_fresh_reference_copy

def prepare_data(method, profile, tokenizer, fmt, log) -> PreparedData:
    from workbench.data import DataError
    from workbench.data.prompts import (load_prompt_training_data, reference_columns,
                                        render_prompts)
    from workbench.rewards.functions import RewardError, load_rewards
    from workbench.train.plan import RunError

    d, g = profile.data, profile.grpo
    try:
        rewards = load_rewards(profile.rewards)  # a broken reward file fails before the model loads
    except RewardError as exc:
        raise RunError(exc.message, hint=exc.hint, kind="reward") from None
    try:
        data = load_prompt_training_data(profile, log)
    except DataError as exc:
        raise RunError(str(exc), kind="data") from exc
    missing = rewards.missing_columns(set(reference_columns(data.train)))
    if missing:
        have = ", ".join(reference_columns(data.train)) or "none"
        raise RunError(f"{'; '.join(missing)}, and {d.train} has no such column (its reference "
                       f"columns: {have})",
                       hint="set rewards.answer_column (or schema_column / tools_column) to your "
                            "column's name, or map it with data.columns", kind="data")
    train_rows, too_long = render_prompts(tokenizer, fmt, data.train, g.max_prompt_len)
    eval_rows, _ = render_prompts(tokenizer, fmt, data.validation, g.max_prompt_len)
    notes: list[str] = []
    for what, rows in (("skipped", data.skipped), ("dropped", data.dropped)):
        if rows:
            shown = "; ".join(f"{f}:{r}: {why}" for f, r, why in rows[:5])
            notes.append(f"data: {what} {len(rows)} rows: {shown}{' ...' if len(rows) > 5 else ''}")
    if too_long:
        shown = ", ".join(too_long[:5])
        notes.append(f"data: dropped {len(too_long)} prompts longer than grpo.max_prompt_len = "
                     f"{g.max_prompt_len} tokens ({shown}{' ...' if len(too_long) > 5 else ''})")
    if not train_rows:
        raise RunError(f"no prompts to train on in {d.train}",
                       hint=f"run `workbench data inspect {d.train}` to see why", kind="data")
    lengths = sorted(len(r["prompt_ids"]) for r in train_rows)
    columns = ", ".join(reference_columns(data.train)) or "none"
    notes.append(f"data: {len(train_rows)} training prompts, {len(eval_rows)} held out; prompts "
                 f"{lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}); "
                 f"reference columns: {columns}")
    notes.append(f"rewards: {', '.join(f'{n} x{w:g}' for n, w in zip(rewards.names, rewards.weights))}"
                 f"; {g.num_generations} completions a prompt, up to {g.max_completion_len} tokens, "
                 f"sampled by {'vLLM (colocated)' if g.generation == 'vllm' else 'transformers generate'}"
                 f"; {'KL to the start, beta ' + format(g.beta, 'g') if g.beta else 'no KL term (beta 0)'}")
    return PreparedData(train_rows, eval_rows, data.dataset_hash, None, notes,
                        held_out=len(data.validation))


def build_trainer(method, model, plan, run, callbacks):
    from trl import GRPOConfig

    from workbench.rewards.functions import load_rewards
    from workbench.train.arguments import training_arguments
    from workbench.train.methods.grpo_trainer import (WorkbenchGRPOTrainer, to_dataset,
                                                      trl_reward_functions)
    from workbench.train.plan import RunError

    g = plan.profile.grpo
    vllm = g.generation == "vllm"
    if vllm:
        _check_vllm()
    rewards = load_rewards(plan.profile.rewards)
    args = GRPOConfig(
        **training_arguments(plan, run), num_generations=g.num_generations,
        max_completion_length=g.max_completion_len, temperature=g.temperature, top_p=g.top_p,
        beta=g.beta, loss_type=g.loss, reward_weights=rewards.weights, scale_rewards=g.scale_rewards,
        mask_truncated_completions=g.mask_truncated, use_vllm=vllm, vllm_mode="colocate",
        log_completions=False, remove_unused_columns=False)
    try:
        trainer = WorkbenchGRPOTrainer(
            model=model, reward_funcs=trl_reward_functions(rewards), args=args, run=run,
            train_dataset=to_dataset(plan.train_rows),
            eval_dataset=to_dataset(plan.eval_rows) if plan.evaluates else None,
            processing_class=plan.tokenizer, callbacks=callbacks)
    except ValueError as exc:  # trl's own checks of the batch shape
        raise RunError(f"TRL's GRPOTrainer refused the settings: {exc}",
                       hint="train.batch_size * train.grad_accum must be a multiple of "
                            "grpo.num_generations") from None
    return drop_fresh_reference_copy(trainer, plan)


def _check_vllm() -> None:
    from importlib.util import find_spec

    from workbench.train.plan import RunError

    if find_spec("vllm") is None:
        raise RunError('grpo.generation = "vllm" but vLLM is not installed in this environment',
                       hint='pip install vllm (on a CUDA machine), or use generation = '
                            '"transformers"')
