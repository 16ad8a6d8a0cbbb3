"""Read a tokenizer's chat template as a skeleton: the literal text it puts around each
role's content, found by rendering placeholder conversations and cutting at the
placeholders. Ollama's TEMPLATE and the end-of-turn stop tokens are built from it, so
nothing here is written per model.

Limits (a template outside them raises TemplateNotDerivable, with the reason):
- the text around a message must not depend on its position (e.g. Qwen3 drops <think>
  blocks from all but the last assistant turn) or on content (tool calls);
- the system prompt must come once, before the first user turn (Gemma-style templates
  that fold it into the first user message are refused);
- content filters such as `| trim` cannot be reproduced: Ollama inserts content as is,
  which only differs for content with leading or trailing whitespace;
- anything computed at render time (Llama 3.1's "Today Date") is frozen at export time.
"""

from __future__ import annotations

from dataclasses import dataclass

SYS, USER1, ASSISTANT1, USER2 = "\x00SYS\x00", "\x00USER1\x00", "\x00ASSISTANT1\x00", "\x00USER2\x00"


class TemplateNotDerivable(Exception):
    pass


@dataclass(frozen=True)
class Skeleton:
    preamble: str         # before the first user turn when there is no system prompt
    system_open: str      # before the system prompt (any preamble included)
    system_close: str     # after it
    user_open: str
    user_close: str
    assistant_open: str
    assistant_close: str  # ends an assistant turn: where its end-of-turn token lives
    generation_prompt: str  # what add_generation_prompt=True appends


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    """The template as is (system kept), through the ChatFormat so that templates needing a
    `tools` list get one, as in training."""
    from workbench.data.chat_format import chat_format
    from workbench.data.errors import TemplateError

    try:
        return chat_format(tokenizer, system="keep").render(messages, generation)
    except TemplateError as exc:  # jinja raises its own types, and templates raise on purpose
        roles = "/".join(m["role"] for m in messages)
        raise TemplateNotDerivable(f"the chat template fails on a {roles} conversation: "
                                   f"{getattr(exc, 'detail', exc.message)}") from exc


def _cut(text: str, sentinels: list[str]) -> list[str]:
    """The literal pieces between the sentinels, which must appear once each, in order."""
    pieces, rest = [], text
    for s in sentinels:
        if rest.count(s) != 1:
            raise TemplateNotDerivable(
                f"the chat template does not put each message's content once, in order "
                f"(found {rest.count(s)}x {s!r} in {text!r})")
        head, rest = rest.split(s)
        pieces.append(head)
    pieces.append(rest)
    return pieces


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise TemplateNotDerivable(f"{what}: expected {text!r} to start with {prefix!r}")
    return text[len(prefix):]


def derive_skeleton(tokenizer) -> Skeleton:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateNotDerivable("the tokenizer has no chat template")
    u1 = {"role": "user", "content": USER1}
    a1 = {"role": "assistant", "content": ASSISTANT1}
    u2 = {"role": "user", "content": USER2}
    # user, assistant, user: every boundary between turns appears once.
    head, mid_ua, mid_au, user_close = _cut(_render(tokenizer, [u1, a1, u2], False),
                                            [USER1, ASSISTANT1, USER2])
    assistant_open = _strip_prefix(mid_ua, user_close, "the text between user and assistant")
    # user, assistant: what closes an assistant turn when nothing follows it.
    _, _, assistant_close = _cut(_render(tokenizer, [u1, a1], False), [USER1, ASSISTANT1])
    user_open = _strip_prefix(mid_au, assistant_close, "the text between assistant and user")
    if not head.endswith(user_open):
        raise TemplateNotDerivable(f"the first user turn opens with {head!r}, later ones with "
                                   f"{user_open!r}")
    preamble = head[:len(head) - len(user_open)]
    only_user = _render(tokenizer, [u1], False)
    generation_prompt = _strip_prefix(_render(tokenizer, [u1], True), only_user,
                                      "add_generation_prompt")
    # system, user: the system block must precede the first user turn.
    s = {"role": "system", "content": SYS}
    system_open, between, tail = _cut(_render(tokenizer, [s, u1], False), [SYS, USER1])
    if tail != user_close or not between.endswith(user_open):
        raise TemplateNotDerivable("the chat template does not put the system prompt in a "
                                   "block of its own before the first user turn")
    system_close = between[:len(between) - len(user_open)]
    return Skeleton(preamble, system_open, system_close, user_open, user_close,
                    assistant_open, assistant_close, generation_prompt)


def _special_tokens(tokenizer) -> set[str]:
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            special.add(str(tok))
    return special


def end_of_turn_tokens(tokenizer, skeleton: Skeleton | None = None) -> list[str]:
    """The special tokens that close an assistant turn (`<|im_end|>`, `<|eot_id|>`...), then
    the tokenizer's eos: generation must stop on any of them, or the model talks on into a
    made-up next turn."""
    try:
        skeleton = skeleton or derive_skeleton(tokenizer)
        close = skeleton.assistant_close
    except TemplateNotDerivable:
        close = ""
    special = _special_tokens(tokenizer)
    found = [t for t in tokenizer.tokenize(close) if t in special] if close else []
    if not found and close.strip():
        found = [close.strip()]  # a plain-text turn end ("\n### "): stop on the text
    eos = tokenizer.eos_token
    out: list[str] = []
    for tok in [*found, *([eos] if eos else [])]:
        if tok not in out:
            out.append(tok)
    return out


def end_of_turn_ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = []
    for tok in tokens:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    return ids
