"""Dataset schemas: detect which one a row follows and convert it to messages.

A schema is a converter registered in `CONVERTERS` plus a rule in `detect_format`. Converters take
one row (a dict, after column mapping) and return the record's messages; they know nothing about
files. A problem confined to one row raises `RowProblem`, which the loader turns into a
`file:line` error or, with `on_bad_line="skip"`, a counted skip.

| format            | keys                                                                    |
| ----------------- | ----------------------------------------------------------------------- |
| alpaca            | instruction, output; optional input, system, history                   |
| sharegpt          | conversations = [{from, value}, ...]; optional system, tools           |
| messages          | messages = [{role, content}, ...] (OpenAI style, tool_calls allowed)   |
|                   | an assistant's reasoning_content / reasoning / thinking is kept         |
| prompt_completion | prompt, completion (each a string or a list of messages)               |
| text              | text (plain text, trained on as a whole)                               |

Tool calls (ShareGPT `function_call` turns, OpenAI `tool_calls`) become assistant messages whose
content is the call as JSON text and which carry `"tool_call": True`; tool results (ShareGPT
`observation`, OpenAI role `tool`) become role `tool`. A `tools` column (a JSON string or a list)
is parsed by `parse_tools` and kept on the record as `record["tools"]`.

Fields that hold lists (messages, conversations, history, tools, list-valued prompt/completion)
may also arrive as JSON text, because CSV cells and some Parquet exports can only hold strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
SUPPORTED_FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")

# Keys each schema reads, for messages and for validating a column mapping.
FORMAT_KEYS: dict[str, str] = {
    "alpaca": "instruction, output; optional input, system, history",
    "sharegpt": "conversations = [{from, value}, ...]; optional system, tools",
    "messages": "messages = [{role, content}, ...]; optional tools",
    "prompt_completion": "prompt, completion",
    "text": "text",
}
SCHEMA_FIELDS = (
    "instruction", "input", "output", "system", "history",
    "conversations", "tools", "messages", "prompt", "completion", "text",
)
COLUMNS_EXAMPLE = '[data] columns = { instruction = "question", output = "answer" }'

# ShareGPT speaker names -> roles. `function_call` is handled apart (an assistant tool call).
_SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "bot": "assistant", "chatgpt": "assistant",
    "system": "system",
    "observation": "tool", "tool": "tool", "function": "tool", "function_response": "tool",
}
_TOOL_CALL_SPEAKERS = ("function_call", "tool_call")


class RowProblem(Exception):
    """A problem confined to one row: becomes a DataError, or a skip with on_bad_line="skip"."""

    def __init__(self, message: str, *, column: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.column = column
        self.hint = hint


def formats_help() -> str:
    """One line per supported schema and its keys, for error messages."""
    return "; ".join(f"{name} ({keys})" for name, keys in FORMAT_KEYS.items())


# ---------------------------------------------------------------------------------------------
# Detection and column mapping


def detect_format(record: dict) -> str | None:
    """Name the schema a record follows, or None when no supported schema fits.

    Most specific first: a `messages` or `conversations` list wins over loose keys like `text`
    that other schemas may carry as extras.
    """
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


def rename_columns(row: dict, columns: dict[str, str]) -> dict:
    """Rename the file's columns to schema names: `columns` maps schema name -> file column.

    Unmapped columns pass through; a mapped column wins over a same-named original, because the
    mapping is the person's explicit choice.
    """
    if not columns:
        return row
    inverse = {file_col: schema_name for schema_name, file_col in columns.items()}
    renamed = {k: v for k, v in row.items() if k not in inverse}
    for file_col, schema_name in inverse.items():
        if file_col in row:
            renamed[schema_name] = row[file_col]
    return renamed


# ---------------------------------------------------------------------------------------------
# Converters: one row -> messages, raising RowProblem.


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


def sharegpt_to_messages(record: dict) -> list[dict]:
    """ShareGPT: `conversations` of {from, value}; optional top-level `system`."""
    turns = _list_field(record, "conversations")
    if not turns:
        raise RowProblem("field 'conversations' is an empty list")
    messages = sharegpt_turns(turns, "conversations")
    system = _optional_str(record, "system")
    if system:
        if any(m["role"] == "system" for m in messages):
            raise RowProblem(
                "has both a top-level 'system' and a system turn in 'conversations'",
                hint="keep one of them",
            )
        messages.insert(0, {"role": "system", "content": system})
    _require_assistant(messages)
    return messages


def sharegpt_turns(turns: list, key: str, single: bool = False,
                   empty_value_ok: bool = False) -> list[dict]:
    """ShareGPT {from, value} turns (role/content spellings accepted too) -> messages.
    `key` names the field in errors (`key[i]`, or `key` alone when `single`); with
    `empty_value_ok` a missing value is "" (preference data reports empty answers as a check)."""
    messages: list[dict] = []
    for index, turn in enumerate(turns):
        where = key if single else f"{key}[{index}]"
        if not isinstance(turn, dict):
            raise RowProblem(f"{where} must be an object with 'from' and 'value', found {json_type(turn)}")
        # Some exports use role/content inside `conversations`; accept both spellings.
        speaker = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if speaker in _TOOL_CALL_SPEAKERS:
            messages.append(_tool_call_message(_call_text(value, where)))
            continue
        role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise RowProblem(
                f"{where} has from={speaker!r}; expected one of human, gpt, system, "
                "function_call, observation (or user, assistant, tool)"
            )
        if value is None and empty_value_ok:
            value = ""
        if not isinstance(value, str):
            raise RowProblem(f"{where}.value must be a string, found {json_type(value)} {preview(value)}")
        messages.append({"role": role, "content": value})
    return messages


def chat_to_messages(record: dict) -> list[dict]:
    """OpenAI-style `messages`: {role, content}; assistant `tool_calls` become tool-call messages."""
    raw_messages = _list_field(record, "messages")
    if not raw_messages:
        raise RowProblem("field 'messages' is an empty list")
    messages = _convert_chat_list(raw_messages, "messages")
    _require_assistant(messages)
    return messages


def prompt_completion_to_messages(record: dict) -> list[dict]:
    """`prompt` (user turn or messages) followed by `completion` (assistant turn or messages)."""
    prompt = _text_or_messages(record, "prompt", default_role="user")
    completion = _text_or_messages(record, "completion", default_role="assistant")
    if not any(m["role"] == "assistant" for m in completion):
        raise RowProblem("field 'completion' has no assistant message, so there is nothing to train on")
    return prompt + completion


def text_to_messages(record: dict) -> list[dict]:
    """Plain text: one assistant message; the record is marked `text_only` (train on all of it)."""
    text = _required_str(record, "text")
    if not text.strip():
        raise RowProblem("field 'text' is empty, so there is nothing to train on")
    return [{"role": "assistant", "content": text}]


CONVERTERS: dict[str, Callable[[dict], list[dict]]] = {
    "alpaca": alpaca_to_messages,
    "sharegpt": sharegpt_to_messages,
    "messages": chat_to_messages,
    "prompt_completion": prompt_completion_to_messages,
    "text": text_to_messages,
}


def parse_tools(record: dict) -> list[dict] | None:
    """The row's `tools` column as a list of dicts, or None when absent/empty.

    Accepts a list or JSON text of a list (ShareGPT keeps tools as a string); a single object is
    taken as a one-tool list. Anything else is a row problem rather than being dropped.
    """
    value = record.get("tools")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowProblem(
                f"field 'tools' is not valid JSON: {exc.msg} at character {exc.pos + 1}",
                hint="'tools' must be a JSON list of tool definitions",
            ) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise RowProblem(f"field 'tools' must be a list of objects, found {preview(value)}")
    return value or None


# ---------------------------------------------------------------------------------------------
# Helpers


def _convert_chat_list(raw_messages: list, where_prefix: str) -> list[dict]:
    messages: list[dict] = []
    for index, message in enumerate(raw_messages):
        where = f"{where_prefix}[{index}]"
        if not isinstance(message, dict):
            raise RowProblem(f"{where} must be an object, found {json_type(message)}")
        role = message.get("role")
        role = "tool" if role == "function" else role  # legacy OpenAI name for a tool result
        if role not in ROLES:
            raise RowProblem(
                f"{where} has role {role!r}; expected one of {', '.join(ROLES)}",
                hint="this looks like ShareGPT (from/value); put it under 'conversations' or "
                'set data.format = "sharegpt"' if "from" in message else None,
            )
        calls = message.get("tool_calls")
        reasoning = _reasoning(message, where) if role == "assistant" else None
        if role == "assistant" and calls:
            # Keep any text the assistant said alongside its calls as its own message.
            if message.get("content") or reasoning:
                messages.append({"role": "assistant", "content": content_text(message.get("content") or "", where),
                                 **({"reasoning_content": reasoning} if reasoning else {})})
            messages.append(_tool_call_message(_openai_calls_text(calls, where)))
            continue
        messages.append({"role": role, "content": content_text(message.get("content"), where),
                         **({"reasoning_content": reasoning} if reasoning else {})})
    return messages


def _reasoning(message: dict, where: str) -> str | None:
    """An assistant's reasoning under any of the names datasets and APIs give it."""
    for key in ("reasoning_content", "reasoning", "thinking"):
        value = message.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise RowProblem(f"{where}.{key} must be a string, found {json_type(value)}")
        return value
    return None


