"""Tokenized training data kept on disk, so a second run, a sweep's trials and every rank of a
distributed run read the rows instead of tokenizing the data again.

This module is the store and the fingerprints; what goes into a key for each training method
is decided above it (workbench/train/data_cache.py). An entry is a folder named by its key:

    <cache>/<key>/meta.json              what the entry holds, with every file's size
    <cache>/<key>/<split>.json           each row's other fields (text, sources, columns)
    <cache>/<key>/<split>.ids<N>.npy     a token-id column, all rows concatenated
    <cache>/<key>/<split>.ids<N>.off.npy its offsets (rows + 1 of them)

Token ids travel as numpy arrays (10,000 rows load in tens of milliseconds; the same as JSON
lists of ints take several times longer). An entry is written into a temporary folder and
renamed into place in one step, so concurrent ranks and trials see a whole entry or none; when
two write the same key, the first rename wins and the other's copy is dropped. An entry that
cannot be read (a truncated file, a missing one) is removed and rebuilt, never a crash. The
cache keeps under a size limit by dropping the entries used least recently.

Where: `$WORKBENCH_TOKEN_CACHE`, else `$WORKBENCH_CACHE/tokenized`, else
`~/.cache/workbench/tokenized`. Limit: `$WORKBENCH_CACHE_MAX_GB` (default 5; 0 turns the
cache off). Clearing it is deleting the folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when the layout or the meaning of a key changes: old entries are never read
DEFAULT_MAX_GB = 5.0
STALE_TEMP_S = 3600.0  # a temporary folder this old belongs to a writer that died


@dataclass
class Entry:
    key: str
    splits: dict[str, list[dict]]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def cache_dir() -> Path:
    explicit = os.environ.get("WORKBENCH_TOKEN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    root = os.environ.get("WORKBENCH_CACHE", "~/.cache/workbench")
    return Path(root).expanduser() / "tokenized"


def max_bytes() -> int:
    """The size limit in bytes; 0 = the cache is off. A value that is not a number is the
    default: a typo in an environment variable must not stop a run."""
    raw = os.environ.get("WORKBENCH_CACHE_MAX_GB", "")
    try:
        gb = float(raw) if raw.strip() else DEFAULT_MAX_GB
    except ValueError:
        gb = DEFAULT_MAX_GB
    return max(0, int(gb * 1e9))


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the key's parts as canonical JSON (sorted keys)."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- fingerprints ------------------------------------------------------------------------------

def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """What the tokenizer does to text, not where it lives: its serialized vocabulary, merges,
    normalizer and post-processor, plus the special tokens the transformers wrapper adds. None
    when there is no serialized form to hash (then nothing is cached rather than guessed)."""
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        digest.update(b"\0tokenizers\0" + backend.to_str().encode("utf-8"))
    elif hasattr(getattr(tokenizer, "sp_model", None), "serialized_model_proto"):
        digest.update(b"\0sentencepiece\0" + tokenizer.sp_model.serialized_model_proto())
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    else:
        return None
    wrapper = {
        "special_tokens": getattr(tokenizer, "special_tokens_map", {}),
        "added": sorted((int(i), str(t)) for i, t in
                        (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()),
        **{name: getattr(tokenizer, name, None) for name in
           ("add_bos_token", "add_eos_token", "padding_side", "truncation_side")},
    }
    digest.update(json.dumps(wrapper, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def data_fingerprint(paths: list[str | Path]) -> str | None:
    """sha256 of the data files' bytes (each file as `dataset_hash` counts it; a folder, such as
    one saved by `workbench data clean`, by every file in it). None when one of them is not a
    local file or folder: a Hub dataset id names data whose contents can change under the same
    name, so it is not cached."""
    from workbench.data.load import dataset_hash

    digest = hashlib.sha256()
    try:
        for path in map(Path, paths):
            if path.is_dir():
                files = sorted(f for f in path.rglob("*") if f.is_file())
                digest.update(f"folder {len(files)}\n".encode())
                for file in files:
                    digest.update(f"{file.relative_to(path).as_posix()} {dataset_hash(file)}\n"
                                  .encode())
            elif path.is_file():
                digest.update(f"file {dataset_hash(path)}\n".encode())
            else:
                return None
    except OSError:
        return None  # whatever is wrong, loading the data says it better
    return digest.hexdigest()


# ---- reading -----------------------------------------------------------------------------------

class _Unreadable(Exception):
    pass


def lookup(key: str) -> tuple[Entry | None, str]:
    """(the entry, "") on a hit; (None, "") when there is none; (None, why) when there was one
    that could not be read: it is removed, so the caller's rebuilt copy takes its place."""
    if max_bytes() == 0:
        return None, ""
    folder = cache_dir() / key
    if not folder.is_dir():
        return None, ""
    try:
        entry = _read(folder, key)
    except Exception as exc:  # noqa: BLE001 - any damage reads the same: rebuild it
        _remove(folder)
        return None, f"{type(exc).__name__}: {exc}"[:300]
    try:
        os.utime(folder)  # used now: the last to be evicted
    except OSError:
        pass  # a read-only cache still serves
    return entry, ""


