"""The Hugging Face TrainingArguments every method shares, from a plan. A method's config
class (SFTConfig, DPOConfig, KTOConfig...) takes these plus its own fields."""

from __future__ import annotations

from workbench.rundir import RunDir


def training_arguments(plan, run: RunDir) -> dict:
    from workbench.train.ranks import trainer_settings

    t = plan.profile.train
    kernels = plan.kernel_choice()  # Liger, fused AdamW (train/kernels.py)
    evaluates = plan.evaluates
    early = bool(t.early_stopping_patience and evaluates)
    return dict(
        output_dir=str(run.checkpoints_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=kernels.optimizer,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        gradient_checkpointing=plan.gradient_checkpointing and plan.profile.lora.method != "qlora",
        gradient_checkpointing_kwargs={"use_reentrant": False},
        neftune_noise_alpha=t.neftune_alpha or None,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN must be seen, not averaged away
        eval_strategy="steps" if evaluates else "no",
        eval_steps=t.eval_steps if evaluates else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        report_to=list(t.report_to) or "none",
        disable_tqdm=True,  # our own progress display reads the events instead
        dataloader_num_workers=0,
        **kernels.training_args,  # use_liger_kernel + liger_kernel_config; {} otherwise
        **trainer_settings(plan),  # DDP / FSDP2 / DeepSpeed under torchrun; {} otherwise
    )
