"""Preference data (DPO, ORPO, SimPO, KTO): detect the shape of a file and normalize it once.

Every record that leaves this module is one of two shapes, whatever the file looked like:

    paired    {"prompt": [messages], "chosen": [messages], "rejected": [messages],
               "source": {"file": str, "row": int}}                     (+ "tools" when given)
    unpaired  {"prompt": [messages], "completion": [messages], "label": bool,
               "source": {"file": str, "row": int}}                     (+ "tools" when given)

Messages are the SFT record format's (`{"role", "content"}`, tool calls as JSON text with
`"tool_call": True`, reasoning in `reasoning_content`). `prompt` is the conversation up to the
user's (or a tool's) turn that the answers reply to; `chosen` / `rejected` / `completion` are the
assistant's answer (usually one message; an answer that was a text plus a tool call is two).

| format         | keys (first row decides; `format=` forces one)                                    |
| -------------- | --------------------------------------------------------------------------------- |
| sharegpt_pairs | conversations = [{from, value}, ...], chosen = {from, value}, rejected = {...};   |
|                | optional system, tools (LLaMA-Factory's ShareGPT ranking, e.g. dpo_en_demo)       |
| alpaca_pairs   | instruction, chosen, rejected; optional input, system, history                    |
|                | (LLaMA-Factory's Alpaca ranking)                                                  |
| pairs          | chosen, rejected, optional prompt (TRL preference): strings or message lists.     |
|                | Without `prompt` (TRL's implicit prompt) each side is a whole conversation and    |
|                | the prompt is what they share: lists split at their last user (or tool) turn,     |
|                | strings at the last space of their common beginning. Optional system, tools       |
| hh             | chosen, rejected as Anthropic HH transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ..."): |
|                | the prompt is the turns before the last Assistant turn, the answers that turn     |
| kto_messages   | messages = [{role, content}, ...] (or conversations = [{from, value}, ...]) +     |
|                | label (or kto_tag) true/false: the prompt is the messages before the last         |
|                | assistant message, the completion is that message (LLaMA-Factory's KTO)           |
| unpaired       | prompt, completion, label (TRL unpaired preference): strings or message lists     |

Anything else: map the file's columns onto these names with `columns` (the same table as
`data.columns` for SFT), e.g. `{"prompt": "question", "chosen": "good", "rejected": "bad"}`.

What is a load error and what is not. A row that cannot be read as a pair (a side missing or null,
a value of the wrong type, a prompt that ends with the assistant's turn, a label that is not true
or false) is a bad row: a DataError naming file:row, or with `on_bad_line="skip"` a counted skip
in the LoadReport. A pair that reads fine but cannot teach anything (chosen equal to rejected, an
empty answer or prompt, sides whose prompts differ) loads, so that `data inspect` can show it;
`preference_checks.check_pairs` drops those, each with its file, row and reason. Sides whose
prompts differ (an implicit prompt that is not shared, a side whose conversation disagrees with
the `prompt` column) are marked `"prompt_mismatch": True` with the detail in
`"prompt_mismatch_why"`; the record keeps the chosen side's prompt.

`source.row` is numbered as in load.py: the 1-based line for JSON Lines and CSV, the 0-based index
for a JSON array, Parquet, saved datasets and Hub datasets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError
from workbench.data.load import BAD_LINE_CHOICES, LoadReport, _error_at, stream_records
from workbench.data.readers import RawRow, RowSource, open_source
from workbench.data.schemas import (
    RowProblem,
    _convert_chat_list,
    _history_pairs,
    _list_field,
    _optional_str,
    _required_str,
    detect_format,
    json_type,
    key_list,
    parse_tools,
    preview,
    rename_columns,
    sharegpt_turns,
)

__all__ = [
    "PREFERENCE_FIELDS",
    "PREFERENCE_FORMATS",
    "PREFERENCE_FORMAT_KEYS",
    "detect_preference_format",
    "is_preference_data",
    "iter_preference_records",
    "load_preference_records",
    "records_kind",
]

PREFERENCE_FORMATS = ("sharegpt_pairs", "alpaca_pairs", "pairs", "hh", "kto_messages", "unpaired")
PAIRED_FORMATS = ("sharegpt_pairs", "alpaca_pairs", "pairs", "hh")
UNPAIRED_FORMATS = ("kto_messages", "unpaired")
PREFERENCE_FORMAT_KEYS: dict[str, str] = {
    "sharegpt_pairs": "conversations = [{from, value}, ...], chosen = {from, value}, rejected = {from, value}",
    "alpaca_pairs": "instruction, chosen, rejected; optional input, system, history",
    "pairs": "prompt (optional), chosen, rejected: strings or message lists",
    "hh": 'chosen, rejected: "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts',
    "kto_messages": "messages = [{role, content}, ...] + label true/false",
    "unpaired": "prompt, completion, label true/false",
}
# The names a `columns` mapping may use (schema name -> the file's column).
PREFERENCE_FIELDS = (
    "prompt", "chosen", "rejected", "completion", "label", "kto_tag", "conversations", "messages",
    "system", "tools", "instruction", "input", "history",
)
PREFERENCE_COLUMNS_EXAMPLE = 'columns = { prompt = "question", chosen = "good", rejected = "bad" }'
FORMAT_CHOICES = ("auto",) + PREFERENCE_FORMATS

_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_SKIP_HINT = (
    'fix the row, or skip bad rows: --skip-bad-rows on the command line, data.on_bad_rows = "skip" '
    "in a profile (each skipped row is counted and listed)"
)


# ---------------------------------------------------------------------------------------------
# Detection


def detect_preference_format(row: dict) -> str | None:
    """Name the preference format a row follows, or None when it is not preference data.

    A `chosen` or `rejected` key makes a row paired (no SFT schema has them); a boolean `label`
    (or a `kto_tag`) next to `messages` / `conversations` / `completion` makes it unpaired.
    `messages` alone and `prompt` + `completion` alone stay SFT.
    """
    if not isinstance(row, dict):
        return None
    if "chosen" in row or "rejected" in row:
        if "conversations" in row:
            return "sharegpt_pairs"
        if "instruction" in row:
            return "alpaca_pairs"
        if row.get("prompt") is not None:
            return "pairs"
        side = row.get("chosen") if row.get("chosen") is not None else row.get("rejected")
        if isinstance(side, str) and _looks_like_hh(side):
            return "hh"
        return "pairs"
    if _has_label(row):
        if "completion" in row:
            return "unpaired"
        if "messages" in row or "conversations" in row:
            return "kto_messages"
    return None


def is_preference_data(path: str | Path, columns: dict[str, str] | None = None,
                       encoding: str | None = None) -> bool:
    """Is `path` preference data? Reads rows only until the first one that is an object.

    File-level problems (no such file, not JSON, ...) raise DataError as the loaders would.
    """
    source = open_source(path, encoding=encoding)
    rows = source.rows
    try:
        for count, raw in enumerate(rows):
            if raw.problem is None and isinstance(raw.value, dict):
                row = rename_columns(raw.value, dict(columns or {}))
                return detect_preference_format(row) is not None
            if count >= 100:  # a hundred unreadable rows: let the loader say what is wrong
                break
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return False


def _looks_like_hh(text: str) -> bool:
    return ("Human:" in text and "\n\nAssistant:" in text) and (
        text.startswith(("Human:", "\n\nHuman:")) or "\n\nHuman:" in text)


def _has_label(row: dict) -> bool:
    if "kto_tag" in row:
        return True
    if "label" not in row:
        return False
    value = row["label"]
    # A `label` column of categories ("sports") is an SFT extra, not a KTO verdict.
    return value is None or isinstance(value, bool) or value in (0, 1) or (
        isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE + ("",))


# ---------------------------------------------------------------------------------------------
# Loading


def iter_preference_records(
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
) -> Iterator[dict]:
    """Stream preference records (paired or unpaired, see the module doc) from one dataset.

    The arguments mean what they mean for `load.iter_records`: format "auto" (the first row
    decides) or one of PREFERENCE_FORMATS; system_prompt is added to prompts without a system
    message; on_bad_line "error" stops at the first bad row with a DataError naming file:row,
    "skip" skips it and lists it in `report.skipped`; columns maps schema names to the file's
    columns. File-level problems (missing, empty, not preference data) always raise.
    """
    if format not in FORMAT_CHOICES:
        raise DataError(
            f"unknown preference data format {format!r}",
            hint=f"use one of: {', '.join(FORMAT_CHOICES)} ({preference_formats_help()})",
        )
    if on_bad_line not in BAD_LINE_CHOICES:
        raise ValueError(f"on_bad_line must be one of {BAD_LINE_CHOICES}, got {on_bad_line!r}")
    columns = _check_columns(columns)
    report = report if report is not None else LoadReport()
    source = open_source(path, encoding=encoding, split=split, revision=revision)
    report.kinds[source.name] = source.kind
    yield from stream_records(
        source, report, None if format == "auto" else format, on_bad_line, columns,
        check_columns=_check_mapped_columns, detect=_detect,
        convert=lambda name, row: _to_record(name, row, system_prompt))


def load_preference_records(path: str | Path, **kwargs: Any) -> list[dict]:
    """`iter_preference_records` collected into a list."""
    return list(iter_preference_records(path, **kwargs))


def records_kind(records: Any) -> str:
    """"paired" (chosen / rejected) or "unpaired" (completion + label) for normalized records.

    Raises DataError for no records, a mix of both kinds, or records that are neither.
    """
    kind = None
    first = None
    for record in records:
        here = "paired" if "chosen" in record else "unpaired" if "completion" in record else None
        where = _where(record)
        if here is None:
            raise DataError(f"{where}: not a preference record (it has {key_list(record)})",
                            hint="load preference data with iter_preference_records")
        if kind is None:
            kind, first = here, where
        elif here != kind:
            raise DataError(
                f"{where} is {here} preference data, but {first} is {kind}: one training run "
                "takes one kind",
                hint="pairs (chosen / rejected) train with DPO, ORPO or SimPO; single answers with "
                "a true/false label train with KTO; use separate files")
    if kind is None:
        raise DataError("no preference records", hint="the dataset is empty, or every row was skipped")
    return kind


def preference_formats_help() -> str:
    return "; ".join(f"{name} ({keys})" for name, keys in PREFERENCE_FORMAT_KEYS.items())


# ---------------------------------------------------------------------------------------------
# Steps of iter_preference_records


def _check_columns(columns: dict[str, str] | None) -> dict[str, str]:
    if not columns:
        return {}
    if not isinstance(columns, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
        raise DataError(f"data.columns must map schema names to column names (strings), found {columns!r}",
                        hint=f"for example: {PREFERENCE_COLUMNS_EXAMPLE}")
    unknown = [k for k in columns if k not in PREFERENCE_FIELDS]
    if unknown:
        raise DataError(
            f"data.columns names {', '.join(repr(k) for k in unknown)}, which no preference format reads",
            hint=f"the keys of data.columns are the names a format expects ({', '.join(PREFERENCE_FIELDS)}); "
            f"the values are your file's column names, e.g. {PREFERENCE_COLUMNS_EXAMPLE}")
    return dict(columns)


def _check_mapped_columns(source: RowSource, raw: RawRow, columns: dict[str, str]) -> None:
    missing = [f"{k} = {v!r}" for k, v in columns.items() if v not in raw.value]
    if missing:
        raise _error_at(
            source, raw.row,
            f"data.columns maps {', '.join(missing)}, but the data has no such column; "
            f"its columns are {key_list(raw.value)}",
            hint="the values of data.columns must be column names exactly as they appear in the file")


def _detect(source: RowSource, raw: RawRow, row: dict) -> str:
    found = detect_preference_format(row)
    if found is not None:
        return found
    sft = detect_format(row)
    what = (f"it looks like SFT data ({sft}): conversations to imitate, with no chosen / rejected "
            "answers or true/false label" if sft else f"found columns {key_list(row)}")
    raise _error_at(
        source, raw.row,
        f"cannot read the first record as preference data; {what}",
        hint=f"preference formats and their keys: {preference_formats_help()}. If your columns "
        f"have other names, map them, e.g. {PREFERENCE_COLUMNS_EXAMPLE}; or force a format")


def _to_record(chosen: str, row: dict, system_prompt: str) -> dict:
    record = _CONVERTERS[chosen](row)
    if row.get("prompt_mismatch") and not record.get("prompt_mismatch"):
        # A file this module wrote (`data split`) keeps the mark; reading it back must too.
        why = row.get("prompt_mismatch_why")
        _mark_mismatch(record, why if isinstance(why, str) and why else "marked prompt_mismatch in the data")
    if system_prompt and not any(m["role"] == "system" for m in record["prompt"]):
        record["prompt"].insert(0, {"role": "system", "content": system_prompt})
    tools = parse_tools(row)
    if tools:
        record["tools"] = tools
    return record


def _where(record: dict) -> str:
    from workbench.data.readers import row_label

    source = record.get("source") or {}
    return row_label(source.get("file", "?"), source.get("row", "?"))


# ---------------------------------------------------------------------------------------------
# Converters: one row -> a paired or unpaired record (without source), raising RowProblem.


def sharegpt_pairs_to_record(row: dict) -> dict:
    """LLaMA-Factory ShareGPT ranking: the prompt is `conversations`, each side one turn."""
    prompt = sharegpt_turns(_list_field(row, "conversations"), "conversations", empty_value_ok=True)
    prompt = _with_top_system(prompt, row, "conversations")
    _check_prompt(prompt, "conversations")
    return _pair(prompt, _side(row, "chosen"), _side(row, "rejected"))


def alpaca_pairs_to_record(row: dict) -> dict:
    """LLaMA-Factory Alpaca ranking: instruction (+ input), history and system make the prompt."""
    instruction = _required_str(row, "instruction")
    extra = _optional_str(row, "input")
    system = _optional_str(row, "system")
    prompt: list[dict] = [{"role": "system", "content": system}] if system else []
    for user, assistant in _history_pairs(row.get("history")):
        prompt += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    prompt.append({"role": "user", "content": instruction + ("\n\n" + extra if extra else "")})
    return _pair(prompt, _side(row, "chosen"), _side(row, "rejected"))


def pairs_to_record(row: dict) -> dict:
    """TRL preference: an explicit `prompt`, or an implicit one shared by two whole conversations."""
    chosen_raw, rejected_raw = _side_value(row, "chosen"), _side_value(row, "rejected")
    if row.get("prompt") is not None:
        prompt = _messages(row["prompt"], "prompt", "user")
        prompt = _with_top_system(prompt, row, "prompt")
        _check_prompt(prompt, "prompt")
        return _pair(prompt, _messages(chosen_raw, "chosen", "assistant"),
                     _messages(rejected_raw, "rejected", "assistant"))
    chosen, rejected = _loose_json(chosen_raw), _loose_json(rejected_raw)
    if isinstance(chosen, str) and isinstance(rejected, str):
        record = _split_texts(chosen, rejected)
    elif isinstance(chosen, (list, dict)) and isinstance(rejected, (list, dict)):
        record = _split_conversations(_messages(chosen, "chosen", "assistant"),
                                      _messages(rejected, "rejected", "assistant"))
    else:
        raise RowProblem(
            f"'chosen' is {json_type(chosen)} and 'rejected' is {json_type(rejected)}: without a "
            "'prompt' column both sides must be text, or both lists of messages",
            hint="give both sides the same shape, or add the prompt in a 'prompt' column")
    record["prompt"] = _with_top_system(record["prompt"], row, "prompt")
    return record


def hh_to_record(row: dict) -> dict:
    """Anthropic HH: two transcripts that share every turn but the last Assistant turn."""
    chosen = _hh_messages(_side_value(row, "chosen"), "chosen")
    rejected = _hh_messages(_side_value(row, "rejected"), "rejected")
    return _split_conversations(chosen, rejected)


def kto_messages_to_record(row: dict) -> dict:
    """LLaMA-Factory KTO: a conversation whose last assistant message the label judges."""
    key = "messages" if "messages" in row else "conversations"
    raw = _list_field(row, key)
    if not raw:
        raise RowProblem(f"field {key!r} is an empty list")
    messages = _convert_chat_list(raw, key) if key == "messages" else sharegpt_turns(raw, key, empty_value_ok=True)
    messages = _with_top_system(messages, row, key)
    prompt, completion = _split_answer(messages)
    if not completion:
        raise RowProblem(
            f"the last message of {key!r} is a {messages[-1]['role']!r} message; a KTO row ends "
            "with the assistant's answer that its label judges")
    _check_prompt(prompt, key)
    return {"prompt": prompt, "completion": completion, "label": _label(row)}


def unpaired_to_record(row: dict) -> dict:
    """TRL unpaired preference: prompt, completion and a true/false label."""
    completion_raw = _side_value(row, "completion")
    label = _label(row)
    if row.get("prompt") is not None:
        prompt = _messages(row["prompt"], "prompt", "user")
        prompt = _with_top_system(prompt, row, "prompt")
        _check_prompt(prompt, "prompt")
        answer, why = _answer_of(prompt, _messages(completion_raw, "completion", "assistant"), "completion")
        record = {"prompt": prompt, "completion": answer, "label": label}
        if why:
            _mark_mismatch(record, why)
        return record
    # No prompt column: the completion is the whole conversation (implicit prompt).
    messages = _messages(completion_raw, "completion", "assistant")
    prompt, answer = _split_answer(messages)
    prompt = _with_top_system(prompt, row, "prompt")
    _check_prompt(prompt, "completion")
    return {"prompt": prompt, "completion": answer, "label": label}


_CONVERTERS: dict[str, Callable[[dict], dict]] = {
    "sharegpt_pairs": sharegpt_pairs_to_record,
    "alpaca_pairs": alpaca_pairs_to_record,
    "pairs": pairs_to_record,
    "hh": hh_to_record,
    "kto_messages": kto_messages_to_record,
    "unpaired": unpaired_to_record,
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _side_value(row: dict, key: str) -> Any:
    """A side's raw value; a missing or null side is a bad row."""
    if key not in row:
        raise RowProblem(
            f"missing field {key!r} (found keys {key_list(row)})",
            hint=f"every row needs its {key} answer; map the column with data.columns if it has another name")
    value = row[key]
    if value is None:
        raise RowProblem(f"field {key!r} is null: the {key} answer is missing")
    return value


