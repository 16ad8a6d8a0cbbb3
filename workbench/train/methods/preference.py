"""Preference tuning: DPO, ORPO, KTO and SimPO (TRL's CPO with its SimPO loss).

The data room renders each pair once (workbench/data/preference_render.py): the prompt's
tokens and each answer's tokens, exactly the tokens shown by `workbench data show` and
trained on. The trainers are handed those token ids and never re-apply a chat template
(preference_trainers.py), so what is inspected is what is trained.

Held-out rows keep their pairs (a KTO run on paired data trains on the pairs split into one
desirable and one undesirable answer, and is still evaluated on the pairs), and a split keeps
every pair of one prompt on one side, so no prompt is both trained on and evaluated.
"""

from __future__ import annotations

from workbench.train.methods import PreparedData, drop_fresh_reference_copy

# beta = "auto": each method's usual value (TRL's defaults; SimPO's paper uses 2.0-2.5).
DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1, "simpo": 2.0}
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
UNPAIRED_COLUMNS = ("prompt_ids", "completion_ids", "label")


def beta(profile) -> float:
    b = profile.preference.beta
    return DEFAULT_BETA[profile.train.method] if b == "auto" else float(b)


def prepare_data(method, profile, tokenizer, fmt, log) -> PreparedData:
    from workbench.data import DataError
    from workbench.data.preference_render import render_preference_dataset
    from workbench.data.preference_training import load_preference_training_data
    from workbench.train.plan import RunError

    d, t = profile.data, profile.train
    if method.name == "kto" and t.batch_size < 2:
        raise RunError("KTO needs train.batch_size >= 2: its KL term compares each answer with "
                       "another prompt's answer in the same batch",
                       hint="set train.batch_size = 2 or more (lower train.grad_accum to keep "
                            "the effective batch)")
    try:
        data = load_preference_training_data(profile, log)
        if data.kind == "unpaired" and method.name != "kto":
            raise RunError(f"{d.train} holds single answers labelled desirable or not, and "
                           f"{method.title} trains on pairs (a chosen and a rejected answer "
                           "to one prompt)",
                           hint='use train.method = "kto", which trains on such data', kind="data")
        train_rows, stats = render_preference_dataset(tokenizer, data.train, t.max_seq_len, fmt)
        eval_rows, eval_stats = render_preference_dataset(tokenizer, data.validation,
                                                          t.max_seq_len, fmt)
    except DataError as exc:
        raise RunError(str(exc), kind="data") from exc
    notes: list[str] = []
    if data.skipped:
        shown = "; ".join(f"{f}:{r}: {why}" for f, r, why in data.skipped[:5])
        notes.append(f"data: skipped {len(data.skipped)} bad rows (data.on_bad_rows = \"skip\"): "
                     f"{shown}{' ...' if len(data.skipped) > 5 else ''}")
    if data.dropped:
        notes.append(_describe_dropped(data.dropped))
    if not train_rows:
        raise RunError(f"no trainable {'rows' if data.kind == 'unpaired' else 'pairs'} in "
                       f"{d.train} after checking and rendering",
                       hint=f"run `workbench data inspect {d.train}` to see why", kind="data")
    unit = "answers" if method.name == "kto" else "pairs"
    notes.append(f"data: {len(train_rows)} training {unit}, {len(eval_rows)} held-out "
                 f"{'pairs' if data.kind == 'paired' else 'answers'}; {stats.describe()}")
    if eval_stats.dropped:
        notes.append(f"held-out: {eval_stats.describe()}")
    if method.name == "kto" and data.kind == "paired":
        notes.append("KTO on pairs: each pair trains as one desirable (chosen) and one "
                     "undesirable (rejected) answer")
    return PreparedData(train_rows, eval_rows, data.dataset_hash, data.manifest_hash, notes,
                        held_out=len(data.validation))


def _describe_dropped(dropped: list[tuple]) -> str:
    from collections import Counter

    whys = Counter(why for _, _, why in dropped)
    from workbench.data.readers import row_label

    shown = ", ".join(row_label(f, r) for f, r, _ in dropped[:5])
    return (f"data: dropped {len(dropped)} rows before training: "
            + "; ".join(f"{why} ({n})" for why, n in whys.most_common())
            + f" ({shown}{' ...' if len(dropped) > 5 else ''}); "
              "`workbench data inspect` lists them all")


def build_trainer(method, model, plan, run, callbacks):
    from datasets import Dataset

    from workbench.train.arguments import training_arguments
    from workbench.train.methods import preference_trainers as pt
    from workbench.train.trainer import with_run_dir

    p, t = plan.profile.preference, plan.profile.train
    common = dict(training_arguments(plan, run), max_length=t.max_seq_len, beta=beta(plan.profile))
    columns = UNPAIRED_COLUMNS if method.name == "kto" else PAIR_COLUMNS

    def dataset(rows):
        if method.name == "kto" and rows and "chosen_ids" in rows[0]:
            # Paired held-out rows (KTO trained on pairs): evaluated as their two answers.
            import random

            rows = [{"prompt_ids": r["prompt_ids"], "completion_ids": r[f"{side}_ids"],
                     "label": side == "chosen"} for r in rows for side in ("chosen", "rejected")]
            random.Random(t.seed).shuffle(rows)  # the KL term pairs neighbours: not one prompt's
        return Dataset.from_list([{c: r[c] for c in columns} for r in rows])

    if method.name == "dpo":
        from trl import DPOConfig

        args = DPOConfig(**common, loss_type=[p.loss], label_smoothing=p.label_smoothing,
                         precompute_ref_log_probs=p.precompute_ref, dataset_num_proc=None)
        trainer_class = pt.PretokenizedDPOTrainer
    elif method.name == "kto":
        from trl import KTOConfig

        args = KTOConfig(**common, desirable_weight=p.desirable_weight,
                         undesirable_weight=p.undesirable_weight,
                         precompute_ref_log_probs=p.precompute_ref, dataset_num_proc=None)
        trainer_class = pt.PretokenizedKTOTrainer
    elif method.name == "orpo":
        args = pt.orpo_config(**common)
        trainer_class = pt.PretokenizedORPOTrainer
    elif method.name == "simpo":
        args = pt.cpo_config(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=p.gamma)
        trainer_class = pt.PretokenizedCPOTrainer
    else:
        raise ValueError(f"not a preference method: {method.name}")
    trainer = with_run_dir(trainer_class)(
        model=model, args=args, run=run, train_dataset=dataset(plan.train_rows),
        eval_dataset=dataset(plan.eval_rows) if plan.evaluates else None,
        processing_class=plan.tokenizer, callbacks=callbacks)
    return drop_fresh_reference_copy(trainer, plan)
