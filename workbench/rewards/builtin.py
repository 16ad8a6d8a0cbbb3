"""The built-in reward functions for GRPO: verifiable checks a profile names by spec.

A spec is a name, or a name and an argument after a colon: "answer:exact", "regex:^\\d+$",
"length:200". Names contain colons themselves, so `builtin_for` matches whole names first and
splits off an argument only for a built-in that takes one.

Every reward has TRL's signature, `f(prompts, completions, completion_ids=None, **columns)`, and
returns one float in [0, 1] per completion. The partial scores (0.5) are deliberate: GRPO learns
from differences between a prompt's completions, and a group that all scores 0 teaches nothing.

Pure Python: listing or running them loads no torch; `jsonschema` is imported only when a
JSON schema is checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

RewardFunc = Callable[..., list]

# What `options` holds when a profile says nothing (options are duck-typed; see _opt).
DEFAULTS = {"answer_column": "answer", "answer_tag": "answer", "tolerance": 1e-6,
            "schema_column": "schema", "tools_column": "tools"}
# Keyword arguments TRL passes besides the data columns; left out of "the rows have" messages.
_TRL_EXTRAS = {"trainer_state", "log_extra", "log_metric", "environments"}


@dataclass(frozen=True)
class Builtin:
    name: str  # the spec prefix as profiles write it
    summary: str  # one line for people: what earns reward, and the range
    argument: str  # "" when the spec takes none; else what goes after the colon, for people
    columns: Callable[[Any], tuple[str, ...]]  # (options) -> the data columns the reward reads
    make: Callable[[str | None, Any], RewardFunc]  # (argument or None, options) -> reward


def _opt(options, key: str):
    return getattr(options, key, DEFAULTS[key])


def text_of(completion) -> str:
    """A completion as TRL hands it (a string, or a conversation) as plain text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion or ():
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, list):  # multimodal style: [{"type": "text", "text": ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content:
            parts.append(str(content))
    return "\n".join(parts)


def _tag_blocks(text: str, tag: str) -> list[str]:
    return re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, re.DOTALL)


def extract_answer(text: str, tag: str = "answer") -> str:
    """The content of the last <tag>...</tag>, else the whole text; stripped."""
    blocks = _tag_blocks(text, tag)
    return (blocks[-1] if blocks else text).strip()


def _norm(value) -> str:
    return " ".join(str(value).split())


# A number: a sign only where it cannot be a minus between two terms ("3-5" is 3 and 5),
# thousands commas, decimals, and a simple fraction "3/4".
_NUMBER = re.compile(r"(?:(?<![\w)])[-+])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))"
                     r"(?:\.\d+)?(?:/\d+(?!\.\d))?")


def numbers_in(text: str) -> list[float]:
    found = []
    for match in _NUMBER.finditer(text):
        num, _, den = match.group().replace(",", "").partition("/")
        if den and float(den) == 0:
            continue
        found.append(float(num) / float(den) if den else float(num))
    return found


def _reference_number(reference) -> float | None:
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return float(reference)
    found = numbers_in(str(reference))  # GSM8K: "... #### 1,234" ends with its answer
    return found[-1] if found else None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def json_candidate(text: str, tag: str = "answer") -> str:
    """The text a JSON reward parses: the answer tag, else the last fenced block, else all."""
    blocks = _tag_blocks(text, tag) or _FENCE.findall(text)
    return (blocks[-1] if blocks else text).strip()


def _parse_json(text: str):
    """(True, value) when text is JSON, else (False, None): JSON's null is a value too."""
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    """A compiled validator per distinct schema: rows often share one (raises SchemaError)."""
    from jsonschema import validators

    schema = json.loads(schema_json)
    validators.validator_for(schema).check_schema(schema)
    return validators.validator_for(schema)(schema)


def _valid(value, schema, where: str) -> bool:
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"{where} is not a JSON schema (an object): {schema!r:.80}")
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except SchemaError as e:
        raise ValueError(f"{where} is not a valid JSON schema: {e.message}") from None
    return validator.is_valid(value)


def _json_field(value, where: str):
    """A column value that may be stored as a JSON string (datasets often do)."""
    if isinstance(value, str):
        ok, value = _parse_json(value)
        if not ok:
            raise ValueError(f"{where} is a string that is not JSON")
    return value


def _column(kwargs: dict, name: str, spec: str, n: int) -> list:
    if name not in kwargs:
        have = sorted(k for k in kwargs if k not in _TRL_EXTRAS)
        raise ValueError(f"reward {spec} reads the column {name!r}, which the data rows lack "
                         f"(they have: {', '.join(have) or 'none'})")
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"reward {spec}: column {name!r} has {len(values)} values "
                         f"for {n} completions")
    return values


