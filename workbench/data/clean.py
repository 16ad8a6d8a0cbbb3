"""Clean a dataset with opt-in, named operations, each one accounted for.

Every operation is listed by name in `CleanConfig.steps` and runs in that order (order matters:
normalizing whitespace before deduplicating finds more duplicates). Each leaves an `OpReport`
with the rows that went in and came out, every removed row with its source file, row and the
reason, rows it changed, and rows it kept but flagged (e.g. a placeholder with no value).
Nothing is removed uncounted: `rows_in - rows_out == len(removed)` for every operation.

Operations:
    drop_empty            a message with empty content, or no assistant answer at all
    drop_short            an assistant answer shorter than `min_answer_chars`
    normalize_whitespace  line endings, trailing spaces, runs of blank lines, message edges;
                          fenced code blocks and indentation are left exactly as they are
    dedup_exact           identical conversations: the first is kept
    dedup_near            near-identical conversations (MinHash, `near_dup_threshold`)
    length_filter         rows longer than `max_tokens` once rendered (needs a tokenizer)
    fill_placeholders     `{{name}}`, `[Your Name]`, `<NAME>` -> `placeholders["name"]` (the name
                          inside; unfilled ones are flagged)
    drop_secrets          rows with API keys / tokens / private keys (and PII with `drop_pii`)

Pure Python: the tokenizer is passed in, and dedup / checks are imported when a step needs them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from workbench.data.errors import DataError, TemplateError

STEPS = (
    "drop_empty",
    "drop_short",
    "normalize_whitespace",
    "dedup_exact",
    "dedup_near",
    "length_filter",
    "fill_placeholders",
    "drop_secrets",
)
LENGTH_POLICIES = ("exceeds", "answer_truncated")



class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


Progress = Callable[[int, "int | None"], None]


@dataclass
class CleanConfig:
    """Which operations to run (in this order) and their parameters."""

    steps: list[str] = field(default_factory=list)
    min_answer_chars: int = 2
    near_dup_threshold: float = 0.85
    max_tokens: int = 0  # 0 = length_filter has no limit to apply (an error if the step is asked)
    length_policy: str = "exceeds"  # or "answer_truncated": drop only rows that would lose answer tokens
    placeholders: dict[str, str] = field(default_factory=dict)
    drop_unfilled: bool = False
    drop_pii: bool = False
    num_perm: int = 128
    seed: int = 0

    def params_for(self, step: str) -> dict[str, Any]:
        """The parameters a step actually uses, as recorded in its report."""
        return {
            "drop_short": {"min_answer_chars": self.min_answer_chars},
            "dedup_near": {"threshold": self.near_dup_threshold, "num_perm": self.num_perm, "seed": self.seed},
            "length_filter": {"max_tokens": self.max_tokens, "policy": self.length_policy},
            "fill_placeholders": {"names": sorted(self.placeholders), "drop_unfilled": self.drop_unfilled},
            "drop_secrets": {"drop_pii": self.drop_pii},
        }.get(step, {})


@dataclass
class OpReport:
    """What one operation did. Row entries are {"file", "row", "reason"}."""

    name: str
    params: dict[str, Any]
    rows_in: int = 0
    rows_out: int = 0
    changed: int = 0
    removed: list[dict] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)  # kept, but a person should look


@dataclass
class CleanReport:
    operations: list[OpReport] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    cancelled: bool = False

    @property
    def removed_total(self) -> int:
        return sum(len(op.removed) for op in self.operations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "removed": self.removed_total,
            "cancelled": self.cancelled,
            "operations": [asdict(op) for op in self.operations],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def summary(self) -> list[dict[str, Any]]:
        """Per operation counts without the row lists (what a manifest records)."""
        return [
            {"name": op.name, "params": op.params, "rows_in": op.rows_in, "rows_out": op.rows_out,
             "removed": len(op.removed), "changed": op.changed, "flagged": len(op.flagged)}
            for op in self.operations
        ]


# ---------------------------------------------------------------------------------------------
# Public API


def validate_steps(steps: Iterable[str]) -> list[str]:
    """The steps as a list, or a DataError naming the unknown one and what was probably meant."""
    steps = list(steps)
    for step in steps:
        if step not in STEPS:
            close = difflib.get_close_matches(step, STEPS, n=1, cutoff=0.5)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"unknown clean operation {step!r}", hint=f"{guess}valid operations: {', '.join(STEPS)}")
    seen = {s for s in steps if steps.count(s) > 1}
    if seen:
        raise DataError(f"clean operation listed twice: {', '.join(sorted(seen))}", hint="list each operation once")
    return steps


def clean_records(
    records: Iterable[dict],
    config: CleanConfig,
    tokenizer: Any = None,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
) -> tuple[list[dict], CleanReport]:
    """Run `config.steps` in order over records (the one record format); return (kept, report).

    Records are copied before any change, so the caller's list is left as it was.
    progress(done, total) covers all steps as one bar (total = rows x steps). When `cancel.is_set()`
    the remaining steps are skipped, `report.cancelled` is True, and the rows so far are returned:
    do not save them as a cleaned dataset.
    """
    steps = validate_steps(config.steps)
    _check_config(config, steps, tokenizer)
    rows = [_copy_record(r) for r in records]
    report = CleanReport(rows_in=len(rows))
    total = len(rows) * len(steps)
    if progress:
        progress(0, total)
    for index, step in enumerate(steps):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        op = OpReport(step, config.params_for(step), rows_in=len(rows))
        base = index * report.rows_in

        def step_progress(done: int, _total: int | None = None, _base: int = base) -> None:
            if progress:
                progress(_base + min(done, report.rows_in), total)

        rows = _OPERATIONS[step](rows, config, op, tokenizer=tokenizer, progress=step_progress, cancel=cancel)
        op.rows_out = len(rows)
        report.operations.append(op)
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        step_progress(report.rows_in)
    report.rows_out = len(rows)
    return rows, report


def format_clean_report(report: CleanReport, max_rows: int = 5) -> str:
    """The report for people: one line per operation, then the first few rows each removed."""
    lines = [f"clean: {report.rows_in} rows in, {report.rows_out} kept, {report.removed_total} removed"]
    if not report.operations:
        lines.append("  no operations (choose some with --steps or the profile's [clean] steps)")
    for op in report.operations:
        params = ", ".join(f"{k}={v}" for k, v in op.params.items())
        line = f"  {op.name:<21} {op.rows_in:>7} -> {op.rows_out:<7} removed {len(op.removed)}"
        if op.changed:
            line += f", changed {op.changed}"
        if op.flagged:
            line += f", flagged {len(op.flagged)}"
        lines.append(line + (f"  ({params})" if params else ""))
        for kind, entries in (("removed", op.removed), ("flagged", op.flagged)):
            for entry in entries[:max_rows]:
                lines.append(f"      {kind} {_where(entry)}: {entry['reason']}")
            if len(entries) > max_rows:
                lines.append(f"      ... and {len(entries) - max_rows} more {kind} (see --json)")
    if report.cancelled:
        lines.append("  cancelled: later operations did not run")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Operations: each takes the rows and returns the rows it keeps, filling in its OpReport.


def _drop_empty(rows, config, op, **_):
    def reason(record):
        messages = record.get("messages") or []
        for i, message in enumerate(messages):
            if not str(message.get("content") or "").strip():
                return f"message {i} ({message.get('role')}) is empty"
        if not any(m.get("role") == "assistant" for m in messages):
            return "no assistant answer"
        return None

    return _filter(rows, op, reason)


def _drop_short(rows, config, op, **_):
    def reason(record):
        answers = [m for m in record["messages"] if m.get("role") == "assistant"]
        if not answers:
            return "no assistant answer"
        shortest = min(len(str(m.get("content") or "").strip()) for m in answers)
        if shortest < config.min_answer_chars:
            return f"assistant answer has {shortest} characters (< min_answer_chars={config.min_answer_chars})"
        return None

    return _filter(rows, op, reason)


def _normalize_whitespace(rows, config, op, **_):
    for record in rows:
        changed = False
        for message in record["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                tidy = normalize_text(content)
                if tidy != content:
                    message["content"] = tidy
                    changed = True
        op.changed += changed
    return rows


def _dedup_exact(rows, config, op, **_):
    from workbench.data import dedup

    groups = dedup.exact_duplicate_groups([dedup.record_text(r) for r in rows])
    return _drop_group_members(rows, op, groups, "exact duplicate of")


def _dedup_near(rows, config, op, progress=None, cancel=None, **_):
    from workbench.data import dedup

    # System messages are left out, as dedup advises: a long shared system prompt would make
    # short, different conversations look alike.
    groups = dedup.near_duplicate_groups(
        [dedup.record_text(r, include_system=False) for r in rows],
        threshold=config.near_dup_threshold,
        num_perm=config.num_perm,
        seed=config.seed,
        progress=progress,
        cancel=cancel,
    )
    return _drop_group_members(rows, op, groups, f"near duplicate (>= {config.near_dup_threshold}) of")


def _length_filter(rows, config, op, tokenizer=None, progress=None, cancel=None, **_):
    from workbench.data.render import render_conversation

    limit = config.max_tokens

    def reason(record):
        try:
            rendered = render_conversation(tokenizer, record["messages"], max_seq_len=limit)
        except TemplateError:
            raise  # the template, not the row, is wrong: every row would fail
        except DataError as exc:
            return f"cannot be rendered: {exc.message}"
        length = len(rendered.input_ids) + (0 if not rendered.truncated else _overflow(tokenizer, rendered, limit))
        if config.length_policy == "answer_truncated":
            if rendered.answer_tokens_lost:
                return f"{rendered.answer_tokens_lost} answer tokens would be cut at max_tokens={limit}"
            return None
        if rendered.truncated:
            lost = f"; {rendered.answer_tokens_lost} answer tokens would be cut" if rendered.answer_tokens_lost else ""
            return f"{length} tokens > max_tokens={limit}{lost}"
        return None

    return _filter(rows, op, reason, progress=progress, cancel=cancel)


def _overflow(tokenizer, rendered, limit) -> int:
    """Tokens beyond the limit (render keeps only the first `limit`); the full text says how many."""
    return len(tokenizer(rendered.text, add_special_tokens=False)["input_ids"]) - limit


def _fill_placeholders(rows, config, op, **_):
    from workbench.data import checks

    # Every style `data inspect` lists is filled: `{{name}}`, `[Your Name]`, `<YOUR_NAME>`, by
    # the name inside (`--fill "Your Name=Ada"`, or written as listed: `--fill "[Your Name]=Ada"`).
    # An exact name first, then one that differs only in case (`[YOUR NAME]`).
    values = {placeholder_name(str(k)): str(v) for k, v in config.placeholders.items()}
    folded = {k.casefold(): v for k, v in values.items()}

    def substitute(match: re.Match) -> str:
        if match.group("square") and match.group("square").strip().upper() in checks.LOG_WORDS:
            return match.group(0)  # [INFO]: never a placeholder (find_placeholders' rule)
        name = (match.group("jinja") or match.group("square") or match.group("angle")).strip()
        value = values.get(name, folded.get(name.casefold()))
        return match.group(0) if value is None else value

    kept = []
    for record in rows:
        changed, left = False, []
        for message in record["messages"]:
            content = message.get("content")
            if not isinstance(content, str):
                continue
            if values and ("{{" in content or "[" in content or "<" in content):
                filled = checks.PLACEHOLDER_RE.sub(substitute, content)
                if filled != content:
                    message["content"] = content = filled
                    changed = True
            # What is left is judged by the same rules inspect uses.
            left += [p for p in checks.find_placeholders(content) if p not in left]
        op.changed += changed
        if left:
            entry = _entry(record, f"placeholder with no value: {', '.join(left)}")
            if config.drop_unfilled:
                op.removed.append(entry)
                continue
            op.flagged.append(entry)
        kept.append(record)
    return kept


def placeholder_name(text: str) -> str:
    """The name a placeholder is filled by: `{{ name }}` -> name, `[Your Name]` -> Your Name,
    `<YOUR_NAME>` -> YOUR_NAME; a bare name stays as it is."""
    text = text.strip()
    for opening, closing in (("{{", "}}"), ("[", "]"), ("<", ">")):
        if text.startswith(opening) and text.endswith(closing) and len(text) > len(opening + closing):
            return text[len(opening):-len(closing)].strip(" -")
    return text


def _drop_secrets(rows, config, op, **_):
    from workbench.data import checks

    def reason(record):
        for i, message in enumerate(record["messages"]):
            text = str(message.get("content") or "")
            found = checks.find_secrets(text)
            if found:
                # Name the kind only: the report must not copy the secret itself.
                return f"message {i} ({message.get('role')}) contains a secret: {_kinds(found)}"
            if config.drop_pii:
                pii = checks.find_pii(text)
                if pii:
                    return f"message {i} ({message.get('role')}) contains personal data: {_kinds(pii)}"
        return None

    return _filter(rows, op, reason)


_OPERATIONS: dict[str, Callable[..., list[dict]]] = {
    "drop_empty": _drop_empty,
    "drop_short": _drop_short,
    "normalize_whitespace": _normalize_whitespace,
    "dedup_exact": _dedup_exact,
    "dedup_near": _dedup_near,
    "length_filter": _length_filter,
    "fill_placeholders": _fill_placeholders,
    "drop_secrets": _drop_secrets,
}
assert set(_OPERATIONS) == set(STEPS)


# ---------------------------------------------------------------------------------------------
# Whitespace


_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


def normalize_text(text: str) -> str:
    """Tidy whitespace outside fenced code blocks; keep newlines, indentation and code as is.

    - \\r\\n and lone \\r become \\n (line endings carry no meaning, code included);
    - trailing spaces and tabs are removed from prose lines;
    - more than two blank lines in a row become two;
    - blank lines at the start and end of the message go, as does the first line's indentation
      (a message that starts indented is a copy-paste artifact far more often than intent).
    Lines inside ``` or ~~~ fences, the fence lines included, are never touched; an unclosed
    fence runs to the end of the message (we would rather leave junk than damage code).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[bool, str]] = []  # (is_code, line)
    fence: str | None = None
    blank_run = 0
    for line in lines:
        opener = _FENCE_RE.match(line)
        if fence is not None:
            out.append((True, line))
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        if opener:
            fence = opener.group(1)
            out.append((True, line))
            blank_run = 0
            continue
        line = line.rstrip(" \t\f\v")
        if not line:
            blank_run += 1
            if blank_run > 2:
                continue
        else:
            blank_run = 0
        out.append((False, line))
    while out and not out[0][0] and not out[0][1]:
        out.pop(0)
    while out and not out[-1][0] and not out[-1][1]:
        out.pop()
    if out and not out[0][0]:
        out[0] = (False, out[0][1].lstrip())
    return "\n".join(line for _, line in out)


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_config(config: CleanConfig, steps: list[str], tokenizer: Any) -> None:
    """Fail before any work when a chosen step cannot run with these settings."""
    if "length_filter" in steps:
        if tokenizer is None:
            raise DataError(
                "the length_filter operation needs a tokenizer to count tokens",
                hint="pass --model (or set model.name_or_path in the profile), or drop length_filter from the steps",
            )
        if not config.max_tokens or config.max_tokens < 1:
            raise DataError("the length_filter operation needs max_tokens >= 1", hint="pass --max-tokens N")
        if config.length_policy not in LENGTH_POLICIES:
            raise DataError(f"unknown length_policy {config.length_policy!r}", hint=f"use one of: {', '.join(LENGTH_POLICIES)}")
    if "dedup_near" in steps and not 0 < config.near_dup_threshold <= 1:
        raise DataError(f"near_dup_threshold must be in (0, 1], got {config.near_dup_threshold}")
    if config.min_answer_chars < 0:
        raise DataError(f"min_answer_chars must be >= 0, got {config.min_answer_chars}")


def _copy_record(record: dict) -> dict:
    copy = dict(record)
    copy["messages"] = [dict(m) for m in record.get("messages") or []]
    return copy


def _entry(record: dict, reason: str) -> dict:
    source = record.get("source") or {}
    return {"file": source.get("file"), "row": source.get("row"), "reason": reason}


def _where(entry: dict) -> str:
    from workbench.data.readers import row_label

    return row_label(entry.get("file"), entry.get("row"))


def _filter(rows, op, reason_of, progress=None, cancel=None) -> list[dict]:
    kept = []
    for done, record in enumerate(rows, start=1):
        if cancel is not None and cancel.is_set():
            kept.extend(rows[done - 1:])  # unexamined rows are kept, not silently dropped
            break
        why = reason_of(record)
        if why:
            op.removed.append(_entry(record, why))
        else:
            kept.append(record)
        if progress and done % 100 == 0:
            progress(done)
    return kept


def _drop_group_members(rows, op, groups, what: str) -> list[dict]:
    """Keep each group's first index; the others are removed naming the row they duplicate."""
    drop: dict[int, int] = {}
    for group in groups:
        first, *rest = group
        for index in rest:
            drop[index] = first
    kept = []
    for index, record in enumerate(rows):
        if index in drop:
            op.removed.append(_entry(record, f"{what} {_where(_entry(rows[drop[index]], ''))}"))
        else:
            kept.append(record)
    return kept


def _kinds(found: list) -> str:
    kinds = []
    for item in found:
        kind = item[0] if isinstance(item, (tuple, list)) else str(item)
        if kind not in kinds:
            kinds.append(kind)
    return ", ".join(kinds)
