"""The trainer of a streamed run (data.streaming, train/streaming.py): trl's SFTTrainer on an
iterable dataset, for train.max_steps, with the stream's position in every checkpoint.

Kept apart from streaming.py, which the plan and the evaluation import: this one imports the
SFT method and the trainer (the runner calls it, once the model is loaded).
"""

from __future__ import annotations

import os


def build_streaming_trainer(model, plan, run, callbacks):
    """The SFT trainer of methods/sft.py, fed by the stream: packs made on the fly when the
    run packs (proven on the model first, as for loaded rows), no batch skipping on resume
    (the stream starts where the checkpoint says), the position in each checkpoint."""
    from trl import SFTConfig, SFTTrainer

    from workbench.train import ranks
    from workbench.train.arguments import training_arguments
    from workbench.train.methods.sft import (
        _counting_packed_tokens,
        confirm_packing,
        to_dataset,
        with_labels,
    )
    from workbench.train.packing import PackedCollator, packed_rows
    from workbench.train.plan import RunError
    from workbench.train.trainer import with_run_dir

    if ranks.is_distributed():
        raise RunError("data.streaming is not supported in a distributed run yet: every rank "
                       "would read the same rows",
                       hint="set data.streaming = false, or train on one GPU", kind="config")
    t = plan.profile.train
    stream = plan.stream
    choice = confirm_packing(model, plan, run, callbacks)
    stream.packed = choice.packed
    stream.label = with_labels
    # The loader reads a step's micro-batches (and one more) ahead of the step that trains them.
    stream.keep = max(stream.keep, 4 * t.grad_accum * t.batch_size)
    eval_rows = with_labels(plan.eval_rows)
    extra = {}
    if choice.packed:
        eval_rows, _ = packed_rows(eval_rows, t.max_seq_len)
        extra["data_collator"] = PackedCollator(plan.tokenizer.pad_token_id, flat=choice.flat)
    args = SFTConfig(**training_arguments(plan, run), max_length=t.max_seq_len, packing=False,
                     dataset_num_proc=None, dataset_kwargs={"skip_prepare_dataset": True})
    trainer_class = with_run_dir(_recording_position(_counting_packed_tokens(SFTTrainer), stream))
    return trainer_class(model=model, args=args, run=run, train_dataset=stream.dataset(),
                         eval_dataset=to_dataset(eval_rows) if plan.evaluates else None,
                         processing_class=plan.tokenizer, callbacks=callbacks, **extra)


def _recording_position(sft_trainer: type, stream) -> type:
    """Each checkpoint gets the stream's position after the examples its steps consumed: every
    optimizer step takes grad_accum micro-batches of batch_size examples (the stream never
    ends, so none is short). Written inside the staged folder (trainer.py), before its
    manifest, so the manifest covers it."""

    class StreamPositionTrainer(sft_trainer):
        def get_resumed_dataloader(self, dataloader, num_batches):
            # The stream already starts after those batches (StreamingData.resume_from). Not
            # ignore_data_skip: with it the trainer restores the random state before making the
            # loader's iterator, whose seed draw would then shift dropout against the first run.
            return dataloader

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            a = self.args
            consumed = (self.state.global_step * a.gradient_accumulation_steps
                        * a.per_device_train_batch_size)
            folder = os.path.join(a.output_dir, f"checkpoint-{self.state.global_step}")
            stream.save_position(folder, consumed)

    return StreamPositionTrainer
