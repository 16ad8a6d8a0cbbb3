"""Load JSON / JSON Lines datasets into the one record format.

Every record that leaves this module looks like

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...],
     "source": {"file": str, "row": int}}

`source.row` is the 1-based line number for JSON Lines (what an editor shows) and the 0-based
index for a JSON array (what `data[i]` means). Error messages use the same numbering: `file:line:col`
for JSON Lines and `file: record [i]` for arrays.

Schemas are converted here, once, at the edge. Each schema is a converter registered in
`CONVERTERS` plus a rule in `detect_format`, so adding ShareGPT or prompt/completion later means
adding one function and one rule; file readers (`_read_jsonl`, `_read_json_array`) are likewise
independent of the schema, so CSV / Parquet readers can slot in next to them.

Nothing is dropped silently: with `on_bad_line="skip"` every skipped row is counted and listed in
the `LoadReport` the caller passes in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
SUPPORTED_FORMATS = ("alpaca", "messages")
FORMAT_CHOICES = ("auto",) + SUPPORTED_FORMATS
BAD_LINE_CHOICES = ("error", "skip")

_BOM = b"\xef\xbb\xbf"
_FORMS_HELP = (
    "alpaca (keys: instruction, output; optional input, system, history) or "
    "messages (key: messages = [{role, content}, ...])"
)
_SKIP_HINT = (
    'fix the row, or load with on_bad_line="skip" to skip bad rows '
    "(each one is counted and listed in the load report)"
)


@dataclass
class LoadReport:
    """What a load did, filled in as records stream out.

    `skipped` holds `(file, row, reason)`; `row` uses the same numbering as `source.row`
    (1-based line for JSON Lines, 0-based index for a JSON array).
    """

    rows_read: int = 0
    rows_loaded: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # file -> detected/forced schema


class _RowProblem(Exception):
    """A problem confined to one row: becomes a DataError, or a skip with on_bad_line="skip"."""

    def __init__(self, message: str, *, column: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.column = column
        self.hint = hint


@dataclass
class _RawRow:
    row: int  # 1-based line (JSON Lines) or 0-based index (JSON array)
    value: Any = None
    problem: _RowProblem | None = None


# ---------------------------------------------------------------------------------------------
# Public API


def iter_records(
    path: str | Path,
    format: str = "auto",
    system_prompt: str = "",
    on_bad_line: str = "error",
    report: LoadReport | None = None,
) -> Iterator[dict]:
    """Stream records from one JSON array or JSON Lines file in the one record format.

    format: "auto" (decided per file from its first record's keys), "alpaca" or "messages".
    system_prompt: prepended as a system message to records that have no system message.
    on_bad_line: "error" stops at the first bad row with a DataError naming file:line:col;
        "skip" skips bad rows and records each in `report.skipped`.
    File-level problems (missing, directory, empty, not JSON, undetectable schema) always raise.
    """
    if format not in FORMAT_CHOICES:
        raise DataError(
            f"unknown data format {format!r}",
            hint=f"use one of: {', '.join(FORMAT_CHOICES)}",
        )
    if on_bad_line not in BAD_LINE_CHOICES:
        raise ValueError(f"on_bad_line must be one of {BAD_LINE_CHOICES}, got {on_bad_line!r}")
    report = report if report is not None else LoadReport()
    path = Path(path)
    file = str(path)
    is_array = _check_file(path) == "array"
    rows = _read_json_array(path) if is_array else _read_jsonl(path)

    chosen = None if format == "auto" else format
    if chosen:
        report.formats[file] = chosen
    for raw in rows:
        report.rows_read += 1
        try:
            if raw.problem is not None:
                raise raw.problem
            if not isinstance(raw.value, dict):
                raise _RowProblem(
                    f"expected a JSON object (one record), found {_json_type(raw.value)}"
                )
            if chosen is None:
                # The first object decides; a schema we cannot recognise is a file-level error,
                # not a bad row, because every later row would fail the same way.
                chosen = detect_format(raw.value)
                if chosen is None:
                    raise DataError(
                        f"cannot tell the dataset format from the first record; found keys "
                        f"{_key_list(raw.value)}",
                        file=file,
                        **_where(raw.row, is_array),
                        hint=f"supported formats are {_FORMS_HELP}; set data.format in the "
                        "profile to force one (ShareGPT, CSV and Parquet are not supported yet)",
                    )
                report.formats[file] = chosen
            messages = CONVERTERS[chosen](raw.value)
            if system_prompt and not any(m["role"] == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": system_prompt})
        except _RowProblem as problem:
            if on_bad_line == "skip":
                report.skipped.append((file, raw.row, problem.message))
                continue
            raise _row_error(file, raw.row, is_array, problem) from None
        report.rows_loaded += 1
        yield {"messages": messages, "source": {"file": file, "row": raw.row}}


def load_records(path: str | Path, **kwargs: Any) -> list[dict]:
    """`iter_records` collected into a list (for small files and tests)."""
    return list(iter_records(path, **kwargs))


def dataset_hash(paths: str | Path | Iterable[str | Path]) -> str:
    """Hex sha256 over the bytes of the given files, in the given order (streamed).

    Each file's size is mixed in before its bytes so that moving bytes from one file to the
    next changes the hash.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError("no such file; cannot hash the dataset", file=path)
        digest.update(f"{path.stat().st_size}\n".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def detect_format(record: dict) -> str | None:
    """Name the schema a record follows, or None when no supported schema fits."""
    if "messages" in record:
        return "messages"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


# ---------------------------------------------------------------------------------------------
# Schemas: each converter takes one JSON object and returns its messages, raising _RowProblem.


def alpaca_to_messages(record: dict) -> list[dict]:
    """Alpaca: system?, history turns, user = instruction (+ "\\n\\n" + input), assistant = output."""
    instruction = _required_str(record, "instruction")
    output = _required_str(record, "output")
    extra_input = _optional_str(record, "input")
    system = _optional_str(record, "system")
    messages: list[dict] = []
    if system:
        messages.append({"role": "system", "content": system})
    for user, assistant in _history_pairs(record.get("history")):
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    user = instruction + ("\n\n" + extra_input if extra_input else "")
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": output})
    return messages


def chat_to_messages(record: dict) -> list[dict]:
    """OpenAI-style `messages`: a list of {role, content}; other message keys are ignored."""
    raw_messages = record.get("messages")
    if not isinstance(raw_messages, list):
        raise _RowProblem(f"field 'messages' must be a list, found {_json_type(raw_messages)}")
    if not raw_messages:
        raise _RowProblem("field 'messages' is an empty list")
    messages = []
    for index, message in enumerate(raw_messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _RowProblem(f"{where} must be an object, found {_json_type(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise _RowProblem(
                f"{where} has role {role!r}; expected one of {', '.join(ROLES)}",
                hint="ShareGPT-style 'from'/'value' is not supported yet" if "from" in message else None,
            )
        messages.append({"role": role, "content": _content_text(message.get("content"), where)})
    if not any(m["role"] == "assistant" for m in messages):
        raise _RowProblem(
            "conversation has no assistant message, so there is nothing to train on",
            hint="every conversation needs at least one message with role 'assistant'",
        )
    return messages


CONVERTERS: dict[str, Callable[[dict], list[dict]]] = {
    "alpaca": alpaca_to_messages,
    "messages": chat_to_messages,
}


# ---------------------------------------------------------------------------------------------
# File readers: yield _RawRow values; they know about bytes and JSON, not about schemas.


def _check_file(path: Path) -> str:
    """Fail early with a clear message, else say whether the file is a JSON array or JSON Lines."""
    if not path.exists():
        raise DataError(
            f"no such file (looked for {path.resolve()})",
            file=path,
            hint="check data.train (or data.validation) in the profile; relative paths there are relative to the profile file",
        )
    if path.is_dir():
        raise DataError(
            "is a directory, not a data file",
            file=path,
            hint="point data.train at a .json or .jsonl file inside it",
        )
    first = _first_significant_byte(path)
    if first is None:
        raise DataError(
            "file is empty (no records)",
            file=path,
            hint="a dataset needs at least one record: a JSON array of objects or one JSON object per line",
        )
    if first == b"[":
        return "array"
    if first == b"{":
        return "lines"
    raise DataError(
        f"does not look like JSON: it starts with {first.decode('latin-1')!r}, "
        "expected '[' (a JSON array) or '{' (JSON Lines, one object per line)",
        file=path,
        hint="only JSON and JSON Lines are supported for now (CSV and Parquet are planned)",
    )


def _first_significant_byte(path: Path) -> bytes | None:
    """First byte that is not whitespace or a UTF-8 BOM, read in chunks so huge files are cheap."""
    with path.open("rb") as handle:
        chunk = handle.read(1 << 16)
        if chunk.startswith(_BOM):
            chunk = chunk[len(_BOM):]
        while chunk:
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1]
            chunk = handle.read(1 << 16)
    return None


def _read_jsonl(path: Path) -> Iterator[_RawRow]:
    """One row per non-blank line, decoded line by line so memory stays bounded."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _RawRow(line_no, problem=_encoding_problem(raw, exc))
                continue
            if not text.strip():
                continue  # blank lines are layout, not records
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                hint = None
                if line_no == 1:
                    hint = (
                        "JSON Lines needs one complete object per line; if this file is one "
                        "JSON document, its top level must be an array [...] of records"
                    )
                yield _RawRow(
                    line_no, problem=_RowProblem(f"invalid JSON: {exc.msg}", column=exc.colno, hint=hint)
                )
                continue
            yield _RawRow(line_no, value=value)


def _read_json_array(path: Path) -> Iterator[_RawRow]:
    """A JSON array is parsed whole (json.load); syntax and encoding errors fail the file."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        problem = _encoding_problem(data[line_start:], exc, offset=line_start)
        raise DataError(problem.message, file=path, line=line, column=problem.column, hint=problem.hint) from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON: {exc.msg}",
            file=path,
            line=exc.lineno,
            column=exc.colno,
            hint="a JSON array file must parse as a whole; fix the syntax at this position",
        ) from None
    if not isinstance(values, list):  # cannot happen after the '[' sniff, kept for safety
        raise DataError(f"expected a JSON array of records, found {_json_type(values)}", file=path)
    for index, value in enumerate(values):
        yield _RawRow(index, value=value)


# ---------------------------------------------------------------------------------------------
# Small helpers


def _encoding_problem(line: bytes, exc: UnicodeDecodeError, offset: int = 0) -> _RowProblem:
    position = exc.start - offset
    bad = line[position : position + 1].hex()
    return _RowProblem(
        f"not valid UTF-8: byte 0x{bad} at byte {position + 1} of the line ({exc.reason})",
        column=position + 1,
        hint="re-save the file as UTF-8 (for example: iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)",
    )


def _row_error(file: str, row: int, is_array: bool, problem: _RowProblem) -> DataError:
    hint = "; ".join(h for h in (problem.hint, _SKIP_HINT) if h)
    if is_array:
        return DataError(f"record [{row}]: {problem.message}", file=file, hint=hint)
    return DataError(problem.message, file=file, line=row, column=problem.column, hint=hint)


def _where(row: int, is_array: bool) -> dict:
    return {} if is_array else {"line": row}


def _required_str(record: dict, key: str) -> str:
    if key not in record:
        raise _RowProblem(f"missing field {key!r} (found keys {_key_list(record)})")
    value = record[key]
    if not isinstance(value, str):
        raise _RowProblem(
            f"field {key!r} must be a string, found {_json_type(value)} {_preview(value)}",
            hint="quote the value in the data file",
        )
    return value


def _optional_str(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _RowProblem(f"field {key!r} must be a string, found {_json_type(value)} {_preview(value)}")
    return value


def _history_pairs(history: Any) -> list[tuple[str, str]]:
    if history is None:
        return []
    if not isinstance(history, list):
        raise _RowProblem(f"field 'history' must be a list of [user, assistant] pairs, found {_json_type(history)}")
    pairs = []
    for index, pair in enumerate(history):
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)
        ):
            raise _RowProblem(
                f"history[{index}] must be a [user, assistant] pair of strings, found {_preview(pair)}"
            )
        pairs.append((pair[0], pair[1]))
    return pairs


def _content_text(content: Any, where: str) -> str:
    """A string, or a list of text parts joined with newlines (as vLLM and OpenAI clients do)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else _json_type(part)
                raise _RowProblem(
                    f"{where}.content[{index}] is a {kind!r} part; only text parts "
                    '({"type": "text", "text": ...}) are supported'
                )
        return "\n".join(texts)
    raise _RowProblem(
        f"{where}.content must be a string or a list of text parts, found {_json_type(content)}"
    )


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _key_list(record: dict) -> str:
    keys = sorted(str(k) for k in record)
    return ", ".join(repr(k) for k in keys) if keys else "none (empty object)"


def _preview(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
