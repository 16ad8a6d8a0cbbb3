"""Several sources mixed into one training set: `[[data.sources]]` (issue 27).

The order of work, and why:

1. Each source is loaded whole, with its own format, columns, system prompt and train_on
   (`load.iter_source` marks a source trained on whole, and the renderer honours the mark).
2. Validation (and test) rows are held out BEFORE mixing, and only from sources with
   `held_out = true`. Exact and near duplicates are grouped across all sources
   (`split.duplicate_groups`) and a group goes to one side whole; a group that touches a
   source with `held_out = false` stays in train. So a row repeated to fill its share never
   sits on both sides, nor does its near copy from another source.
3. Each source's remaining rows are drawn to its count. Without weights every source gives all
   its rows once. With weights, the weighted sources share `data.mix_rows` rows (0 = as many as
   they hold together), in proportion to their weights (normalised), counts rounded by largest
   remainder so the shares match the weights; `rows = N` takes exactly N. A source smaller than
   its count is repeated (whole copies, then a sample), a larger one is sampled without
   replacement; both are said in a note.
4. The drawn rows are shuffled together.

Validation rows are not drawn to the weights: each held-out source gives its share
(`data.validation_split`) of its own rows, so the validation loss is measured on real rows only.

Everything random comes from train.seed (and the source's label): the same profile draws the
same rows, another seed draws others. Pure Python; the tokenizer is not needed here.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.data.errors import DataError
from workbench.data.load import LoadReport, dataset_hash, iter_source
from workbench.data.sources import SourceSpec

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class LoadedSource:
    """One source's records as loaded, and what identifies its data."""

    spec: SourceSpec
    records: list[dict]
    report: LoadReport
    hash: str
    revision_resolved: str = ""  # the Hub commit that was read, when the loader says


@dataclass
class SourceDraw:
    """What one source gave the mixture: the run's record and the manifest say this."""

    spec: SourceSpec
    hash: str
    revision_resolved: str
    rows_loaded: int  # rows the source holds (after bad rows skipped)
    validation: int  # held out for validation
    test: int  # held out for test
    available: int  # rows left for training after holding out
    drawn: int  # rows in the training mixture (repeats counted)
    share_target: float | None  # what its weight or rows asked for, of the training mixture
    share: float = 0.0  # what it is

    @property
    def repeated(self) -> bool:
        return self.drawn > self.available

    def to_dict(self) -> dict[str, Any]:
        """A TOML-safe record (no None values): identity, request, and what it gave."""
        s = self.spec
        out: dict[str, Any] = {"label": s.label}
        out.update({"path": s.path} if s.path else {"name": s.name})
        for key in ("config", "revision"):
            if getattr(s, key):
                out[key] = getattr(s, key)
        if s.is_hub:
            out["split"] = s.split
        if s.data_files:
            out["data_files"] = list(s.data_files)
        if self.revision_resolved:
            out["revision_resolved"] = self.revision_resolved
        out["hash"] = self.hash
        if s.weight is not None:
            out["weight"] = s.weight
        if s.rows is not None:
            out["rows"] = s.rows
        if s.train_on != "assistant":
            out["train_on"] = s.train_on
        out["held_out"] = s.held_out
        out.update(rows_loaded=self.rows_loaded, rows_validation=self.validation,
                   rows_test=self.test, rows_available=self.available, rows_drawn=self.drawn,
                   share=round(self.share, 6))
        if self.share_target is not None:
            out["share_target"] = round(self.share_target, 6)
        return out


@dataclass
class Mixture:
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    sources: list[SourceDraw]
    seed: int
    mix_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def dataset_hash(self) -> str:
        """One hash for the whole mixture: every source's data hash and how it was mixed."""
        return mixture_hash([(d.spec, d.hash) for d in self.sources], self.mix_rows)

    def manifest(self) -> list[dict]:
        return [d.to_dict() for d in self.sources]


# ---------------------------------------------------------------------------------------------
# Loading and identifying sources


def source_hash(spec: SourceSpec, revision_resolved: str = "") -> str:
    """A local source: `dataset_hash` of its file or folder (its bytes). A Hub source: its
    name, config, split, data files and revision, with the commit that was read when known (the
    data itself is not hashed; a commit pins it)."""
    if spec.path:
        return dataset_hash(spec.path)
    ident = {"hub": spec.name, "config": spec.config, "split": spec.split,
             "data_files": list(spec.data_files), "revision": spec.revision,
             "resolved": revision_resolved}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def mixture_hash(sources: Sequence[tuple[SourceSpec, str]], mix_rows: int) -> str:
    digest = hashlib.sha256()
    for spec, data_hash in sources:
        digest.update(json.dumps({"label": spec.label, "hash": data_hash, "weight": spec.weight,
                                  "rows": spec.rows, "held_out": spec.held_out},
                                 sort_keys=True).encode() + b"\n")
    digest.update(f"mix_rows {mix_rows}\n".encode())
    return digest.hexdigest()


