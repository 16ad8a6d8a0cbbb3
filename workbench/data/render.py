"""Render conversations through the tokenizer's own chat template into `input_ids` + a loss mask.

Why this way: the template is the model's truth about turn markers, so we never hand-write them.
We render the whole conversation once, then find each assistant message's character span by
rendering prefixes of the conversation:

    start = len(render(messages[:i], add_generation_prompt=True))   # after "<|im_start|>assistant\n"
    end   = len(render(messages[:i + 1]))                           # after "...<|im_end|>\n"

so the span covers the answer *and* the template's end-of-turn token (the model must learn to stop);
trailing whitespace after the end token (the separator between turns) is left untrained. Tokens are
mapped back to characters with the fast tokenizer's offsets; a token that overlaps an assistant span
is trained (a token straddling the boundary is rare and trained). The output column is called
`assistant_masks` because that is the column trl's SFTTrainer reads from a pre-tokenized dataset.

The tokenizer is passed in, so this module imports neither torch nor transformers; jinja2 is
imported only where template errors are caught.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench.data.errors import DataError, TemplateError

TRAIN_ON_CHOICES = ("assistant", "all")

_NO_TEMPLATE_HINT = (
    "set model.chat_template in the profile (for example to a ChatML template) or use a model "
    "whose tokenizer ships one"
)
_SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six."},
]


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class RenderedRow:
    """One conversation as the trainer sees it. `text` is the full, untruncated rendering."""

    input_ids: list[int]
    assistant_masks: list[int]  # 1 = the token contributes to the loss
    text: str
    truncated: bool = False
    answer_tokens_lost: int = 0  # trained tokens cut off by max_seq_len


@dataclass
class RenderStats:
    """What render_dataset did. Token totals count kept rows (what will actually train)."""

    rows_in: int = 0
    rows_out: int = 0
    truncated_rows: int = 0  # among all rendered rows, kept or dropped
    answer_tokens_lost: int = 0  # among all rendered rows, kept or dropped
    total_tokens: int = 0
    trained_tokens: int = 0
    dropped: list[tuple[str | None, int | None, str]] = field(default_factory=list)  # (file, row, why)
    cancelled: bool = False


# ---------------------------------------------------------------------------------------------
# Public API


def render_conversation(
    tokenizer: Any,
    messages: list[dict],
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    tools: list[dict] | None = None,
) -> RenderedRow:
    """Render `messages` with the tokenizer's chat template and mark the tokens to train on.

    train_on: "assistant" (each assistant answer plus its end-of-turn token) or "all".
    max_seq_len: keep the first max_seq_len tokens; trained tokens cut off are counted.
    tools: tool schemas (a ShareGPT / OpenAI record's `tools`), handed to templates that
    render them; templates without tool support ignore them.
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
    text = _render(tokenizer, messages, tools=tools)
    spans = (_assistant_spans(tokenizer, messages, text, tools) if train_on == "assistant"
             else [(0, len(text))])

    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    mask = _mask_from_spans(encoding["offset_mapping"], spans)

    truncated, lost = False, 0
    if max_seq_len is not None and len(input_ids) > max_seq_len:
        truncated, lost = True, sum(mask[max_seq_len:])
        input_ids, mask = input_ids[:max_seq_len], mask[:max_seq_len]
    return RenderedRow(input_ids, mask, text, truncated, lost)


def render_dataset(
    tokenizer: Any,
    records: Iterable[dict],
    train_on: str = "assistant",
    max_seq_len: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: CancelFlag | None = None,
) -> tuple[list[dict], RenderStats]:
    """Render records (the one record format) into trainer rows `{input_ids, assistant_masks}`.

    Rows left with no trained token (usually: the answer fell beyond max_seq_len) are dropped and
    listed in `stats.dropped` with their source file and row. progress(done, total) is called every
    100 rows and at the end; total is None when `records` has no len(). When `cancel.is_set()`
    the loop stops, `stats.cancelled` is True and the rows so far are returned.
    A record that cannot be rendered raises DataError naming its source.
    """
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
                rendered = render_plain_text(tokenizer, record["messages"][0]["content"], max_seq_len)
            else:
                rendered = render_conversation(tokenizer, record["messages"], train_on, max_seq_len,
                                               tools=record.get("tools"))
        except DataError as exc:
            where = f"row {row_no}: " if row_no is not None else ""
            raise type(exc)(where + exc.message, file=file, hint=exc.hint) from exc
        stats.rows_in += 1
        stats.truncated_rows += rendered.truncated
        stats.answer_tokens_lost += rendered.answer_tokens_lost
        trained = sum(rendered.assistant_masks)
        if trained == 0:
            stats.dropped.append((file, row_no, _why_nothing_trained(rendered, max_seq_len)))
        else:
            rows.append({"input_ids": rendered.input_ids, "assistant_masks": rendered.assistant_masks})
            stats.rows_out += 1
            stats.total_tokens += len(rendered.input_ids)
            stats.trained_tokens += trained
        if progress and stats.rows_in % 100 == 0:
            progress(stats.rows_in, total)
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
    return RenderedRow(ids, [1] * len(ids), text, truncated, lost)


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


def check_template(tokenizer: Any) -> list[str]:
    """Render a sample conversation and list problems a person should know about before training.

    Returns an empty list when the template looks fine. Checks: a chat template exists; it accepts
    a system message; it is prefix-stable (needed for the loss mask); it ends assistant turns with
    the eos / an end-of-turn token; it does not emit the BOS token twice.
    """
    if not getattr(tokenizer, "chat_template", None):
        return [f"the tokenizer has no chat template; {_NO_TEMPLATE_HINT}"]
    problems: list[str] = []
    sample = list(_SAMPLE_CONVERSATION)
    try:
        text = _render(tokenizer, sample)
    except TemplateError as exc:
        problems.append(str(exc))
        sample = [m for m in sample if m["role"] != "system"]
        try:
            text = _render(tokenizer, sample)
        except TemplateError as exc2:
            problems.append(str(exc2))
            return problems

    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos + bos):
        problems.append(
            f"the rendered conversation starts with the BOS token {bos!r} twice; the template adds one and "
            "so does something else (a BOS inside the template plus one in the data?)"
        )
    problems.extend(_end_token_problems(tokenizer, sample))
    try:
        render_conversation(tokenizer, sample)
    except DataError as exc:
        problems.append(str(exc))
    return problems


