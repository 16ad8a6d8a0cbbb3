"""`workbench data inspect --profile PROFILE` on a mixture of [[data.sources]] (issue 27).

Per source: its rows, its tokens (with a tokenizer), its share of the mixture before and after
the profile's [clean] steps, and what each filter took from it; and the duplicates that sit in
more than one source (exact, and near at the [clean] near_dup_threshold), which neither source's
own inspection can see.

The shares are drawn exactly as training draws them (data/mixture.py, train.seed): "before" is
what a run of this profile trains on; "after" is what it would train on were the sources
cleaned first (`workbench data clean`). Training itself does not clean.

The cleaning runs on all sources together, so `dedup_exact` / `dedup_near` remove a copy found in
another source (the first source listed keeps its row). Counts come from the public APIs of
clean.py, dedup.py and inspect.py; nothing here changes their behaviour.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from workbench.data.errors import DataError

SCHEMA_VERSION = 1
_EXAMPLES = 5


def inspect_mixture(profile, *, tokenizer: Any = None, chat: Any = None,
                    max_seq_len: int | None = None, near_dup_threshold: float | None = None,
                    on_bad_line: str | None = None,
                    log: Callable[[str], None] = lambda s: None) -> dict:
    """The mixture report as a dict (the --json output; `format_mixture_report` for people)."""
    from workbench.data.clean import CleanConfig, clean_records
    from workbench.data.mixture import LoadedSource, draw_mixture, load_sources
    from workbench.data.sources import sources_of

    started = time.perf_counter()
    d, t, c = profile.data, profile.train, profile.clean
    threshold = near_dup_threshold if near_dup_threshold is not None else c.near_dup_threshold
    loaded = load_sources(sources_of(profile), on_bad_line or d.on_bad_rows, log)
    split = 0.0 if d.validation else d.validation_split
    fractions = (1 - split, split, 0.0)
    before = draw_mixture(loaded, seed=t.seed, mix_rows=d.mix_rows, fractions=fractions,
                          near_dup_threshold=threshold)

    # Cleaning all sources together: cross-source copies are found, and each removal is put
    # back on its source by (file, row) (the first source reading that file, if two do).
    steps = list(c.steps)
    if "length_filter" in steps and tokenizer is None:
        raise DataError("the profile's [clean] steps include length_filter, which needs a "
                        "tokenizer to count tokens",
                        hint="pass --model M (or leave length_filter out of [clean] steps)")
    config = CleanConfig(steps=steps, min_answer_chars=c.min_answer_chars,
                         near_dup_threshold=threshold,
                         max_tokens=c.max_tokens or (max_seq_len or t.max_seq_len),
                         placeholders=dict(c.placeholders), drop_pii=c.drop_pii)
    union = [r for ls in loaded for r in ls.records]
    owner: dict[tuple, str] = {}
    for ls in loaded:
        for r in ls.records:
            owner.setdefault((r["source"].get("file"), r["source"].get("row")), ls.spec.label)
    log(f"cleaning {len(union)} rows ({', '.join(steps) or 'no [clean] steps'})")
    kept, clean_report = clean_records(union, config, tokenizer=tokenizer)
    lost: dict[str, Counter] = {ls.spec.label: Counter() for ls in loaded}
    for op in clean_report.operations:
        for entry in op.removed:
            label = owner.get((entry.get("file"), entry.get("row")))
            if label is not None:
                lost[label][op.name] += 1
    by_label: dict[str, list[dict]] = {ls.spec.label: [] for ls in loaded}
    for r in kept:
        by_label.setdefault(r["source"].get("label"), []).append(r)
    cleaned = [LoadedSource(ls.spec, by_label[ls.spec.label], ls.report, ls.hash,
                            ls.revision_resolved) for ls in loaded]
    # A source cleaning empties gives nothing; the others are drawn as training would.
    after_notes: list[str] = []
    empty = [s.spec.label for s in cleaned if not s.records]
    if empty:
        after_notes.append(f"cleaning would leave no rows in {', '.join(empty)}: the mixture "
                           "after cleaning is drawn from the other sources")
    left = [s for s in cleaned if s.records]
    drawn = draw_mixture(left, seed=t.seed, mix_rows=d.mix_rows, fractions=fractions,
                         near_dup_threshold=threshold) if left else None
    after_by = {x.spec.label: x for x in drawn.sources} if drawn is not None else {}

    sources = []
    for i, ls in enumerate(loaded):
        b = before.sources[i]
        a = after_by.get(ls.spec.label)
        sources.append({
            "label": ls.spec.label,
            "location": ls.spec.location,
            "format": next(iter(ls.report.formats.values()), ls.spec.format),
            "hash": ls.hash,
            **({"revision_resolved": ls.revision_resolved} if ls.revision_resolved else {}),
            "weight": ls.spec.weight,
            "rows_requested": ls.spec.rows,
            "held_out": ls.spec.held_out,
            "train_on": ls.spec.train_on,
            "rows": len(ls.records),
            "rows_skipped": len(ls.report.skipped),
            "tokens": _tokens(ls.records, tokenizer, chat, max_seq_len),
            "before": {"validation": b.validation, "available": b.available,
                       "drawn": b.drawn, "share": round(b.share, 6),
                       "share_target": None if b.share_target is None
                       else round(b.share_target, 6)},
            "after": {"rows": len(cleaned[i].records), "validation": a.validation if a else 0,
                      "available": a.available if a else 0, "drawn": a.drawn if a else 0,
                      "share": round(a.share, 6) if a else 0.0},
            "lost": {op.name: lost[ls.spec.label][op.name] for op in clean_report.operations},
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "mixture",
        "profile": str(profile.source),
        "seed": t.seed,
        "mix_rows": d.mix_rows,
        "validation_split": split,
        "rows": len(union),
        "training_rows": {"before": len(before.train),
                          "after": len(drawn.train) if drawn is not None else 0},
        "sources": sources,
        "clean": {"steps": steps, "rows_in": clean_report.rows_in,
                  "rows_out": clean_report.rows_out, "operations": clean_report.summary()},
        "cross_source_duplicates": cross_source_duplicates(loaded, threshold),
        "notes": before.notes + after_notes,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def cross_source_duplicates(loaded, threshold: float) -> dict:
    """Duplicate groups with members in more than one source: exact copies (normalised text),
    then near copies (MinHash at `threshold`, system messages left out) among the distinct
    texts, so an exact copy is not counted again as a near one."""
    from workbench.data import dedup

    flat = [(ls.spec.label, r) for ls in loaded for r in ls.records]
    texts = [dedup.record_text(r) for _, r in flat]
    exact = dedup.exact_duplicate_groups(texts)
    copies_of: dict[int, list[int]] = {g[0]: g for g in exact}
    in_group = {i for g in exact for i in g[1:]}
    distinct = [i for i in range(len(flat)) if i not in in_group]
    near = dedup.near_duplicate_groups(
        [dedup.record_text(flat[i][1], include_system=False) for i in distinct],
        threshold=threshold)
    # A near group of distinct texts, widened by each member's exact copies.
    near = [sorted(j for k in g for j in copies_of.get(distinct[k], [distinct[k]]))
            for g in near]
    order = {ls.spec.label: k for k, ls in enumerate(loaded)}
    return {"threshold": threshold,
            "exact": _spanning(exact, flat, order), "near": _spanning(near, flat, order)}


def _spanning(groups: list[list[int]], flat: list[tuple[str, dict]],
              order: dict[str, int]) -> dict:
    pairs: Counter = Counter()
    examples, count, rows = [], 0, 0
    for g in groups:
        labels = sorted({flat[i][0] for i in g}, key=order.__getitem__)
        if len(labels) < 2:
            continue
        count += 1
        rows += len(g)
        for a in range(len(labels)):
            for b in range(a + 1, len(labels)):
                pairs[f"{labels[a]} + {labels[b]}"] += 1
        if len(examples) < _EXAMPLES:
            examples.append([{"source": flat[i][0], **flat[i][1]["source"]} for i in g[:4]])
    return {"groups": count, "rows": rows, "pairs": dict(pairs), "examples": examples}


def _tokens(records: list[dict], tokenizer, chat, max_seq_len) -> dict | None:
    """Tokens of the source's rows as training renders them (inspect.py's counting)."""
    if tokenizer is None:
        return None
    from workbench.data.inspect import inspect_dataset

    report = inspect_dataset(records, tokenizer=tokenizer, chat=chat, max_seq_len=max_seq_len,
                             near_dups=False)
    row = (report.tokens or {}).get("row") or {}
    return {k: row.get(k) for k in ("total", "mean", "p50", "max")}


# ---------------------------------------------------------------------------------------------
# For people


def format_mixture_report(r: dict) -> str:
    out = [(f"mixture of {len(r['sources'])} sources ({r['profile']}): {r['rows']} rows loaded; "
            f"seed {r['seed']}, data.mix_rows {r['mix_rows'] or 'all'}, validation "
            f"{r['validation_split']:g} of each held-out source")]
    tokens = any(s["tokens"] for s in r["sources"])
    head = ["source", "rows", *(["tokens"] if tokens else []), "asked", "share before",
            "share after", "validation"]
    table = [head]
    for s in r["sources"]:
        asked = (f"weight {s['weight']:g}" if s["weight"] is not None
                 else f"rows {s['rows_requested']}" if s["rows_requested"] is not None else "all")
        b, a = s["before"], s["after"]
        table.append([
            s["label"], f"{s['rows']:,}",
            *([f"{s['tokens']['total']:,}" if s["tokens"] else "-"] if tokens else []),
            asked, f"{b['share']:.1%} ({b['drawn']:,})",
            f"{a['share']:.1%} ({a['drawn']:,})",
            f"{b['validation']:,}" if s["held_out"] else "none (held_out = false)"])
    out += _table(table)
    out.append(f"training rows: {r['training_rows']['before']:,} drawn; "
               f"{r['training_rows']['after']:,} after cleaning")
    c = r["clean"]
    if not c["steps"]:
        out.append("cleaning: the profile has no [clean] steps, so before and after are the same "
                   "(add e.g. steps = [\"drop_empty\", \"dedup_exact\", \"dedup_near\"])")
    else:
        out.append(f"cleaning ([clean] steps, all sources together): {c['rows_in']:,} rows in, "
                   f"{c['rows_out']:,} kept; rows each source lost to each filter:")
        out += _table([["source", *c["steps"]]]
                      + [[s["label"], *(str(s["lost"].get(step, 0)) for step in c["steps"])]
                         for s in r["sources"]], indent="  ")
    dup = r["cross_source_duplicates"]
    out.append(f"duplicates across sources (near: similarity >= {dup['threshold']:g}):")
    for kind in ("exact", "near"):
        g = dup[kind]
        if not g["groups"]:
            out.append(f"  {kind}: none")
            continue
        pairs = ", ".join(f"{k}: {v}" for k, v in g["pairs"].items())
        out.append(f"  {kind}: {g['groups']} groups, {g['rows']} rows ({pairs})")
        for example in g["examples"][:3]:
            out.append("    e.g. " + " ~ ".join(_where(e) for e in example))
    out += [f"note: {n.removeprefix('data: ')}" for n in r["notes"][1:]]
    return "\n".join(out)


def _where(entry: dict) -> str:
    from workbench.data.readers import row_label

    return f"{entry['source']} ({row_label(entry.get('file'), entry.get('row'))})"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]
