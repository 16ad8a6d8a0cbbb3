"""Inspect a dataset before training: one streaming pass, a report for people and for the app.

`inspect_dataset(path_or_records, ...)` reads records (through `iter_records`, bad rows skipped and
counted), keeps only small per-row numbers, 16-byte exact-dup keys and MinHash signatures
(512 bytes/row; pass `near_dups=False` to drop them), and returns an `InspectionReport`.
`format_report(report)` renders it as text; `report.to_json()` is the app's view.

JSON schema (`schema_version: 1`). A *source* is `{"file": str|null, "row": int}` (the record's
`source`; `row` numbering as in `load.py`). A *stats* object is
`{"count", "min", "mean", "p50", "p90", "p99", "max", "total"}` (null values when count is 0), and
a *histogram* is `{"edges": [b0..bn], "counts": [c1..cn]}` (n bins, bin i is [b(i-1), b(i)),
the last one closed).

    schema_version      1
    inputs              [str]                  files read (or ["<records>"])
    cancelled           bool                   true when `cancel` stopped the pass early
    elapsed_s           float
    rows_read           int                    rows the loader saw (bad rows included)
    rows                int                    rows inspected (loaded)
    rows_skipped        int                    bad rows skipped by the loader
    skipped_examples    [{file, row, column, reason}]  column: of the problem, or null
    rows_by_schema      {schema: int}          "alpaca", "messages", ... ("records" for dicts)
    rows_by_file        {file: int}
    messages_per_row    stats + {"counts": {"2": int, ...}}
    roles               {role: messages}
    chars               {"row": stats + histogram, "answer": stats}   row = all message contents
    tokens              null | {"row": stats + histogram, "method": str, "over_limit": null |
                          {"max_seq_len", "rows", "answer_tokens_lost", "examples":
                           [{source, tokens, answer_tokens_lost}]},
                          "template": null (no chat template) | {"name": str, "notes": [str],
                           "rows_in": int, "rows_out": int, "per_answer_rows": int,
                           "per_answer_conversations": int, "why": [str]}}
                          rows_out = the training rows the conversations become: conversations
                          with several answers become one row per answer when the template
                          renders earlier turns differently (see render.py)
    empty_fields        {"rows", "counts": {field: rows}, "examples": {field: [source]}}
    short_answers       {"min_chars", "rows", "examples": [source]}
    exact_duplicates    {"groups", "rows_removable", "examples": [[source, ...]]}
    near_duplicates     null (near_dups=False) | {"threshold", "groups", "rows_removable",
                          "examples": [[source, ...]]}   (exact copies are collapsed first, so
                          the two removable counts add up)
    placeholders        {"rows", "counts": {placeholder: occurrences},
                          "rows_by_placeholder": {placeholder: rows}, "examples": [{source, found}]}
    broken_text         {"rows", "counts": {kind: rows}, "examples": [{source, kinds}]}
    secrets             {"rows", "counts": {kind: occurrences}, "examples": [{source, kind, masked}]}
    pii                 {"rows", "counts": {kind: occurrences}, "examples": [{source, kind, masked}]}

In every group the first source is the row to keep. Secrets and PII are never stored in full:
only `mask_secret` forms ("sk-ab…yz") reach the report.

Token lengths: message contents are tokenized in batches (the fast tokenizer's Rust backend), plus
the chat template's overhead for the row's sequence of roles, measured once per role sequence by
rendering a probe conversation. Rows whose estimate is within `_NEAR_LIMIT` tokens of
`max_seq_len` (or above) are rendered exactly with `render_conversation` to count the answer
tokens truncation would cut. Rendering every row through Jinja would be ~10x slower. Whether a
conversation becomes one training row per answer is decided the same way: once per shape (with or
without a system message) on a sample conversation, then counted per row from its answers.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.checks import (
    broken_text_issues,
    empty_fields,
    find_pii,
    find_placeholders,
    find_secrets,
    is_short_answer,
    mask_secret,
)
from workbench.data.dedup import CancelFlag, MinHashLSH, exact_key, record_text
from workbench.data.load import LoadReport, iter_records
from workbench.data.readers import row_label

_BATCH = 2048
_NEAR_LIMIT = 16  # template-overhead estimates can be off by a few tokens at message boundaries
_BINS = 20


@dataclass
class InspectionReport:
    """What `inspect_dataset` found; `to_json()` gives the documented schema."""

    schema_version: int = 1
    inputs: list[str] = field(default_factory=list)
    cancelled: bool = False
    elapsed_s: float = 0.0
    rows_read: int = 0
    rows: int = 0
    rows_skipped: int = 0
    skipped_examples: list[dict] = field(default_factory=list)
    rows_by_schema: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    messages_per_row: dict = field(default_factory=dict)
    roles: dict[str, int] = field(default_factory=dict)
    chars: dict = field(default_factory=dict)
    tokens: dict | None = None
    empty_fields: dict = field(default_factory=dict)
    short_answers: dict = field(default_factory=dict)
    exact_duplicates: dict = field(default_factory=dict)
    near_duplicates: dict | None = None
    placeholders: dict = field(default_factory=dict)
    broken_text: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    pii: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Small helpers


def stats(values: Iterable[float] | np.ndarray) -> dict:
    """count/min/mean/p50/p90/p99/max/total of numbers (None when there are none)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {k: (0 if k in ("count", "total") else None)
                for k in ("count", "min", "mean", "p50", "p90", "p99", "max", "total")}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"count": int(a.size), "min": _num(a.min()), "mean": round(float(a.mean()), 1),
            "p50": _num(p50), "p90": _num(p90), "p99": _num(p99), "max": _num(a.max()),
            "total": _num(a.sum())}


