"""Check, inspect and split preference records (see preference.py for their shape).

`check_pairs(records)` drops the pairs that cannot teach anything, each named with its file, row
and reason, in this order (a record is dropped for the first problem it has):

| check            | dropped when                                                                  |
| ---------------- | ----------------------------------------------------------------------------- |
| prompt_mismatch  | the sides reply to different prompts (marked by the loader)                    |
| empty_answer     | an answer (chosen, rejected or completion) has no text (empty or only spaces) |
| identical        | chosen and rejected are the same answer (spacing aside): no preference in it  |
| empty_prompt     | the prompt has no text: nothing for the answers to reply to                   |

`inspect_preferences(records, tokenizer, max_seq_len)` reports rows, those checks, duplicate
prompts, and the length report: how long chosen and rejected answers are, and whether chosen
answers are systematically longer (DPO learns that length bias along with the preference). With
a tokenizer, lengths are counted in the tokens that train (`render_pair`), and rows that do not
fit `max_seq_len` are counted. `format_preference_report` is the text `workbench data inspect`
prints; `report.to_json()` the same for the app and `--json`.

`split_preference_records` splits with every row of one prompt on the same side, so a
validation score is never measured on a prompt that was trained on.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.preference_problems import CHECKS, _answer_key, _answer_text, pair_problem
from workbench.data.readers import row_label
from workbench.data.split import SPLIT_NAMES, SplitResult, _integer_targets, parse_fractions

__all__ = [
    "CHECKS",
    "LENGTH_BIAS_RATIO",
    "LENGTH_BIAS_SHARE",
    "PreferenceReport",
    "check_pairs",
    "format_preference_report",
    "inspect_preferences",
    "pair_problem",
    "prompt_key",
    "split_preference_records",
]

# Chosen answers count as systematically longer when more of the pairs than this have the longer
# chosen answer, or the median chosen/rejected length ratio is above LENGTH_BIAS_RATIO.
LENGTH_BIAS_SHARE = 0.6
LENGTH_BIAS_RATIO = 1.2
# KTO's authors advise desirable_weight * desirable / (undesirable_weight * undesirable) in [1, 4/3].
_KTO_BALANCE = (1.0, 4 / 3)


# ---------------------------------------------------------------------------------------------
# Checks


def check_pairs(records: Iterable[dict]) -> tuple[list[dict], list[tuple[str | None, int | None, str]]]:
    """(kept, dropped): dropped lists (file, row, why) for every record with a problem."""
    kept: list[dict] = []
    dropped: list[tuple[str | None, int | None, str]] = []
    for record in records:
        problem = pair_problem(record)
        if problem is None:
            kept.append(record)
        else:
            source = record.get("source") or {}
            dropped.append((source.get("file"), source.get("row"), problem[1]))
    return kept, dropped


def prompt_key(record: dict) -> str:
    """The prompt as a split and duplicate counts compare it: its messages' text, spacing
    collapsed, case folded."""
    return "\n".join(" ".join(m.get("content", "").split()).casefold() for m in record.get("prompt") or [])


# ---------------------------------------------------------------------------------------------
# Split


def split_preference_records(records: Sequence[dict], fractions: str | Sequence[float] = (0.9, 0.1, 0.0),
                             seed: int = 42) -> SplitResult:
    """Seeded train/validation/test split that keeps all rows of one prompt on one side.

    Prompt groups are shuffled with the seed, then placed largest first into the split furthest
    below its target size (as split.split_records places duplicate groups); rows keep their
    input order within each split. `report` holds sizes, fractions, group counts and
    `prompts_shared` (prompts found in more than one split: 0 by construction).
    """
    fractions = parse_fractions(fractions)
    records = list(records)
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_prompt[prompt_key(record)].append(index)
    groups = list(by_prompt.values())
    targets = _integer_targets(len(records), fractions)
    rng = random.Random(seed)
    rng.shuffle(groups)
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep the seed's order
    members: list[list[int]] = [[], [], []]
    allowed = [i for i in range(3) if fractions[i] > 0]
    for group in groups:
        best = max(allowed, key=lambda i: (targets[i] - len(members[i]), -i))
        members[best].extend(group)
    parts = [[records[i] for i in sorted(m)] for m in members]
    result = SplitResult(*parts)
    keys_by_split = [{prompt_key(r) for r in part} for part in parts]
    shared = sum(1 for key in by_prompt if sum(key in keys for keys in keys_by_split) > 1)
    result.report = {
        "seed": seed,
        "fractions": list(fractions),
        "sizes": {name: len(p) for name, p in zip(SPLIT_NAMES, parts)},
        "actual_fractions": {name: round(len(p) / len(records), 4) if records else 0.0
                             for name, p in zip(SPLIT_NAMES, parts)},
        "prompt_groups": len(groups),
        "rows_in_shared_prompt_groups": sum(len(g) for g in groups if len(g) > 1),
        "largest_group": max((len(g) for g in groups), default=0),
        "prompts_shared": shared,
    }
    return result


# ---------------------------------------------------------------------------------------------
# Inspection


@dataclass
class PreferenceReport:
    """What inspect_preferences found; `to_json()` is a plain dict.

    checks: {check: {"label", "count", "examples": ["file:row", ...]}} (CHECKS, in order; a row
    counts under its first problem, so the counts add up to rows - kept).
    lengths: {"chars": ..., "tokens": ... | None}; for pairs each holds {"pairs", "chosen":
    {mean, median}, "rejected": {mean, median}, "chosen_longer_share", "rejected_longer_share",
    "median_ratio"} over the kept pairs; for unpaired rows {"desirable": {count, mean, median},
    "undesirable": {...}, "median_ratio"} (desirable over undesirable). median_ratio is the
    median of the per-pair log ratios, taken back: 2x in one pair and 0.5x in another balance.
    duplicates: {"prompts_with_several_rows", "rows_sharing_a_prompt", "examples": [[where]],
    "duplicate_rows" (identical copies beyond the first), "duplicate_examples": [[where]]}.
    tokens (with a tokenizer): {"template", "notes", "max_seq_len", "sequence": {count, mean,
    median, max} (prompt + the longer answer), "over_limit": {"rows", "answer_tokens_lost",
    "examples"}, "dropped": {"count", "examples": [{"where", "why"}]}} (rows render would drop).
    """

    schema_version: int = 1
    inputs: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    kind: str = ""
    elapsed_s: float = 0.0
    rows_read: int = 0
    rows: int = 0
    rows_skipped: int = 0
    skipped_examples: list[dict] = field(default_factory=list)
    paired: int = 0
    unpaired: int = 0
    kept: int = 0
    checks: dict[str, dict] = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)  # multi_turn, with_system, with_tools, mean_messages
    duplicates: dict = field(default_factory=dict)
    lengths: dict = field(default_factory=dict)
    length_bias: str | None = None
    labels: dict | None = None
    tokens: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)


def inspect_preferences(records: Iterable[dict], tokenizer: Any = None, max_seq_len: int | None = None, *,
                        fmt: Any = None, load_report: Any = None, inputs: Sequence[str] = (),
                        max_examples: int = 5) -> PreferenceReport:
    """Report on preference records (paired or unpaired): see PreferenceReport and the module doc.

    tokenizer: count lengths in trained tokens (each kept row rendered with render_pair /
    render_unpaired through `fmt`, the ChatFormat training will use) and, with max_seq_len,
    the rows that do not fit. load_report: the LoadReport of the load, for rows read and skipped.
    """
    started = time.perf_counter()
    records = list(records)
    report = PreferenceReport(inputs=list(inputs))
    report.rows = len(records)
    report.paired = sum("chosen" in r for r in records)
    report.unpaired = report.rows - report.paired
    report.kind = "paired" if report.paired >= report.unpaired else "unpaired"
    if load_report is not None:
        report.rows_read = load_report.rows_read
        report.rows_skipped = len(load_report.skipped)
        report.formats = dict(load_report.formats)
        report.skipped_examples = [
            {"file": f, "row": r, "column": load_report.columns.get((f, r)), "reason": why}
            for f, r, why in load_report.skipped[:max_examples]]
    else:
        report.rows_read = report.rows

    labels = dict(CHECKS)
    if not report.unpaired:
        labels["empty_answer"] = "empty answer (chosen or rejected)"
    elif not report.paired:
        labels.pop("identical")
        labels["empty_answer"] = "empty completion"
    checks = {key: {"label": label, "count": 0, "examples": []} for key, label in labels.items()}
    kept: list[dict] = []
    for record in records:
        problem = pair_problem(record)
        if problem is None:
            kept.append(record)
            continue
        entry = checks[problem[0]]
        entry["count"] += 1
        if len(entry["examples"]) < max_examples:
            entry["examples"].append(_where(record))
    report.checks = checks
    report.kept = len(kept)
    report.prompts = _prompt_shapes(records)
    report.duplicates = _duplicates(records, max_examples)

    report.lengths = {"chars": _lengths(kept, _answer_chars), "tokens": None}
    if tokenizer is not None:
        trained, report.tokens = _token_lengths(tokenizer, kept, max_seq_len, fmt, max_examples)
        report.lengths["tokens"] = _lengths(kept, lambda record, side: trained.get((id(record), side)))
    basis = "tokens" if report.lengths["tokens"] else "chars"
    report.length_bias = _length_bias(report.lengths[basis], basis, report.kind)
    if report.unpaired:
        desirable = sum(1 for r in records if "completion" in r and r.get("label"))
        report.labels = {"desirable": desirable, "undesirable": report.unpaired - desirable,
                         "note": _label_note(desirable, report.unpaired - desirable)}
    report.elapsed_s = round(time.perf_counter() - started, 3)
    return report


def format_preference_report(report: PreferenceReport | dict) -> str:
    """The report as aligned text sections (what `workbench data inspect` prints)."""
    r = report.to_json() if isinstance(report, PreferenceReport) else report
    out: list[str] = []

    def section(title: str) -> None:
        out.extend(["", title, "-" * len(title)])

    def line(label: str, value: Any) -> None:
        text = f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        out.append(f"  {label:<34} {text:>10}")

    kind = "pairs" if r["kind"] == "paired" else "unpaired rows (KTO)"
    formats = ", ".join(sorted(set(r["formats"].values()))) or "records"
    out.append(f"Preference data inspection — {', '.join(r['inputs']) or '<records>'}  ({formats}: {kind})")
    section("Rows")
    line("rows read", r["rows_read"])
    line("rows loaded", r["rows"])
    line("rows skipped (bad)", r["rows_skipped"])
    for e in r["skipped_examples"]:
        out.append(f"    {row_label(e['file'], e['row'], e.get('column'), name_only=True)}: {e['reason']}")
    if r["paired"]:
        line("pairs (chosen / rejected)", r["paired"])
    if r["unpaired"]:
        line("unpaired (completion + label)", r["unpaired"])
    if r["labels"]:
        line("  desirable (label true)", r["labels"]["desirable"])
        line("  undesirable (label false)", r["labels"]["undesirable"])
        if r["labels"]["note"]:
            out.append(f"    {r['labels']['note']}")
    p = r["prompts"]
    line("multi-turn prompts", p["multi_turn"])
    line("prompts with a system message", p["with_system"])
    if p["with_tools"]:
        line("rows with tools", p["with_tools"])
    line("rows that can train", r["kept"])

    section("Checks (a row is dropped before training for its first problem)")
    for check in r["checks"].values():
        line(check["label"], check["count"])
        if check["examples"]:
            out.append(f"      e.g. {_refs(check['examples'])}")
    d = r["duplicates"]
    line("prompts with several rows", d["prompts_with_several_rows"])
    line("  rows sharing a prompt", d["rows_sharing_a_prompt"])
    for group in d["examples"][:3]:
        out.append(f"      {_refs(group)}")
    line("duplicate rows (identical copies)", d["duplicate_rows"])
    for group in d["duplicate_examples"][:3]:
        out.append(f"      {_refs(group)}")

    section("Answer lengths" + (" (kept rows)" if r["kept"] != r["rows"] else ""))
    for basis in ("chars", "tokens"):
        block = r["lengths"].get(basis)
        if block:
            _length_lines(out, block, "characters" if basis == "chars" else "trained tokens", r["kind"])
    if r["length_bias"]:
        out.append("")
        out.append(f"  ! {r['length_bias']}")

    tokens = r["tokens"]
    if tokens:
        section("Tokens" + (f" ({tokens['template']})" if tokens.get("template") else ""))
        seq = tokens["sequence"]
        if seq["count"]:
            line("tokens per row: mean", seq["mean"])
            line("  median", seq["median"])
            line("  max", seq["max"])
            out.append("    (a row: the prompt plus its longer answer)")
        if tokens["max_seq_len"] is not None:
            over = tokens["over_limit"]
            line(f"rows longer than max_seq_len {tokens['max_seq_len']}", over["rows"])
            line("  answer tokens cut (rows kept)", over["answer_tokens_lost"])
            if over["examples"]:
                out.append(f"      e.g. {_refs(over['examples'])}")
        dropped = tokens["dropped"]
        line("rows dropped when rendered", dropped["count"])
        for e in dropped["examples"]:
            out.append(f"      {_refs([e['where']])}: {e['why']}")
        for note in tokens.get("notes", []):
            out.append(f"    note: {note}")
    out.append("")
    out.append(f"({r['elapsed_s']:.1f} s)")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Internals


def _where(record: dict) -> str:
    source = record.get("source") or {}
    return row_label(source.get("file"), source.get("row"))


def _refs(where: list[str], limit: int = 5) -> str:
    def short(w: str) -> str:  # "dir/a.jsonl:3" -> "a.jsonl:3", "dir/a.json row 3" -> "a.json row 3"
        return Path(w).name
    shown = ", ".join(short(w) for w in where[:limit])
    return shown + (" …" if len(where) > limit else "")


def _answer_chars(record: dict, side: str) -> int:
    return len(_answer_text(record.get(side) or []))


def _lengths(kept: list[dict], length) -> dict | None:
    """Length summary of kept rows; `length(record, side)` gives one answer's length."""
    if not kept:
        return None
    if "chosen" in kept[0]:
        pairs = [(length(r, "chosen"), length(r, "rejected")) for r in kept if "chosen" in r]
        pairs = [(c, j) for c, j in pairs if c is not None and j is not None]
        if not pairs:
            return None
        chosen, rejected = [c for c, _ in pairs], [j for _, j in pairs]
        # The median of log ratios, so that 2x in one pair and 0.5x in another balance out.
        ratios = [math.log(c / j) for c, j in pairs if c and j]
        return {
            "pairs": len(pairs),
            "chosen": _summary(chosen),
            "rejected": _summary(rejected),
            "chosen_longer_share": round(sum(c > j for c, j in pairs) / len(pairs), 3),
            "rejected_longer_share": round(sum(j > c for c, j in pairs) / len(pairs), 3),
            "median_ratio": round(math.exp(statistics.median(ratios)), 3) if ratios else None,
        }
    good = [length(r, "completion") for r in kept if r.get("label")]
    bad = [length(r, "completion") for r in kept if not r.get("label")]
    good, bad = [x for x in good if x is not None], [x for x in bad if x is not None]
    med_good = statistics.median(good) if good else None
    med_bad = statistics.median(bad) if bad else None
    return {"desirable": _summary(good), "undesirable": _summary(bad),
            "median_ratio": round(med_good / med_bad, 3) if med_good is not None and med_bad else None}


