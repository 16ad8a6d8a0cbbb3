"""File readers: turn a path into a stream of raw rows (dicts), knowing bytes but not schemas.

`open_source(path)` decides what `path` is and returns a `RowSource`:

| what                                   | reader           | `row` numbering                          |
| -------------------------------------- | ---------------- | ---------------------------------------- |
| JSON Lines (.jsonl, .ndjson, or sniffed) | `_read_jsonl`  | 1-based line (errors: file:line:col)     |
| JSON array (.json starting with '[')   | `_read_json_array` | 0-based index (shown: file row i+1)     |
| CSV / TSV (.csv, .tsv)                 | `_read_csv`      | 1-based line of the row's first line     |
| Parquet (.parquet, .pq)                | `_read_parquet`  | 0-based row index                        |
| folder from `datasets.save_to_disk`    | `_read_saved`    | 0-based row index                        |
| folder in the Hub's layout (shards, README `configs:`) | `hub_datasets.open_folder` | 0-based row index |
| Hugging Face Hub id (`owner/name`)     | `_read_hub` (`hub_datasets.open_hub`: Hub or offline cache) | 0-based row index |

Messages never show a 0-based index: `row_label` says `file.jsonl:36` for a line and
`file.json row 36` (index + 1) for the rest, so `file:35` is never taken for line 35.

Every reader is a generator, so memory stays bounded on large files, with one exception: a JSON
array is parsed whole (the standard library has no streaming JSON parser); use JSON Lines, CSV or
Parquet for datasets that do not fit comfortably in memory. Lines have no length limit.

Encodings: by default UTF-8, with or without a byte-order mark; a UTF-16 / UTF-32 BOM is detected
and decoded, and so is UTF-16 without a BOM when the file starts with ASCII (NUL every other byte). `encoding=` forces another (e.g. "latin-1"). Invalid UTF-8 is a row problem naming
the line and byte, so skipping bad rows (`--skip-bad-rows`, `data.on_bad_rows = "skip"`) steps over it.

Heavy libraries (pyarrow, datasets) are imported inside the readers that need them.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError
from workbench.data.schemas import RowProblem, json_type

JSON_EXTENSIONS = (".json", ".jsonl", ".ndjson")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
PARQUET_EXTENSIONS = (".parquet", ".pq")
DATA_EXTENSIONS = JSON_EXTENSIONS + tuple(CSV_DELIMITERS) + PARQUET_EXTENSIONS
# A folder written by datasets' save_to_disk holds one of these.
SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")

_UTF8_BOM = b"\xef\xbb\xbf"
_PARQUET_MAGIC = b"PAR1"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SUPPORTED_FILES_HINT = (
    "supported: .json (array or JSON Lines), .jsonl / .ndjson, .csv, .tsv, .parquet, a folder "
    "written by datasets' save_to_disk or in the Hub's layout, or a Hugging Face Hub id (owner/name)"
)


@dataclass
class RawRow:
    row: int  # see RowSource.numbering
    value: Any = None
    problem: RowProblem | None = None


@dataclass
class RowSource:
    """An opened dataset: where it is, what it is, and its rows (a generator)."""

    name: str  # what records carry as source.file: a file path, a folder or a hub id
    kind: str  # "json", "jsonl", "csv", "tsv", "parquet", "saved_dataset", "hub_folder", "hub", ...
    rows: Iterator[RawRow]
    numbering: str = "line"  # "line": row = 1-based line (file:line); "index": 0-based position
    label: str = "row"  # how an index is named in messages: "record [3]" (JSON array), "row [3]"
    revision: str | None = None  # a Hub dataset: the commit its rows come from


def open_source(
    path: str | Path, *, encoding: str | None = None, split: str = "train", revision: str | None = None,
    config: str | None = None, data_files: list[str] | None = None, streaming: bool = False,
) -> RowSource:
    """Check `path` and pick its reader; file-level problems raise DataError here.

    `split`, `config`, `data_files` (and `revision`, `streaming` for a Hub id) choose what to
    read of a Hub dataset or a folder in the Hub's layout; `split` also picks a split of a
    save_to_disk folder."""
    text = str(path)
    path = Path(path)
    if not path.exists():
        if looks_like_hub_id(text):
            return _read_hub(text, config, split, revision, data_files, streaming)
        raise DataError(
            f"no such file (looked for {path.resolve()})",
            file=path,
            hint="check data.train (or data.validation) in the profile; relative paths there are "
            "relative to the profile file",
        )
    # Raw text: a .txt / .md file, or a folder of only such files, one document a file.
    from workbench.data.text_files import text_documents

    documents = text_documents(path, encoding)
    if documents is not None:
        rows = (RawRow(row, value, problem) for row, value, problem in documents)
        return RowSource(text, "text", rows, "index", label="document")
    if path.is_dir():
        if any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS):
            return RowSource(text, "saved_dataset", _read_saved(path, split), "index")
        from workbench.data import hub_datasets

        if data_files or hub_datasets.is_hub_layout(path):
            opened = hub_datasets.open_folder(path, config=config, split=split,
                                              data_files=data_files, streaming=streaming)
            return RowSource(text, "hub_folder", _raw_rows(opened.rows), "index")
        raise DataError(
            f"is a directory with no data files: not a saved dataset nor a dataset in the Hub's "
            f"layout; it contains {_describe_folder(path)}",
            file=path,
            hint="point data.train at one data file inside it, at a folder of parquet / arrow / "
            "JSON Lines / CSV shards (as on the Hub, e.g. data/train-00000-of-00001.parquet), or "
            f"at a folder written by datasets' save_to_disk ({_SUPPORTED_FILES_HINT})",
        )
    if config or data_files:
        raise DataError(
            "is a single file; `config` and `data_files` choose within a Hub dataset or a folder "
            "in the Hub's layout",
            file=path, hint="remove them from the source, or point it at the dataset's folder")
    suffix = path.suffix.lower()
    if suffix in PARQUET_EXTENSIONS or (suffix not in DATA_EXTENSIONS and _starts_with(path, _PARQUET_MAGIC)):
        return RowSource(text, "parquet", _read_parquet(path), "index")
    enc = resolve_encoding(path, encoding)
    first = _first_significant_char(path, enc)
    if first is None:
        raise DataError(
            "file is empty (no records)",
            file=path,
            hint="a dataset needs at least one record: a JSON array of objects, one JSON object "
            "per line, or a CSV header followed by rows",
        )
    if suffix in CSV_DELIMITERS:
        return RowSource(text, suffix[1:], _read_csv(path, enc, CSV_DELIMITERS[suffix]), "line")
    # JSON vs JSON Lines is decided by content, not the extension: people name both ".json".
    if first == "[":
        return RowSource(text, "json", _read_json_array(path, enc), "index", label="record")
    if first == "{":
        return RowSource(text, "jsonl", _read_jsonl(path, enc), "line")
    raise DataError(
        f"does not look like JSON: it starts with {first!r}, expected '[' (a JSON array) or "
        "'{' (JSON Lines, one object per line)",
        file=path,
        hint=f"give the file the extension that matches its content; {_SUPPORTED_FILES_HINT}",
    )


_LINE_KINDS = ("jsonl", "csv", "tsv")
_numbering_cache: dict[str, str] = {}


def numbering_of(file: str | Path | None) -> str:
    """"line" when a file's rows are its lines (JSON Lines, CSV / TSV: `file.jsonl:36`), else
    "index" (a JSON array, Parquet, a saved dataset, a hub id). Decided as open_source decides:
    by extension, and for .json by its first character. Unknown or unreadable: "line"."""
    if not file:
        return "line"
    key = str(file)
    if key not in _numbering_cache:
        path = Path(key)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson") or suffix in CSV_DELIMITERS:
            kind = "line"
        elif suffix in PARQUET_EXTENSIONS or path.is_dir() or (not path.exists() and looks_like_hub_id(key)):
            kind = "index"
        elif path.is_file():
            try:
                kind = "index" if _first_significant_char(path, resolve_encoding(path, None)) == "[" else "line"
            except (DataError, OSError):
                kind = "line"
        else:
            kind = "line"
        _numbering_cache[key] = kind
    return _numbering_cache[key]


def row_label(file: str | Path | None, row: int | None, column: int | None = None, *,
              name_only: bool = False) -> str:
    """Where a row is, one numbering for people, said once: `data.jsonl:36` (line 36, as an
    editor shows it) or `data.json row 36` (the 36th record, counted from 1; source.row keeps
    the 0-based index)."""
    shown = (Path(file).name if name_only else str(file)) if file else ""
    if numbering_of(file) == "index" and isinstance(row, int):
        return f"{shown} row {row + 1}".strip()
    if not shown:
        return f"row {row}"
    return f"{shown}:{row}" + (f":{column}" if column else "")


def looks_like_hub_id(text: str) -> bool:
    """`owner/name` with no data-file extension; only asked about paths that do not exist."""
    return bool(_HUB_ID.match(text)) and not text.lower().endswith(DATA_EXTENSIONS)


def resolve_encoding(path: Path, encoding: str | None) -> str:
    """The codec to read `path` with: the caller's, else UTF-16/32 by BOM, else UTF-8 (BOM or not)."""
    if encoding:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise DataError(
                f"unknown text encoding {encoding!r}",
                file=path,
                hint='use a Python codec name such as "utf-8", "latin-1", "cp1252" or "utf-16"',
            ) from None
        return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name
    with path.open("rb") as handle:
        head = handle.read(4)
    # UTF-32 first: its little-endian BOM begins with the UTF-16 one.
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    # UTF-16 without a BOM: text starts with ASCII ('[', '{', a header), so every other byte is
    # NUL, which UTF-8 text never contains.
    if len(head) == 4 and head[1] == head[3] == 0 and head[0] and head[2]:
        return "utf-16-le"
    if len(head) == 4 and head[0] == head[2] == 0 and head[1] and head[3]:
        return "utf-16-be"
    return "utf-8-sig"


