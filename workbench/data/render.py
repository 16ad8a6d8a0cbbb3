"""Render conversations through the model's own chat template into `input_ids` + a loss mask.

Why this way: the template is the model's truth about turn markers, so we never hand-write them.
Each trained row is a piece of text plus the character spans of the answers in it; tokens are
mapped back to characters with the fast tokenizer's offsets, and a token that overlaps an answer
span is trained (a token straddling the boundary is rare and trained). A span covers the answer
*and* the template's end-of-turn token (the model must learn to stop); trailing whitespace after
it (the separator between turns) is left untrained. Three ways to find the spans, the first that
holds wins:

1. **Generation blocks.** A template that marks assistant text with `{% generation %}` says
   itself what is trained; transformers reports those character spans.
2. **Prefix renders** (most templates: Llama 3, Qwen2.5, SmolLM3, Granite, Phi, ...). The whole
   conversation is rendered once and each answer located by rendering prefixes of it:

       start = len(render(messages[:i], add_generation_prompt=True))   # after the assistant header
       end   = len(render(messages[:i + 1]))                           # after its end-of-turn token

   This holds when both renders are the start of the full one (a template that closes the
   conversation with `eos_token`, like Phi-3.5, is allowed that final token).
3. **One row per answer.** Templates that render earlier turns differently from the last one
   (Qwen3, DeepSeek-R1 distills and gpt-oss drop earlier turns' reasoning; gpt-oss ends only the
   last answer with `<|return|>`; Mistral-Nemo puts the system text into the last user turn) are
   not prefix-stable. A conversation with k answers becomes k rows, row i being the conversation
   up to answer i rendered as inference renders it (`render(messages[:i], add_generation_prompt)`
   is its exact start) and trained on answer i only. Earlier answers' reasoning is left out of a
   row's history, as inference leaves it out. rows_in / rows_out and the reason are reported.

The output column is called `assistant_masks` because that is the column trl's SFTTrainer reads
from a pre-tokenized dataset. The tokenizer is passed in, so this module imports neither torch
nor transformers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench.data.chat_format import (NO_TEMPLATE_HINT, ChatFormat, chat_format, special_tokens,
                                        split_reasoning)
from workbench.data.errors import DataError, TemplateError

TRAIN_ON_CHOICES = ("assistant", "all")

_SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six."},
]
# Why a conversation was rendered one row per answer (reported with counts).
WHY_UNSTABLE = "the template renders earlier turns differently from the last one"
WHY_HISTORY_REASONING = "earlier answers' reasoning is left out of the history, as at inference"


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class RenderedRow:
    """One training row as the trainer sees it. `text` is the full, untruncated rendering."""

    input_ids: list[int]
    assistant_masks: list[int]  # 1 = the token contributes to the loss
    text: str
    truncated: bool = False
    answer_tokens_lost: int = 0  # trained tokens cut off by max_seq_len
    method: str = "prefix"  # generation | prefix | per-turn | all | text
    why: str = ""  # for per-turn rows: why the conversation could not be one row
    reasoning_untrained: int = 0  # answers whose reasoning the template left out


@dataclass
class RenderStats:
    """What render_dataset did. Token totals count kept rows (what will actually train)."""

    rows_in: int = 0  # records (conversations)
    rows_out: int = 0  # training rows kept
    truncated_rows: int = 0  # among all rendered rows, kept or dropped
    answer_tokens_lost: int = 0  # among all rendered rows, kept or dropped
    total_tokens: int = 0
    trained_tokens: int = 0
    dropped: list[tuple[str | None, int | None, str]] = field(default_factory=list)  # (file, row, why)
    cancelled: bool = False
    per_turn: Counter = field(default_factory=Counter)  # why -> conversations expanded
    per_turn_rows: int = 0  # rows those conversations became
    reasoning_untrained: int = 0
    notes: list[str] = field(default_factory=list)  # the ChatFormat's decisions

    def describe_expansion(self) -> str:
        """One sentence for logs and reports; "" when every conversation was one row."""
        if not self.per_turn:
            return ""
        n = sum(self.per_turn.values())
        why = "; ".join(f"{why} ({count})" for why, count in self.per_turn.most_common())
        return (f"{n} conversation{'s' if n != 1 else ''} with several answers became "
                f"{self.per_turn_rows} rows, one per answer, each trained on its last answer "
                f"only: {why}")

    def describe_reasoning(self) -> str:
        if not self.reasoning_untrained:
            return ""
        return (f"{self.reasoning_untrained} answers carry reasoning that the chat template does "
                "not render, so it is not trained (DeepSeek-R1-distill and QwQ templates keep only "
                "the text after </think>); set data.reasoning = \"drop\" to say so is intended, "
                "or model.chat_template to a template that renders reasoning")


# ---------------------------------------------------------------------------------------------
# Public API


def render_rows(
    tokenizer: Any,
    messages: list[dict],
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    tools: list[dict] | None = None,
    fmt: ChatFormat | None = None,
) -> list[RenderedRow]:
    """Render `messages` through the chat template into training rows with loss masks.

    Usually one row; several when the template needs one row per answer (see the module doc).
    train_on: "assistant" (each answer plus its end-of-turn token) or "all".
    max_seq_len: keep the first max_seq_len tokens of each row; trained tokens cut off are counted.
    tools: tool schemas (a ShareGPT / OpenAI record's `tools`), handed to the template.
    fmt: the ChatFormat (system / reasoning settings); the tokenizer's default one when None.
    """
    if train_on not in TRAIN_ON_CHOICES:
        raise DataError(
            f"unknown train_on value {train_on!r}", hint=f"use one of: {', '.join(TRAIN_ON_CHOICES)}"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateError(
            f"{type(tokenizer).__name__} is a slow (Python) tokenizer; the loss mask needs character "
            "offsets, which only fast tokenizers provide",
            hint="load the tokenizer with use_fast=True (AutoTokenizer does by default), or convert it "
            "to a tokenizer.json",
        )
    fmt = fmt or chat_format(tokenizer)
    if train_on == "all":
        text = fmt.render(fmt.prepare(messages), tools=tools)
        pieces = [_Piece(text, [(0, len(text))], "all")]
    else:
        pieces = _answer_pieces(fmt, messages, tools)
    return [_encode(tokenizer, piece, max_seq_len) for piece in pieces]


def render_conversation(
    tokenizer: Any,
    messages: list[dict],
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    tools: list[dict] | None = None,
    fmt: ChatFormat | None = None,
) -> RenderedRow:
    """The last row of `render_rows`: the whole conversation when the template renders it as one
    row, else the row that ends with (and trains on) the last answer. For scoring a conversation's
    final answer (evaluation); training uses every row of render_rows."""
    return render_rows(tokenizer, messages, train_on, max_seq_len, tools, fmt)[-1]


def render_dataset(
    tokenizer: Any,
    records: Iterable[dict],
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: CancelFlag | None = None,
    fmt: ChatFormat | None = None,
) -> tuple[list[dict], RenderStats]:
    """Render records (the one record format) into trainer rows `{input_ids, assistant_masks}`.

    Rows left with no trained token (usually: the answer fell beyond max_seq_len) are dropped and
    listed in `stats.dropped` with their source file and row. progress(done, total) is called every
    100 records and at the end; total is None when `records` has no len(). When `cancel.is_set()`
    the loop stops, `stats.cancelled` is True and the rows so far are returned.
    A record that cannot be rendered raises DataError naming its source. A record's own
    `train_on` (a mixture's source sets it) wins over the `train_on` given here.
    """
    fmt = fmt or chat_format(tokenizer)
    total = len(records) if hasattr(records, "__len__") else None
    stats = RenderStats()
    rows: list[dict] = []
    if progress:
        progress(0, total)
    for record in records:
        if cancel is not None and cancel.is_set():
            stats.cancelled = True
            break
        source = record.get("source") or {}
        file, row_no = source.get("file"), source.get("row")
        try:
            if record.get("text_only"):
                rendered = [render_plain_text(tokenizer, record["messages"][0]["content"], max_seq_len)]
            else:
                # A source of a mixture may train on whole conversations (its `train_on`).
                rendered = render_rows(tokenizer, record["messages"],
                                       record.get("train_on", train_on), max_seq_len,
                                       tools=record.get("tools"), fmt=fmt)
        except DataError as exc:
            from workbench.data.readers import numbering_of

            # Counted from 1 as every message counts rows: the line, or a JSON array's row.
            if row_no is not None and numbering_of(file) == "index":
                row_no += 1
            where = f"row {row_no}: " if row_no is not None else ""
            raise type(exc)(where + exc.message, file=file, hint=exc.hint) from exc
        stats.rows_in += 1
        if len(rendered) > 1:
            stats.per_turn[rendered[0].why] += 1
            stats.per_turn_rows += len(rendered)
        for one in rendered:
            stats.truncated_rows += one.truncated
            stats.answer_tokens_lost += one.answer_tokens_lost
            stats.reasoning_untrained += one.reasoning_untrained
            trained = sum(one.assistant_masks)
            if trained == 0:
                stats.dropped.append((file, row_no, _why_nothing_trained(one, max_seq_len)))
                continue
            rows.append({"input_ids": one.input_ids, "assistant_masks": one.assistant_masks})
            stats.rows_out += 1
            stats.total_tokens += len(one.input_ids)
            stats.trained_tokens += trained
        if progress and stats.rows_in % 100 == 0:
            progress(stats.rows_in, total)
    stats.notes = list(fmt.notes)
    if progress:
        progress(stats.rows_in, total)
    return rows, stats


def render_plain_text(tokenizer: Any, text: str, max_seq_len: int | None = None) -> RenderedRow:
    """A plain-text record (the `text` schema: continued pre-training) is not a conversation:
    no chat template, every token trained, and an end-of-text token so documents stay apart."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    truncated = max_seq_len is not None and len(ids) > max_seq_len
    lost = len(ids) - max_seq_len if truncated else 0
    ids = ids[:max_seq_len] if truncated else ids
    return RenderedRow(ids, [1] * len(ids), text, truncated, lost, method="text")


def format_rendered(tokenizer: Any, row: RenderedRow | dict, trained_marker: tuple[str, str] = ("«", "»")) -> str:
    """The rendered text with trained stretches wrapped in markers, e.g. `...assistant\\n«Four.<|im_end|>»`."""
    if isinstance(row, dict):
        ids, mask = row["input_ids"], row["assistant_masks"]
    else:
        ids, mask = row.input_ids, row.assistant_masks
    opening, closing = trained_marker
    pieces, start = [], 0
    # Decode runs rather than single tokens so multi-byte characters split across tokens survive.
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            text = tokenizer.decode(ids[start:end], skip_special_tokens=False)
            pieces.append(f"{opening}{text}{closing}" if mask[start] else text)
            start = end
    return "".join(pieces)


def check_template(tokenizer: Any, fmt: ChatFormat | None = None) -> list[str]:
    """Render a sample conversation and list problems a person should know about before training.

    Returns an empty list when the template looks fine. Checks: a chat template exists; it renders
    a two-turn conversation (with the system message as data.system handles it); it ends assistant
    turns with the eos / an end-of-turn token; it does not emit the BOS token twice. Decisions the
    ChatFormat took (folding system text, ...) are in `fmt.notes`, not here.
    """
    fmt = fmt or chat_format(tokenizer)
    if not fmt.template:
        return [f"the tokenizer has no chat template; {NO_TEMPLATE_HINT}"]
    try:
        sample = fmt.prepare(_SAMPLE_CONVERSATION)
        text = fmt.render(sample)
    except TemplateError as exc:
        return [str(exc)]
    problems: list[str] = []
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos + bos):
        problems.append(
            f"the rendered conversation starts with the BOS token {bos!r} twice; the template adds one and "
            "so does something else (a BOS inside the template plus one in the data?)"
        )
    problems.extend(_end_token_problems(tokenizer, fmt, sample))
    try:
        render_rows(tokenizer, _SAMPLE_CONVERSATION, fmt=fmt)
    except DataError as exc:
        problems.append(str(exc))
    return problems


# ---------------------------------------------------------------------------------------------
# Internals


@dataclass
class _Piece:
    text: str
    spans: list[tuple[int, int]]
    method: str
    why: str = ""
    reasoning_untrained: int = 0


def _answer_pieces(fmt: ChatFormat, messages: list[dict], tools: list[dict] | None) -> list[_Piece]:
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
    if first is not None and messages[first]["role"] == "assistant":
        raise DataError(
            "the conversation starts with an assistant message, so it answers nothing",
            hint="put a user message (or a system prompt) before the first assistant message",
        )
    prepared = fmt.prepare(messages)
    reasoning = _reasoning_by_turn(fmt, prepared)
    if fmt.has_generation_blocks:
        text, spans = fmt.generation_spans(prepared, tools)
        if spans:
            spans = [(s, _trim_end(text, s, e)) for s, e in spans]
            return [_Piece(text, spans, "generation", "",
                           _untrained(reasoning, [text[s:e] for s, e in spans]))]
    turns = [i for i, m in enumerate(prepared) if m["role"] == "assistant"]
    last_user = max((i for i, m in enumerate(prepared) if m["role"] == "user"), default=-1)
    history_reasoning = fmt.reasoning_mode == "keep" and any(
        reasoning.get(i) for i in turns if i < last_user)
    if not history_reasoning:
        text = fmt.render(prepared, tools=tools)
        spans = _prefix_spans(fmt, prepared, turns, text, tools)
        if spans is not None:
            return [_Piece(text, spans, "prefix", "",
                           _untrained(reasoning, [text[s:e] for s, e in spans]))]
    why = WHY_HISTORY_REASONING if history_reasoning else WHY_UNSTABLE
    pieces = []
    for turn in turns:
        history_user = max((i for i in range(turn) if prepared[i]["role"] == "user"), default=-1)
        sub = [_without_reasoning(m) if m["role"] == "assistant" and i < history_user else m
               for i, m in enumerate(prepared[: turn + 1])]
        text, span = _final_turn(fmt, sub, tools)
        pieces.append(_Piece(text, [span], "per-turn", why,
                             _untrained({0: reasoning.get(turn)}, [text[span[0]:span[1]]])))
    return pieces


def _prefix_spans(fmt: ChatFormat, prepared: list[dict], turns: list[int], text: str,
                  tools: list[dict] | None) -> list[tuple[int, int]] | None:
    """Answer spans from prefix renders; None when the template is not prefix-stable here."""
    eos = getattr(fmt.tokenizer, "eos_token", None) or ""
    spans = []
    for i in turns:
        prefix = fmt.render(prepared[:i], add_generation_prompt=True, tools=tools)
        through = fmt.render(prepared[: i + 1], tools=tools)
        if not text.startswith(through) and fmt.closes_with_eos and through.endswith(eos):
            through = through[: -len(eos)]  # the eos that closes the whole conversation
        if not (text.startswith(prefix) and text.startswith(through)) or len(through) <= len(prefix):
            return None
        spans.append((len(prefix), _trim_end(text, len(prefix), len(through))))
    return spans


def _final_turn(fmt: ChatFormat, sub: list[dict], tools: list[dict] | None) -> tuple[str, tuple[int, int]]:
    """The text of a conversation ending with an answer, rendered as inference renders it,
    and the span of that answer."""
    prompt = fmt.render(sub[:-1], add_generation_prompt=True, tools=tools)
    through = fmt.render(sub, tools=tools)
    if through.startswith(prompt) and len(through) > len(prompt):
        return through, (len(prompt), _trim_end(through, len(prompt), len(through)))
    marker = _answer_marker(sub[-1])
    # The history renders differently when an answer follows it (Hermes closes a tool result
    # differently when it is last): the inference prompt, then the answer as rendered after
    # the assistant header the generation prompt ends with.
    closed = fmt.render(sub[:-1], tools=tools)
    header = prompt[len(closed):] if prompt.startswith(closed) else ""
    at = through.rfind(header, 0, through.rfind(marker)) if header and marker in through else -1
    if at >= 0:
        text = prompt + through[at + len(header):]
        return text, (len(prompt), _trim_end(text, len(prompt), len(text)))
    # The system text lives in the last user turn at inference (Mistral-Nemo) and is gone from
    # a rendering that ends with the answer: take the answer from a rendering without it.
    if any(m["role"] == "system" for m in sub):
        rest = [m for m in sub if m["role"] != "system"]
        bare_prompt = fmt.render(rest[:-1], add_generation_prompt=True, tools=tools)
        bare = fmt.render(rest, tools=tools)
        if bare.startswith(bare_prompt) and len(bare) > len(bare_prompt):
            text = prompt + bare[len(bare_prompt):]
            return text, (len(prompt), _trim_end(text, len(prompt), len(text)))
    # The generation prompt opens something the rendered answer does not contain (DeepSeek-R1
    # distills add "<think>\n"): train the answer as the template renders it.
    common = _boundary(prompt, _common_prefix(prompt, through), fmt.tokenizer)
    if common and marker and marker in through[common:]:
        fmt._note(f"{fmt.name} adds {prompt[common:]!r} to its generation prompt, which its "
                  "rendering of an answer does not contain; answers are trained as the template "
                  "renders them, after the assistant header")
        return through, (common, _trim_end(through, common, len(through)))
    raise TemplateError(
        f"{fmt.name} renders an answer in a way that does not continue its own generation "
        "prompt, so the answer cannot be located for an answer-only loss",
        hint="set model.chat_template to the model family's official template (a file path or the "
        "template text); training on the whole text (data.train_on = \"all\") would also train "
        "on the prompts",
    )


def _encode(tokenizer: Any, piece: _Piece, max_seq_len: int | None) -> RenderedRow:
    encoding = tokenizer(piece.text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    mask = _mask_from_spans(encoding["offset_mapping"], piece.spans)
    truncated, lost = False, 0
    if max_seq_len is not None and len(input_ids) > max_seq_len:
        truncated, lost = True, sum(mask[max_seq_len:])
        input_ids, mask = input_ids[:max_seq_len], mask[:max_seq_len]
    return RenderedRow(input_ids, mask, piece.text, truncated, lost, piece.method, piece.why,
                       piece.reasoning_untrained)


def _trim_end(text: str, start: int, end: int) -> int:
    # The separator after the end-of-turn token is never generated; leave it untrained.
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _boundary(text: str, end: int, tokenizer: Any) -> int:
    """`end` moved back to just after a newline or a special token in text[:end]: two strings
    that agree on "<t" of "<think>" and "<tool_call>" do not agree on a token."""
    head = text[:end]
    cuts = [head.rfind("\n") + 1]
    cuts += [head.rfind(s) + len(s) for s in special_tokens(tokenizer) if s in head]
    return max(cuts)


def _answer_marker(message: dict) -> str:
    """Text that must appear in the rendering of an answer: its words, or its tool's name."""
    _, answer = split_reasoning(message)
    if answer.strip():
        return answer.strip()[:40]
    calls = message.get("tool_calls") or []
    return calls[0]["function"]["name"] if calls else ""


def _reasoning_by_turn(fmt: ChatFormat, prepared: list[dict]) -> dict[int, str]:
    """{prepared index: reasoning text} for answers whose reasoning should be trained."""
    if fmt.reasoning_mode == "drop":
        return {}
    out = {}
    for i, message in enumerate(prepared):
        if message["role"] == "assistant":
            reasoning = message.get("reasoning_content") or split_reasoning(message)[0]
            if reasoning:
                out[i] = reasoning
    return out


def _untrained(reasoning: dict[int, str], trained_texts: list[str]) -> int:
    """How many answers' reasoning does not appear in any trained text."""
    joined = "\n".join(trained_texts)
    return sum(1 for text in reasoning.values() if text and text.strip()[:40] not in joined)


def _without_reasoning(message: dict) -> dict:
    out = {k: v for k, v in message.items() if k not in ("reasoning_content", "thinking")}
    if isinstance(out.get("content"), str):
        out["content"] = split_reasoning({"content": out["content"]})[1]
    return out


def _mask_from_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap a span; offsets and spans both ascend."""
    mask, k = [], 0
    for start, end in offsets:
        end = max(end, start + 1)  # zero-width tokens count as sitting at their start
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        mask.append(int(k < len(spans) and spans[k][0] < end))
    return mask


def _end_token_problems(tokenizer: Any, fmt: ChatFormat, sample: list[dict]) -> list[str]:
    """Does each assistant turn end with the eos or another special (end-of-turn) token?"""
    eos = getattr(tokenizer, "eos_token", None)
    specials = special_tokens(tokenizer) - {getattr(tokenizer, "bos_token", None)}
    for i, message in enumerate(sample):
        if message["role"] != "assistant":
            continue
        through = fmt.render(sample[: i + 1])
        tail = through[through.rfind(message["content"]) + len(message["content"]):]
        if eos and eos in tail:
            continue
        found = [s for s in specials if s and s in tail]
        if found:
            return [
                f"assistant turns end with {found[0]!r}, not the tokenizer's eos {eos!r}; make sure "
                "generation stops on it (generation_config eos_token_id), or the model will not stop"
            ]
        return [
            f"the chat template emits no end token (eos {eos!r}) after an assistant message; the model "
            "will not learn to stop. Use a model.chat_template that closes assistant turns"
        ]
    return []


def _why_nothing_trained(row: RenderedRow, max_seq_len: int | None) -> str:
    if row.truncated:
        return (
            f"no trained token left after truncation to max_seq_len={max_seq_len} "
            f"({row.answer_tokens_lost} answer tokens cut); raise max_seq_len or shorten the prompt"
        )
    return "no token to train on (empty answers and a template without an end token?)"
