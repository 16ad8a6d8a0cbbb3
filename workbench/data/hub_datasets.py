"""Datasets by Hugging Face Hub name, and local folders in the Hub's layout, read through the
`datasets` library, so the user's caches, token, offline mode and revisions work as they do in
every other tool built on it.

How `datasets` (5.2) resolves `load_dataset("org/name")` (datasets/load.py,
`dataset_module_factory`):

- online, the Hub API names the commit of the asked revision; the data files are downloaded into
  the huggingface_hub cache (`HF_HOME/hub/datasets--org--name/snapshots/<commit>/...`) and
  converted once into Arrow files in the datasets cache
  (`HF_HOME/datasets/org___name/<config>/0.0.0/<commit>/`), which are then memory-mapped;
- offline (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1) it asks no server:
  `CachedDatasetModuleFactory` loads the newest Arrow copy in the datasets cache. It does not
  look in the huggingface_hub cache, so a dataset fetched with `hf download --repo-type dataset`
  (or whose Arrow copy was deleted) would be "not cached"; here such a snapshot is then read as
  what it is, a local folder in the Hub's layout.

Either way the commit names the folder the rows come from, and the builder's `hash` holds it:
that is the revision a run records (`Opened.revision`), so a repeat run can pin it.

Rows are read from memory-mapped Arrow (`download_and_prepare` + `as_dataset`), not streamed:
that is what fills the cache a later offline run reads, it names the commit, and memory stays
bounded for large data as well (the Arrow file is paged in by the OS, rows are converted a batch
at a time). `streaming=True` is there for data too large to convert once
(`as_streaming_dataset`); it fills no cache.

The token is whatever huggingface_hub finds (HF_TOKEN, or `hf auth login`'s file): it is never
passed, printed or written here.

`datasets` is imported inside the functions that load; the checks on paths and caches need only
the standard library.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError

# Files `datasets` reads as shards of a Hub-layout folder (its packaged json / csv / parquet /
# arrow builders). Plain text (.txt, .md) is left to text_files: a folder of documents.
HUB_LAYOUT_EXTENSIONS = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".tsv")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_BATCH_ROWS = 1024


@dataclass
class Opened:
    """A dataset opened through `datasets`: its rows (0-based index, value) and, for a Hub
    dataset, the commit they come from."""

    rows: Iterator[tuple[int, Any]]
    revision: str | None = None
    where: str = ""  # "hub", "datasets cache", "hub cache" or "folder": said in notes and tests


# ---- environment and caches ---------------------------------------------------------------------

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def is_offline() -> bool:
    """datasets' rule: HF_DATASETS_OFFLINE when it is set (non-empty), else HF_HUB_OFFLINE (or
    TRANSFORMERS_OFFLINE). Read now, not when datasets was imported."""
    if os.environ.get("HF_DATASETS_OFFLINE", "").strip():
        return _env_true("HF_DATASETS_OFFLINE")
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def datasets_cache_dir() -> Path:
    """The datasets cache by datasets' rule (HF_DATASETS_CACHE, else HF_HOME/datasets, else
    ~/.cache/huggingface/datasets), read from the environment now: datasets.config freezes it
    at import."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_DATASETS_CACHE"]))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expanduser(home)) / "datasets"


