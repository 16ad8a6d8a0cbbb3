"""The preference records a run trains and holds out, chosen from the profile's data: loaded,
checked (rows that cannot teach are dropped, each named), split with every pair of one prompt
on one side, and for KTO on pairs split into single answers in a seeded order. The training
method (workbench/train/methods/preference.py) renders them; the estimate counts them the same
way, so both see exactly the examples the trainer will."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.data.load import LoadReport, dataset_hash


@dataclass
class PreferenceData:
    train: list[dict]  # what trains: pairs, or single answers for KTO
    validation: list[dict]  # held out, pairs kept whole
    kind: str  # "paired" | "unpaired": what the file holds
    dataset_hash: str
    manifest_hash: str | None = None
    dropped: list[tuple] = field(default_factory=list)  # (file, row, why)
    skipped: list[tuple] = field(default_factory=list)  # bad rows (data.on_bad_rows = "skip")


def load_preference_training_data(profile, log: Callable[[str], None] = lambda s: None,
                                  ) -> PreferenceData:
    """Raises DataError for a file that cannot be read, as the loaders do."""
    from workbench.data.preference import load_preference_records, records_kind
    from workbench.data.preference_checks import check_pairs, split_preference_records
    from workbench.data.save import is_saved_dataset, manifest_hash

    d, t = profile.data, profile.train
    report = LoadReport()
    kw = dict(format=d.format, system_prompt=d.system_prompt, on_bad_line=d.on_bad_rows,
              report=report, columns=d.columns or None, encoding=d.encoding or None)
    manifest = None
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
    train, dropped = check_pairs(train)
    if validation is None:
        validation = []
        if d.validation_split > 0 and len(train) > 1:
            # Every pair of one prompt on one side: a prompt is trained on or held out.
            split = split_preference_records(
                train, fractions=(1 - d.validation_split, d.validation_split, 0.0), seed=t.seed)
            train, validation = split.train, split.validation
    else:
        validation, dropped_validation = check_pairs(validation)
        dropped += dropped_validation
    if t.method == "kto":
        if kind == "paired":
            train = unpair(train)
        # KTO reads its rows in order (its KL term pairs each answer with the previous row's
        # prompt), so the order is shuffled here, seeded, not by the sampler.
        train = list(train)
        random.Random(t.seed).shuffle(train)
    return PreferenceData(train, validation, kind, dataset_hash(hashed), manifest, dropped,
                          list(report.skipped))


def unpair(records: list[dict]) -> list[dict]:
    """Pairs as KTO's single answers: the chosen one desirable, the rejected one not."""
    out = []
    for r in records:
        for side, label in (("chosen", True), ("rejected", False)):
            row = {"prompt": r["prompt"], "completion": r[side], "label": label,
                   "source": r["source"]}
            if r.get("tools"):
                row["tools"] = r["tools"]
            out.append(row)
    return out