# ---------------------------------------------------------------------------------------------
# JSON and JSON Lines


def _read_jsonl(path: Path, encoding: str) -> Iterator[RawRow]:
    """One row per non-blank line, decoded line by line so memory stays bounded."""
    for line_no, text, problem in _decoded_lines(path, encoding):
        if problem is not None:
            yield RawRow(line_no, problem=problem)
            continue
        if not text or text.isspace():
            continue  # blank lines are layout, not records
        try:
            value = json.loads(text)  # the line ending is JSON whitespace: no stripped copy
        except json.JSONDecodeError as error:
            # Placed on the line without its ending: an error at the end of the line (a missing
            # closing brace) would otherwise be "line 2, column 1" of the one-line text.
            exc = _json_error(text.rstrip("\r\n")) or error
            hint = None
            if line_no == 1:
                hint = (
                    "JSON Lines needs one complete object per line; if this file is one "
                    "JSON document, its top level must be an array [...] of records"
                )
            yield RawRow(line_no, problem=RowProblem(f"invalid JSON: {exc.msg}", column=exc.colno, hint=hint))
            continue
        yield RawRow(line_no, value=value)


def _json_error(text: str) -> json.JSONDecodeError | None:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc
    return None


def _read_json_array(path: Path, encoding: str) -> Iterator[RawRow]:
    """A JSON array is parsed whole (json.loads); syntax and encoding errors fail the file."""
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8-sig":
            raise _decode_error(path, encoding, exc) from None
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        problem = _utf8_problem(data[line_start:], exc, offset=line_start)
        raise DataError(problem.message, file=path, line=line, column=problem.column, hint=problem.hint) from None
    del data  # the decoded text and the parsed values are enough to hold at once
    try:
        values = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON: {exc.msg}",
            file=path,
            line=exc.lineno,
            column=exc.colno,
            hint="a JSON array file must parse as a whole; fix the syntax at this position",
        ) from None
    if not isinstance(values, list):  # cannot happen after the '[' sniff, kept for safety
        raise DataError(f"expected a JSON array of records, found {json_type(values)}", file=path)
    for index, value in enumerate(values):
        yield RawRow(index, value=value)


