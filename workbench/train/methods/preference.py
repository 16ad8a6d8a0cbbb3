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

from pathlib import Path

from workbench.train.methods import PreparedData

# beta = "auto": each method's usual value (TRL's defaults; SimPO's paper uses 2.0-2.5).
DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1, "simpo": 2.0}
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
UNPAIRED_COLUMNS = ("prompt_ids", "completion_ids", "label")


def beta(profile) -> float:
    b = profile.preference.beta
    return DEFAULT_BETA[profile.train.method] if b == "auto" else float(b)


def prepare_data(method, profile, tokenizer, fmt, log) -> PreparedData:
    from workbench.data import DataError, LoadReport, dataset_hash
    from workbench.data.preference import load_preference_records, records_kind
    from workbench.data.preference_checks import check_pairs, split_preference_records
    from workbench.data.preference_render import render_preference_dataset
    from workbench.data.save import is_saved_dataset, manifest_hash
    from workbench.train.plan import RunError

    d, t = profile.data, profile.train
    if method.name == "kto" and t.batch_size < 2:
        raise RunError("KTO needs train.batch_size >= 2: its KL term compares each answer with "
                       "another prompt's answer in the same batch",
                       hint="set train.batch_size = 2 or more (lower train.grad_accum to keep "
                            "the effective batch)")
    report = LoadReport()
    kw = dict(format=d.format, system_prompt=d.system_prompt, on_bad_line=d.on_bad_rows,
              report=report, columns=d.columns or None, encoding=d.encoding or None)
    notes: list[str] = []
    manifest = None
    try:
        if is_saved_dataset(d.train):
            folder = Path(d.train)
            manifest = manifest_hash(folder)
            train = load_preference_records(folder / "train.jsonl", **kw)
            val_file = Path(d.validation) if d.validation else folder / "validation.jsonl"
            validation = load_preference_records(val_file, **kw) if val_file.exists() else []
            hashed = [folder / "manifest.json"]
        else:
            log(f"loading {d.train}")
            train = load_preference_records(d.train, **kw)
            validation = load_preference_records(d.validation, **kw) if d.validation else None
            hashed = [d.train] + ([d.validation] if d.validation else [])
        kind = records_kind(train)
        if kind == "unpaired" and method.name != "kto":
            raise RunError(f"{d.train} holds single answers labelled desirable or not, and "
                           f"{method.title} trains on pairs (a chosen and a rejected answer "
                           "to one prompt)",
                           hint='use train.method = "kto", which trains on such data', kind="data")
        train, dropped = check_pairs(train)
        if validation is None:
            validation = []
            if d.validation_split > 0 and len(train) > 1:
                # Every pair of one prompt on one side: a prompt is trained on or held out.
                split = split_preference_records(
                    train, fractions=(1 - d.validation_split, d.validation_split, 0.0), seed=t.seed)
                train, validation = split.train, split.validation
        else:
            validation, dropped_val = check_pairs(validation)
            dropped += dropped_val
        train_records = _unpair(train) if method.name == "kto" and kind == "paired" else train
        if method.name == "kto":
            # KTO reads its rows in order (its KL term pairs each answer with the previous
            # row's prompt), so the order is shuffled here, seeded, not by the sampler.
            import random

            train_records = list(train_records)
            random.Random(t.seed).shuffle(train_records)
        train_rows, stats = render_preference_dataset(tokenizer, train_records, t.max_seq_len, fmt)
        eval_rows, eval_stats = render_preference_dataset(tokenizer, validation, t.max_seq_len, fmt)
    except DataError as exc:
        raise RunError(str(exc), kind="data") from exc
    if report.skipped:
        shown = "; ".join(f"{f}:{r}: {why}" for f, r, why in report.skipped[:5])
        notes.append(f"data: skipped {len(report.skipped)} bad rows (data.on_bad_rows = \"skip\"): "
                     f"{shown}{' ...' if len(report.skipped) > 5 else ''}")
    if dropped:
        notes.append(_describe_dropped(dropped))
    if not train_rows:
        raise RunError(f"no trainable {'rows' if kind == 'unpaired' else 'pairs'} in {d.train} "
                       "after checking and rendering",
                       hint=f"run `workbench data inspect {d.train}` to see why", kind="data")
    unit = "answers" if method.name == "kto" else "pairs"
    notes.append(f"data: {len(train_rows)} training {unit}, {len(eval_rows)} held-out "
                 f"{'pairs' if kind == 'paired' else 'answers'}; {stats.describe()}")
    if eval_stats.dropped:
        notes.append(f"held-out: {eval_stats.describe()}")
    if method.name == "kto" and kind == "paired":
        notes.append("KTO on pairs: each pair trains as one desirable (chosen) and one "
                     "undesirable (rejected) answer")
    return PreparedData(train_rows, eval_rows, dataset_hash(hashed), manifest, notes,
                        held_out=len(validation))


def _unpair(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        for side, label in (("chosen", True), ("rejected", False)):
            row = {"prompt": r["prompt"], "completion": r[side], "label": label,
                   "source": r["source"]}
            if r.get("tools"):
                row["tools"] = r["tools"]
            out.append(row)
    return out


def _describe_dropped(dropped: list[tuple]) -> str:
    from collections import Counter

    whys = Counter(why for _, _, why in dropped)
    shown = ", ".join(f"{f}:{r}" for f, r, _ in dropped[:5])
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
    return with_run_dir(trainer_class)(
        model=model, args=args, run=run, train_dataset=dataset(plan.train_rows),
        eval_dataset=dataset(plan.eval_rows) if plan.evaluates else None,
        processing_class=plan.tokenizer, callbacks=callbacks)
