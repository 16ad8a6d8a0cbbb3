"""Supervised fine-tuning: conversations rendered through the chat template, the loss on
the answers' tokens (data.train_on), trl's SFTTrainer."""

from __future__ import annotations

from workbench.train.methods import PreparedData


def prepare_data(method, profile, tokenizer, fmt, log) -> PreparedData:
    from workbench.data import DataError
    from workbench.data.render import render_dataset
    from workbench.train.plan import RunError, load_training_data

    d, t = profile.data, profile.train
    try:
        data = load_training_data(profile, log)
        train_rows, stats = render_dataset(tokenizer, data.train, d.train_on, t.max_seq_len, fmt=fmt)
        eval_rows, _ = render_dataset(tokenizer, data.validation, d.train_on, t.max_seq_len, fmt=fmt)
    except DataError as exc:
        raise RunError(str(exc), kind="data") from exc
    if not train_rows:
        raise RunError(f"no trainable rows in {d.train} after rendering",
                       hint="run `workbench data inspect` on it", kind="data")
    notes = data.notes + [_describe_render(stats, len(train_rows), len(eval_rows), t.max_seq_len)]
    return PreparedData(train_rows, eval_rows, data.dataset_hash, data.manifest_hash, notes,
                        held_out=len(data.validation))


def build_trainer(method, model, plan, run, callbacks):
    from trl import SFTConfig, SFTTrainer

    from workbench.train.arguments import training_arguments
    from workbench.train.trainer import with_run_dir

    t = plan.profile.train
    args = SFTConfig(**training_arguments(plan, run), max_length=t.max_seq_len, packing=t.packing,
                     dataset_num_proc=None)
    return with_run_dir(SFTTrainer)(
        model=model, args=args, run=run, train_dataset=to_dataset(plan.train_rows),
        eval_dataset=to_dataset(plan.eval_rows) if plan.evaluates else None,
        processing_class=plan.tokenizer, callbacks=callbacks)


def to_dataset(rows: list[dict]):
    """Rows carry the exact tokens and mask from the renderer; labels are built here so
    the trainer never re-renders or re-masks (what you inspect is what you train)."""
    from datasets import Dataset

    return Dataset.from_list([
        {"input_ids": r["input_ids"],
         "labels": [tok if m else -100 for tok, m in zip(r["input_ids"], r["assistant_masks"])]}
        for r in rows
    ])


def _describe_render(stats, n_train: int, n_eval: int, max_len: int) -> str:
    parts = [f"data: {n_train} training rows, {n_eval} validation rows, "
             f"{stats.trained_tokens} of {stats.total_tokens} training tokens trained on"]
    if stats.rows_in != stats.rows_out:
        parts.append(f"{stats.rows_in} training conversations in, {stats.rows_out} rows out")
    for sentence in (stats.describe_expansion(), stats.describe_reasoning()):
        if sentence:
            parts.append(sentence)
    if stats.truncated_rows:
        parts.append(f"{stats.truncated_rows} rows cut at max_seq_len {max_len} "
                     f"({stats.answer_tokens_lost} answer tokens lost)")
    if stats.dropped:
        shown = ", ".join(f"{f}:{r}" for f, r, _ in stats.dropped[:5])
        parts.append(f"{len(stats.dropped)} rows dropped with nothing left to train on ({shown})")
    return "; ".join(parts)
