"""Inspect a dataset before training: one streaming pass, a report for people and for the app.

`inspect_dataset(path_or_records, ...)` reads records (through `iter_records`, bad rows skipped and
counted), keeps bounded summaries (length tables, run-length row sources, capped example lists),
an exact-dup index of 12 bytes per distinct row and a MinHash index of 264 bytes per row for at
most `near_dup_max_rows` rows (`near_dups=False` drops it), and returns an `InspectionReport`.
`sample_rows=N` reads only the first N rows (a quick look at streamed data; the report says so).
`format_report(report)` renders it as text; `report.to_json()` is the app's view.

JSON schema (`schema_version: 1`). A *source* is `{"file": str|null, "row": int}` (the record's
`source`; `row` numbering as in `load.py`). A *stats* object is
`{"count", "min", "mean", "p50", "p90", "p99", "max", "total"}` (null values when count is 0), and
a *histogram* is `{"edges": [b0..bn], "counts": [c1..cn]}` (n bins, bin i is [b(i-1), b(i)),
the last one closed).

    schema_version      1
    inputs              [str]                  files read (or ["<records>"])
    cancelled           bool                   true when `cancel` stopped the pass early
    sample_rows         null | int             N when only the first N rows were read (the data
                                               has more); null when every row was read
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
    exact_duplicates    {"groups", "rows_removable", "examples": [[source, ...]], "memory_bytes"}
    near_duplicates     null (near_dups=False) | {"threshold", "groups", "rows_removable",
                          "examples": [[source, ...]], "memory_bytes", "rows_indexed",
                          "max_rows": int|null, "rows_past_bound": int,
                          "worker_peak_rss_bytes": int|null (the dedup worker process's
                          peak, for inputs big enough to start one; null otherwise)}
                          (exact copies are collapsed first, so the two removable counts add
                          up; rows_past_bound rows were checked against the first max_rows
                          signed rows but not with each other)
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
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
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
from workbench.data.dedup import (
    BatchDeduper,
    CancelFlag,
    MinHashLSH,
    MinHashProcess,
    record_text,
)
from workbench.data.load import LoadReport, iter_records
from workbench.data.readers import row_label

_BATCH = 2048
_NEAR_LIMIT = 16  # template-overhead estimates can be off by a few tokens at message boundaries
_BINS = 20
# The MinHash index's bound: 1M rows x 264 bytes (16-bit signatures + ids) ~ 264 MB.
NEAR_DUP_MAX_ROWS = 1_000_000


@dataclass
class InspectionReport:
    """What `inspect_dataset` found; `to_json()` gives the documented schema."""

    schema_version: int = 1
    inputs: list[str] = field(default_factory=list)
    cancelled: bool = False
    sample_rows: int | None = None
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
    sample_rows: int | None = None,
    near_dup_max_rows: int | None = NEAR_DUP_MAX_ROWS,
) -> InspectionReport:
    """Inspect records from a file, several files, or an iterable of records, in one pass.

    progress(rows_done, None) is called after each batch of rows; when `cancel.is_set()` the pass
    stops and the report covers the rows read so far (`cancelled: true`).
    near_dups=False skips MinHash (saves 512 bytes/row and ~20% of the time on big datasets).
    chat: the ChatFormat (data.system / data.reasoning) training will use; the tokenizer's
    default one when None.
    columns: the profile's data.columns (schema name -> the file's column name), as training
    reads the file.
    sample_rows: read only the first N rows (streamed data, a quick look); when the data has more,
    the report's `sample_rows` is N and the text says it covers a sample.
    near_dup_max_rows: the MinHash index holds at most this many rows (264 bytes each); rows
    past it are checked against the index but not added (None: no bound).
    """
    if sample_rows is not None and sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, got {sample_rows}")
    started = time.perf_counter()
    report = InspectionReport()
    load = LoadReport()
    records, schemas = _records(path_or_records, format, load, report, columns)
    state = _State(tokenizer, max_seq_len, near_dup_threshold if near_dups else None, max_examples,
                   chat, near_dup_max_rows, near_dups and _big_input(path_or_records, sample_rows))
    try:
        rows_read = _inspect_rows(records, state, report, load, min_answer_chars, progress, cancel,
                                  sample_rows)
        state.finish(report, min_answer_chars)
    finally:
        state.close()
    report.rows_read = rows_read if rows_read else state.n
    report.rows_skipped = len(load.skipped)
    report.skipped_examples = [{"file": f, "row": r, "column": load.columns.get((f, r)), "reason": why}
                               for f, r, why in load.skipped[:max_examples]]
    by_schema: Counter = Counter()
    for file, n in report.rows_by_file.items():
        by_schema[schemas.get(file) or load.formats.get(file, "records")] += n
    report.rows_by_schema = dict(by_schema)
    report.elapsed_s = round(time.perf_counter() - started, 3)
    return report


# Inputs of at least this many bytes sign MinHash in a child process (it starts in ~0.5 s and
# then runs on its own core); smaller ones on a thread.
_PROCESS_BYTES = 64 << 20


def _big_input(source: Any, sample_rows: int | None) -> bool:
    if sample_rows is not None and sample_rows < 100_000:
        return False
    paths = [source] if isinstance(source, (str, Path)) else source if isinstance(source, list) else []
    try:
        return sum(Path(p).stat().st_size for p in paths if Path(p).is_file()) >= _PROCESS_BYTES
    except (OSError, TypeError):
        return False


def _inspect_rows(records, state: _State, report: InspectionReport, load: LoadReport,
                  min_answer_chars: int, progress, cancel, sample_rows: int | None) -> int:
    """Feed the records to `state` in batches; the rows the loader read (0: not a loader)."""
    batch: list[dict] = []
    rows_read = 0
    for record in records:
        batch.append(record)
        if sample_rows is not None and state.n + len(batch) >= sample_rows:
            rows_read = load.rows_read
            # One more record tells a sample from the whole data; it is not inspected.
            if next(records, None) is not None:
                report.sample_rows = sample_rows
            break
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
    return rows_read or load.rows_read


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


class _Sources:
    """Row index -> {file, row}, run-length encoded: a file read in order is one run, so memory
    does not grow with the rows (a run starts where the file changes or the numbering jumps)."""

    def __init__(self) -> None:
        self.files: dict[str | None, int] = {}
        self._starts = array("q")  # first row index of each run
        self._file = array("i")
        self._first = array("q")  # source row of the run's first row
        self._next = (-1, -1, -1)  # (row index, file, source row) that would continue the last run
        self.rows_by_file: Counter = Counter()

    def add(self, i: int, file: str | None, row: int) -> None:
        f = self.files.get(file)
        if f is None:
            f = self.files[file] = len(self.files)
        self.rows_by_file[f] += 1
        if self._next != (i, f, row):
            self._starts.append(i)
            self._file.append(f)
            self._first.append(row)
        self._next = (i + 1, f, row + 1)

    def __getitem__(self, i: int) -> dict:
        run = bisect_right(self._starts, i) - 1
        names = list(self.files)
        return {"file": names[self._file[run]], "row": self._first[run] + i - self._starts[run]}

    @property
    def nbytes(self) -> int:
        return len(self._starts) * 20


class _Lengths:
    """Exact count/percentiles/histogram of integer lengths from a value -> rows table: memory
    grows with the longest row, not with the number of rows."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: list[int]) -> None:
        if not values:
            return
        add = np.bincount(np.asarray(values, dtype=np.int64))
        if len(add) > len(self.counts):
            add[: len(self.counts)] += self.counts
            self.counts = add
        else:
            self.counts[: len(add)] += add

    def values(self) -> np.ndarray:
        """Every value as many times as it occurs (for stats/histogram; int32 is 4 bytes a row,
        built only for the summary: use `summary` for bounded memory)."""
        return np.repeat(np.arange(len(self.counts), dtype=np.int32), self.counts)

    def summary(self) -> dict:
        """stats + histogram, computed from the table without expanding it."""
        c = self.counts
        total_rows = int(c.sum())
        if total_rows == 0:
            return {**stats(np.zeros(0)), "histogram": histogram(np.zeros(0))}
        v = np.arange(len(c), dtype=np.float64)
        nz = np.flatnonzero(c)
        cum = np.cumsum(c)

        def pct(q: float) -> float:  # numpy's default (linear) percentile, from the table
            pos = (total_rows - 1) * q / 100
            lo, hi = int(np.floor(pos)), int(np.ceil(pos))
            a, b = np.searchsorted(cum, lo, side="right"), np.searchsorted(cum, hi, side="right")
            return a + (b - a) * (pos - lo)

        total = float((v * c).sum())
        out = {"count": total_rows, "min": _num(nz[0]), "mean": round(total / total_rows, 1),
               "p50": _num(pct(50)), "p90": _num(pct(90)), "p99": _num(pct(99)),
               "max": _num(nz[-1]), "total": _num(total)}
        top = max(int(nz[-1]), 1)
        width = max(1, -(-(top + 1) // _BINS))
        edges = np.arange(0, width * _BINS + 1, width)
        bins = np.minimum(np.arange(len(c)) // width, _BINS - 1)
        counts = np.bincount(bins, weights=c, minlength=_BINS).astype(np.int64)
        return {**out, "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}


_SECRET_STARTS: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None


def _secret_starts() -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(first three bytes of every literal that gates a `checks._SECRET_RULES` pattern, first three
    letters of the words that gate the generic rule, which looks for them in lower case)."""
    global _SECRET_STARTS
    if _SECRET_STARTS is None:
        from workbench.data.checks import _GENERIC_SECRET_WORDS, _SECRET_RULES

        rules = sorted({lit[:3].encode("ascii") for _, literals, _ in _SECRET_RULES for lit in literals})
        words = sorted({w[:3].encode("ascii") for w in _GENERIC_SECRET_WORDS})
        assert all(len(x) == 3 for x in rules + words)  # every gate is 3+ ASCII characters long
        _SECRET_STARTS = (tuple(rules), tuple(words))
    return _SECRET_STARTS


def _find_any(a: np.ndarray, needles: tuple[bytes, ...]) -> np.ndarray:
    """Positions in byte array `a` where one of the 3-byte `needles` starts (numpy compares)."""
    eq: dict[int, np.ndarray] = {}
    hit = np.zeros(len(a) - 2, dtype=bool)
    m = np.empty(len(a) - 2, dtype=bool)
    for needle in needles:
        for c in needle:
            if c not in eq:
                eq[c] = a == c
        np.logical_and(eq[needle[0]][:-2], eq[needle[1]][1:-1], out=m)
        m &= eq[needle[2]][2:]
        hit |= m
    return np.flatnonzero(hit)


_CHUNK = 1 << 17  # bytes per numpy pass in `_prefilter`: temporaries stay in the CPU cache


def _prefilter(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (may have PII, may have broken text, may have secrets), for a batch at once.

    The detectors in checks.py cost ~50 us a row of 800 characters, most of it regex scans that
    find nothing. A row where a scan cannot match is told apart with whole-batch numpy passes:
    no ASCII digit and no "@" -> no PII; no ASCII control character -> no broken text; none of
    the 3-byte starts of a secret's gating literals -> no secret. Rows that could match, and
    every row with non-ASCII text (Unicode digits, case folding), go through the detectors, so
    their results do not change.
    """
    n = len(texts)
    every = np.ones(n, dtype=bool)
    joined = "\x00".join(texts) + "\x00"
    if joined.count("\x00") != n:  # a NUL inside a text: no batch view, run every detector
        return every, every, every
    data = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    starts = np.concatenate([[0], np.flatnonzero(data == 0)[:-1] + 1])
    rules, words = _secret_starts()
    found: tuple[list, list, list, list] = ([], [], [], [])  # other, pii, broken, secrets
    for at in range(0, len(data), _CHUNK):
        a = data[at : at + _CHUNK + 2]  # 2 bytes of overlap: a needle may cross chunks
        head = a[: _CHUNK]
        found[0].append(np.flatnonzero(head >= 0x80) + at)
        found[1].append(np.flatnonzero(((head - np.uint8(48)) < 10) | (head == 64)) + at)
        control = (head < 32) & (head != 0) & (head != 9) & (head != 10) & (head != 13)
        control |= head == 127
        found[2].append(np.flatnonzero(control) + at)
        if len(a) >= 3:
            lowered = a | (((a - np.uint8(65)) < 26).astype(np.uint8) << 5)
            found[3].append(_find_any(a, rules) + at)
            found[3].append(_find_any(lowered, words) + at)

    def rows(parts: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        pos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        out[np.searchsorted(starts, pos, side="right") - 1] = True
        return out

    other = rows(found[0])
    return other | rows(found[1]), other | rows(found[2]), other | rows(found[3])


class _Done:
    """An already computed result, read like a Future's."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


class _State:
    """Bounded per-row summaries and example lists, filled batch by batch.

    Memory: length tables, run-length sources and example lists do not grow with the rows; the
    exact-dup index grows by 12 bytes a distinct row; the MinHash index by 264 bytes a signed
    row up to `near_dup_max_rows` rows, then stays. Dedup overlaps the per-row checks on a second
    core: for inputs of `_PROCESS_BYTES` or more, exact keys and MinHash signing run in a worker
    process (`dedup.MinHashProcess`); for smaller ones MinHash runs on a thread (numpy releases
    the GIL) and the pre-filter of the text checks on another.
    """

    def __init__(self, tokenizer, max_seq_len, near_threshold, max_examples, chat=None,
                 near_max_rows=None, near_process=False):
        self.n = 0
        self.max_examples = max_examples
        self.sources = _Sources()
        self.chars = _Lengths()
        self.answer_chars = _Lengths()
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
        self.tokens = _Tokens(tokenizer, max_seq_len, max_examples, chat) if tokenizer is not None else None
        self._filter_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefilter")
        self._checks_due: tuple | None = None
        self.lsh = None
        self.lsh_process = False
        if near_threshold is not None:
            if near_process:
                self.lsh = MinHashProcess(threshold=near_threshold, max_rows=near_max_rows)
                self.lsh_process = True
            else:
                self.lsh = MinHashLSH(threshold=near_threshold, max_rows=near_max_rows)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minhash")
            self._pending: deque = deque()
        # Exact dups online (the first row of each key) and the MinHash signing after them.
        self.dedup = self.lsh if self.lsh_process else BatchDeduper(self._sign if self.lsh is not None else None)

    def source(self, i: int) -> dict:
        return self.sources[i]

    def add_batch(self, batch: list[dict], min_answer_chars: int) -> None:
        sources, texts, chars, answers = [], [], [], []
        has_system = False
        first = self.n
        for record in batch:
            i = self.n
            self.n += 1
            src = record.get("source") or {}
            file = src.get("file")
            row = int(src["row"]) if src.get("row") is not None else i
            self.sources.add(i, file, row)
            source = {"file": file, "row": row}
            sources.append(source)
            text, system, n_chars, n_answer = self._row(record, source, min_answer_chars)
            texts.append(text)
            chars.append(n_chars)
            answers.append(n_answer)
            has_system |= system
        self.chars.add(chars)
        self.answer_chars.add(answers)
        # The text checks of this batch run when the next batch arrives (or at the end): by then
        # the worker thread has pre-filtered its rows while this thread read the next batch.
        self._run_checks()
        if self.lsh_process:  # the second core is the signer's: filter here (no GIL fight)
            self._checks_due = (texts, sources, _Done(_prefilter(texts)))
        else:
            self._checks_due = (texts, sources, self._filter_pool.submit(_prefilter, texts))

        # Exact dups and MinHash for the batch at once (here, or all of it in the worker).
        near = [record_text(r, include_system=False) for r in batch] if has_system else None
        self.dedup.add(texts, near, first)
        if self.tokens is not None:
            self.tokens.add_batch(batch, sources)

    def _run_checks(self) -> None:
        if self._checks_due is None:
            return
        texts, sources, future = self._checks_due
        self._checks_due = None
        pii, broken, secrets = future.result()
        for j, text in enumerate(texts):
            self._text_checks(text, sources[j], pii[j], broken[j], secrets[j])

    def _sign(self, texts: list[bytes], ids: np.ndarray) -> None:
        # At most two batches queue for the worker, so memory stays bounded when it falls behind.
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self.lsh.add_normalized, texts, ids))

    def _drain(self) -> None:
        """Run the last checks, wait for the signing worker (its errors surface here), stop both."""
        self._run_checks()
        self._filter_pool.shutdown()
        if self.lsh is not None:
            while self._pending:
                self._pending.popleft().result()
            self._pool.shutdown()

    def close(self) -> None:
        """Stop the workers without waiting for queued work (after an error)."""
        self._filter_pool.shutdown(wait=True)
        if self.lsh is not None:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            if self.lsh_process:
                self.lsh.close()

    def _row(self, record: dict, source: dict, min_answer_chars: int) -> tuple[str, bool, int, int]:
        """Per-row checks; (exact-dup text, has a system message, characters, answer characters)."""
        messages = record.get("messages") or []
        self.msg_counts[len(messages)] += 1
        chars = answer = 0
        system = user = assistant = False
        blank = short = not messages
        roles = self.roles
        for m in messages:
            content = m.get("content") or ""
            n = len(content)
            chars += n
            role = m.get("role")
            roles[role] += 1
            # Only a message that is empty, short or starts/ends with whitespace can make
            # empty_fields / is_short_answer fire: the exact checks run for those rows only.
            edge = n == 0 or content[0].isspace() or content[-1].isspace()
            blank = blank or edge
            if role == "assistant":
                answer += n
                assistant = True
                short = short or edge or n < min_answer_chars
            elif role == "user":
                user = True
            elif role == "system":
                system = True

        if blank or not (user and assistant):
            missing = empty_fields(record)
            if missing:
                self.empty_rows += 1
                for f in missing:
                    self.empty.add(f, source)
        if short and is_short_answer(record, min_answer_chars):
            self.short_rows += 1
            if len(self.short) < self.max_examples:
                self.short.append(source)

        return record_text(record), system, chars, answer

    def _text_checks(self, text: str, source: dict, pii: bool = True, broken: bool = True,
                     secrets: bool = True) -> None:
        """The checks.py detectors on one row; pii/broken/secrets False skip a detector that
        `_prefilter` showed cannot find anything in this row."""
        found = find_placeholders(text)
        if found:
            self.placeholder_total += 1
            for name in found:
                self.placeholders.counts[name] += 1
            for name in set(found):
                self.placeholder_rows[name] += 1
            if len(self.placeholder_examples) < self.max_examples:
                self.placeholder_examples.append({"source": source, "found": sorted(set(found))})
        issues = broken_text_issues(text) if broken else None
        if issues:
            self.broken_rows += 1
            for kind in issues:
                self.broken.counts[kind] += 1
            if len(self.broken_examples) < self.max_examples:
                self.broken_examples.append({"source": source, "kinds": issues})
        for finder, bucket, attr, run in ((find_secrets, self.secrets, "secret_rows", secrets),
                                          (find_pii, self.pii, "pii_rows", pii)):
            if not run:
                continue
            hits = finder(text)
            if hits:
                setattr(self, attr, getattr(self, attr) + 1)
                for kind, match in hits:
                    # Only the masked form is ever kept: reports get copied and shared.
                    bucket.add(kind, {"source": source, "kind": kind, "masked": mask_secret(match)})

    def finish(self, report: InspectionReport, min_answer_chars: int) -> None:
        self._drain()
        ex = self.max_examples
        names = list(self.sources.files)
        report.rows = self.n
        report.rows_by_file = {str(f) if f is not None else "<records>": 0 for f in names}
        for idx, count in self.sources.rows_by_file.items():
            f = names[idx]
            report.rows_by_file[str(f) if f is not None else "<records>"] = count
        report.messages_per_row = {**stats(_expand(self.msg_counts)),
                                   "counts": {str(k): v for k, v in sorted(self.msg_counts.items())}}
        report.roles = dict(self.roles)
        answer = self.answer_chars.summary()
        answer.pop("histogram")
        report.chars = {"row": self.chars.summary(), "answer": answer}
        report.tokens = self.tokens.result() if self.tokens is not None else None
        report.empty_fields = {"rows": self.empty_rows, "counts": dict(self.empty.counts),
                               "examples": self.empty.examples}
        report.short_answers = {"min_chars": min_answer_chars, "rows": self.short_rows,
                                "examples": self.short}

        groups = self.lsh.groups() if self.lsh is not None else None  # the worker's pairs too
        pairs = self.lsh.dup_pairs if self.lsh_process else self.dedup.pairs()
        kept = np.unique(pairs[:, 0])
        examples = []
        for k in kept[:ex].tolist():  # pairs are in row order, so each group's rows ascend
            examples.append([self.source(i) for i in ([k] + pairs[pairs[:, 0] == k, 1].tolist())[:ex]])
        report.exact_duplicates = {
            "groups": len(kept),
            "rows_removable": len(pairs),
            "examples": examples,
            "memory_bytes": self.lsh.exact_nbytes + pairs.nbytes if self.lsh_process else self.dedup.nbytes,
        }
        if self.lsh is not None:
            report.near_duplicates = {
                "threshold": self.lsh.threshold,
                "groups": len(groups),
                "rows_removable": sum(len(g) - 1 for g in groups),
                "examples": [[self.source(i) for i in g[:ex]] for g in groups[:ex]],
                "memory_bytes": self.lsh.nbytes,
                "rows_indexed": self.lsh.indexed,
                "max_rows": self.lsh.max_rows,
                "rows_past_bound": self.lsh.queried,
                "worker_peak_rss_bytes": self.lsh.peak_rss_kb * 1024 if self.lsh_process else None,
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
    if r.get("sample_rows"):
        out.append(f"(a sample of the first {r['sample_rows']:,} rows; the data has more)")
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
    if ed.get("memory_bytes") is not None:
        line("  index memory", _mb(ed["memory_bytes"]))
    nd = r["near_duplicates"]
    if nd is not None:
        line(f"near-dup groups (J>={nd['threshold']})", nd["groups"])
        line("  rows removable", nd["rows_removable"])
        for g in nd["examples"][:3]:
            out.append(f"      {refs(g)}")
        more(nd["groups"], 3, "groups")
        if nd.get("memory_bytes") is not None:
            bound = f", bound {nd['max_rows']:,}" if nd.get("max_rows") else ""
            line("  MinHash index memory", _mb(nd["memory_bytes"]))
            out.append(f"      {nd['rows_indexed']:,} rows indexed{bound}")
        if nd.get("rows_past_bound"):
            out.append(f"      {nd['rows_past_bound']:,} rows past the bound were checked against the "
                       f"first {nd['max_rows']:,} only, not with each other: near copies among "
                       "them are not counted")
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


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} KB"


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