def _length_lines(out: list[str], block: dict, unit: str, kind: str) -> None:
    def stat(s: dict) -> str:
        if not s["count"]:
            return "-"
        return f"mean {s['mean']:,}  median {s['median']:,}"

    if kind == "paired":
        out.append(f"  {unit} per answer ({block['pairs']:,} pairs)")
        out.append(f"    {'chosen':<30} {stat(block['chosen'])}")
        out.append(f"    {'rejected':<30} {stat(block['rejected'])}")
        out.append(f"    {'chosen longer':<30} {block['chosen_longer_share']:.0%} of pairs "
                   f"(rejected longer {block['rejected_longer_share']:.0%})")
        ratio = block["median_ratio"]
        out.append(f"    {'median chosen / rejected':<30} {ratio:.2f}x" if ratio is not None
                   else f"    {'median chosen / rejected':<30} -")
    else:
        out.append(f"  {unit} per completion")
        out.append(f"    {'desirable':<30} {stat(block['desirable'])}")
        out.append(f"    {'undesirable':<30} {stat(block['undesirable'])}")
        ratio = block["median_ratio"]
        if ratio is not None:
            out.append(f"    {'median desirable / undesirable':<30} {ratio:.2f}x")


def _summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "mean": None, "median": None}
    return {"count": len(values), "mean": round(statistics.fmean(values), 1),
            "median": _num(statistics.median(values))}


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else round(float(x), 1)