def _num(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else round(x, 1)


def histogram(values: np.ndarray, bins: int = _BINS) -> dict:
    """Equal-width integer-edged bins from 0 to max: easy to draw, easy to read."""
    a = np.asarray(values)
    if a.size == 0:
        return {"edges": [], "counts": []}
    top = max(int(a.max()), 1)
    width = max(1, -(-(top + 1) // bins))  # ceil, so the max falls into the last bin
    edges = np.arange(0, width * bins + 1, width)
    counts, _ = np.histogram(a, bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


class _Examples:
    """Counts plus at most `limit` examples per key: bounded memory whatever the data."""

    def __init__(self, limit: int):
        self.limit = limit
        self.counts: Counter = Counter()
        self.examples: dict[str, list] = {}

    def add(self, key: str, example: Any, n: int = 1) -> None:
        self.counts[key] += n
        bucket = self.examples.setdefault(key, [])
        if len(bucket) < self.limit:
            bucket.append(example)


class _Tokens:
    """Token lengths: batched content tokenization + per-role-sequence template overhead."""

    def __init__(self, tokenizer: Any, max_seq_len: int | None, max_examples: int, chat: Any = None):
        from workbench.data.chat_format import chat_format

        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.max_examples = max_examples
        self.lengths = array("i")
        self.over_rows = 0
        self.lost = 0
        self.over_examples: list[dict] = []
        self._overhead: dict[tuple, int] = {}
        backend = getattr(tokenizer, "_tokenizer", None)
        # The Rust backend is ~2x faster than the Python wrapper; only use it when the wrapper has
        # not configured truncation/padding on it (those would change the lengths).
        usable = backend is not None and getattr(backend, "truncation", 1) is None \
            and getattr(backend, "padding", 1) is None
        self._backend = backend if usable else None
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.fmt = (chat or chat_format(tokenizer)) if self.has_template else None
        self.rows_in = self.rows_out = self.per_answer_rows = self.per_answer_conversations = 0
        self.why: Counter = Counter()
        self._splits: dict[bool, str] = {}

    def _split_why(self, has_system: bool) -> str:
        """Why a multi-answer conversation of this shape becomes one row per answer ("" = it
        does not), from a sample conversation rendered once per shape."""
        from workbench.data.render import _SAMPLE_CONVERSATION, render_rows

        if has_system not in self._splits:
            sample = [m for m in _SAMPLE_CONVERSATION if has_system or m["role"] != "system"]
            try:
                rows = render_rows(self.tokenizer, sample, fmt=self.fmt)
                self._splits[has_system] = rows[0].why if len(rows) > 1 else ""
            except Exception:  # a template that fails here fails in training with a message
                self._splits[has_system] = ""
        return self._splits[has_system]

    def _count_rows(self, record: dict) -> None:
        from workbench.data.chat_format import split_reasoning
        from workbench.data.render import WHY_HISTORY_REASONING

        messages = record.get("messages") or ()
        self.rows_in += 1
        has_system = any(m.get("role") == "system" for m in messages)
        if has_system:
            _ = self.fmt.system  # resolves data.system = "auto" (a note when it folds)
        answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        why = ""
        if len(answers) > 1 and not record.get("text_only"):
            last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
            if self.fmt.reasoning_mode == "keep" and any(
                    split_reasoning(messages[i])[0] for i in answers if i < last_user):
                why = WHY_HISTORY_REASONING
            else:
                why = self._split_why(has_system)
        if why:
            self.why[why] += 1
            self.per_answer_conversations += 1
            self.per_answer_rows += len(answers)
            self.rows_out += len(answers)
        else:
            self.rows_out += 1

    def _count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._backend is not None:
            return [len(e.ids) for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        ids = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(x) for x in ids]

    def overhead(self, roles: tuple) -> int:
        """Tokens the chat template adds around a conversation with these roles."""
        if roles not in self._overhead:
            n = 0
            if self.has_template and roles:
                probe = [{"role": r, "content": "x"} for r in roles]
                try:
                    text = self.tokenizer.apply_chat_template(probe, tokenize=False)
                    n = max(0, self._count([text])[0] - len(roles) * self._count(["x"])[0])
                except Exception:  # a template that rejects this role order: counted as 0
                    n = 0
            self._overhead[roles] = n
        return self._overhead[roles]

    def add_batch(self, records: list[dict], sources: list[dict]) -> None:
        flat, owners = [], []
        for i, rec in enumerate(records):
            for m in rec.get("messages") or ():
                flat.append(m.get("content") or "")
                owners.append(i)
        totals = np.zeros(len(records), dtype=np.int64)
        np.add.at(totals, np.asarray(owners, dtype=np.intp), np.asarray(self._count(flat), dtype=np.int64))
        for i, rec in enumerate(records):
            if self.fmt is not None:
                self._count_rows(rec)
            n = int(totals[i]) + self.overhead(tuple(m.get("role") for m in rec.get("messages") or ()))
            if self.max_seq_len is not None and n > self.max_seq_len - _NEAR_LIMIT:
                n = self._exact(rec, sources[i], n)
            self.lengths.append(n)

    def _exact(self, record: dict, source: dict, estimate: int) -> int:
        """Render a row near or over the limit exactly; count it and its lost answer tokens."""
        from workbench.data.render import render_conversation

        try:
            full = render_conversation(self.tokenizer, record["messages"], max_seq_len=None)
        except Exception:  # no template / a row the template rejects: keep the estimate
            if estimate > self.max_seq_len:
                self._over(source, estimate, None)
            return estimate
        n = len(full.input_ids)
        if n > self.max_seq_len:
            self._over(source, n, sum(full.assistant_masks[self.max_seq_len :]))
        return n

    def _over(self, source: dict, tokens: int, lost: int | None) -> None:
        self.over_rows += 1
        self.lost += lost or 0
        if len(self.over_examples) < self.max_examples:
            self.over_examples.append({"source": source, "tokens": tokens, "answer_tokens_lost": lost})

    def result(self) -> dict:
        lengths = np.frombuffer(self.lengths, dtype=np.int32) if len(self.lengths) else np.zeros(0)
        over = None
        if self.max_seq_len is not None:
            over = {"max_seq_len": self.max_seq_len, "rows": self.over_rows,
                    "answer_tokens_lost": self.lost, "examples": self.over_examples}
        method = "contents + template overhead" + (", exact near the limit" if over else "")
        template = None
        if self.fmt is not None:
            template = {"name": self.fmt.name, "notes": list(self.fmt.notes), "rows_in": self.rows_in,
                        "rows_out": self.rows_out, "per_answer_rows": self.per_answer_rows,
                        "per_answer_conversations": self.per_answer_conversations,
                        "why": [f"{why} ({n})" for why, n in self.why.most_common()]}
        return {"row": {**stats(lengths), "histogram": histogram(lengths)}, "method": method,
                "over_limit": over, "template": template}


# ---------------------------------------------------------------------------------------------
# Public API


def inspect_dataset(
    path_or_records: str | Path | Iterable[dict] | list[str | Path],
    tokenizer: Any = None,
    max_seq_len: int | None = None,
    near_dup_threshold: float = 0.85,
    min_answer_chars: int = 2,
    format: str = "auto",
    progress: Callable[[int, int | None], None] | None = None,
    cancel: CancelFlag | None = None,
    max_examples: int = 20,
    near_dups: bool = True,
    chat: Any = None,
    columns: dict[str, str] | None = None,
) -> InspectionReport:
    """Inspect records from a file, several files, or an iterable of records, in one pass.

    progress(rows_done, None) is called after each batch of rows; when `cancel.is_set()` the pass
    stops and the report covers the rows read so far (`cancelled: true`).
    near_dups=False skips MinHash (saves 512 bytes/row and ~20% of the time on big datasets).
    chat: the ChatFormat (data.system / data.reasoning) training will use; the tokenizer's
    default one when None.
    columns: the profile's data.columns (schema name -> the file's column name), as training
    reads the file.
    """
    started = time.perf_counter()
    report = InspectionReport()
    load = LoadReport()
    records, schemas = _records(path_or_records, format, load, report, columns)
    state = _State(tokenizer, max_seq_len, near_dup_threshold if near_dups else None, max_examples,
                   chat)

    batch: list[dict] = []
    for record in records:
        batch.append(record)
        if len(batch) == _BATCH:
            state.add_batch(batch, min_answer_chars)
            batch = []
            if progress:
                progress(state.n, None)
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
    if batch and not report.cancelled:
        state.add_batch(batch, min_answer_chars)
        if progress:
            progress(state.n, None)

    state.finish(report, min_answer_chars)
    report.rows_read = load.rows_read if load.rows_read else state.n
    report.rows_skipped = len(load.skipped)
    report.skipped_examples = [{"file": f, "row": r, "column": load.columns.get((f, r)), "reason": why}
                               for f, r, why in load.skipped[:max_examples]]
    by_schema: Counter = Counter()
    for file, n in report.rows_by_file.items():
        by_schema[schemas.get(file) or load.formats.get(file, "records")] += n
    report.rows_by_schema = dict(by_schema)
    report.elapsed_s = round(time.perf_counter() - started, 3)
    return report


def _records(source: Any, format: str, load: LoadReport, report: InspectionReport,
             columns: dict[str, str] | None = None):
    """(record iterator, {file: schema}) for a path, a list of paths, or records."""
    if isinstance(source, (str, Path)):
        paths = [source]
    elif isinstance(source, list) and source and all(isinstance(p, (str, Path)) for p in source):
        paths = source
    else:
        report.inputs = ["<records>"]
        return iter(source), {}
    report.inputs = [str(p) for p in paths]

    def chain():
        for p in paths:
            yield from iter_records(p, format=format, on_bad_line="skip", report=load, columns=columns)

    return chain(), {}


class _State:
    """Per-row numbers and bounded example lists, filled batch by batch."""

    def __init__(self, tokenizer, max_seq_len, near_threshold, max_examples, chat=None):
        self.n = 0
        self.max_examples = max_examples
        self.files: dict[str | None, int] = {}
        self.file_of = array("i")
        self.row_of = array("q")
        self.chars = array("i")
        self.answer_chars = array("i")
        self.msg_counts: Counter = Counter()
        self.roles: Counter = Counter()
        self.empty = _Examples(max_examples)
        self.empty_rows = 0
        self.short = []
        self.short_rows = 0
        self.placeholders = _Examples(max_examples)
        self.placeholder_rows: Counter = Counter()
        self.placeholder_examples: list[dict] = []
        self.placeholder_total = 0
        self.broken = _Examples(max_examples)
        self.broken_rows = 0
        self.broken_examples: list[dict] = []
        self.secrets = _Examples(max_examples)
        self.secret_rows = 0
        self.pii = _Examples(max_examples)
        self.pii_rows = 0
        # Exact dups online: first row of each key; later rows point at it.
        self.first_of_key: dict[bytes, int] = {}
        self.dup_of: dict[int, list[int]] = {}
        self.tokens = _Tokens(tokenizer, max_seq_len, max_examples, chat) if tokenizer is not None else None
        self.lsh = MinHashLSH(threshold=near_threshold) if near_threshold is not None else None
        self.lsh_rows = array("q")  # MinHash index -> row index (exact copies are not signed)

    def source(self, i: int) -> dict:
        files = getattr(self, "_file_names", None)
        if files is None or len(files) != len(self.files):
            self._file_names = files = list(self.files)
        return {"file": files[self.file_of[i]], "row": self.row_of[i]}

    def add_batch(self, batch: list[dict], min_answer_chars: int) -> None:
        sources, near_texts = [], []
        for record in batch:
            i = self.n
            self.n += 1
            src = record.get("source") or {}
            file = src.get("file")
            self.file_of.append(self.files.setdefault(file, len(self.files)))
            self.row_of.append(int(src.get("row", i)) if src.get("row") is not None else i)
            source = {"file": file, "row": self.row_of[i]}
            sources.append(source)
            if self._row(i, record, source, min_answer_chars) and self.lsh is not None:
                near_texts.append(record_text(record, include_system=False))
                self.lsh_rows.append(i)
        if self.lsh is not None and near_texts:
            self.lsh.add(near_texts)
        if self.tokens is not None:
            self.tokens.add_batch(batch, sources)

    def _row(self, i: int, record: dict, source: dict, min_answer_chars: int) -> bool:
        """Per-row checks; True when the row is the first of its exact text (worth signing)."""
        messages = record.get("messages") or []
        self.msg_counts[len(messages)] += 1
        chars = answer = 0
        for m in messages:
            n = len(m.get("content") or "")
            chars += n
            self.roles[m.get("role")] += 1
            if m.get("role") == "assistant":
                answer += n
        self.chars.append(chars)
        self.answer_chars.append(answer)

        missing = empty_fields(record)
        if missing:
            self.empty_rows += 1
            for f in missing:
                self.empty.add(f, source)
        if is_short_answer(record, min_answer_chars):
            self.short_rows += 1
            if len(self.short) < self.max_examples:
                self.short.append(source)

        text = record_text(record)
        self._text_checks(text, source)
        kept = self.first_of_key.setdefault(exact_key(text), i)
        if kept != i:
            self.dup_of.setdefault(kept, [kept]).append(i)
            return False
        return True

    def _text_checks(self, text: str, source: dict) -> None:
        found = find_placeholders(text)
        if found:
            self.placeholder_total += 1
            for name in found:
                self.placeholders.counts[name] += 1
            for name in set(found):
                self.placeholder_rows[name] += 1
            if len(self.placeholder_examples) < self.max_examples:
                self.placeholder_examples.append({"source": source, "found": sorted(set(found))})
        issues = broken_text_issues(text)
        if issues:
            self.broken_rows += 1
            for kind in issues:
                self.broken.counts[kind] += 1
            if len(self.broken_examples) < self.max_examples:
                self.broken_examples.append({"source": source, "kinds": issues})
        for finder, bucket, attr in ((find_secrets, self.secrets, "secret_rows"),
                                     (find_pii, self.pii, "pii_rows")):
            hits = finder(text)
            if hits:
                setattr(self, attr, getattr(self, attr) + 1)
                for kind, match in hits:
                    # Only the masked form is ever kept: reports get copied and shared.
                    bucket.add(kind, {"source": source, "kind": kind, "masked": mask_secret(match)})

    def finish(self, report: InspectionReport, min_answer_chars: int) -> None:
        ex = self.max_examples
        names = list(self.files)
        report.rows = self.n
        report.rows_by_file = {str(f) if f is not None else "<records>": 0 for f in names}
        for idx, count in Counter(self.file_of).items():
            f = names[idx]
            report.rows_by_file[str(f) if f is not None else "<records>"] = count
        report.messages_per_row = {**stats(_expand(self.msg_counts)),
                                   "counts": {str(k): v for k, v in sorted(self.msg_counts.items())}}
        report.roles = dict(self.roles)
        chars = np.frombuffer(self.chars, dtype=np.int32) if self.n else np.zeros(0)
        answer = np.frombuffer(self.answer_chars, dtype=np.int32) if self.n else np.zeros(0)
        report.chars = {"row": {**stats(chars), "histogram": histogram(chars)}, "answer": stats(answer)}
        report.tokens = self.tokens.result() if self.tokens is not None else None
        report.empty_fields = {"rows": self.empty_rows, "counts": dict(self.empty.counts),
                               "examples": self.empty.examples}
        report.short_answers = {"min_chars": min_answer_chars, "rows": self.short_rows,
                                "examples": self.short}

        exact_groups = [self.dup_of[k] for k in sorted(self.dup_of)]
        report.exact_duplicates = {
            "groups": len(exact_groups),
            "rows_removable": sum(len(g) - 1 for g in exact_groups),
            "examples": [[self.source(i) for i in g[:ex]] for g in exact_groups[:ex]],
        }
        if self.lsh is not None:
            rows = np.frombuffer(self.lsh_rows, dtype=np.int64) if len(self.lsh_rows) else np.zeros(0, np.int64)
            groups = [[int(rows[j]) for j in g] for g in self.lsh.groups()]
            report.near_duplicates = {
                "threshold": self.lsh.threshold,
                "groups": len(groups),
                "rows_removable": sum(len(g) - 1 for g in groups),
                "examples": [[self.source(i) for i in g[:ex]] for g in groups[:ex]],
            }
        report.placeholders = {"rows": self.placeholder_total, "counts": dict(self.placeholders.counts),
                               "rows_by_placeholder": dict(self.placeholder_rows),
                               "examples": self.placeholder_examples}
        report.broken_text = {"rows": self.broken_rows, "counts": dict(self.broken.counts),
                              "examples": self.broken_examples}
        for name, bucket, rows in (("secrets", self.secrets, self.secret_rows), ("pii", self.pii, self.pii_rows)):
            examples = [e for kind in bucket.examples for e in bucket.examples[kind]][:ex]
            setattr(report, name, {"rows": rows, "counts": dict(bucket.counts), "examples": examples})


def _expand(counter: Counter) -> np.ndarray:
    if not counter:
        return np.zeros(0)
    return np.repeat(np.array(list(counter.keys())), np.array(list(counter.values())))


# ---------------------------------------------------------------------------------------------
# Text for people


def format_report(report: InspectionReport | dict, total_s: float | None = None) -> str:
    """The report as aligned text sections, with a small histogram of lengths."""
    r = report.to_json() if isinstance(report, InspectionReport) else report
    out: list[str] = []

    def section(title: str) -> None:
        out.append("")
        out.append(title)
        out.append("-" * len(title))

    def line(label: str, value: Any) -> None:
        out.append(f"  {label:<28} {value:>12,}" if isinstance(value, int) else f"  {label:<28} {value:>12}")

    def more(total: int, shown: int, what: str) -> None:
        # Only some examples are listed: say how many are not.
        if total > shown:
            out.append(f"      … and {total - shown:,} more {what}")

    def refs(sources: list[dict], limit: int = 5) -> str:
        shown = ", ".join(row_label(s.get("file"), s["row"], name_only=True) for s in sources[:limit])
        return shown + (" …" if len(sources) > limit else "")

    out.append(f"Dataset inspection — {', '.join(r['inputs'])}" + ("  (CANCELLED: partial)" if r["cancelled"] else ""))
    section("Rows")
    line("rows read", r["rows_read"])
    line("rows inspected", r["rows"])
    line("rows skipped (bad)", r["rows_skipped"])
    for e in r["skipped_examples"][:5]:
        out.append(f"    {row_label(e['file'], e['row'], e.get('column'), name_only=True)}: {e['reason']}")
    for schema, n in r["rows_by_schema"].items():
        line(f"schema {schema}", n)
    if len(r["rows_by_file"]) > 1:
        for f, n in r["rows_by_file"].items():
            line(Path(f).name, n)
    section("Shape")
    mpr = r["messages_per_row"]
    line("messages per row (mean)", mpr["mean"] if mpr["mean"] is not None else "-")
    for role, n in r["roles"].items():
        line(f"{role} messages", n)
    _stats_lines(out, "characters per row", r["chars"]["row"])
    _stats_lines(out, "answer characters", r["chars"]["answer"])
    out += _text_histogram(r["chars"]["row"]["histogram"], "characters")
    if r["tokens"]:
        section("Tokens")
        _stats_lines(out, "tokens per row", r["tokens"]["row"])
        out += _text_histogram(r["tokens"]["row"]["histogram"], "tokens")
        over = r["tokens"]["over_limit"]
        if over:
            line(f"rows > max_seq_len {over['max_seq_len']}", over["rows"])
            line("answer tokens lost", over["answer_tokens_lost"])
            if over["examples"]:
                out.append(f"    e.g. {refs([e['source'] for e in over['examples']])}")
        template = r["tokens"].get("template")
        if template:
            line("training rows", template["rows_out"])
            if template["per_answer_conversations"]:
                out.append(f"    {template['per_answer_conversations']} conversations with several "
                           f"answers become {template['per_answer_rows']} rows, one per answer: "
                           + "; ".join(template["why"]))
            for note in template["notes"]:
                out.append(f"    note: {note}")
    section("Problems")
    ef = r["empty_fields"]
    line("rows with empty fields", ef["rows"])
    for f, n in ef["counts"].items():
        line(f"  empty/missing {f}", n)
        out.append(f"      e.g. {refs(ef['examples'][f])}")
    sa = r["short_answers"]
    line(f"answers < {sa['min_chars']} chars", sa["rows"])
    if sa["examples"]:
        out.append(f"      e.g. {refs(sa['examples'])}")
    ed = r["exact_duplicates"]
    line("exact duplicate groups", ed["groups"])
    line("  rows removable", ed["rows_removable"])
    for g in ed["examples"][:3]:
        out.append(f"      {refs(g)}")
    more(ed["groups"], 3, "groups")
    nd = r["near_duplicates"]
    if nd is not None:
        line(f"near-dup groups (J>={nd['threshold']})", nd["groups"])
        line("  rows removable", nd["rows_removable"])
        for g in nd["examples"][:3]:
            out.append(f"      {refs(g)}")
        more(nd["groups"], 3, "groups")
    else:
        line("near duplicates", "not checked")
    for title, key, ex_key in (("placeholders", "placeholders", "found"), ("broken text", "broken_text", "kinds"),
                               ("secrets", "secrets", "masked"), ("PII", "pii", "masked")):
        block = r[key]
        line(f"rows with {title}", block["rows"])
        for name, n in sorted(block["counts"].items(), key=lambda kv: -kv[1]):
            line(f"  {name}", n)
        for e in block["examples"][:3]:
            out.append(f"      {refs([e['source']])}  {e[ex_key]}")
        more(block["rows"], 3, "rows")
        if key == "placeholders" and block["counts"]:
            name = next(iter(sorted(block["counts"], key=lambda k: -block["counts"][k])))
            out.append(f"      fill them: workbench data clean FILE -o OUT --steps fill_placeholders "
                       f"--fill \"{_fill_name(name)}=...\"")
    out.append("")
    if total_s is not None and total_s >= r["elapsed_s"] + 0.05:
        # The whole command: starting up and loading a tokenizer can take most of it.
        out.append(f"({total_s:.1f} s in all, {r['elapsed_s']:.1f} s of it inspecting the rows)")
    else:
        out.append(f"({r['elapsed_s']:.1f} s)")
    return "\n".join(out)


def _fill_name(placeholder: str) -> str:
    from workbench.data.clean import placeholder_name

    return placeholder_name(placeholder)


def _stats_lines(out: list[str], label: str, s: dict) -> None:
    if not s["count"]:
        out.append(f"  {label:<28} {'-':>12}")
        return
    out.append(f"  {label:<28} min {s['min']:,}  mean {s['mean']:,}  p50 {s['p50']:,}  "
               f"p90 {s['p90']:,}  p99 {s['p99']:,}  max {s['max']:,}")


def _text_histogram(h: dict, unit: str, width: int = 40) -> list[str]:
    if not h["counts"]:
        return []
    top = max(h["counts"]) or 1
    lines = [f"    {unit} histogram"]
    for lo, hi, n in zip(h["edges"], h["edges"][1:], h["counts"]):
        bar = "█" * round(n / top * width)
        lines.append(f"    {lo:>7,}–{hi:<7,} {n:>9,} {bar}")
    return lines