def _tool_call_message(call_text: str) -> dict:
    return {"role": "assistant", "content": call_text, "tool_call": True}


def _call_text(value: Any, where: str) -> str:
    """A ShareGPT function_call value as JSON text; it must be JSON so a template can parse it."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if not isinstance(value, str):
        raise RowProblem(f"{where}.value must be the call as JSON text, found {json_type(value)}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise RowProblem(
            f"{where} is a function_call whose value is not valid JSON: {exc.msg} at character {exc.pos + 1}",
            hint='a function_call value must be JSON like {"name": ..., "arguments": {...}}',
        ) from None
    if not isinstance(parsed, (dict, list)):
        raise RowProblem(f"{where} is a function_call whose value is {json_type(parsed)}, not a JSON object")
    return value


def _openai_calls_text(calls: Any, where: str) -> str:
    """OpenAI tool_calls -> JSON text of {name, arguments} (one object, or a list when several).

    The same shape as a ShareGPT function_call, so the renderer sees one kind of tool call.
    """
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list):
        raise RowProblem(f"{where}.tool_calls must be a list, found {json_type(calls)}")
    normalized = []
    for index, call in enumerate(calls):
        spot = f"{where}.tool_calls[{index}]"
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowProblem(f"{spot} must have a function name, found {preview(call)}")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise RowProblem(f"{spot}.function.arguments is not valid JSON: {exc.msg}") from None
        normalized.append({"name": function["name"], "arguments": arguments})
    if not normalized:
        raise RowProblem(f"{where}.tool_calls is an empty list")
    value = normalized[0] if len(normalized) == 1 else normalized
    return json.dumps(value, ensure_ascii=False)


def _text_or_messages(record: dict, key: str, default_role: str) -> list[dict]:
    if key not in record:
        raise RowProblem(f"missing field {key!r} (found keys {key_list(record)})")
    value = _maybe_json_list(record[key], key)
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, list):
        if not value:
            raise RowProblem(f"field {key!r} is an empty list")
        return _convert_chat_list(value, key)
    raise RowProblem(f"field {key!r} must be a string or a list of messages, found {json_type(value)}")


def _require_assistant(messages: list[dict]) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise RowProblem(
            "conversation has no assistant message, so there is nothing to train on",
            hint="every conversation needs at least one message with role 'assistant'",
        )


def _list_field(record: dict, key: str) -> list:
    if key not in record:
        raise RowProblem(f"missing field {key!r} (found keys {key_list(record)})")
    value = _maybe_json_list(record[key], key)
    if not isinstance(value, list):
        raise RowProblem(f"field {key!r} must be a list, found {json_type(value)}")
    return value


def _maybe_json_list(value: Any, key: str) -> Any:
    """JSON text of a list (a CSV cell, a stringified Parquet column) -> the list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowProblem(f"field {key!r} holds text that is not valid JSON: {exc.msg}") from None
    return value


