"""Save splits as a dataset folder that a run can train on and a person can trace back.

    out/
      train.jsonl  validation.jsonl  test.jsonl       the one record format, source included
      train.parquet validation.parquet test.parquet   the same rows for dataframe tools
      manifest.json                                   where it came from and what was done

The folder appears whole or not at all: everything is written into a temporary sibling folder
and renamed into place, so a crash never leaves half a dataset that looks complete. An existing,
non-empty folder is only replaced with `overwrite=True`.

The training runner accepts such a folder as `data.train` (`is_saved_dataset`), reads
`train.jsonl` / `validation.jsonl` from it and records `manifest_hash` in the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPLIT_NAMES = ("train", "validation", "test")
# Files that decide how a tokenizer turns text into ids; hashed to pin the tokenizer of a local model.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
)


def save_splits(
    out_dir: str | Path,
    splits: dict[str, Sequence[dict]],
    manifest_extra: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write each split as JSONL + Parquet and a manifest; return the folder.

    The manifest records schema_version, created_at, workbench_version and per split its row
    count, fraction of all rows and file sha256; `manifest_extra` adds the rest (sources,
    operations, seed, thresholds, tokenizer: see `describe_sources` / `describe_tokenizer`) and
    wins on conflicting keys.
    """
    from workbench import __version__

    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        total = sum(len(rows) for rows in splits.values())
        split_info = {}
        for name, rows in splits.items():
            _check_split_name(name)
            jsonl = tmp / f"{name}.jsonl"
            _write_jsonl(jsonl, rows)
            _write_parquet(tmp / f"{name}.parquet", rows)
            split_info[name] = {
                "rows": len(rows),
                "fraction": round(len(rows) / total, 4) if total else 0.0,
                "jsonl": jsonl.name,
                "parquet": f"{name}.parquet",
                "sha256": _file_sha256(jsonl),
            }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "workbench_version": __version__,
            "record_format": "messages+source",
            "splits": split_info,
            "rows": total,
        }
        manifest.update(manifest_extra or {})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def describe_sources(paths: Iterable[str | Path], formats: dict[str, str] | None = None) -> list[dict]:
    """Manifest entries for the input files: path, size, sha256, dataset_hash and detected format."""
    from workbench.data.load import dataset_hash

    entries = []
    for path in paths:
        path = Path(path)
        entries.append({
            "path": str(path.resolve()),
            "bytes": path.stat().st_size,
            "sha256": _file_sha256(path),  # what `sha256sum` prints
            "dataset_hash": dataset_hash(path),  # what a run records for its data
            "format": (formats or {}).get(str(path)),
        })
    return entries


def describe_tokenizer(name_or_path: str | None) -> dict[str, Any] | None:
    """Name the tokenizer; for a local folder also hash the files that define it."""
    if not name_or_path:
        return None
    folder = Path(name_or_path)
    if not folder.is_dir():
        return {"name_or_path": name_or_path, "local": False, "sha256": None}
    digest = hashlib.sha256()
    files = []
    for name in _TOKENIZER_FILES:
        file = folder / name
        if file.is_file():
            files.append(name)
            digest.update(f"{name}\n{file.stat().st_size}\n".encode())
            digest.update(file.read_bytes())
    return {"name_or_path": str(folder.resolve()), "local": True, "files": files,
            "sha256": digest.hexdigest() if files else None}


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a saved dataset folder, or a DataError saying why it is not one."""
    folder = Path(path)
    file = folder / MANIFEST
    if not file.is_file():
        raise DataError(f"no {MANIFEST} here; not a saved dataset folder", file=folder,
                        hint="create one with `workbench data clean PATH -o FOLDER` or `workbench data split`")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{MANIFEST} is not valid JSON ({exc})", file=file) from None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise DataError(f"{MANIFEST} has no schema_version; not written by workbench", file=file)
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise DataError(f"{MANIFEST} has schema_version {manifest['schema_version']}, newer than this "
                        f"workbench understands ({SCHEMA_VERSION})", file=file, hint="upgrade workbench")
    return manifest


def manifest_hash(path: str | Path) -> str:
    """sha256 of manifest.json's bytes: names the exact saved dataset a run trained on."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise DataError(f"no {MANIFEST} here; not a saved dataset folder", file=path)
    return hashlib.sha256(file.read_bytes()).hexdigest()


def is_saved_dataset(path: str | Path) -> bool:
    """True for a folder written by save_splits (manifest plus train.jsonl)."""
    folder = Path(path)
    return folder.is_dir() and (folder / MANIFEST).is_file() and (folder / "train.jsonl").is_file()


def saved_split_files(path: str | Path) -> dict[str, Path]:
    """split name -> its JSONL file, for the splits that have rows (empty ones are left out,
    since an empty validation file is not a validation set)."""
    manifest = load_manifest(path)
    folder = Path(path)
    files = {}
    for name, info in manifest.get("splits", {}).items():
        if info.get("rows"):
            files[name] = folder / info.get("jsonl", f"{name}.jsonl")
    return files


# ---------------------------------------------------------------------------------------------
# Internals


def _check_split_name(name: str) -> None:
    # Names become file names; keep them boring so they cannot escape the folder.
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise DataError(f"split name {name!r} cannot be a file name", hint=f"use e.g. {', '.join(SPLIT_NAMES)}")


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError("exists and is a file, not a folder", file=out_dir, hint="choose another output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError("output folder exists and is not empty; refusing to overwrite it", file=out_dir,
                        hint="choose another folder, or pass --overwrite (overwrite=True) to replace it")


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename tmp to out_dir. An old folder is moved aside first and deleted only after the
    new one is in place, so a failure in between leaves the old data, not nothing."""
    backup = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            if not overwrite:  # checked before writing too; something appeared meanwhile
                _check_target(out_dir, overwrite)
            backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, backup)
        else:
            out_dir.rmdir()
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if backup is not None:
            os.replace(backup, out_dir)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in rows:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_parquet(path: Path, rows: Sequence[dict]) -> None:
    """The JSONL twin for dataframe tools. Per-message extras (e.g. `tool_call`) live in the
    JSONL only; the JSONL is what training reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([
        ("messages", pa.list_(message)),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("tools", pa.string()),  # the record's tool schema as JSON text, null when it has none
    ])
    columns = {
        "messages": [[{"role": m.get("role"), "content": m.get("content")} for m in r.get("messages") or []]
                     for r in rows],
        "source_file": [(r.get("source") or {}).get("file") for r in rows],
        "source_row": [(r.get("source") or {}).get("row") for r in rows],
        "tools": [json.dumps(r["tools"], ensure_ascii=False) if r.get("tools") is not None else None for r in rows],
    }
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