# ---------------------------------------------------------------------------------------------
# CSV / TSV


def _read_csv(path: Path, encoding: str, delimiter: str) -> Iterator[RawRow]:
    """Rows as {header: cell} dicts; `row` is the line where the row starts, as an editor shows.

    Quoted fields may span lines; csv.reader's line_num counts physical lines, so the start line
    of a row is the previous row's line_num + 1. Cells are strings; empty cells are "".
    """
    # The default per-field limit (128 KiB) would reject long outputs; rows here are unbounded.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    bad_lines: dict[int, RowProblem] = {}
    lines = _csv_lines(path, encoding, bad_lines)
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    header_line = 0
    previous_end = 0
    rows_seen = False
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(
                f"cannot parse the {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}",
                file=path,
                line=previous_end + 1,
                hint="check the quoting from this line on: a field with the delimiter, a quote or "
                'a newline must be wrapped in double quotes, and quotes inside it doubled ("")',
            ) from None
        start, previous_end = previous_end + 1, reader.line_num
        problem = next((bad_lines.pop(n) for n in range(start, previous_end + 1) if n in bad_lines), None)
        if not cells and problem is None:
            continue  # a blank line is layout, not a row
        if header is None:
            if problem is not None:
                raise DataError(problem.message, file=path, line=start, column=problem.column, hint=problem.hint)
            header, header_line = _csv_header(cells, path, start), start
            continue
        rows_seen = True
        if problem is not None:
            yield RawRow(start, problem=problem)
        elif len(cells) != len(header):
            yield RawRow(start, problem=_ragged(len(header), len(cells), header_line))
        else:
            yield RawRow(start, value=dict(zip(header, cells)))
    if header is not None and not rows_seen:
        raise DataError(
            "has a header but no data rows",
            file=path,
            hint="a CSV dataset needs a header line followed by one line (or quoted record) per row",
        )