def _reward(spec: str, score: Callable, column: str | None = None) -> RewardFunc:
    """A TRL reward from score(text, reference, row, completion, ids): a float per completion."""
    def reward(prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float]:
        n = len(completions)
        refs = _column(kwargs, column, spec, n) if column else [None] * n
        ids = completion_ids if completion_ids is not None else [None] * n
        return [float(score(text_of(c), refs[i], i, c, ids[i])) for i, c in enumerate(completions)]
    reward.__name__ = reward.__qualname__ = spec
    return reward


# --- the built-ins --------------------------------------------------------------------------


def _answer_tags(arg, options) -> RewardFunc:
    tag = _opt(options, "answer_tag")
    return _reward("format:answer_tags", lambda t, *_: any(b.strip() for b in _tag_blocks(t, tag)))


def _think_answer(arg, options) -> RewardFunc:
    tag = re.escape(_opt(options, "answer_tag"))
    whole = re.compile(rf"<think>(.*?)</think>\s*<{tag}>(.*?)</{tag}>", re.DOTALL)

    def score(text, *_):
        m = whole.fullmatch(text.strip())
        if m and m[1].strip() and m[2].strip():
            return 1.0
        blocks = _tag_blocks(text, "think") + _tag_blocks(text, _opt(options, "answer_tag"))
        return 0.5 if any(b.strip() for b in blocks) else 0.0
    return _reward("format:think_answer", score)


def _exact(arg, options) -> RewardFunc:
    tag = _opt(options, "answer_tag")

    def score(text, ref, *_):  # a missing reference matches nothing, not the text "None"
        return ref is not None and _norm(extract_answer(text, tag)) == _norm(ref)
    return _reward("answer:exact", score, _opt(options, "answer_column"))


def _numeric(arg, options) -> RewardFunc:
    tag, tol = _opt(options, "answer_tag"), float(_opt(options, "tolerance"))

    def score(text, ref, *_):
        got, want = numbers_in(extract_answer(text, tag)), _reference_number(ref)
        return bool(got) and want is not None and abs(got[-1] - want) <= tol * max(1.0, abs(want))
    return _reward("answer:numeric", score, _opt(options, "answer_column"))


def _contains(arg, options) -> RewardFunc:
    def score(text, ref, *_):
        want = str(ref if ref is not None else "").strip().casefold()
        return bool(want) and want in text.casefold()
    return _reward("answer:contains", score, _opt(options, "answer_column"))


def _regex(arg, options) -> RewardFunc:
    spec = f"regex:{arg}"
    if not arg:
        raise ValueError("regex needs a pattern after the colon, e.g. regex:^\\d+$")
    try:
        pattern = re.compile(arg, re.DOTALL)
    except re.error as e:
        raise ValueError(f"{spec}: not a valid regular expression ({e})") from None
    return _reward(spec, lambda t, *_: pattern.search(t) is not None)


def _json_parses(arg, options) -> RewardFunc:
    tag = _opt(options, "answer_tag")
    return _reward("json:parses", lambda t, *_: _parse_json(json_candidate(t, tag))[0])


def _json_schema(arg, options) -> RewardFunc:
    tag, column = _opt(options, "answer_tag"), _opt(options, "schema_column")

    def score(text, schema, row, *_):
        where = f"column {column!r} (row {row})"
        schema = _json_field(schema, where)
        ok, value = _parse_json(json_candidate(text, tag))
        return 0.0 if not ok else 1.0 if _valid(value, schema, where) else 0.5
    return _reward("json:schema", score, column)


def _tool_schemas(tools, where: str) -> dict[str, Any]:
    """{tool name: its parameters schema} from OpenAI-style or bare tool definitions."""
    tools = _json_field(tools, where) or []
    if not isinstance(tools, list):
        raise ValueError(f"{where} is not a list of tools")
    found = {}
    for tool in tools:
        tool = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise ValueError(f"{where} holds a tool without a name")
        found[tool["name"]] = tool.get("parameters") or {"type": "object"}
    return found


def _as_call(obj, loose: bool):
    """(name, arguments) when obj is a tool call; arguments None when they are not an object.

    loose: inside <tool_call> tags or TRL's parsed tool_calls, missing arguments mean none;
    in free text a call must carry them, so any JSON with a "name" is not mistaken for one."""
    if not isinstance(obj, dict):
        return None
    obj = obj["function"] if isinstance(obj.get("function"), dict) else obj
    has_args = "arguments" in obj or "parameters" in obj
    if not isinstance(obj.get("name"), str) or not (has_args or loose):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = _parse_json(args)[1]
    return obj["name"], args if isinstance(args, dict) else None


