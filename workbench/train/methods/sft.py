"""Supervised fine-tuning: conversations rendered through the chat template, the loss on
the answers' tokens (data.train_on), trl's SFTTrainer."""

from __future__ import annotations

from workbench.train.methods import PreparedData


def prepare_data(method, profile, tokenizer, fmt, log) -> PreparedData:
    from workbench.data import DataError
    from workbench.data.raw_text import is_text_data
    from workbench.data.render import render_dataset
    from workbench.train.plan import RunError, load_training_data

    if is_text_data(profile):
        return prepare_text(profile, tokenizer, log)
    d, t = profile.data, profile.train
    try:
        data = load_training_data(profile, log)
        train_rows, stats = render_dataset(tokenizer, data.train, d.train_on, t.max_seq_len, fmt=fmt)
        eval_rows, _ = render_dataset(tokenizer, data.validation, d.train_on, t.max_seq_len, fmt=fmt)
    except DataError as exc:
        raise RunError(str(exc), kind="data") from exc
    if not train_rows:
        where = d.train or "the mixture of [[data.sources]]"
        raise RunError(f"no trainable rows in {where} after rendering",
                       hint="run `workbench data inspect` on it (a mixture: `workbench data "
                            "inspect --profile PROFILE`)", kind="data")
    notes = data.notes + [_describe_render(stats, len(train_rows), len(eval_rows), t.max_seq_len)]
    return PreparedData(train_rows, eval_rows, data.dataset_hash, data.manifest_hash, notes,
                        held_out=len(data.validation), sources=data.sources)


def prepare_text(profile, tokenizer, log) -> PreparedData:
    """Raw text (continued pretraining, data/raw_text.py): documents split off for held-out
    text first (data.validation_split, by document), then tokenized without the chat template,
    joined with the end-of-text token and cut into train.max_seq_len blocks, every token
    trained. The rows are the renderer's shape (all-ones masks), so packing, the collators and
    the tokenized-data cache treat them like any other."""
    from workbench.data import DataError
    from workbench.data.raw_text import prepare_text as blocks_of
    from workbench.train.plan import RunError, load_training_data

    d, t = profile.data, profile.train
    try:
        data = load_training_data(profile, log)
        text = blocks_of(data.train, data.validation, tokenizer, t.max_seq_len)
    except DataError as exc:
        raise RunError(str(exc), kind="data") from exc
    if not text.train.blocks:
        raise RunError(f"the training text of {d.train} ({text.train.joined} tokens with the "
                       f"end-of-text tokens) is shorter than one block of train.max_seq_len = "
                       f"{t.max_seq_len} tokens", hint="lower train.max_seq_len, or add text",
                       kind="data")
    log(f"raw text: documents joined with {text.eos_text!r} (token {text.eos}, the model's "
        f"end-of-text token), cut into blocks of {t.max_seq_len} tokens")
    return PreparedData(text.train.rows(), text.held_out.rows(), data.dataset_hash,
                        data.manifest_hash, data.notes + [text.describe()],
                        held_out=text.held_out.documents)


def build_trainer(method, model, plan, run, callbacks):
    from trl import SFTConfig, SFTTrainer

    from workbench.train.arguments import training_arguments
    from workbench.train.packing import PackedCollator, packed_rows
    from workbench.train.trainer import with_run_dir

    t = plan.profile.train
    choice = confirm_packing(model, plan, run, callbacks)
    train_rows, eval_rows = with_labels(plan.train_rows), with_labels(plan.eval_rows)
    extra = {}
    if choice.packed:
        train_rows, _ = packed_rows(train_rows, t.max_seq_len)
        eval_rows, _ = packed_rows(eval_rows, t.max_seq_len)
        extra["data_collator"] = PackedCollator(plan.tokenizer.pad_token_id, flat=choice.flat)
    # packing=False: the rows are packed (or not) here; trl's own preparation is skipped,
    # as the rows are already rendered, cut at max_seq_len and labelled (what you inspect is
    # what you train).
    args = SFTConfig(**training_arguments(plan, run), max_length=t.max_seq_len, packing=False,
                     dataset_num_proc=None, dataset_kwargs={"skip_prepare_dataset": True},
                     train_sampling_strategy="group_by_length" if choice.mode == "grouped"
                     else "random")
    return with_run_dir(_counting_packed_tokens(SFTTrainer))(
        model=model, args=args, run=run, train_dataset=to_dataset(train_rows),
        eval_dataset=to_dataset(eval_rows) if plan.evaluates else None,
        processing_class=plan.tokenizer, callbacks=callbacks, **extra)


def _counting_packed_tokens(sft_trainer: type) -> type:
    """trl counts a batch without an attention mask as one sequence (its width); packs side
    by side are batch rows: count their tokens, padding excluded (the monitor's tokens/s)."""
    import torch

    from workbench.train.packing import real_tokens

    class PackedTokensSFTTrainer(sft_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            before = self._total_train_tokens
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            real = real_tokens(inputs) if model.training else None
            if real is not None:  # on every rank alike: the gather below is collective
                local = torch.tensor(real, device=inputs["position_ids"].device)
                self._total_train_tokens = before + int(
                    self.accelerator.gather_for_metrics(local).sum().item())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return result

    return PackedTokensSFTTrainer


def confirm_packing(model, plan, run, callbacks):
    """The plan's packing, proven on the loaded model (train/packing.py check_exact); when the
    proof fails the run trains on batches of similar lengths and says why."""
    from dataclasses import replace

    from workbench.train import ranks
    from workbench.train.packing import check_exact

    choice = plan.packing
    if not choice.packed or ranks.is_distributed():  # every rank would prove the same thing
        return choice
    if plan.device == "cuda" and next(model.parameters()).device.type != "cuda":
        model.to("cuda")  # where the trainer would put it anyway; the proof runs there
    problem = check_exact(model, plan.train_rows, choice.flat, plan.tokenizer.pad_token_id)
    if problem is None:
        return choice
    message = f"packing: off; batches of similar lengths instead, because {problem}"
    event = run.append_event("status", state="running", message=message)
    for callback in callbacks:
        if hasattr(callback, "on_event"):  # the run's recorder: the console and the app
            callback.on_event(event)
    return replace(choice, mode="grouped", why=message)


def with_labels(rows: list[dict]) -> list[dict]:
    """Rows carry the exact tokens and mask from the renderer; labels are built here so the
    trainer never re-renders or re-masks. The first label is always ignored: nothing predicts
    a row's first token, padded or packed (train/packing.py)."""
    return [{"input_ids": r["input_ids"],
             "labels": [-100] + [tok if m else -100
                                 for tok, m in zip(r["input_ids"][1:], r["assistant_masks"][1:])]}
            for r in rows]


def to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


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
        from workbench.data.readers import row_label

        shown = ", ".join(row_label(f, r) for f, r, _ in stats.dropped[:5])
        parts.append(f"{len(stats.dropped)} rows dropped with nothing left to train on ({shown})")
    return "; ".join(parts)