def _csv_lines(path: Path, encoding: str, bad_lines: dict[int, RowProblem]) -> Iterator[str]:
    """Decoded lines for csv.reader. Lines that are not valid UTF-8 are passed on (with escapes)
    and noted in `bad_lines`, so the row they belong to becomes a row problem, not a crash."""
    for line_no, text, problem in _decoded_lines(path, encoding, keep_bad=True):
        if problem is not None:
            bad_lines[line_no] = problem
        yield text


def _csv_header(cells: list[str], path: Path, line: int) -> list[str]:
    header = [cell.strip() for cell in cells]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(
                f"the header names column {name!r} twice; one of them would be lost",
                file=path,
                line=line,
                hint="rename one of the columns",
            )
        seen.add(name)
    return header


def _ragged(expected: int, got: int, header_line: int) -> RowProblem:
    return RowProblem(
        f"expected {expected} fields (as in the header on line {header_line}), got {got}",
        hint="a field containing the delimiter, a quote or a newline must be wrapped in double "
        "quotes; a missing value still needs its delimiter",
    )


# ---------------------------------------------------------------------------------------------
# Parquet, saved datasets and the Hub (heavy imports stay inside)


def _read_parquet(path: Path) -> Iterator[RawRow]:
    """Rows as dicts, a batch at a time (ParquetFile.iter_batches), so memory stays bounded."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != _PARQUET_MAGIC:
        raise DataError(
            f"is not a Parquet file: it does not start with the Parquet marker 'PAR1' "
            f"(it starts with {head!r})",
            file=path,
            hint="re-export it as Parquet, or give it the extension that matches its content "
            "(.json, .jsonl, .csv, .tsv)",
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        index = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                yield RawRow(index, value=value)
                index += 1
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"cannot read the Parquet file: {exc}",
            file=path,
            hint="the file may be truncated or written by an incompatible tool; re-export it",
        ) from None


def _read_saved(folder: Path, split: str) -> Iterator[RawRow]:
    """A folder from `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (memory-mapped rows)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # any failure here is "this folder cannot be read"; say why, no traceback
        raise DataError(
            f"cannot load the saved dataset: {type(exc).__name__}: {_first_line(exc)}",
            file=folder,
            hint="the folder should be written by datasets' save_to_disk, unchanged",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(
                f"the saved dataset has no split {split!r}; available splits: {', '.join(loaded)}",
                file=folder,
                hint="choose one of them with split=",
            )
        loaded = loaded[split]
    for index, value in enumerate(loaded):
        yield RawRow(index, value=value)


def _read_hub(dataset_id: str, config: str | None, split: str, revision: str | None,
              data_files: list[str] | None, streaming: bool) -> RowSource:
    """A Hugging Face Hub dataset through `datasets` (hub_datasets): from the Hub, or offline from
    the user's cache; the commit the rows come from rides on the RowSource."""
    from workbench.data import hub_datasets

    opened = hub_datasets.open_hub(dataset_id, config=config, split=split, revision=revision,
                                   data_files=data_files, streaming=streaming)
    return RowSource(dataset_id, "hub", _raw_rows(opened.rows), "index", revision=opened.revision)


def _raw_rows(rows: Iterable[tuple[int, Any]]) -> Iterator[RawRow]:
    for index, value in rows:
        yield RawRow(index, value=value)


# ---------------------------------------------------------------------------------------------
# Bytes and text


def _decoded_lines(
    path: Path, encoding: str, keep_bad: bool = False
) -> Iterator[tuple[int, str, RowProblem | None]]:
    """(line number, text, problem) per physical line, line endings kept.

    UTF-8 is decoded line by line from bytes, so a bad byte is a problem of its line only (with
    keep_bad the line is still passed on, escaped, for CSV to keep its place). Other encodings
    (UTF-16 has no byte-level line breaks) are read as text; a decoding error there ends the file.
    """
    if encoding == "utf-8-sig":
        with path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if line_no == 1 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM):]
                try:
                    yield line_no, raw.decode("utf-8"), None
                except UnicodeDecodeError as exc:
                    text = raw.decode("utf-8", "surrogateescape") if keep_bad else ""
                    yield line_no, text, _utf8_problem(raw, exc)
        return
    line_no = 0
    with path.open("r", encoding=encoding, newline="") as handle:
        try:
            for line_no, text in enumerate(handle, start=1):
                yield line_no, text.lstrip("\ufeff") if line_no == 1 else text, None
        except UnicodeDecodeError as exc:
            raise _decode_error(path, encoding, exc, after_line=line_no) from None


def _first_significant_char(path: Path, encoding: str) -> str | None:
    """First character that is not whitespace or a BOM, read in chunks so huge files are cheap."""
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    try:
        with path.open("r", encoding=codec, errors="replace") as handle:
            while chunk := handle.read(1 << 16):
                stripped = chunk.lstrip().lstrip("\ufeff").lstrip()
                if stripped:
                    return stripped[0]
    except UnicodeError as exc:  # e.g. a UTF-16 file with an odd number of bytes
        raise _decode_error(path, encoding, exc) from None
    return None


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(magic)) == magic


def _utf8_problem(line: bytes, exc: UnicodeDecodeError, offset: int = 0) -> RowProblem:
    position = exc.start - offset
    bad = line[position : position + 1].hex()
    return RowProblem(
        f"not valid UTF-8: byte 0x{bad} at byte {position + 1} of the line ({exc.reason})",
        column=position + 1,
        hint="re-save the file as UTF-8 (for example: iconv -f latin1 -t utf-8 in.jsonl > out.jsonl), "
        'or name its encoding in the profile, e.g. data.encoding = "latin-1"',
    )


def _decode_error(path: Path, encoding: str, exc: Exception, after_line: int | None = None) -> DataError:
    where = f" after line {after_line}" if after_line else ""
    return DataError(
        f"cannot decode the file as {encoding}{where}: {_first_line(exc)}",
        file=path,
        hint="name the encoding the file was saved with in the profile (data.encoding = "
        '"latin-1", for example), or re-save it as UTF-8',
    )


def _describe_folder(folder: Path, limit: int = 8) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not entries:
        return "nothing (it is empty)"
    shown = ", ".join(entries[:limit])
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{len(entries)} entries: {shown}{more}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