def _read(folder: Path, key: str) -> Entry:
    import numpy as np

    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise _Unreadable("meta.json belongs to another format or key")
    for name, size in meta["files"].items():
        if (folder / name).stat().st_size != size:
            raise _Unreadable(f"{name} is {(folder / name).stat().st_size} bytes, not {size}")
    splits: dict[str, list[dict]] = {}
    for split, spec in meta["splits"].items():
        n = spec["rows"]
        others = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
        if not isinstance(others, list) or len(others) != n:
            raise _Unreadable(f"{split}.json does not hold {n} rows")
        columns = {}
        for i, column in enumerate(spec["ids"]):
            values = np.load(folder / f"{split}.ids{i}.npy", allow_pickle=False)
            offsets = np.load(folder / f"{split}.ids{i}.off.npy", allow_pickle=False)
            if (offsets.shape != (n + 1,) or (n and (offsets[0] != 0 or offsets[-1] != len(values)))
                    or (n and bool((offsets[1:] < offsets[:-1]).any()))):
                raise _Unreadable(f"{split}: the offsets of {column} do not fit its values")
            flat, bounds = values.tolist(), offsets.tolist()
            columns[column] = [flat[a:b] for a, b in itertools.pairwise(bounds)]
        if spec["keys"] is None:  # rows with differing fields: all of it is in the JSON
            splits[split] = others
        else:
            splits[split] = [
                {k: columns[k][i] if k in columns else row[k] for k in spec["keys"]}
                for i, row in enumerate(others)]
    return Entry(key, splits, meta.get("meta", {}), folder)


# ---- writing -----------------------------------------------------------------------------------

def store(key: str, splits: dict[str, list[dict]], meta: dict[str, Any]) -> str:
    """Write an entry; "" when it is (or already was) in the cache, else why it is not. A
    failure to write is never an error for the run: the caller trains on what it has."""
    limit = max_bytes()
    if limit == 0:
        return "the cache is off (WORKBENCH_CACHE_MAX_GB = 0)"
    root = cache_dir()
    final = root / key
    if final.is_dir():
        return ""
    temp = root / f".tmp-{key[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        temp.mkdir(parents=True)
        why = _write(temp, key, splits, meta)
        if why:
            _remove(temp)
            return why
        size = _size(temp)
        if size > limit:
            _remove(temp)
            return (f"{size / 1e9:.1f} GB is over the cache's limit of {limit / 1e9:g} GB "
                    "(WORKBENCH_CACHE_MAX_GB)")
        try:
            os.rename(temp, final)  # atomic; fails when another writer's copy is already there
        except OSError:
            _remove(temp)
            if not final.is_dir():
                raise
        _evict(root, limit, keep=key)
        return ""
    except OSError as exc:
        _remove(temp)
        return f"could not write to {root}: {exc.strerror or exc}"