def _side(row: dict, key: str) -> list[dict]:
    return _messages(_side_value(row, key), key, "assistant")


def _pair(prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> dict:
    """A paired record; sides that carry their own prompt are compared with `prompt`."""
    chosen, chosen_why = _answer_of(prompt, chosen, "chosen")
    rejected, rejected_why = _answer_of(prompt, rejected, "rejected")
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    why = chosen_why or rejected_why
    if why:
        _mark_mismatch(record, why)
    return record


def _answer_of(prompt: list[dict], side: list[dict], key: str) -> tuple[list[dict], str]:
    """(the answer, why its prompt differs or "") of a side that is either only the assistant's
    answer, or a whole conversation (prompt + answer, as in UltraFeedback's files)."""
    if not side or all(m["role"] in ("assistant", "tool") for m in side):
        if side and side[0]["role"] != "assistant":
            raise RowProblem(f"{key!r} starts with a tool result; an answer starts with the assistant's turn")
        return side, ""
    own_prompt, answer = _split_answer(side)
    if _prompt_key(own_prompt) != _prompt_key(prompt):
        return answer, (f"the {key} conversation starts with a different prompt than the 'prompt' "
                        "field; the answers of a pair must reply to the same prompt")
    return answer, ""


def _split_answer(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """(prompt, answer): the answer is the trailing run of assistant messages."""
    end = len(messages)
    while end > 0 and messages[end - 1]["role"] == "assistant":
        end -= 1
    return messages[:end], messages[end:]


def _split_conversations(chosen: list[dict], rejected: list[dict]) -> dict:
    """Implicit prompt for message lists: each side split before its final answer; the prompts
    must be the same messages (their longest common prefix ends at the last user turn)."""
    chosen_prompt, chosen_answer = _split_answer(chosen)
    rejected_prompt, rejected_answer = _split_answer(rejected)
    if not chosen:
        chosen_prompt = rejected_prompt
    elif not rejected:
        rejected_prompt = chosen_prompt
    record = {"prompt": chosen_prompt, "chosen": chosen_answer, "rejected": rejected_answer}
    for name, prompt in (("chosen", chosen_prompt), ("rejected", rejected_prompt)):
        if prompt and prompt[-1]["role"] == "system":
            raise RowProblem(f"the {name} conversation has no user turn before its answer")
    if _strict_key(chosen_prompt) != _strict_key(rejected_prompt):
        at = next((i for i, (a, b) in enumerate(zip(chosen_prompt, rejected_prompt))
                   if _strict_key([a]) != _strict_key([b])), min(len(chosen_prompt), len(rejected_prompt)))
        _mark_mismatch(record, (
            f"chosen and rejected do not share their prompt: the conversations differ at message "
            f"{at + 1} (of {len(chosen_prompt)} and {len(rejected_prompt)} before the answers), "
            "not only in the final answer"))
    return record


def _split_texts(chosen: str, rejected: str) -> dict:
    """Implicit prompt for strings: the common beginning, cut back to a space so that no word is
    split, is the prompt (a user turn); the rest of each side is its answer."""
    if chosen == rejected:
        # Nothing tells prompt from answer; the identical sides are what check_pairs reports.
        return {"prompt": [], "chosen": [_assistant(chosen)], "rejected": [_assistant(rejected)]}
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    # The last space both sides still share: the prompt never ends inside a word.
    cut = max(0, max(chosen.rfind(c, 0, common) for c in (" ", "\n", "\t")))
    prompt_text = chosen[:cut].rstrip()
    record = {"prompt": [{"role": "user", "content": prompt_text}] if prompt_text else [],
              "chosen": [_assistant(chosen[cut:].lstrip())],
              "rejected": [_assistant(rejected[cut:].lstrip())]}
    if not prompt_text:
        _mark_mismatch(record, (
            "chosen and rejected share no words at their beginning, so no prompt can be taken from "
            "them (without a 'prompt' column the prompt is the text both sides start with)"))
    return record


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _mark_mismatch(record: dict, why: str) -> None:
    record["prompt_mismatch"] = True
    record["prompt_mismatch_why"] = why


def _hh_messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, str):
        raise RowProblem(f"field {key!r} must be an HH transcript (text), found {json_type(value)}")
    text = value if value.startswith("\n\n") else "\n\n" + value
    parts = _HH_TURN.split(text)
    # parts: [before, speaker, text, speaker, text, ...]
    if len(parts) < 3:
        raise RowProblem(f"field {key!r} has no '\\n\\nHuman: ' or '\\n\\nAssistant: ' turn: "
                         f"{preview(value)}", hint="HH transcripts alternate Human: and Assistant: turns")
    if parts[0].strip():
        raise RowProblem(f"field {key!r} has text before its first Human: turn: {preview(parts[0])}")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    if messages[-1]["role"] != "assistant":
        messages.append(_assistant(""))  # a transcript that ends with Human: has an empty answer
    return messages


def _messages(value: Any, key: str, default_role: str) -> list[dict]:
    """A string (one message of `default_role`), a message, or a list of messages (role/content
    or ShareGPT from/value), also as JSON text (a CSV cell)."""
    value = _loose_json(value)
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict):
        return _turns([value], key, single=True)
    if isinstance(value, list):
        return _turns(value, key)
    raise RowProblem(f"field {key!r} must be text or a list of messages, found {json_type(value)} {preview(value)}")


