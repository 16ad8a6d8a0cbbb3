"""Prompt data for reinforcement learning (GRPO): what the model is asked, and the reference
columns its rewards read.

Every record that leaves this module has one shape, whatever the file looked like:

    {"prompt": [messages ending with a user (or tool) turn],
     "columns": {name: value, ...},          # every other column of the row, as written
     "source": {"file": str, "row": int}}

| the row holds                              | the prompt is                 | also kept as a column |
| ------------------------------------------ | ----------------------------- | --------------------- |
| prompt (a string or a message list)        | it (a string is a user turn)  |                       |
| question (GSM8K and most QA sets)          | it, as a user turn            |                       |
| instruction (+ input), Alpaca              | instruction and input         | output as "answer"    |
| messages / conversations (chat, ShareGPT)  | the turns up to the last user | a final assistant     |
|                                            | or tool turn                  | turn as "answer"      |

`data.columns` maps your names onto these first (e.g. `{ prompt = "problem", answer =
"solution" }`); a reference column keeps its value as written (a number, a list of test cases,
a JSON schema), because rewards compare with it. A "tools" column is kept too (tool-call
rewards read it). The system prompt (`data.system_prompt`) is added to prompts without one.
"""

from __future__ import annotations

import random
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.data.errors import DataError
from workbench.data.load import BAD_LINE_CHOICES, LoadReport, _error_at, dataset_hash, stream_records
from workbench.data.readers import RawRow, RowSource, open_source, row_label
from workbench.data.schemas import (RowProblem, _convert_chat_list, content_text, key_list,
                                    sharegpt_turns)

PROMPT_KEYS = ("prompt", "question", "instruction", "messages", "conversations")
PROMPT_COLUMNS = PROMPT_KEYS + ("input", "system", "answer", "output", "tools", "solution")


def _detect(source: RowSource, raw: RawRow, row: dict) -> str:
    for key in PROMPT_KEYS:
        if key in row:
            return key
    raise _error_at(source, raw.row,
                    f"no prompt in this row: it has {key_list(row)}, and prompt data needs one "
                    f"of {', '.join(PROMPT_KEYS)}",
                    hint='map your column onto one with data.columns, e.g. '
                         '{ prompt = "problem" }')


def _check_mapped_columns(source: RowSource, raw: RawRow, columns: dict[str, str]) -> None:
    missing = [f"{k} = {v!r}" for k, v in columns.items() if v not in raw.value]
    if missing:
        raise _error_at(source, raw.row,
                        f"data.columns maps {', '.join(missing)}, but the data has no such "
                        f"column; its columns are {key_list(raw.value)}",
                        hint="the values of data.columns are column names exactly as in the file")


def _to_record(key: str, row: dict, system_prompt: str) -> dict:
    if key not in row or row[key] is None:
        raise RowProblem(f"no {key!r} in this row (the first row had one)")
    columns = {k: v for k, v in row.items() if k != key}
    if key in ("prompt", "question"):
        prompt = _prompt_value(row[key], key)
    elif key == "instruction":
        text = content_text(row["instruction"], "instruction")
        extra = columns.pop("input", None)
        if extra:
            text = f"{text}\n\n{content_text(extra, 'input')}"
        prompt = [{"role": "user", "content": text}]
        if "output" in columns and "answer" not in columns:
            columns["answer"] = columns.pop("output")
    else:
        turns = row[key]
        messages = (sharegpt_turns(turns, key) if key == "conversations"
                    else _convert_chat_list(turns, key))
        if messages and messages[-1]["role"] == "assistant":
            last = messages.pop()
            columns.setdefault("answer", last["content"])
        prompt = messages
    if isinstance(columns.get("system"), str) and not any(m["role"] == "system" for m in prompt):
        prompt.insert(0, {"role": "system", "content": columns.pop("system")})
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise RowProblem("the prompt does not end with a user (or tool) turn for the model to "
                         "answer")
    if system_prompt and not any(m["role"] == "system" for m in prompt):
        prompt.insert(0, {"role": "system", "content": system_prompt})
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
            "columns": columns}