def _length_bias(block: dict | None, basis: str, kind: str) -> str | None:
    """A plain sentence when one side's answers are systematically longer, else None."""
    if not block:
        return None
    unit = "tokens" if basis == "tokens" else "characters"
    ratio = block.get("median_ratio")
    if kind == "paired":
        share = block["chosen_longer_share"]
        if share > LENGTH_BIAS_SHARE or (ratio is not None and ratio > LENGTH_BIAS_RATIO):
            return (f"Chosen answers are longer than rejected ones in {share:.0%} of pairs (median "
                    f"length ratio {ratio:.2f}x, in {unit}). DPO learns that length along with the "
                    "preference, and the tuned model tends to answer longer. Consider a length-"
                    "normalized method (SimPO), DPO's length regularization (ld_alpha), or pairs "
                    "balanced by length.")
        other = block["rejected_longer_share"]
        if other > LENGTH_BIAS_SHARE or (ratio is not None and ratio < 1 / LENGTH_BIAS_RATIO):
            return (f"Rejected answers are longer than chosen ones in {other:.0%} of pairs (median "
                    f"length ratio {ratio:.2f}x, in {unit}). The tuned model will learn to answer "
                    "shorter along with the preference; check that this is intended.")
        return None
    if ratio is not None and (ratio > LENGTH_BIAS_RATIO or ratio < 1 / LENGTH_BIAS_RATIO):
        longer = "desirable" if ratio > 1 else "undesirable"
        return (f"{longer.capitalize()} answers are longer (median desirable / undesirable length "
                f"ratio {ratio:.2f}x, in {unit}). KTO learns that length along with the label; "
                "consider balancing the lengths of the two kinds.")
    return None