def _turns(turns: list, key: str, single: bool = False) -> list[dict]:
    if all(isinstance(t, dict) and "role" in t for t in turns):
        return _convert_chat_list(turns, key)  # OpenAI style, tool_calls and reasoning included
    messages: list[dict] = []
    for index, turn in enumerate(turns):
        where = key if single else f"{key}[{index}]"
        if not isinstance(turn, dict):
            raise RowProblem(f"{where} must be a message object, found {json_type(turn)} {preview(turn)}")
        if "role" in turn and "from" not in turn:
            messages += _convert_chat_list([turn], where)
        elif "from" in turn or "value" in turn:
            messages += sharegpt_turns([turn], where, single=True, empty_value_ok=True)
        else:
            raise RowProblem(f"{where} has neither 'role' / 'content' nor 'from' / 'value' (it has {key_list(turn)})")
    return messages


def _with_top_system(messages: list[dict], row: dict, key: str) -> list[dict]:
    system = _optional_str(row, "system")
    if not system:
        return messages
    if any(m["role"] == "system" for m in messages):
        raise RowProblem(f"has both a top-level 'system' and a system message in {key!r}", hint="keep one of them")
    return [{"role": "system", "content": system}] + messages


def _check_prompt(prompt: list[dict], key: str) -> None:
    """The prompt must end with the turn the answers reply to (a user turn or a tool result)."""
    turns = [m for m in prompt if m["role"] != "system"]
    if turns and turns[-1]["role"] == "assistant":
        raise RowProblem(
            f"{key!r} ends with an assistant message; the prompt must end with the user's (or a "
            "tool's) turn that the answers reply to",
            hint="put the answers in chosen / rejected (or completion), not at the end of the prompt")


def _label(row: dict) -> bool:
    key = "label" if "label" in row else "kto_tag" if "kto_tag" in row else None
    if key is None:
        raise RowProblem(f"missing field 'label' (found keys {key_list(row)})",
                         hint="an unpaired (KTO) row needs label = true (a desirable answer) or false")
    value = row[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise RowProblem(f"field {key!r} must be true (a desirable answer) or false (an undesirable one), "
                     f"found {json_type(value)} {preview(value)}")


def _loose_json(value: Any) -> Any:
    """JSON text of messages (a CSV cell) -> the messages; any other text stays text."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, dict) and ("role" in parsed or "from" in parsed):
            return parsed
        if isinstance(parsed, list) and parsed and all(
                isinstance(m, dict) and ("role" in m or "from" in m) for m in parsed):
            return parsed
    return value


def _strict_key(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def _prompt_key(messages: list[dict]) -> list[str]:
    """What two renderings of one prompt must agree on: the non-system texts, spacing aside."""
    return [" ".join(m["content"].split()) for m in messages if m["role"] != "system"]