def _calls_in_json(value, loose: bool) -> list | None:
    items = value if isinstance(value, list) and value else [value]
    calls = [_as_call(item, loose) for item in items]
    return None if None in calls else calls


def find_tool_calls(completion) -> list:
    """The tool calls in a completion as [(name, arguments)], a None for each that does not
    parse; [] when there is none. Looks at TRL's parsed tool_calls, then <tool_call> blocks,
    then the first JSON call (or list of calls) in the text."""
    messages = [completion] if isinstance(completion, dict) else completion
    if isinstance(messages, list):
        parsed = [c for m in messages if isinstance(m, dict) for c in m.get("tool_calls") or ()]
        if parsed:
            return [_as_call(c, loose=True) for c in parsed]
    text = text_of(completion)
    blocks = _tag_blocks(text, "tool_call")
    if blocks:
        return [_as_call(_parse_json(b.strip())[1], loose=True) for b in blocks]
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch in "{["):
        try:
            value = decoder.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            continue
        calls = _calls_in_json(value, loose=False)
        if calls:
            return calls
    return []


def _tool_call(arg, options) -> RewardFunc:
    column = _opt(options, "tools_column")

    def score(text, tools, row, completion, _):
        where = f"column {column!r} (row {row})"
        schemas = _tool_schemas(tools, where)
        calls = find_tool_calls(completion)
        if not any(calls):
            return 0.0
        right = all(c and c[0] in schemas and c[1] is not None
                    and _valid(c[1], schemas[c[0]], f"{where}, tool {c[0]!r}") for c in calls)
        return 1.0 if right else 0.5
    return _reward("tool_call:valid", score, column)


def _length(arg, options) -> RewardFunc:
    spec = "length" if arg is None else f"length:{arg}"
    target = int(arg) if arg and re.fullmatch(r"[0-9]+", arg) else 0
    if target <= 0:
        raise ValueError(f"{spec}: the target length must be a positive whole number of tokens, "
                         "e.g. length:200")

    def score(text, ref, row, completion, ids):
        size = len(ids) if ids is not None else len(text.split())
        return max(0.0, 1.0 - abs(size - target) / target)
    return _reward(spec, score)


def _none(options) -> tuple[str, ...]:
    return ()


def _answer_column(options) -> tuple[str, ...]:
    return (_opt(options, "answer_column"),)


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("format:answer_tags", "1 when the completion holds a non-blank <answer>...</answer> "
            "(the answer tag), else 0", "", _none, _answer_tags),
    Builtin("format:think_answer", "1 when the completion is exactly <think>...</think> then "
            "<answer>...</answer>, both non-blank; 0.5 when only part of that shape is there "
            "(a partial score gives GRPO differences to learn from); else 0", "", _none,
            _think_answer),
    Builtin("answer:exact", "1 when the answer (the last answer tag, else the whole completion) "
            "equals the reference column, whitespace collapsed; else 0", "",
            _answer_column, _exact),
    Builtin("answer:numeric", "1 when the answer's last number equals the reference's last "
            "number (GSM8K's '#### 72' works) within the tolerance; else 0", "",
            _answer_column, _numeric),
    Builtin("answer:contains", "1 when the reference appears anywhere in the completion, "
            "ignoring case; else 0", "", _answer_column, _contains),
    Builtin("regex", "1 when the regular expression matches somewhere in the completion "
            "(. matches newlines); else 0", "a regular expression", _none, _regex),
    Builtin("json:parses", "1 when the answer tag, else the last ``` fenced block, else the "
            "whole completion parses as JSON; else 0", "", _none, _json_parses),
    Builtin("json:schema", "1 when the JSON (as json:parses finds it) validates against the "
            "row's schema column; 0.5 when it parses but does not validate; 0 when it does not "
            "parse", "", lambda o: (_opt(o, "schema_column"),), _json_schema),
    Builtin("tool_call:valid", "1 when every tool call (<tool_call> block or JSON with name and "
            "arguments) names a tool in the row's tools column and its arguments validate; 0.5 "
            "when a call parses but does not; 0 when there is no call", "",
            lambda o: (_opt(o, "tools_column"),), _tool_call),
    Builtin("length", "1 at the target length (tokens, else words), falling linearly to 0 at "
            "0 and at twice the target", "a target length in tokens", _none, _length),
)}


def builtin_for(spec: str) -> tuple[Builtin, str | None] | None:
    """The built-in a spec names and its argument: "regex:^a" -> (regex, "^a"); None if none."""
    if spec in BUILTINS:
        return BUILTINS[spec], None
    for name in sorted(BUILTINS, key=len, reverse=True):  # longest first: names nest at colons
        if BUILTINS[name].argument and spec.startswith(name + ":"):
            return BUILTINS[name], spec[len(name) + 1:]
    return None