def _prompt_value(value: Any, key: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return _convert_chat_list(value, key)
    raise RowProblem(f"{key!r} is {type(value).__name__}: expected a string or a list of "
                     "messages")


def iter_prompt_records(path: str | Path, system_prompt: str = "", on_bad_line: str = "error",
                        report: LoadReport | None = None, *, columns: dict[str, str] | None = None,
                        encoding: str | None = None, split: str = "train",
                        revision: str | None = None) -> Iterator[dict]:
    """Stream prompt records from one dataset; arguments as `load.iter_records`."""
    if on_bad_line not in BAD_LINE_CHOICES:
        raise ValueError(f"on_bad_line must be one of {BAD_LINE_CHOICES}, got {on_bad_line!r}")
    if columns and not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
        raise DataError(f"data.columns must map names to column names (strings), found {columns!r}")
    report = report if report is not None else LoadReport()
    source = open_source(path, encoding=encoding, split=split, revision=revision)
    report.kinds[source.name] = source.kind
    yield from stream_records(source, report, None, on_bad_line, dict(columns or {}),
                              check_columns=_check_mapped_columns, detect=_detect,
                              convert=lambda key, row: _to_record(key, row, system_prompt))


def load_prompt_records(path: str | Path, **kwargs: Any) -> list[dict]:
    return list(iter_prompt_records(path, **kwargs))


def prompt_key(record: dict) -> str:
    """One prompt's identity for splitting and de-duplicating: its turns' text."""
    return "\x1e".join(f"{m['role']}\x1f{m['content'].strip()}" for m in record["prompt"])


def reference_columns(records: list[dict]) -> dict[str, int]:
    """{column: rows that have it (not null)}, in first-seen order."""
    counts: dict[str, int] = {}
    for r in records:
        for k, v in r["columns"].items():
            counts[k] = counts.get(k, 0) + (v is not None)
    return counts


@dataclass
class PromptData:
    train: list[dict]
    validation: list[dict]
    dataset_hash: str
    skipped: list[tuple] = field(default_factory=list)  # bad rows (data.on_bad_rows = "skip")
    dropped: list[tuple] = field(default_factory=list)  # (file, row, why)


def load_prompt_training_data(profile, log: Callable[[str], None] = lambda s: None) -> PromptData:
    """The prompts a GRPO run trains on and holds out: loaded, empty and repeated prompts
    dropped (each named), split seeded with every copy of a prompt on one side."""
    d, t = profile.data, profile.train
    report = LoadReport()
    kw = dict(system_prompt=d.system_prompt, on_bad_line=d.on_bad_rows, report=report,
              columns=d.columns or None, encoding=d.encoding or None)
    log(f"loading prompts from {d.train}")
    train = load_prompt_records(d.train, **kw)
    validation = load_prompt_records(d.validation, **kw) if d.validation else None
    hashed = [d.train] + ([d.validation] if d.validation else [])
    train, dropped = _check(train)
    if validation is None:
        validation = []
        if d.validation_split > 0 and len(train) > 1:
            keys = sorted({prompt_key(r) for r in train})
            random.Random(t.seed).shuffle(keys)
            held = set(keys[: max(1, round(len(keys) * d.validation_split))])
            validation = [r for r in train if prompt_key(r) in held]
            train = [r for r in train if prompt_key(r) not in held]
    else:
        validation, more = _check(validation)
        dropped += more
        seen = {prompt_key(r) for r in validation}
        leaked = [r for r in train if prompt_key(r) in seen]
        dropped += [(r["source"]["file"], r["source"]["row"], "the same prompt is in the "
                     "validation data") for r in leaked]
        train = [r for r in train if prompt_key(r) not in seen]
    return PromptData(train, validation, dataset_hash(hashed), list(report.skipped), dropped)


def _check(records: list[dict]) -> tuple[list[dict], list[tuple]]:
    kept, dropped, seen = [], [], set()
    for r in records:
        key = prompt_key(r)
        why = ("empty prompt" if not r["prompt"][-1]["content"].strip()
               else "repeats an earlier prompt" if key in seen else None)
        if why:
            dropped.append((r["source"]["file"], r["source"]["row"], why))
            continue
        seen.add(key)
        kept.append(r)
    return kept, dropped


def render_prompts(tokenizer, fmt, records: list[dict], max_len: int) -> tuple[list[dict], list[str]]:
    """Training rows ({prompt, prompt_ids, columns, source}) and the file:row of each prompt
    dropped for being longer than `max_len` tokens."""
    kept, too_long = [], []
    texts = [fmt.prompt(r["prompt"], tools=_tools(r)) for r in records]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for r, prompt_ids in zip(records, ids):
        where = row_label(r["source"]["file"], r["source"]["row"])
        if len(prompt_ids) > max_len:
            too_long.append(where)
            continue
        kept.append({"prompt": r["prompt"], "prompt_ids": list(prompt_ids),
                     "columns": r["columns"], "source": where})
    return kept, too_long


def _tools(record: dict):
    tools = record["columns"].get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            return None
    return tools if isinstance(tools, list) and tools else None