def pinned_commit(spec: SourceSpec) -> str:
    """The Hub commit a source names itself (a 40-hex revision), or ""."""
    return spec.revision if spec.is_hub and _COMMIT.match(spec.revision or "") else ""


def load_source(spec: SourceSpec, on_bad_line: str = "error") -> LoadedSource:
    report = LoadReport()
    records = list(iter_source(spec, on_bad_line, report))
    # The Hub commit the rows were read from (a local source has none).
    resolved = next(iter(report.revisions.values()), "") or pinned_commit(spec)
    return LoadedSource(spec, records, report, source_hash(spec, resolved), resolved)


def load_sources(specs: Sequence[SourceSpec], on_bad_line: str = "error",
                 log: Callable[[str], None] = lambda s: None) -> list[LoadedSource]:
    loaded = []
    for spec in specs:
        log(f"loading source {spec.label}: {spec.location}")
        try:
            loaded.append(load_source(spec, on_bad_line))
        except DataError as exc:
            # Which [[data.sources]] table it was, beside the file the error already names.
            raise DataError(f"source {spec.label!r}: {exc.message}", file=exc.file,
                            line=exc.line, column=exc.column, hint=exc.hint) from exc
    return loaded


# ---------------------------------------------------------------------------------------------
# Drawing


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """`total` split in proportion to `weights` as integers that add up to `total` exactly,
    each within one of its exact share (the largest fractional parts get the rounding)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - counts[i], -i), reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def draw_mixture(loaded: Sequence[LoadedSource], *, seed: int, mix_rows: int = 0,
                 fractions: Sequence[float] = (1.0, 0.0, 0.0), near_dup_threshold: float = 0.85,
                 progress=None) -> Mixture:
    """Hold out validation / test rows per source, then draw each source's training rows to
    its count (see the module's docstring). `fractions` = (train, validation, test) of each
    held-out source."""
    fractions = tuple(float(f) for f in fractions)
    parts = _hold_out(loaded, fractions, seed, near_dup_threshold, progress)
    pools = [[ls.records[i] for i in part[0]] for ls, part in zip(loaded, parts)]
    counts = _counts(loaded, pools, mix_rows)
    train: list[dict] = []
    draws: list[SourceDraw] = []
    notes: list[str] = []
    total = sum(counts)
    weighted = [ls.spec.weight for ls in loaded if ls.spec.weight is not None]
    for ls, part, pool, n in zip(loaded, parts, pools, counts):
        spec = ls.spec
        if n and not pool:
            raise DataError(
                f"source {spec.label!r} has no rows left for training",
                hint=f"it holds {len(ls.records)} rows, all held out for validation; set "
                     "held_out = false on it, or lower data.validation_split")
        rng = random.Random(f"{seed}:{spec.label}")
        picked = _draw(len(pool), n, rng)
        train.extend(pool[i] for i in picked)
        target = None
        if spec.weight is not None:
            weighted_total = sum(c for c, s in zip(counts, loaded) if s.spec.weight is not None)
            target = (spec.weight / sum(weighted)) * weighted_total / total if total else 0.0
        elif spec.rows is not None:
            target = spec.rows / total if total else 0.0
        draws.append(SourceDraw(spec, ls.hash, ls.revision_resolved, len(ls.records),
                                len(part[1]), len(part[2]), len(pool), n, target,
                                n / total if total else 0.0))
        if n > len(pool):
            copies, rest = divmod(n, len(pool))
            how = f"each row {copies} times" + (f" and {rest} rows once more" if rest else "")
            notes.append(f"data: source {spec.label} is repeated (upsampled) to fill its share: "
                         f"{n} rows from {len(pool)} ({how})")
        elif n < len(pool):
            notes.append(f"data: source {spec.label}: {n} of its {len(pool)} training rows "
                         "drawn (sampled without repeats)")
    random.Random(f"{seed}:mix").shuffle(train)
    validation = [r for ls, part in zip(loaded, parts) for r in (ls.records[i] for i in part[1])]
    test = [r for ls, part in zip(loaded, parts) for r in (ls.records[i] for i in part[2])]
    notes.insert(0, _summary(draws, seed))
    kept_out = [d.spec.label for d in draws if not d.spec.held_out]
    if (fractions[1] or fractions[2]) and kept_out:
        notes.append(f"data: no validation rows from {', '.join(kept_out)} (held_out = false)")
    return Mixture(train, validation, test, draws, seed, mix_rows, notes)


def load_mixture(profile, log: Callable[[str], None] = lambda s: None) -> Mixture:
    """The profile's [[data.sources]] loaded, held out and drawn as training draws them:
    validation rows from `data.validation` when given, else `data.validation_split` of each
    held-out source."""
    from workbench.data.sources import sources_of

    d, t = profile.data, profile.train
    loaded = load_sources(sources_of(profile), d.on_bad_rows, log)
    split = 0.0 if d.validation else d.validation_split
    mixture = draw_mixture(loaded, seed=t.seed, mix_rows=d.mix_rows,
                           fractions=(1 - split, split, 0.0))
    if d.mix_rows and not any(ls.spec.weight is not None for ls in loaded):
        mixture.notes.append(f"data: data.mix_rows = {d.mix_rows} is not used: it is shared by "
                             "weighted sources, and no source has a `weight`")
    skipped = sum(len(ls.report.skipped) for ls in loaded)
    if skipped:
        shown = "; ".join(f"{ls.report.location(f, r)}: {why}" for ls in loaded
                          for f, r, why in ls.report.skipped[:3])
        mixture.notes.append(f"data: skipped {skipped} bad rows (data.on_bad_rows = \"skip\"): "
                             f"{shown}")
    return mixture


def _summary(draws: Sequence[SourceDraw], seed: int) -> str:
    parts = []
    for d in draws:
        asked = (f", weight {d.spec.weight:g}" if d.spec.weight is not None
                 else f", rows = {d.spec.rows}" if d.spec.rows is not None else "")
        parts.append(f"{d.spec.label} {d.share:.1%} ({d.drawn} rows{asked})")
    total = sum(d.drawn for d in draws)
    return (f"data: a mixture of {len(draws)} sources, {total} training rows drawn with seed "
            f"{seed}: " + ", ".join(parts))


def _counts(loaded: Sequence[LoadedSource], pools: list[list[dict]], mix_rows: int) -> list[int]:
    """How many training rows each source gives."""
    counts = [len(pool) for pool in pools]  # no weight, no rows: all of it, once
    weighted = [i for i, ls in enumerate(loaded) if ls.spec.weight is not None]
    if weighted:
        total = mix_rows or sum(len(pools[i]) for i in weighted)
        for i, n in zip(weighted, largest_remainder(total, [loaded[i].spec.weight
                                                            for i in weighted])):
            counts[i] = n
    for i, ls in enumerate(loaded):
        if ls.spec.rows is not None:
            counts[i] = ls.spec.rows
    return counts


def _draw(size: int, n: int, rng: random.Random) -> list[int]:
    """n indices into a pool of `size`: whole copies of the pool while n exceeds it, then a
    sample without replacement; in pool order (the mixture is shuffled afterwards)."""
    if size == 0:
        return []
    copies, rest = divmod(n, size)
    return sorted(list(range(size)) * copies + rng.sample(range(size), rest))


def _hold_out(loaded: Sequence[LoadedSource], fractions: tuple[float, ...], seed: int,
              threshold: float, progress=None) -> list[list[list[int]]]:
    """Per source, the record indices of (train, validation, test). Duplicate groups (exact,
    and near at `threshold`) are found across all sources and placed whole; each group is
    placed for its first member's source, into the split furthest below that source's target
    (as split.split_records places groups)."""
    parts = [[list(range(len(ls.records))), [], []] for ls in loaded]
    if not any(fractions[1:]):
        return parts
    eligible = [ls.spec.held_out and len(ls.records) > 1 for ls in loaded]
    if not any(eligible):
        return parts
    from workbench.data.split import duplicate_groups

    flat = [(s, i) for s, ls in enumerate(loaded) for i in range(len(ls.records))]
    groups = duplicate_groups([loaded[s].records[i] for s, i in flat], threshold,
                              progress=progress)
    targets = [_targets(len(ls.records), fractions) if ok else [len(ls.records), 0, 0]
               for ls, ok in zip(loaded, eligible)]
    rng = random.Random(f"{seed}:hold-out")
    rng.shuffle(groups)
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep the seeded order
    have = [[0, 0, 0] for _ in loaded]
    members: list[list[list[int]]] = [[[], [], []] for _ in loaded]
    choices = [j for j in range(3) if j == 0 or fractions[j] > 0]
    for group in groups:
        rows = [flat[k] for k in group]
        if not all(eligible[s] for s, _ in rows):
            best = 0  # a copy in a source that gives no held-out rows: train, all of it
        else:
            home = min(rows)[0]
            best = max(choices, key=lambda j: (targets[home][j] - have[home][j], -j))
        for s, i in rows:
            members[s][best].append(i)
            have[s][best] += 1
    return [[sorted(m) for m in source] for source in members]


def _targets(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder targets adding up to n, with at least one training row."""
    targets = largest_remainder(n, fractions) if sum(fractions) > 0 else [n, 0, 0]
    if targets[0] == 0 and n:
        j = 1 if targets[1] else 2
        targets[j] -= 1
        targets[0] += 1
    return targets
