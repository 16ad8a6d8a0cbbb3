"""Load datasets into the one record format: load.py orchestrates, readers and schemas do the work.

Every record that leaves this module looks like

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...],
     "source": {"file": str, "row": int}}

plus, only when they apply, `"tools": [dict, ...]` (tool definitions from a `tools` column) and
`"text_only": True` (plain-text rows: one assistant message, trained on as a whole). Assistant
messages that are tool calls carry `"tool_call": True` and hold the call as JSON text.

Where the rows come from is `workbench.data.readers` (JSON, JSON Lines, CSV / TSV, Parquet, a
`save_to_disk` folder, a folder in the Hub's layout, a Hub id read through `datasets` by
`workbench.data.hub_datasets`); how a row becomes messages is `workbench.data.schemas`
(alpaca, sharegpt, messages, prompt_completion, text). `source.row` is what a person would look
for: the 1-based line for JSON Lines and CSV / TSV (the line a CSV row starts on), the 0-based
index for a JSON array, Parquet, saved datasets and Hub datasets. Messages count from 1 either
way, said once (readers.row_label): `file:line:col` for line-based files, `file row N` (the
index + 1) otherwise.

Nothing is dropped silently: with `on_bad_line="skip"` every skipped row is counted and listed in
the `LoadReport` the caller passes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError
from workbench.data.hub_datasets import is_hub_layout
from workbench.data.sources import SourceSpec
from workbench.data.readers import (
    SAVED_DATASET_MARKERS,
    RawRow,
    RowSource,
    looks_like_hub_id,
    open_source,
    row_label,
)
from workbench.data.schemas import (  # re-exported: callers imported these from load.py before
    COLUMNS_EXAMPLE,
    CONVERTERS,
    ROLES,
    SCHEMA_FIELDS,
    SUPPORTED_FORMATS,
    RowProblem,
    alpaca_to_messages,
    chat_to_messages,
    detect_format,
    formats_help,
    json_type,
    key_list,
    parse_tools,
    prompt_completion_to_messages,
    rename_columns,
    sharegpt_to_messages,
    text_to_messages,
)
from workbench.data.text_files import is_text_path

__all__ = [
    "BAD_LINE_CHOICES",
    "CONVERTERS",
    "FORMAT_CHOICES",
    "ROLES",
    "SUPPORTED_FORMATS",
    "LoadReport",
    "alpaca_to_messages",
    "chat_to_messages",
    "dataset_hash",
    "detect_format",
    "iter_records",
    "iter_source",
    "load_records",
    "prompt_completion_to_messages",
    "sharegpt_to_messages",
    "text_to_messages",
]

FORMAT_CHOICES = ("auto",) + SUPPORTED_FORMATS
BAD_LINE_CHOICES = ("error", "skip")

# Said the way a person asks for it: the command-line flag, or the profile key.
_SKIP_HINT = (
    'fix the row, or skip bad rows: --skip-bad-rows on the command line, data.on_bad_rows = "skip" '
    "in a profile (each skipped row is counted and listed)"
)


@dataclass
class LoadReport:
    """What a load did, filled in as records stream out.

    `skipped` holds `(file, row, reason)`; `row` uses the same numbering as `source.row`.
    """

    rows_read: int = 0
    rows_loaded: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    # (file, row) -> column of the problem, where one is known (JSON syntax, bad UTF-8); kept
    # beside `skipped`, whose 3-tuples callers unpack, so a skipped row reads file:line:column.
    columns: dict[tuple[str, int], int] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)  # file -> detected/forced schema
    kinds: dict[str, str] = field(default_factory=dict)  # file -> reader: json, jsonl, csv, tsv, parquet, saved_dataset, hub_folder, hub
    # Hub id -> the commit its rows were read from (resolved from the asked revision, or the
    # cached copy read offline): what a run records so a repeat run reads the same rows.
    revisions: dict[str, str] = field(default_factory=dict)

    def location(self, file: str, row: int) -> str:
        """`file:line`, `file:line:column` when the column of the problem is known, or
        `file row N` (1-based) for a JSON array and other sources numbered by position."""
        return row_label(file, row, self.columns.get((file, row)))


# ---------------------------------------------------------------------------------------------
# Public API


def iter_records(
    path: str | Path,
    format: str = "auto",
    system_prompt: str = "",
    on_bad_line: str = "error",
    report: LoadReport | None = None,
    *,
    columns: dict[str, str] | None = None,
    encoding: str | None = None,
    split: str = "train",
    revision: str | None = None,
    config: str | None = None,
    data_files: list[str] | None = None,
    streaming: bool = False,
) -> Iterator[dict]:
    """Stream records from one dataset (file, folder or Hub id) in the one record format.

    format: "auto" (decided per file from its first row's keys) or one of SUPPORTED_FORMATS.
    system_prompt: prepended as a system message to records that have no system message.
    on_bad_line: "error" stops at the first bad row with a DataError naming file:line:col;
        "skip" skips bad rows and records each in `report.skipped`.
    columns: the profile's data.columns table, schema name -> the file's column name
        (e.g. {"instruction": "question", "output": "answer"}); applied before detection.
    encoding: None = UTF-8 (with or without BOM; a UTF-16/32 BOM is honoured); else a codec name.
    split: which split of a saved DatasetDict folder, a Hub-layout folder or a Hub dataset to read.
    revision: the Hub revision (branch, tag or commit) for a Hub id; the commit actually read is
        put in `report.revisions[id]`.
    config, data_files: the configuration (subset) and data files (paths or globs relative to
        the dataset's root) of a Hub dataset or a Hub-layout folder.
    streaming: a Hub dataset or Hub-layout folder is read straight from its data files (over
        the network for the Hub) instead of being prepared whole into the Arrow cache first; a
        copy already prepared in the cache is read from there. Local files always stream.
    File-level problems (missing, directory, empty, unreadable, undetectable schema) always raise.
    """
    if format not in FORMAT_CHOICES:
        raise DataError(
            f"unknown data format {format!r}",
            hint=f"use one of: {', '.join(FORMAT_CHOICES)} (the file type, e.g. CSV or Parquet, "
            "is recognised by its extension and needs no format)",
        )
    if on_bad_line not in BAD_LINE_CHOICES:
        raise ValueError(f"on_bad_line must be one of {BAD_LINE_CHOICES}, got {on_bad_line!r}")
    columns = _check_columns(columns)
    report = report if report is not None else LoadReport()
    source = open_source(path, encoding=encoding, split=split, revision=revision, config=config,
                         data_files=data_files, streaming=streaming)
    report.kinds[source.name] = source.kind
    if source.revision:
        report.revisions[source.name] = source.revision
    yield from stream_records(
        source, report, None if format == "auto" else format, on_bad_line, columns,
        check_columns=_check_mapped_columns, detect=_detect,
        convert=lambda name, row: _to_record(name, row, system_prompt))


def stream_records(source: RowSource, report: LoadReport, chosen: str | None, on_bad_line: str,
                   columns: dict[str, str], *, check_columns, detect, convert) -> Iterator[dict]:
    """The row loop every loader shares (conversations here, preference records in
    preference.py): map columns, let the first row decide the schema when `chosen` is None,
    convert, and turn a RowProblem into a file:row error or a counted skip."""
    if chosen:
        report.formats[source.name] = chosen
    seen_rows = False  # a row that parsed as an object has been seen (it decides the format)
    read_any = False
    for raw in source.rows:
        report.rows_read += 1
        read_any = True
        try:
            if raw.problem is not None:
                raise raw.problem
            if not isinstance(raw.value, dict):
                raise RowProblem(f"expected a JSON object (one record), found {json_type(raw.value)}")
            row = rename_columns(raw.value, columns)
            if not seen_rows:
                check_columns(source, raw, columns)
            seen_rows = True
            if chosen is None:
                # The first row decides; a schema we cannot recognise is a file-level error,
                # not a bad row, because every later row would fail the same way.
                chosen = detect(source, raw, row)
                report.formats[source.name] = chosen
            record = convert(chosen, row)
        except RowProblem as problem:
            if on_bad_line == "skip":
                report.skipped.append((source.name, raw.row, problem.message))
                if problem.column and source.numbering == "line":
                    report.columns[(source.name, raw.row)] = problem.column
                continue
            raise _row_error(source, raw.row, problem) from None
        record["source"] = {"file": source.name, "row": raw.row}
        report.rows_loaded += 1
        yield record
    if not read_any:
        # e.g. "[]" or a saved dataset with no rows: say so here rather than as "0 rows" later.
        raise DataError("has no records", file=source.name, hint="a dataset needs at least one record")


def iter_source(spec: SourceSpec, on_bad_line: str = "error", report: LoadReport | None = None,
                *, streaming: bool = False) -> Iterator[dict]:
    """Records of one `sources.SourceSpec` (a [[data.sources]] table or data.train): a local
    path or a Hub dataset with its config, split, revision and data files. Each record's
    `source` also carries the spec's `label`, and each record the spec's `train_on`, which the
    renderer honours per record (a mixture's sources may differ from data.train_on)."""
    kwargs: dict[str, Any] = dict(format=spec.format, system_prompt=spec.system_prompt,
                                  on_bad_line=on_bad_line, report=report,
                                  columns=spec.columns or None, encoding=spec.encoding or None,
                                  split=spec.split, revision=spec.revision or None,
                                  streaming=streaming)
    if spec.config or spec.data_files:
        kwargs.update(config=spec.config or None, data_files=list(spec.data_files) or None)
    for record in iter_records(spec.path or spec.name, **kwargs):
        record["source"]["label"] = spec.label
        record["train_on"] = spec.train_on
        yield record


def load_records(path: str | Path, **kwargs: Any) -> list[dict]:
    """`iter_records` collected into a list (for small files and tests)."""
    return list(iter_records(path, **kwargs))


def dataset_hash(paths: str | Path | Iterable[str | Path], *, revision: str | None = None,
                 revisions: dict[str, str] | None = None) -> str:
    """Hex sha256 identifying the given datasets, in the given order (files are streamed).

    A file contributes its size and bytes (the size first, so that moving bytes from one file
    to the next changes the hash). A saved-dataset folder contributes each of its files, by
    relative path, in sorted order; a folder in the Hub's layout each of its files outside
    hidden folders (.git, .cache). A Hub id contributes the id and the commit its rows were read
    from (`revisions`, as LoadReport.revisions has it: id -> commit) or else `revision`; the data
    is not fetched, so the hash pins the data only when that is a commit.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    digest = hashlib.sha256()
    for path in paths:
        text, path = str(path), Path(path)
        if path.is_file():
            _hash_file(digest, path)
        elif path.is_dir() and (any((path / m).is_file() for m in SAVED_DATASET_MARKERS)
                                or is_text_path(path)):  # a folder of .txt / .md documents
            files = sorted(p for p in path.rglob("*") if p.is_file())
            digest.update(f"folder {len(files)}\n".encode())
            for file in files:
                digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
                _hash_file(digest, file)
        elif path.is_dir() and is_hub_layout(path):
            files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
            digest.update(f"hub-layout folder {len(files)}\n".encode())
            for file in files:
                digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
                _hash_file(digest, file)
        elif not path.exists() and looks_like_hub_id(text):
            commit = (revisions or {}).get(text) or revision
            digest.update(f"hf-hub {text}@{commit or 'default'}\n".encode())
        else:
            what = "a directory that is not a saved dataset" if path.is_dir() else "no such file"
            raise DataError(f"{what}; cannot hash the dataset", file=path)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Steps of iter_records


def _check_columns(columns: dict[str, str] | None) -> dict[str, str]:
    """Validate the column mapping up front, so a typo fails before any row is read."""
    if not columns:
        return {}
    if not isinstance(columns, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise DataError(
            f"data.columns must map schema names to column names (strings), found {columns!r}",
            hint=f"for example: {COLUMNS_EXAMPLE}",
        )
    unknown = [k for k in columns if k not in SCHEMA_FIELDS]
    if unknown:
        raise DataError(
            f"data.columns names {', '.join(repr(k) for k in unknown)}, which no format reads",
            hint=f"the keys of data.columns are the names a format expects ({', '.join(SCHEMA_FIELDS)}); "
            f"the values are your file's column names, e.g. {COLUMNS_EXAMPLE}",
        )
    return dict(columns)


def _check_mapped_columns(source: RowSource, raw: RawRow, columns: dict[str, str]) -> None:
    """A mapped column missing from the first row is a mapping mistake, not a bad row."""
    missing = [f"{k} = {v!r}" for k, v in columns.items() if v not in raw.value]
    if missing:
        raise _error_at(
            source,
            raw.row,
            f"data.columns maps {', '.join(missing)}, but the data has no such column; "
            f"its columns are {key_list(raw.value)}",
            hint="the values of data.columns must be column names exactly as they appear in the file",
        )


def _detect(source: RowSource, raw: RawRow, row: dict) -> str:
    chosen = detect_format(row)
    if chosen is None:
        raise _error_at(
            source,
            raw.row,
            f"cannot tell the dataset format from the first record; found columns {key_list(row)}",
            hint=f"supported formats and their keys: {formats_help()}. If your columns have other "
            f"names, map them in the profile, e.g. {COLUMNS_EXAMPLE} (on a `workbench data` command: "
            "--columns instruction=question,output=answer, or --profile P); or set data.format to "
            "force a format",
        )
    return chosen


def _to_record(chosen: str, row: dict, system_prompt: str) -> dict:
    messages = CONVERTERS[chosen](row)
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    record: dict[str, Any] = {"messages": messages}
    tools = parse_tools(row)
    if tools:
        record["tools"] = tools
    if chosen == "text":
        record["text_only"] = True  # the renderer trains on all of it, whatever data.train_on says
    return record


def _error_at(source: RowSource, row: int, message: str, hint: str | None, column: int | None = None) -> DataError:
    """A DataError placed the way the source numbers rows: file:line[:col], or file: row [i]."""
    if source.numbering == "index":  # 1-based, as every message counts rows (readers.row_label)
        return DataError(f"row {row + 1}: {message}", file=source.name, hint=hint)
    return DataError(message, file=source.name, line=row, column=column, hint=hint)


def _row_error(source: RowSource, row: int, problem: RowProblem) -> DataError:
    hint = "; ".join(h for h in (problem.hint, _SKIP_HINT) if h)
    return _error_at(source, row, problem.message, hint, problem.column)


def _hash_file(digest: Any, path: Path) -> None:
    digest.update(f"{path.stat().st_size}\n".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