def _label_note(desirable: int, undesirable: int) -> str | None:
    if not desirable or not undesirable:
        missing = "desirable (true)" if not desirable else "undesirable (false)"
        return f"no {missing} rows: KTO needs both kinds of answers"
    ratio = desirable / undesirable
    low, high = _KTO_BALANCE
    if low <= ratio <= high:
        return None
    weight = undesirable / desirable * low if ratio < low else undesirable / desirable * high
    return (f"{desirable:,} desirable to {undesirable:,} undesirable answers: KTO's authors advise "
            "desirable_weight x desirable / (undesirable_weight x undesirable) between 1 and 4/3, "
            f"e.g. desirable_weight = {weight:.2f} with undesirable_weight = 1")


def _prompt_shapes(records: list[dict]) -> dict:
    multi = sum(1 for r in records if sum(m["role"] == "user" for m in r.get("prompt") or []) > 1)
    system = sum(1 for r in records if any(m["role"] == "system" for m in r.get("prompt") or []))
    tools = sum(1 for r in records if r.get("tools"))
    mean = round(statistics.fmean(len(r.get("prompt") or []) for r in records), 2) if records else None
    return {"multi_turn": multi, "with_system": system, "with_tools": tools, "mean_messages": mean}


def _duplicates(records: list[dict], max_examples: int) -> dict:
    by_prompt: dict[str, list[str]] = defaultdict(list)
    whole: dict[tuple, list[str]] = defaultdict(list)
    for record in records:
        key = prompt_key(record)
        by_prompt[key].append(_where(record))
        if "chosen" in record:
            answers = (repr(_answer_key(record["chosen"])), repr(_answer_key(record["rejected"])))
        else:
            answers = (repr(_answer_key(record["completion"])), repr(bool(record.get("label"))))
        whole[(key,) + answers].append(_where(record))
    groups = [g for g in by_prompt.values() if len(g) > 1]
    copies = [g for g in whole.values() if len(g) > 1]
    return {"prompts_with_several_rows": len(groups),
            "rows_sharing_a_prompt": sum(len(g) for g in groups),
            "examples": [g[:max_examples] for g in groups[:max_examples]],
            "duplicate_rows": sum(len(g) - 1 for g in copies),
            "duplicate_examples": [g[:max_examples] for g in copies[:max_examples]]}