def _snake_case(name: str) -> str:
    """datasets.naming.camelcase_to_snakecase, without importing datasets (`profile validate`
    asks about the cache and must answer at once)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def arrow_cache_entries(dataset_id: str) -> list[Path]:
    """The datasets cache's prepared copies of `dataset_id`: `org___name/<config>/<version>/<commit>`
    folders (CachedDatasetModuleFactory's look-up)."""
    owner, _, name = dataset_id.partition("/")
    root = datasets_cache_dir() / f"{owner}___{_snake_case(name)}"
    return sorted(p for p in root.glob("*/*/*") if p.is_dir())


def is_cached(dataset_id: str, revision: str | None = None) -> bool:
    """Whether an offline load of `dataset_id` can find it: a prepared copy in the datasets
    cache, or a snapshot of the revision in the huggingface_hub cache."""
    return bool(arrow_cache_entries(dataset_id)) or hub_snapshot(dataset_id, revision) is not None


def hub_snapshot(dataset_id: str, revision: str | None) -> tuple[str, Path] | None:
    """(commit, folder) of `dataset_id` in the huggingface_hub cache for `revision` (a branch or
    tag through refs/, or a commit), else None. Without a revision: refs/main."""
    from workbench.hub import cache_dir

    repo = cache_dir() / ("datasets--" + dataset_id.replace("/", "--"))
    wanted = revision or "main"
    commit = wanted if _COMMIT.match(wanted) else None
    if commit is None:
        ref = repo / "refs" / wanted
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except OSError:
            return None
    folder = repo / "snapshots" / commit
    return (commit, folder) if folder.is_dir() else None


def is_hub_layout(folder: Path) -> bool:
    """A folder `datasets.load_dataset(folder)` reads as a dataset repository: data shards
    (parquet / arrow / JSON Lines / JSON / CSV, at any depth, hidden folders aside), or a
    README.md whose YAML header declares `configs:`."""
    if _declares_configs(folder / "README.md"):
        return True
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(f.lower().endswith(HUB_LAYOUT_EXTENSIONS) and not f.startswith(".") for f in files):
            return True
    return False


def _declares_configs(readme: Path) -> bool:
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if not text.startswith("---"):
        return False
    header = text[3:].split("\n---", 1)[0]
    return re.search(r"^configs\s*:", header, re.MULTILINE) is not None


# ---- opening ------------------------------------------------------------------------------------

def open_hub(dataset_id: str, *, config: str | None = None, split: str = "train",
             revision: str | None = None, data_files: list[str] | None = None,
             streaming: bool = False) -> Opened:
    """Rows of the Hub dataset `dataset_id`, as `datasets` reads it: from the Hub, or offline
    from the cache. Everything that stops it is a DataError with one sentence and a hint."""
    from workbench import hub

    missing = hub.missing_folder_error(dataset_id, repr(dataset_id))
    if missing is not None:  # `data/trian`: a typo of a folder here, not a dataset to fetch
        raise DataError(missing.message, hint=missing.hint)
    unreachable = None
    if not is_offline():
        # Without a network, huggingface_hub would retry each request for about a minute: one
        # short probe first, and offline mode (the cache only) when the Hub does not answer.
        reason = hub.probe()
        if reason is not None:
            hub.go_offline()
            unreachable = f"{hub.probe_address()[2]}: {reason}"
    if unreachable is None and not is_offline():
        return _open_online(dataset_id, config, split, revision, data_files, streaming)
    return _open_cached(dataset_id, config, split, revision, data_files, streaming, unreachable)


def open_folder(folder: Path, *, config: str | None = None, split: str = "train",
                data_files: list[str] | None = None, streaming: bool = False) -> Opened:
    """Rows of a local folder in the Hub's layout (shards, a README.md `configs:` block)."""
    builder = _builder(str(folder), folder, config=config, data_files=data_files,
                       split=split)
    return Opened(_rows(builder, folder, split, streaming), None, "folder")


def _open_online(dataset_id, config, split, revision, data_files, streaming) -> Opened:
    builder = _builder(dataset_id, dataset_id, config=config, data_files=data_files,
                       split=split, revision=revision)
    return Opened(_rows(builder, dataset_id, split, streaming, online=True), _commit_of(builder),
                  "hub")


def _open_cached(dataset_id, config, split, revision, data_files, streaming,
                 unreachable: str | None) -> Opened:
    """Offline: datasets' own cache first (its prepared Arrow copy), then the huggingface_hub
    snapshot of the asked revision read as a local folder; neither: one line saying what to do."""
    snapshot = hub_snapshot(dataset_id, revision)
    # The commit the profile pins: given as one, or a branch / tag the hub cache's refs/ resolve.
    # A name the cache cannot resolve pins nothing: the newest prepared copy is read, and the
    # commit it comes from is recorded.
    pinned = revision if revision and _COMMIT.match(revision) else (snapshot[0] if revision and snapshot else None)
    builder = None
    if arrow_cache_entries(dataset_id):
        try:
            builder = _builder(dataset_id, dataset_id, config=config, data_files=data_files,
                               split=split, offline=True)
        except DataError:
            # The prepared copies are of another configuration or other data files: the Hub
            # snapshot, read as a folder, may still hold them.
            if snapshot is None or not is_hub_layout(snapshot[1]):
                raise
    if builder is not None:
        commit = _commit_of(builder)
        if pinned is None or commit == pinned:
            # Prepared already: read memory-mapped (flat memory, no download), streaming or not;
            # streaming from it would go back to the data files on the Hub.
            return Opened(_rows(builder, dataset_id, split, False), commit, "datasets cache")
        if snapshot is None:
            raise DataError(
                f"the cache holds commit {commit} of this dataset, not the revision {revision!r} "
                "the profile asks for, and the Hub cannot be asked for it "
                f"({_why_offline(unreachable)})",
                file=dataset_id,
                hint=f"load revision {revision!r} once where the Hub is reachable, or set the "
                f"source's revision = \"{commit}\" to use the cached copy")
    if snapshot is not None and is_hub_layout(snapshot[1]):
        commit, folder = snapshot
        builder = _builder(str(folder), dataset_id, config=config, data_files=data_files,
                           split=split)
        return Opened(_rows(builder, dataset_id, split, streaming), commit, "hub cache")
    raise not_cached(dataset_id, revision, unreachable)


def not_cached(dataset_id: str, revision: str | None, unreachable: str | None) -> DataError:
    what = "this Hub dataset" + (f" (revision {revision!r})" if revision else "")
    from workbench.hub import cache_dir

    caches = f"{datasets_cache_dir()} or {cache_dir()}"
    if unreachable:
        message = (f"cannot reach the Hugging Face Hub ({unreachable}), and {what} is not in the "
                   f"Hugging Face cache ({caches})")
        first, tail = "load it once where the Hub is reachable", (
            "; set HF_HUB_OFFLINE=1 to use only the cache and skip this check")
    else:
        message = (f"{what} is not in the Hugging Face cache ({caches}), and "
                   f"{_offline_variable()}=1 is set, so nothing is downloaded")
        first, tail = f"load it once without {_offline_variable()}=1 where the Hub is reachable", ""
    return DataError(
        message, file=dataset_id,
        hint=f"{first}: it is then cached and loads offline; or `hf download {dataset_id} "
        f"--repo-type dataset` on a machine with a network and copy its cache to {cache_dir()} "
        f"(or point HF_HOME at the copy){tail}")


def _offline_variable() -> str:
    return "HF_DATASETS_OFFLINE" if _env_true("HF_DATASETS_OFFLINE") else "HF_HUB_OFFLINE"


def _why_offline(unreachable: str | None) -> str:
    return f"it does not answer: {unreachable}" if unreachable else f"{_offline_variable()}=1 is set"


def _commit_of(builder) -> str | None:
    value = getattr(builder, "hash", None)
    return value if isinstance(value, str) and _COMMIT.match(value) else None


# ---- through datasets ---------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_datasets(bars: bool = False):
    """datasets logs a warning for every offline cache hit ("Using the latest cached version
    ..."), and draws a progress bar for every split it converts: what was read is said by the
    caller. Bars stay where the Hub is read (`bars`): a download takes time."""
    import datasets
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    logger = datasets.utils.logging.get_logger("datasets")
    level = logger.level
    logger.setLevel(max(level, 40))
    hide = not bars and not are_progress_bars_disabled()
    if hide:
        disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if hide:
            enable_progress_bars()


def _sync_offline(offline: bool | None) -> None:
    """datasets reads the offline switch once, at import; follow the environment as it is now
    (hub.go_offline sets the variable, and a test may set it after datasets was imported), or
    `offline` where the caller has decided (the cache only: the Hub did not answer)."""
    import datasets.config

    value = is_offline() if offline is None else offline
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = value


def _builder(path: str, shown: str | Path, *, config: str | None,
             data_files: list[str] | None, split: str, revision: str | None = None,
             offline: bool | None = None):
    """datasets.load_dataset_builder, its failures turned into DataErrors about `shown`. The
    source's data_files are the files of the split it reads (datasets alone would call a list of
    files "train", so `split = "test"` with them would find nothing)."""
    import datasets

    _sync_offline(offline)
    kwargs: dict[str, Any] = {"cache_dir": str(datasets_cache_dir())}
    if config:
        kwargs["name"] = config
    if data_files:
        kwargs["data_files"] = {split: list(data_files)}
    if revision:
        kwargs["revision"] = revision
    try:
        with _quiet_datasets():
            return datasets.load_dataset_builder(path, **kwargs)
    except Exception as exc:  # the library's errors are many; each becomes one sentence
        raise load_error(exc, shown, config=config, data_files=data_files,
                         revision=revision) from None


def _rows(builder, shown: str | Path, split: str, streaming: bool,
          online: bool = False) -> Iterator[tuple[int, Any]]:
    """(index, row) for `split`: prepared once into the Arrow cache, then read a batch at a time
    from the memory-mapped file; with `streaming`, straight from the data files."""
    try:
        with _quiet_datasets(bars=online):
            if streaming:
                data = builder.as_streaming_dataset(split=split)
            else:
                builder.download_and_prepare()
                data = builder.as_dataset(split=split)
    except Exception as exc:  # as in _builder: one sentence, no traceback
        raise load_error(exc, shown, split=split) from None
    return _iterate(data, shown, streaming)


def _iterate(data, shown, streaming: bool) -> Iterator[tuple[int, Any]]:
    index = 0
    try:
        if streaming:
            for value in data:
                yield index, value
                index += 1
            return
        for batch in data.iter(batch_size=_BATCH_ROWS):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                yield index, dict(zip(columns, values))
                index += 1
    except DataError:
        raise
    except Exception as exc:  # e.g. the connection dropped while streaming
        raise load_error(exc, shown, row=index) from None


# ---- errors, said once --------------------------------------------------------------------------

def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(exc: BaseException) -> tuple[str, int | None, str] | None:
    """(kind, HTTP status, the Hub's own message) of the Hub's refusal behind `exc`: from
    huggingface_hub's error when it is still attached, else from the sentence datasets wrote
    when it re-raised it (`raise ... from None` drops the original)."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import errors as hf

    for err in _chain(exc):
        if isinstance(err, hf.HfHubHTTPError):
            status = getattr(getattr(err, "response", None), "status_code", None)
            said = (getattr(err, "server_message", None) or "").strip().rstrip(".")
            kind = ("gated" if isinstance(err, hf.GatedRepoError)
                    else "revision" if isinstance(err, hf.RevisionNotFoundError)
                    else "missing" if isinstance(err, hf.RepositoryNotFoundError)
                    else "disabled" if isinstance(err, hf.DisabledRepoError)
                    else "limited" if status == 429 else "http")
            return kind, status, said or ("" if kind != "http" else _first_line(err))
    for err in _chain(exc):
        if isinstance(err, DatasetNotFoundError):
            text = str(err)
            if "is a gated dataset" in text:
                return "gated", 401 if "must be authenticated" in text else 403, ""
            if text.startswith("Revision "):
                return "revision", 404, ""
            return "missing", 404, ""
    return None


def hub_error(exc: BaseException, dataset_id: str, revision: str | None = None) -> DataError | None:
    """The Hub's refusal in `exc` (or in what caused it) as one sentence with what to do, or
    None when no Hub answer is behind it: gated, missing or private, disabled, unknown revision,
    rate limited, or the Hub's own error. The Hub's X-Error-Message is quoted when it is known."""
    found = _refusal(exc)
    if found is None:
        return None
    kind, status, said = found
    page = f"https://huggingface.co/datasets/{dataset_id}"
    token_hint = ("set HF_TOKEN in the environment to a token of an account that may read it "
                  "(or run `hf auth login`); the token is never written into the profile or the run")
    quoted = f" (the Hub says: {said})" if said and kind != "http" else ""
    if kind == "gated" and status == 401:
        message = ("is a gated dataset on the Hugging Face Hub, and this request was not "
                   f"authenticated{quoted}")
        hint = f"accept its conditions at {page}, then {token_hint}"
    elif kind == "gated":
        message = ("is a gated dataset on the Hugging Face Hub, and your account is not (yet) "
                   f"allowed to read it{quoted}")
        hint = f"ask for access at {page}; once granted, it loads with the token you already use"
    elif kind == "revision":
        message = f"the Hub has no revision {revision!r} of this dataset{quoted}"
        hint = (f"the revision is a branch, tag or commit of {page} (see its \"Files and "
                "versions\" tab); leave it out to read main")
    elif kind == "missing":
        message = ("no such dataset on the Hugging Face Hub, or it is private and this request "
                   f"may not read it{quoted}")
        hint = f"check the name at {page}; for a private dataset, {token_hint}"
    elif kind == "disabled":
        message = f"this dataset has been disabled on the Hugging Face Hub{quoted}"
        hint = "use another dataset or a local copy"
    elif kind == "limited":
        message = f"the Hugging Face Hub is rate-limiting this machine{quoted}"
        hint = f"wait a few minutes and retry; with a token the limits are higher ({token_hint})"
    else:
        message = f"the Hugging Face Hub answered HTTP {status or '?'}: {said}"
        hint = "retry later; if it persists, see https://status.huggingface.co"
    return DataError(message, file=dataset_id, hint=hint)


def load_error(exc: BaseException, shown: str | Path, *, config: str | None = None,
               data_files: list[str] | None = None, revision: str | None = None,
               split: str | None = None, row: int | None = None) -> DataError:
    """Any failure of a `datasets` load as a DataError about `shown` (an id or a folder)."""
    if isinstance(exc, DataError):
        return exc
    text = str(shown)
    is_folder = isinstance(shown, Path)
    if not is_folder:
        refused = hub_error(exc, text, revision)
        if refused is not None:
            return refused
    message = _first_line(exc)
    from datasets.data_files import EmptyDatasetError
    from datasets.exceptions import DataFilesNotFoundError

    if isinstance(exc, ValueError) and message.startswith("Unknown split"):
        available = re.search(r"one of (\[.*\])", message)
        return DataError(f"has no split {split!r}" + (f"; its splits are {available.group(1)}"
                                                      if available else ""),
                         file=shown, hint="choose one with `split = \"...\"` in the source's "
                         "[[data.sources]] table")
    if isinstance(exc, ValueError) and message.startswith("Couldn't find cache for"):
        available = re.search(r"Available configs in the cache: (\[.*\])", str(exc))
        return DataError("the Hugging Face cache holds this dataset, but not "
                         + (f"its configuration {config!r}" if config else "these data_files")
                         + (f" (it holds {available.group(1)})" if available else "")
                         + f", and {_why_offline(None)}", file=shown,
                         hint="load it once with this configuration where the Hub is reachable, "
                         "or choose a cached configuration with `config = \"...\"`")
    if isinstance(exc, ValueError) and ("BuilderConfig" in message or "Config name is missing" in message
                                        or "configurations in the cache" in message):
        available = re.search(r"(\[.*\])", str(exc))
        asked = f"no configuration {config!r}" if config else "several configurations"
        return DataError(f"has {asked}" + (f"; its configurations are {available.group(1)}"
                                           if available else ""),
                         file=shown, hint="name one with `config = \"...\"` in the source's "
                         "[[data.sources]] table")
    if isinstance(exc, (DataFilesNotFoundError, EmptyDatasetError)):
        asked = f" matching data_files = {list(data_files)!r}" if data_files else ""
        return DataError(f"no data files{asked} that datasets can read (parquet, arrow, JSON "
                         "Lines, JSON, CSV)", file=shown,
                         hint="data_files are paths or globs relative to the dataset's root, "
                         "e.g. \"data/train-*.parquet\"")
    if isinstance(exc, ConnectionError) or type(exc).__name__ in ("ConnectError", "TimeoutException",
                                                                     "ReadTimeout", "ConnectTimeout"):
        return DataError("lost the connection to the Hugging Face Hub"
                         + (f" after row {row}" if row else "") + f": {message}",
                         file=shown, hint="retry where the Hub is reachable; a dataset loaded "
                         "once (not streamed) is read from the cache after that")
    where = f" at row {row + 1}" if row else ""
    return DataError(f"datasets could not read it{where}: {type(exc).__name__}: {message}",
                     file=shown,
                     hint="a Hub-layout folder holds data files (parquet, arrow, JSON Lines, CSV) "
                     "or a README.md with a `configs:` block naming them" if is_folder else
                     "check the dataset's name, config, split and data_files")