# ---------------------------------------------------------------------------------------------
# Internals


def _render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False,
            tools: list[dict] | None = None) -> str:
    """apply_chat_template as text, with template failures turned into TemplateError for people."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("the tokenizer has no chat template", hint=_NO_TEMPLATE_HINT)
    from jinja2.exceptions import TemplateError as JinjaTemplateError

    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt,
            **({"tools": tools} if tools else {}),
        )
    except JinjaTemplateError as exc:
        if any(m["role"] == "system" for m in messages) and _renders_without_system(tokenizer, messages):
            raise TemplateError(
                f"this model's chat template does not accept a system message ({exc})",
                hint="remove data.system_prompt from the profile, drop the system messages from the data, "
                "or set model.chat_template to a template that supports one",
            ) from None
        raise TemplateError(f"the chat template failed to render a conversation: {exc}") from None


def _renders_without_system(tokenizer: Any, messages: list[dict]) -> bool:
    from jinja2.exceptions import TemplateError as JinjaTemplateError

    rest = [m for m in messages if m["role"] != "system"]
    if not rest:
        return False
    try:
        tokenizer.apply_chat_template(rest, tokenize=False)
    except JinjaTemplateError:
        return False
    return True


def _assistant_spans(tokenizer: Any, messages: list[dict], text: str,
                     tools: list[dict] | None = None) -> list[tuple[int, int]]:
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise DataError(
                "the conversation starts with an assistant message, so it answers nothing",
                hint="put a user message (or a system prompt) before the first assistant message",
            )
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
        through = _render(tokenizer, messages[: i + 1], tools=tools)
        for part in (prefix, through):
            if not text.startswith(part):
                raise TemplateError(
                    f"the chat template is not prefix-stable: rendering the first {i} message(s) does not "
                    "give the start of the full conversation, so assistant turns cannot be located",
                    hint="templates that rewrite earlier turns (e.g. strip reasoning) need train_on=\"all\" "
                    "or a different model.chat_template",
                )
        start, end = len(prefix), len(through)
        # The separator after the end-of-turn token is never generated; leave it untrained.
        while end > start and text[end - 1].isspace():
            end -= 1
        spans.append((start, end))
    return spans


def _mask_from_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap a span; offsets and spans both ascend."""
    mask, k = [], 0
    for start, end in offsets:
        end = max(end, start + 1)  # zero-width tokens count as sitting at their start
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        mask.append(int(k < len(spans) and spans[k][0] < end))
    return mask


def _end_token_problems(tokenizer: Any, sample: list[dict]) -> list[str]:
    """Does each assistant turn end with the eos or another special (end-of-turn) token?"""
    eos = getattr(tokenizer, "eos_token", None)
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    specials.discard(getattr(tokenizer, "bos_token", None))
    for i, message in enumerate(sample):
        if message["role"] != "assistant":
            continue
        through = _render(tokenizer, sample[: i + 1])
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