def _token_lengths(tokenizer: Any, kept: list[dict], max_seq_len: int | None, fmt: Any,
                   max_examples: int) -> tuple[dict, dict]:
    """Render every kept row as training will: ({(id(record), side): trained tokens}, tokens block)."""
    from workbench.data.chat_format import chat_format
    from workbench.data.errors import DataError
    from workbench.data.preference_render import render_pair, render_unpaired

    fmt = fmt or chat_format(tokenizer)
    lengths: dict = {}
    sequences: list[int] = []
    over = {"rows": 0, "answer_tokens_lost": 0, "examples": []}
    dropped = {"count": 0, "examples": []}
    for record in kept:
        paired = "chosen" in record
        try:
            rendered = (render_pair if paired else render_unpaired)(tokenizer, record, None, fmt)
        except DataError as exc:
            dropped["count"] += 1
            if len(dropped["examples"]) < max_examples:
                dropped["examples"].append({"where": _where(record), "why": exc.message})
            continue
        answers = ({"chosen": rendered.chosen_ids, "rejected": rendered.rejected_ids} if paired
                   else {"completion": rendered.completion_ids})
        prompt = len(rendered.prompt_ids)
        for side, ids in answers.items():
            lengths[(id(record), side)] = len(ids)
        longest = prompt + max(len(ids) for ids in answers.values())
        sequences.append(longest)
        if max_seq_len is not None and longest > max_seq_len:
            over["rows"] += 1
            if prompt >= max_seq_len:
                dropped["count"] += 1
                if len(dropped["examples"]) < max_examples:
                    dropped["examples"].append({"where": _where(record), "why": (
                        f"the prompt alone is {prompt} tokens, max_seq_len is {max_seq_len}: no answer fits")})
            else:
                over["answer_tokens_lost"] += sum(max(0, prompt + len(ids) - max_seq_len) for ids in answers.values())
            if len(over["examples"]) < max_examples:
                over["examples"].append(_where(record))
    summary = _summary(sequences)
    summary["max"] = max(sequences) if sequences else None
    block = {"template": fmt.name, "notes": list(fmt.notes), "max_seq_len": max_seq_len,
             "sequence": summary, "over_limit": over, "dropped": dropped}
    return lengths, block