def _write(folder: Path, key: str, splits: dict[str, list[dict]], meta: dict[str, Any]) -> str:
    import numpy as np

    spec: dict[str, dict] = {}
    for split, rows in splits.items():
        keys = list(rows[0]) if rows else []
        uniform = all(list(r) == keys for r in rows)
        ids = {k: dtype for k in keys if uniform and (dtype := _ids_dtype(rows, k))}
        others = [{k: v for k, v in r.items() if k not in ids} for r in rows]
        try:
            text = json.dumps(others, ensure_ascii=False, allow_nan=False, default=_refuse)
        except (TypeError, ValueError):  # numpy scalars, dates, NaN...
            text = ""
        if not text or json.loads(text) != others:  # a tuple comes back a list: not kept
            return "a column of the rows holds values JSON does not keep exactly"
        (folder / f"{split}.json").write_text(text, encoding="utf-8")
        for i, (column, dtype) in enumerate(ids.items()):
            lengths = [len(r[column]) for r in rows]
            values = np.fromiter(itertools.chain.from_iterable(r[column] for r in rows),
                                 dtype=dtype, count=sum(lengths))
            offsets = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            np.save(folder / f"{split}.ids{i}.npy", values, allow_pickle=False)
            np.save(folder / f"{split}.ids{i}.off.npy", offsets, allow_pickle=False)
        spec[split] = {"rows": len(rows), "keys": keys if uniform else None, "ids": list(ids)}
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    body = {"format": FORMAT, "key": key, "created": time.time(), "splits": spec,
            "files": files, "meta": meta}
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, default=_refuse)
    except (TypeError, ValueError):
        return "the notes of the prepared data are not JSON"
    (folder / "meta.json").write_text(text, encoding="utf-8")  # last: the entry is whole
    return ""


def _ids_dtype(rows: list[dict], column: str) -> str | None:
    """The numpy dtype a column of token ids or masks round-trips through exactly (Python ints
    come back as ints, bools as bools), or None when it is something else."""
    kinds: set[type] = set()
    lo = hi = 0
    for r in rows:
        values = r[column]
        if type(values) is not list:
            return None
        if not values:
            continue
        kinds.update(map(type, values))
        if kinds not in ({int}, {bool}):  # bools mixed with ints would come back as ints
            return None
        if int in kinds:
            lo, hi = min(lo, min(values)), max(hi, max(values))
    if kinds == {bool}:
        return "bool"
    if 0 <= lo and hi < 2 ** 8:
        return "uint8"
    if -2 ** 31 <= lo and hi < 2 ** 31:
        return "int32"
    return "int64" if -2 ** 63 <= lo and hi < 2 ** 63 else None


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# ---- housekeeping ------------------------------------------------------------------------------

def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _remove(folder: Path) -> None:
    """Out of the way in one rename (readers see the entry or nothing), then deleted."""
    doomed = folder.with_name(f".trash-{folder.name[:16]}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(folder, doomed)
    except OSError:
        doomed = folder
    shutil.rmtree(doomed, ignore_errors=True)


def _evict(root: Path, limit: int, keep: str) -> None:
    """Drop the entries used least recently until the cache is under `limit`, and temporary
    folders left by writers that died."""
    entries = []
    now = time.time()
    for folder in root.iterdir():
        try:
            if not folder.is_dir():
                continue
            mtime = folder.stat().st_mtime
            if folder.name.startswith("."):
                if now - mtime > STALE_TEMP_S:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            entries.append((mtime, folder.name == keep, _size(folder), folder))
        except OSError:
            continue  # removed meanwhile by another process
    total = sum(size for _, _, size, _ in entries)
    for _, kept, size, folder in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if not kept:
            _remove(folder)
            total -= size

