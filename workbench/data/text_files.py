"""Text files as documents: a `.txt` / `.md` file, or a folder of them, read as rows of
{"text": ...} (one document a file) for raw-text training (data/raw_text.py).

readers.open_source asks `text_documents` first; it answers None for anything else, which is
then read as data as before. A folder is a folder of text documents only when it holds text
files and no data files (JSON, CSV, Parquet, Arrow shards, a saved dataset), so Hub-layout
folders and save_to_disk output are never mistaken for one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from workbench.data.schemas import RowProblem

TEXT_EXTENSIONS = (".txt", ".md", ".markdown")
# A folder holding any of these is data in another layout (Hub shards, a saved dataset),
# never a folder of text documents.
_OTHER_DATA = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".pq", ".arrow")


def text_files(folder: Path) -> list[Path]:
    """The .txt / .md files of a folder of text documents, sorted; [] when the folder is not
    one (it holds no text files, or holds other data files too)."""
    files, other = [], False
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in TEXT_EXTENSIONS:
            files.append(path)
        elif suffix in _OTHER_DATA or path.name in ("dataset_dict.json", "state.json"):
            other = True
    return [] if other else files


def text_documents(path: Path, encoding: str | None = None
                   ) -> Iterator[tuple[int, dict | None, RowProblem | None]] | None:
    """(row, {"text": ...}, problem) per document of a `.txt` / `.md` file (one document) or a
    folder of them (one per file); None when `path` is neither, so the caller reads it as data.
    A file that cannot be decoded or holds no text is a row problem naming the file, so
    data.on_bad_rows = "skip" steps over it."""
    if path.is_dir():
        files = text_files(path)
        if not files:
            return None
        return _read_documents(path, files, encoding)
    if path.is_file() and path.suffix.lower() in TEXT_EXTENSIONS:
        return _read_documents(path.parent, [path], encoding)
    return None


def _read_documents(root: Path, files: list[Path], encoding: str | None):
    for row, file in enumerate(files):
        name = file.relative_to(root).as_posix()
        try:
            text = _decode(file.read_bytes(), encoding)
        except UnicodeDecodeError as exc:
            yield row, None, RowProblem(
                f"{name}: not valid {encoding or 'UTF-8'} text at byte {exc.start}",
                hint="re-save the file as UTF-8, or set data.encoding to its encoding")
            continue
        if not text.strip():
            yield row, None, RowProblem(f"{name}: the file holds no text")
            continue
        yield row, {"text": text, "file": name}, None


def _decode(data: bytes, encoding: str | None) -> str:
    if encoding:
        return data.decode(encoding)
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"),
                       (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec)
    return data.decode("utf-8")


def is_text_path(path: str | Path) -> bool:
    """A `.txt` / `.md` file or a folder of them: raw text whatever data.format says."""
    path = Path(path)
    if path.is_dir():
        return bool(text_files(path))
    return path.is_file() and path.suffix.lower() in TEXT_EXTENSIONS
