"""How the workbench's conversations meet a model's own chat template, in one place.

Training, `data show` / `inspect`, evaluation, the three-way comparison and the exports all build
their text through a `ChatFormat`, so a conversation reads the same to the model at every stage.
The template stays the truth about turn markers; this module only decides what to hand it:

- **System messages** (`data.system`): `keep` them, `fold` them into the first user turn (the
  documented practice for templates without a system role, e.g. Gemma 2), or `drop` them. `auto`
  keeps them unless the template refuses a system role or silently leaves the system text out of
  the prompt, and then folds, saying so in `notes`.
- **Reasoning** (`data.reasoning`): an assistant message's reasoning, given as `reasoning_content`
  / `reasoning` / `thinking` or as a leading `<think>...</think>` block in its content, is handed
  to the template in the field it reads (`reasoning_content`, and `thinking` for gpt-oss), or,
  for a template that reads no reasoning field, inline as `<think>...</think>` before the answer.
  `drop` removes it.
- **Tool calls**: the record format keeps a call as JSON text (`tool_call: True`); templates that
  render `tool_calls` get them in the OpenAI shape, in whichever content convention the template
  accepts (probed once). A template that needs a `tools` list gets `[]` rather than None.
- **Errors**: anything a template raises becomes a `TemplateError` that names the template and
  quotes the template's own text, never a traceback.

Probes render small sample conversations once per ChatFormat and are cached, so a ChatFormat
should be built once per tokenizer (`chat_format(tokenizer)` caches one per tokenizer).
"""

from __future__ import annotations

import json
import re
import weakref
from typing import Any

from workbench.data.errors import TemplateError

SYSTEM_CHOICES = ("auto", "keep", "fold", "drop")
REASONING_CHOICES = ("keep", "drop")
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")  # as datasets and APIs name it

_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")
_THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
NO_TEMPLATE_HINT = (
    "set model.chat_template in the profile (for example to a ChatML template) or use a model "
    "whose tokenizer ships one"
)
# Distinctive strings for probes: found again in a rendering, they prove a field was rendered.
_PROBE_SYSTEM = "Probe system text 7Q"
_PROBE_CALL = "probe_tool_7q"
_PROBE_RESULT = "probe result 7Q"


