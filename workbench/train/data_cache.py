"""A method's prepared data through the tokenized-data cache (workbench/data/token_cache.py).

`method.prepare_data` loads, splits and renders the data; its result is a function of the data
files, the tokenizer, the chat template and a few settings. The key below holds exactly those,
so a second run, a sweep's trials and the ranks of a distributed run that share them read the
rows back instead of tokenizing again, and anything that changes them is a miss:

- the data files' bytes (hashed before loading) and every data.* setting; a mixture of
  [[data.sources]]: every source's bytes (a local one) or name, config, split and pinned commit
  (a Hub one), and the mix settings (weights, rows, held_out, data.mix_rows are data.* settings);
- train.max_seq_len (truncation) and train.seed (the validation split, KTO's order);
- the tokenizer's serialized form (not its folder), the chat template's text and the chat
  format's settings, and the name messages call the template by (the notes quote it);
- the method, and the settings its prepare_data reads: GRPO's prompt length limit, and the
  reward settings and files its notes and checks use; KTO's batch-size check;
- the workbench code that loads and renders, and the transformers / tokenizers / jinja2
  versions, so a change to either never serves rows the new code would not make.

A cached plan's notes are the uncached plan's notes, word for word: they are stored with the
rows, with the chat format's notes that rendering added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from workbench.train.methods import PreparedData


def prepare_data_cached(method, profile, tokenizer, fmt, log: Callable[[str], None]
                        ) -> tuple[PreparedData, str]:
    """(the prepared data, a line saying where it came from: tokenized now or read back)."""
    from workbench.data import token_cache

    parts, why_not = key_parts(method, profile, tokenizer, fmt)
    key = token_cache.cache_key(parts) if parts is not None else ""
    if key:
        entry, damage = token_cache.lookup(key)
        if entry is not None:
            data = _from_entry(entry, fmt)
            line = (f"tokenized data from the cache ({_rows(data)}, key {key[:12]}; "
                    f"{token_cache.cache_dir()})")
            log(line)
            return data, line
        if damage:
            log(f"the cached copy of the tokenized data could not be read ({damage}); "
                "tokenizing again")
    log("tokenizing the data" + (" (it will be cached for the next run)" if key else ""))
    before = list(fmt.notes)
    started = time.perf_counter()
    data = method.prepare_data(profile, tokenizer, fmt, log)
    seconds = time.perf_counter() - started
    if key:
        why_not = token_cache.store(key, {"train": data.train_rows, "eval": data.eval_rows}, {
            "notes": data.notes, "chat_format_notes": [n for n in fmt.notes if n not in before],
            "held_out": data.held_out, "dataset_hash": data.dataset_hash,
            "manifest_hash": data.manifest_hash, "seconds": round(seconds, 3),
            "sources": data.sources,
            "about": {"method": method.name, "data": profile.data.train or [
                s.get("path") or s.get("name") for s in profile.data.sources],
                      "model": profile.model.name_or_path}})
    if why_not:
        line = f"tokenized {_rows(data)} in {seconds:.1f} s (not cached: {why_not})"
    else:
        line = f"tokenized {_rows(data)} in {seconds:.1f} s (cached for the next run, key {key[:12]})"
    log(line)
    return data, line


def _rows(data: PreparedData) -> str:
    return f"{len(data.train_rows) + len(data.eval_rows)} rows"


def _from_entry(entry, fmt) -> PreparedData:
    meta = entry.meta
    # Rendering may have added chat-format notes (a folded system role, tool calls as text);
    # the plan reads them from fmt after prepare_data, so they are put back where it looks.
    for note in meta["chat_format_notes"]:
        if note not in fmt.notes:
            fmt.notes.append(note)
    return PreparedData(entry.splits["train"], entry.splits["eval"], meta["dataset_hash"],
                        meta["manifest_hash"], list(meta["notes"]), held_out=meta["held_out"],
                        sources=list(meta.get("sources") or []))


def key_parts(method, profile, tokenizer, fmt) -> tuple[dict | None, str]:
    """Everything the prepared data depends on, or (None, why it cannot be cached)."""
    from workbench.data import token_cache
    from workbench.data.save import is_saved_dataset

    if token_cache.max_bytes() == 0:
        return None, "the cache is off (WORKBENCH_CACHE_MAX_GB = 0)"
    d, t = profile.data, profile.train
    if d.sources:
        data_hash, why_not = _sources_fingerprint(profile)
        if data_hash is None:
            return None, why_not
    else:
        files = [d.train] + ([d.validation] if d.validation else [])
        data_hash = token_cache.data_fingerprint(files)
        if data_hash is None:
            return None, (f"data.train = {d.train!r} is not a local file or folder, and a Hub "
                          "dataset can change under the same name")
    tok = token_cache.tokenizer_fingerprint(tokenizer)
    if tok is None:
        return None, f"the {type(tokenizer).__name__} tokenizer has no serialized form to fingerprint"
    parts = {
        "method": method.name,
        "data_files": data_hash,
        "saved_dataset": is_saved_dataset(d.train),
        "data": dataclasses.asdict(d),
        # Not train.packing: rows are packed after this, from the same rendered rows.
        "train": {"max_seq_len": t.max_seq_len, "seed": t.seed},
        "tokenizer": tok,
        "chat_template": fmt.template,
        "chat_format": {"system": fmt.system_mode, "reasoning": fmt.reasoning_mode,
                        "name": fmt.name},
        "code": _code_fingerprint(method.module),
        "libraries": _library_versions(),
    }
    if "strftime_now" in fmt.template:  # the template writes today's date into the prompt
        parts["date"] = time.strftime("%Y-%m-%d")
    if method.name == "kto":
        parts["kto_batch_ok"] = t.batch_size >= 2  # prepare_data refuses a batch of one
    if method.name == "grpo":
        g = profile.grpo
        # max_prompt_len drops prompts; the rest is said in the notes, and the reward files are
        # loaded (and checked) by prepare_data.
        parts["grpo"] = {k: getattr(g, k) for k in ("max_prompt_len", "num_generations",
                                                   "max_completion_len", "generation", "beta")}
        parts["rewards"] = dataclasses.asdict(profile.rewards)
        parts["reward_files"] = _reward_files(profile.rewards.functions)
    return parts, ""


def _sources_fingerprint(profile) -> tuple[dict | None, str]:
    """Each [[data.sources]] table's data: a local source's bytes, a Hub source's identity
    pinned to a commit. A Hub source without a commit revision can change under its name, so
    the mixture is not cached (said, as for one Hub dataset)."""
    from workbench.data import token_cache
    from workbench.data.mixture import pinned_commit, source_hash
    from workbench.data.sources import sources_of

    d = profile.data
    out: dict = {}
    for spec in sources_of(profile):
        if spec.is_hub:
            commit = pinned_commit(spec)
            if not commit:
                return None, (f"source {spec.label!r} is the Hub dataset {spec.name!r} without a "
                              "commit as its revision, and it can change under the same name")
            out[spec.label] = source_hash(spec, commit)
        else:
            fingerprint = token_cache.data_fingerprint([spec.path])
            if fingerprint is None:
                return None, f"source {spec.label!r}: {spec.path} is not a local file or folder"
            out[spec.label] = fingerprint
    if d.validation:
        out["[data.validation]"] = token_cache.data_fingerprint([d.validation])
        if out["[data.validation]"] is None:
            return None, f"data.validation = {d.validation!r} is not a local file or folder"
    return out, ""


def _reward_files(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        file = spec.rpartition(":")[0]
        if file.endswith(".py"):
            path = Path(file)
            out[file] = (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file()
                         else "missing")
    return out


@cache
def _code_fingerprint(module: str) -> str:
    """sha256 of the workbench source that loads and renders data for this method."""
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "data").glob("*.py")) + [
        root / "train" / "plan.py", Path(__file__).resolve(),
        root / "train" / "methods" / "__init__.py", root / "train" / "methods" / f"{module}.py"]
    if module == "grpo":
        files += sorted((root / "rewards").glob("*.py"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\n".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@cache
def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("transformers", "tokenizers", "jinja2", "sentencepiece"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out