def _required_str(record: dict, key: str) -> str:
    if key not in record:
        raise RowProblem(f"missing field {key!r} (found keys {key_list(record)})")
    value = record[key]
    if not isinstance(value, str):
        raise RowProblem(
            f"field {key!r} must be a string, found {json_type(value)} {preview(value)}",
            hint="quote the value in the data file",
        )
    return value


def _optional_str(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowProblem(f"field {key!r} must be a string, found {json_type(value)} {preview(value)}")
    return value


def _history_pairs(history: Any) -> list[tuple[str, str]]:
    if history is None or history == "":  # an empty CSV cell means no history
        return []
    history = _maybe_json_list(history, "history")
    if not isinstance(history, list):
        raise RowProblem(f"field 'history' must be a list of [user, assistant] pairs, found {json_type(history)}")
    pairs = []
    for index, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise RowProblem(f"history[{index}] must be a [user, assistant] pair of strings, found {preview(pair)}")
        pairs.append((pair[0], pair[1]))
    return pairs


def content_text(content: Any, where: str) -> str:
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
                kind = part.get("type") if isinstance(part, dict) else json_type(part)
                raise RowProblem(
                    f"{where}.content[{index}] is a {kind!r} part; only text parts "
                    '({"type": "text", "text": ...}) are supported'
                )
        return "\n".join(texts)
    raise RowProblem(f"{where}.content must be a string or a list of text parts, found {json_type(content)}")


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def key_list(record: dict) -> str:
    keys = sorted(str(k) for k in record)
    return ", ".join(repr(k) for k in keys) if keys else "none (empty object)"


def preview(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
