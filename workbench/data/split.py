"""Split records into train / validation / test without leaking duplicates across the splits.

A validation score means little when validation rows (or near copies of them) are also in train,
so duplicates are assigned as whole groups: exact duplicates always, near duplicates (MinHash,
`near_dup_threshold`) when `group_near_duplicates`. Groups are shuffled with the seed, then placed
largest first into the split furthest below its target size, so sizes land as close to the
fractions as the groups allow and the same seed always gives the same split.

`leakage_report` counts duplicates *across* splits; it checks our own splits (expect zeros) and
splits a person brings (a train file and a separate validation file).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.data.errors import DataError

SPLIT_NAMES = ("train", "validation", "test")


@dataclass
class SplitResult:
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    report: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, list[dict]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def parse_fractions(value: str | Sequence[float]) -> tuple[float, float, float]:
    """"0.8,0.1,0.1" or a sequence of 2-3 numbers -> (train, validation, test), checked."""
    if isinstance(value, str):
        try:
            parts = [float(p) for p in value.replace(" ", "").split(",") if p]
        except ValueError:
            raise DataError(f"split fractions must be numbers, got {value!r}", hint="write them like 0.8,0.1,0.1") from None
    else:
        parts = [float(p) for p in value]
    if len(parts) == 2:
        parts.append(0.0)
    if len(parts) != 3:
        raise DataError(f"expected 2 or 3 split fractions (train, validation[, test]), got {len(parts)}",
                        hint="write them like 0.8,0.1,0.1")
    if any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and add up to 1, got {', '.join(f'{p:g}' for p in parts)}",
                        hint="for example 0.8,0.1,0.1 or 0.9,0.1")
    if parts[0] <= 0:
        raise DataError("the train fraction must be above 0", hint="for example 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


def split_records(
    records: Sequence[dict],
    fractions: str | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    near_dup_threshold: float = 0.85,
    group_near_duplicates: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: Any = None,
) -> SplitResult:
    """Seeded train/validation/test split that keeps duplicate groups on one side.

    Within each split, records keep their input order (diffs of the saved files stay readable;
    the trainer shuffles anyway). `report` holds sizes, requested and actual fractions, group
    counts and the leakage report of the result.
    """
    fractions = parse_fractions(fractions)
    records = list(records)
    groups = duplicate_groups(records, near_dup_threshold if group_near_duplicates else None,
                              progress=progress, cancel=cancel)
    targets = _integer_targets(len(records), fractions)

    rng = random.Random(seed)
    rng.shuffle(groups)
    # Stable sort: equal sizes keep their shuffled order, so the seed still decides who goes where.
    groups.sort(key=len, reverse=True)
    members: list[list[int]] = [[], [], []]
    for group in groups:
        deficits = [targets[i] - len(members[i]) for i in range(3)]
        # Never put anything into a split asked to be empty.
        choices = [i for i in range(3) if fractions[i] > 0]
        best = max(choices, key=lambda i: (deficits[i], -i))
        members[best].extend(group)

    parts = [[records[i] for i in sorted(m)] for m in members]
    result = SplitResult(*parts)
    grouped = [g for g in groups if len(g) > 1]
    result.report = {
        "seed": seed,
        "fractions": list(fractions),
        "sizes": {name: len(p) for name, p in zip(SPLIT_NAMES, parts)},
        "actual_fractions": {name: round(len(p) / len(records), 4) if records else 0.0
                             for name, p in zip(SPLIT_NAMES, parts)},
        "near_dup_threshold": near_dup_threshold if group_near_duplicates else None,
        "duplicate_groups": len(grouped),
        "rows_in_duplicate_groups": sum(len(g) for g in grouped),
        "largest_group": max((len(g) for g in groups), default=0),
        "leakage": leakage_report(result.as_dict(), near_dup_threshold),
    }
    return result


def duplicate_groups(records: Sequence[dict], near_dup_threshold: float | None,
                     progress=None, cancel=None) -> list[list[int]]:
    """Every record index in exactly one group: exact duplicates joined, and near duplicates
    too when a threshold is given (union-find, so a chain of near copies is one group)."""
    from workbench.data import dedup

    texts = [dedup.record_text(r) for r in records]
    parent = list(range(len(texts)))
    # Near duplicates ignore system messages, as dedup advises: a long shared system prompt
    # would otherwise make short, different conversations look alike.
    near_texts = [dedup.record_text(r, include_system=False) for r in records]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    found = list(dedup.exact_duplicate_groups(texts))
    if near_dup_threshold is not None and len(texts) > 1:
        found += dedup.near_duplicate_groups(near_texts, threshold=near_dup_threshold,
                                             progress=progress, cancel=cancel)
    for group in found:
        root = find(group[0])
        for index in group[1:]:
            other = find(index)
            if other != root:
                parent[other] = root
    by_root: dict[int, list[int]] = {}
    for i in range(len(texts)):
        by_root.setdefault(find(i), []).append(i)
    return list(by_root.values())


def leakage_report(splits: dict[str, Sequence[dict]], near_dup_threshold: float | None = 0.85) -> dict[str, Any]:
    """Duplicates shared *between* splits (duplicates inside one split are not leakage).

    exact: conversations with identical text. near: pairs in one near-duplicate group (threshold)
    whose texts differ, so a pair is never counted twice. `examples` counts, per split, the rows
    that have a copy (exact or near) in some other split; `pairs_by_splits` breaks pairs down by
    split pair ("train/validation"). `clean` is True when nothing leaks.
    """
    from workbench.data import dedup

    names = [n for n in splits]
    owner: list[str] = []
    texts: list[str] = []
    near_texts: list[str] = []
    for name in names:
        for record in splits[name]:
            owner.append(name)
            texts.append(dedup.record_text(record))
            near_texts.append(dedup.record_text(record, include_system=False))
    # "Same text" means what dedup means by it (case and spacing ignored).
    keys = [dedup.exact_key(t) for t in texts]

    exact_pairs: Counter[str] = Counter()
    near_pairs: Counter[str] = Counter()
    leaking: set[int] = set()

    exact_groups = dedup.exact_duplicate_groups(texts)
    for group in exact_groups:
        pairs = _cross_pairs(Counter(owner[i] for i in group), names)
        if pairs:
            exact_pairs.update(pairs)
            leaking.update(i for i in group if len({owner[j] for j in group}) > 1)

    if near_dup_threshold is not None and len(texts) > 1:
        for group in dedup.near_duplicate_groups(near_texts, threshold=near_dup_threshold):
            if len({owner[i] for i in group}) < 2:
                continue
            # Cross-split pairs in the group minus those that are exact copies (counted above).
            all_pairs = _cross_pairs(Counter(owner[i] for i in group), names)
            by_text: dict[bytes, list[int]] = {}
            for i in group:
                by_text.setdefault(keys[i], []).append(i)
            for same in by_text.values():
                all_pairs.subtract(_cross_pairs(Counter(owner[i] for i in same), names))
            near_pairs.update({k: v for k, v in all_pairs.items() if v > 0})
            # A row leaks if some member of its group from another split has a different text,
            # or it is an exact cross-split copy (already added above).
            # Counted, not compared pairwise, so a huge group stays linear: members from another
            # split with another text = all - same split - same text + same split and text.
            same_owner = Counter(owner[i] for i in group)
            same_key = Counter(keys[i] for i in group)
            same_both = Counter((owner[i], keys[i]) for i in group)
            for i in group:
                if len(group) - same_owner[owner[i]] - same_key[keys[i]] + same_both[(owner[i], keys[i])]:
                    leaking.add(i)

    examples = {name: 0 for name in names}
    for i in leaking:
        examples[owner[i]] += 1
    exact_total, near_total = sum(exact_pairs.values()), sum(near_pairs.values())
    return {
        "near_dup_threshold": near_dup_threshold,
        "sizes": {name: len(splits[name]) for name in names},
        "exact_pairs": exact_total,
        "near_pairs": near_total,
        "examples": examples,
        "examples_total": len(leaking),
        "pairs_by_splits": {key: {"exact": exact_pairs.get(key, 0), "near": near_pairs.get(key, 0)}
                            for key in sorted(set(exact_pairs) | set(near_pairs))},
        "clean": exact_total == 0 and near_total == 0,
    }


def format_leakage(report: dict[str, Any]) -> str:
    if report["clean"]:
        threshold = report.get("near_dup_threshold")
        near = f" or near (>= {threshold})" if threshold is not None else ""
        return f"leakage: none (no exact{near} duplicates shared between splits)"
    lines = [f"leakage: {report['exact_pairs']} exact and {report['near_pairs']} near duplicate pairs "
             f"shared between splits; {report['examples_total']} rows involved"]
    for key, counts in report["pairs_by_splits"].items():
        lines.append(f"  {key:<22} exact {counts['exact']:>6}  near {counts['near']:>6}")
    for name, count in report["examples"].items():
        if count:
            lines.append(f"  {name}: {count} rows have a copy in another split")
    return "\n".join(lines)


def _cross_pairs(per_split: Counter, names: list[str]) -> Counter:
    """Pairs in a group whose two members sit in different splits, keyed "a/b" in `names` order."""
    pairs: Counter[str] = Counter()
    present = [n for n in names if per_split.get(n)]
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            pairs[f"{a}/{b}"] += per_split[a] * per_split[b]
    return pairs


def _integer_targets(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Largest-remainder rounding: the targets add up to n exactly."""
    raw = [n * f for f in fractions]
    targets = [int(x) for x in raw]
    order = sorted(range(3), key=lambda i: raw[i] - targets[i], reverse=True)
    for i in order[: n - sum(targets)]:
        targets[i] += 1
    return targets