class ChatFormat:
    """A tokenizer's chat template plus the profile's choices for system text and reasoning."""

    def __init__(self, tokenizer: Any, system: str = "auto", reasoning: str = "keep",
                 name: str | None = None) -> None:
        if system not in SYSTEM_CHOICES:
            raise TemplateError(f"unknown data.system value {system!r}",
                                hint=f"use one of: {', '.join(SYSTEM_CHOICES)}")
        if reasoning not in REASONING_CHOICES:
            raise TemplateError(f"unknown data.reasoning value {reasoning!r}",
                                hint=f"use one of: {', '.join(REASONING_CHOICES)}")
        self.tokenizer = tokenizer
        self.template: str = getattr(tokenizer, "chat_template", None) or ""
        self.name = name or describe_template(tokenizer)
        self.system_mode = system
        self.reasoning_mode = reasoning
        self.has_generation_blocks = bool(_GENERATION_BLOCK.search(self.template))
        self._probes: dict[str, Any] = {}
        self.notes: list[str] = []  # decisions a person should know about, said once each

    # ---- what the template can do (probed once, lazily) ----------------------------------
    @property
    def system(self) -> str:
        """The system mode in effect: `auto` resolved to keep or fold."""
        if self.system_mode != "auto":
            return self.system_mode
        if "system" not in self._probes:
            self._probes["system"] = self._probe_system()
        return self._probes["system"]

    @property
    def reasoning_field(self) -> bool:
        """Does the template read reasoning from a message field (Qwen3, gpt-oss, ...)?"""
        return "reasoning_content" in self.template or ".thinking" in self.template

    @property
    def closes_with_eos(self) -> bool:
        """Does the template end every rendering without a generation prompt with eos_token
        (Phi-3.5)? Then a rendering that stops after an answer carries one eos the full
        conversation does not have at that point."""
        if "closes_with_eos" not in self._probes:
            eos = getattr(self.tokenizer, "eos_token", None) or ""
            user = [{"role": "user", "content": "Hello."}]
            try:
                closed, open_ = self._apply(user, False, None), self._apply(user, True, None)
            except TemplateError:
                closed = open_ = ""
            self._probes["closes_with_eos"] = bool(
                eos and closed.endswith(eos) and not open_.endswith(eos)
                and open_.startswith(closed[: -len(eos)]))
        return self._probes["closes_with_eos"]

    @property
    def renders_tool_calls(self) -> bool:
        return "tool_calls" in self.template and self._call_style() is not None

    def _probe_system(self) -> str:
        user = {"role": "user", "content": "Hello."}
        try:
            text = self._apply([{"role": "system", "content": _PROBE_SYSTEM}, user], True, None)
        except TemplateError as exc:
            try:
                self._apply([user], True, None)
            except TemplateError:
                return "keep"  # the template fails either way; the real render will say why
            self._note(f"system messages are folded into the first user turn: {self.name} "
                       f"refuses a system role ({getattr(exc, 'detail', exc.message)}); set data.system = \"drop\" to "
                       "leave them out instead")
            return "fold"
        if _PROBE_SYSTEM not in text:
            self._note(f"system messages are folded into the first user turn: {self.name} leaves "
                       "the system text out of the prompt; set data.system = \"keep\" to hand it "
                       "to the template as it is")
            return "fold"
        return "keep"

    def _call_style(self) -> str | None:
        """How a tool-call message's content must look for this template: "text" (""),
        "absent" (no content key) or "none" (None); None when tool calls do not render."""
        if "call_style" in self._probes:
            return self._probes["call_style"]
        style = None
        # The leanest convention first: with content "" some templates render an empty
        # answer after the call (DeepSeek-R1), with None some print "None".
        for candidate in ("absent", "none", "text"):
            call = _call_message([{"name": _PROBE_CALL, "arguments": {"x": 1}}], "", candidate,
                                 ids=[_call_id(0)])
            convo = [{"role": "user", "content": "Hello."}, call,
                     {"role": "tool", "content": _PROBE_RESULT, "tool_call_id": _call_id(0),
                      "name": _PROBE_CALL},
                     {"role": "assistant", "content": "Done."}]
            try:
                text = self._apply(convo, False, None)
            except TemplateError:
                continue
            if _PROBE_CALL in text and not (candidate == "none" and "None" in text):
                style = candidate
                break
        self._probes["call_style"] = style
        return style

    def _renders_tool_results(self) -> bool:
        if "tool_results" not in self._probes:
            calls = [{"name": _PROBE_CALL, "arguments": {"x": 1}}]
            call = (_call_message(calls, "", self._call_style(), ids=[_call_id(0)])
                    if self.renders_tool_calls
                    else {"role": "assistant", "content": json.dumps(calls[0])})
            convo = [{"role": "user", "content": "Hello."}, call,
                     {"role": "tool", "content": _PROBE_RESULT, "tool_call_id": _call_id(0),
                      "name": _PROBE_CALL}]
            try:
                ok = _PROBE_RESULT in self._apply(convo, True, None)
            except TemplateError:
                ok = False
            self._probes["tool_results"] = ok
        return self._probes["tool_results"]

    # ---- messages --------------------------------------------------------------------------
    def prepare(self, messages: list[dict], *, keep_reasoning_from: int = 0) -> list[dict]:
        """The record's messages as this template wants them (copies; the input is untouched).

        keep_reasoning_from: reasoning of assistant messages before this index is removed (the
        history of a per-turn training row: inference never shows earlier turns' reasoning).
        """
        out: list[dict] = []
        pending: list[tuple[str, str]] = []  # (call id, function name) awaiting a tool result
        n_calls = 0
        system_texts = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
        mode = self.system if system_texts else "keep"
        for index, message in enumerate(messages):
            role = message["role"]
            if role == "system" and mode in ("fold", "drop"):
                continue
            if role == "assistant" and message.get("tool_call"):
                calls = self._add_tool_call(out, message, first_id=n_calls + 1)
                n_calls += len(calls)
                pending += calls
                continue
            if role == "tool" and not self._renders_tool_results():
                raise TemplateError(
                    f"{self.name} does not render tool results (role 'tool'): they would be left "
                    "out of the training text without a word",
                    hint="use a model whose template supports tools (set model.chat_template to "
                    "one), or remove the tool-use conversations from the data")
            prepared = {"role": role, "content": message["content"]}
            if role == "tool" and pending:
                # Templates that pair results with calls (Mistral) read the call's id and name.
                prepared["tool_call_id"], prepared["name"] = pending.pop(0)
            if role == "assistant":
                self._add_reasoning(prepared, message, keep=index >= keep_reasoning_from)
            out.append(prepared)
        if mode == "fold":
            first_user = next((m for m in out if m["role"] == "user"), None)
            if first_user is None:
                raise TemplateError(f"{self.name} takes no system role and this conversation has "
                                    "no user turn to fold the system text into",
                                    hint='set data.system = "drop" to leave the system text out')
            first_user["content"] = "\n\n".join(system_texts + [first_user["content"]])
        return out

    def _add_reasoning(self, prepared: dict, message: dict, keep: bool) -> None:
        reasoning, answer = split_reasoning(message)
        prepared["content"] = answer
        if not reasoning or not keep or self.reasoning_mode == "drop":
            return
        if self.reasoning_field:
            prepared["reasoning_content"] = prepared["thinking"] = reasoning
        else:  # templates that read reasoning only from the content (or not at all)
            prepared["content"] = f"<think>\n{reasoning}\n</think>\n\n{answer}"

    def _add_tool_call(self, out: list[dict], message: dict, first_id: int) -> list[tuple[str, str]]:
        """Append the call message; returns the (id, name) of each call, in order."""
        calls = json.loads(message["content"])
        calls = calls if isinstance(calls, list) else [calls]
        ids = [_call_id(first_id + n) for n in range(len(calls))]
        style = self._call_style() if "tool_calls" in self.template else None
        if style is None:
            # The template knows no tool calls: the call stays JSON text in the answer.
            self._note(f"{self.name} does not render tool calls; they are trained as JSON text "
                       "in the assistant's answer")
            out.append({"role": "assistant", "content": message["content"]})
        else:
            # An assistant's words right before its call were one message in the source.
            text = ""
            if out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
                text = out.pop()["content"]
            out.append(_call_message(calls, text, style, ids))
        return [(call_id, call.get("name", "")) for call_id, call in zip(ids, calls)]

    # ---- rendering -------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = False,
               tools: list[dict] | None = None) -> str:
        """Render already-prepared messages; failures become a TemplateError for people."""
        return self._apply(messages, add_generation_prompt, tools)

    def prompt(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The generation prompt for a conversation ending in a user turn, as training saw it
        (earlier answers without their reasoning, as in training rows)."""
        return self.render(self.prepare(messages, keep_reasoning_from=len(messages)), True, tools)

    def generation_spans(self, messages: list[dict], tools: list[dict] | None = None
                         ) -> tuple[str, list[tuple[int, int]]]:
        """Text and character spans of `{% generation %}` blocks, rendered by transformers."""
        from transformers.utils.chat_template_utils import render_jinja_template

        kwargs = {**dict(getattr(self.tokenizer, "special_tokens_map", {}) or {})}
        try:
            texts, indices = render_jinja_template(
                conversations=[messages], tools=self._tools_arg(tools), chat_template=self.template,
                return_assistant_tokens_mask=True, add_generation_prompt=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any template failure is reported the same way
            raise self._failure(exc) from None
        return texts[0], [(start, end) for start, end in indices[0]]

    def _apply(self, messages: list[dict], add_generation_prompt: bool,
               tools: list[dict] | None) -> str:
        if not self.template:
            raise TemplateError("the tokenizer has no chat template", hint=NO_TEMPLATE_HINT)
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                tools=self._tools_arg(tools))
        except Exception as exc:  # noqa: BLE001 - templates raise anything; people get one message
            if tools is None and not self._probes.get("needs_tools_list") and _is_none_iteration(exc):
                # Some templates (Hermes tool-use) loop over `tools` unconditionally.
                self._probes["needs_tools_list"] = True
                return self._apply(messages, add_generation_prompt, tools)
            raise self._failure(exc, messages) from None

    def _tools_arg(self, tools: list[dict] | None) -> list[dict] | None:
        if tools is None:
            return [] if self._probes.get("needs_tools_list") else None
        # Bare function schemas (glaive / ShareGPT data: {name, description, parameters}) in the
        # OpenAI shape templates read: {"type": "function", "function": {...}}.
        return [{"type": "function", "function": t} if "name" in t and "function" not in t else t
                for t in tools]

    def _failure(self, exc: Exception, messages: list[dict] | None = None) -> TemplateError:
        detail = str(exc).strip() or type(exc).__name__
        if type(exc).__name__ not in ("TemplateError", "TemplateRuntimeError", "TemplateSyntaxError"):
            detail = f"{type(exc).__name__}: {detail}"
        if messages and any(m["role"] == "system" for m in messages) and self.system_mode == "keep":
            hint = 'set data.system = "fold" (or "auto") if the template has no system role'
        else:
            hint = ("check the conversation against what this template expects (roles in order, "
                    "fields it reads), or set model.chat_template to another template")
        error = TemplateError(f"{self.name} failed to render this conversation: {detail}", hint=hint)
        error.detail = detail  # the template's own words, for notes that name the template once
        return error

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def split_reasoning(message: dict) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message: a reasoning field, or a leading
    `<think>...</think>` block in the content; ("", content) when there is none."""
    content = message.get("content") or ""
    for key in REASONING_KEYS:
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip("\n"), content
    match = _THINK_BLOCK.match(content)
    if match:
        return match.group(1).strip("\n"), content[match.end():]
    return "", content


def special_tokens(tokenizer: Any) -> set[str]:
    """Every special token's text: the named ones and added tokens marked special."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found |= {t.content for t in decoder.values() if getattr(t, "special", False)}
    return {t for t in found if t}


def describe_template(tokenizer: Any) -> str:
    """How messages name a template: its source, e.g. "the chat template of Qwen/Qwen3-8B"."""
    source = getattr(tokenizer, "workbench_template_source", None)
    if source:
        return f"the chat template {source}"
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    return f"the chat template of {where}"


_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def chat_format(tokenizer: Any, system: str = "auto", reasoning: str = "keep") -> ChatFormat:
    """One ChatFormat per (tokenizer, template, settings), so probes run once."""
    try:
        per_tokenizer = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: build one each time
        return ChatFormat(tokenizer, system, reasoning)
    key = (getattr(tokenizer, "chat_template", None), system, reasoning)
    if key not in per_tokenizer:
        per_tokenizer[key] = ChatFormat(tokenizer, system, reasoning)
    return per_tokenizer[key]


def _call_id(n: int) -> str:
    """Call ids for templates that need them: Mistral's are 9 alphanumeric characters."""
    return f"call{n:05d}"


def _call_message(calls: list[dict], text: str, style: str | None, ids: list[str]) -> dict:
    message: dict[str, Any] = {
        "role": "assistant",
        "tool_calls": [{"id": call_id, "type": "function",
                        "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
                       for call_id, c in zip(ids, calls)],
    }
    if text or style == "text":
        message["content"] = text
    elif style == "none":
        message["content"] = None
    return message


def _is_none_iteration(exc: Exception) -> bool:
    return isinstance(exc, TypeError) and "NoneType" in str(exc) and "iterable" in str(exc)
