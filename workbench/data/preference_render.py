"""Render preference records through the chat template: the prompt once, each answer trained.

A pair trains on two sequences, `prompt_ids + chosen_ids` and `prompt_ids + rejected_ids`; an
unpaired (KTO) row on `prompt_ids + completion_ids`. The answer ids are exactly the tokens SFT's
`train_on = "assistant"` trains for that answer: the answer and its end-of-turn token, as the
template renders it (reasoning included where the template renders it, the separator after the
end-of-turn token left out). They come from `render.render_rows` with the run's `ChatFormat`, so
what `data show` marks is what trains:

1. `prompt + answer` is rendered as SFT renders it, and the row that trains the final answer is
   kept (for templates that render history differently, SFT's one-row-per-answer row, which is
   the conversation as inference renders it).
2. The answer's trained tokens are the last trained stretch of that row (the last k stretches for
   an answer of k assistant turns); `prompt_ids` is every token before them, `answer_ids` the
   tokens from the first to the last trained one.
3. Both sides must start with the same `prompt_ids`. A template (or a token that straddles the
   end of the prompt) can make them differ; then the pair cannot be trained as one prompt with
   two answers, and it is dropped with the reason (`PairDropped`).

Truncation keeps the prompt whole and cuts the end of each answer so that prompt + answer fits
`max_seq_len`; a prompt that leaves no room for a single answer token drops the row.
`render_preference_dataset` renders a whole list, drops what cannot train (each with file, row
and why, the `check_pairs` problems included), and counts tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from workbench.data.chat_format import ChatFormat, chat_format
from workbench.data.errors import DataError
from workbench.data.render import CancelFlag, RenderedRow, format_rendered, render_rows

__all__ = [
    "PairDropped",
    "PreferenceRenderStats",
    "RenderedCompletion",
    "RenderedPair",
    "format_pair",
    "render_pair",
    "render_preference_dataset",
    "render_unpaired",
]


class PairDropped(DataError):
    """This record cannot train (its prompt fills max_seq_len, its sides render different
    prompts, ...): `render_preference_dataset` drops it and lists it with the reason."""


@dataclass
class RenderedPair:
    """A pair as the trainer sees it. `chosen` / `rejected` are SFT-style rows (the untruncated
    rendering in `text`, `input_ids = prompt_ids + chosen_ids`, `assistant_masks` 1 exactly on
    `chosen_ids`)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen: RenderedRow
    rejected: RenderedRow
    truncated: bool
    answer_tokens_lost: int = 0  # both sides, cut by max_seq_len


@dataclass
class RenderedCompletion:
    """An unpaired (KTO) row: one answer and whether it is desirable."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    row: RenderedRow
    truncated: bool
    answer_tokens_lost: int = 0


@dataclass
class PreferenceRenderStats:
    """What render_preference_dataset did. Tokens count kept rows: `total_tokens` every token of
    the sequences the trainer runs (prompt + chosen and prompt + rejected for a pair),
    `trained_tokens` the answer tokens (both sides of a pair)."""

    kind: str = ""  # "paired" | "unpaired"
    rows_in: int = 0
    rows_out: int = 0
    truncated: int = 0  # rows with an answer cut by max_seq_len (kept rows)
    answer_tokens_lost: int = 0
    dropped: list[tuple[str | None, int | None, str]] = field(default_factory=list)  # (file, row, why)
    total_tokens: int = 0
    trained_tokens: int = 0
    reasoning_untrained: int = 0  # answers whose reasoning the template leaves out
    max_seq_len: int | None = None
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)  # the ChatFormat's decisions

    def describe(self) -> str:
        """One sentence for logs, the plan and the report."""
        unit = "pairs" if self.kind == "paired" else "rows"
        text = f"{self.rows_in:,} {unit} in, {self.rows_out:,} rendered"
        if self.dropped:
            text += f", {len(self.dropped):,} dropped"
        text += f"; {self.total_tokens:,} tokens, {self.trained_tokens:,} of them trained"
        if self.kind == "paired":
            text += " (both sides)"
        if self.truncated:
            text += (f"; {self.truncated:,} {unit} cut to max_seq_len={self.max_seq_len} "
                     f"({self.answer_tokens_lost:,} answer tokens lost)")
        if self.reasoning_untrained:
            text += (f"; {self.reasoning_untrained:,} answers carry reasoning the chat template does "
                     "not render, so it is not trained")
        if self.cancelled:
            text += " (cancelled: partial)"
        return text


# ---------------------------------------------------------------------------------------------
# Public API


def render_pair(tokenizer: Any, record: dict, max_seq_len: int | None = None,
                fmt: ChatFormat | None = None) -> RenderedPair:
    """Render a paired record; raises PairDropped when it cannot train (and says why)."""
    fmt = fmt or chat_format(tokenizer)
    tools = record.get("tools")
    chosen = _render_side(tokenizer, record["prompt"], record["chosen"], tools, fmt, "chosen")
    rejected = _render_side(tokenizer, record["prompt"], record["rejected"], tools, fmt, "rejected")
    if chosen.prompt_ids != rejected.prompt_ids:
        at = next((i for i, (a, b) in enumerate(zip(chosen.prompt_ids, rejected.prompt_ids)) if a != b),
                  min(len(chosen.prompt_ids), len(rejected.prompt_ids)))
        raise PairDropped(
            f"the chat template renders the prompt differently before the chosen and the rejected "
            f"answer (the tokens differ at position {at}: {len(chosen.prompt_ids)} and "
            f"{len(rejected.prompt_ids)} prompt tokens), so they are not one prompt with two answers",
            hint="usually a token that joins the end of the prompt and the start of an answer; "
            "check the template's assistant header, or start both answers the same way")
    prompt_ids = chosen.prompt_ids
    _check_room(prompt_ids, max_seq_len)
    chosen_ids, chosen_lost = _fit(prompt_ids, chosen.answer_ids, max_seq_len)
    rejected_ids, rejected_lost = _fit(prompt_ids, rejected.answer_ids, max_seq_len)
    return RenderedPair(
        prompt_ids=list(prompt_ids),
        chosen_ids=chosen_ids,
        rejected_ids=rejected_ids,
        chosen=chosen.row(prompt_ids, chosen_ids, chosen_lost),
        rejected=rejected.row(prompt_ids, rejected_ids, rejected_lost),
        truncated=bool(chosen_lost or rejected_lost),
        answer_tokens_lost=chosen_lost + rejected_lost,
    )


def render_unpaired(tokenizer: Any, record: dict, max_seq_len: int | None = None,
                    fmt: ChatFormat | None = None) -> RenderedCompletion:
    """Render an unpaired (KTO) record; raises PairDropped when it cannot train."""
    fmt = fmt or chat_format(tokenizer)
    side = _render_side(tokenizer, record["prompt"], record["completion"], record.get("tools"), fmt,
                        "completion")
    _check_room(side.prompt_ids, max_seq_len)
    ids, lost = _fit(side.prompt_ids, side.answer_ids, max_seq_len)
    return RenderedCompletion(list(side.prompt_ids), ids, bool(record["label"]),
                              side.row(side.prompt_ids, ids, lost), bool(lost), lost)


def render_preference_dataset(
    tokenizer: Any,
    records: Iterable[dict],
    max_seq_len: int | None = None,
    fmt: ChatFormat | None = None,
    cancel: CancelFlag | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[list[dict], PreferenceRenderStats]:
    """Render preference records into trainer rows.

    Pairs become `{"prompt_ids", "chosen_ids", "rejected_ids", "prompt", "chosen", "rejected",
    "source"}`, unpaired records `{"prompt_ids", "completion_ids", "label", "prompt", "completion",
    "source"}`. Records with a `check_pairs` problem and records that cannot train (PairDropped)
    are dropped and listed in `stats.dropped` as (file, row, why). A record the template cannot
    render at all raises DataError naming its file and row (as SFT's render_dataset does).
    progress(done, total) every 100 records and at the end; `cancel.is_set()` stops early.
    """
    from workbench.data.preference_problems import pair_problem

    fmt = fmt or chat_format(tokenizer)
    total = len(records) if hasattr(records, "__len__") else None
    stats = PreferenceRenderStats(max_seq_len=max_seq_len)
    rows: list[dict] = []
    if progress:
        progress(0, total)
    for record in records:
        if cancel is not None and cancel.is_set():
            stats.cancelled = True
            break
        paired = "chosen" in record
        stats.kind = stats.kind or ("paired" if paired else "unpaired")
        stats.rows_in += 1
        source = record.get("source") or {}
        file, row_no = source.get("file"), source.get("row")
        problem = pair_problem(record)
        if problem is not None:
            stats.dropped.append((file, row_no, problem[1]))
            continue
        try:
            rendered = (render_pair if paired else render_unpaired)(tokenizer, record, max_seq_len, fmt)
        except PairDropped as exc:
            stats.dropped.append((file, row_no, exc.message))
            continue
        except DataError as exc:
            from workbench.data.readers import numbering_of

            # Counted from 1 as every message counts rows: the line, or a JSON array's row.
            if row_no is not None and numbering_of(file) == "index":
                row_no += 1
            where = f"row {row_no}: " if row_no is not None else ""
            raise type(exc)(where + exc.message, file=file, hint=exc.hint) from exc
        if paired:
            rows.append({"prompt_ids": rendered.prompt_ids, "chosen_ids": rendered.chosen_ids,
                         "rejected_ids": rendered.rejected_ids, "prompt": record["prompt"],
                         "chosen": record["chosen"], "rejected": record["rejected"], "source": source})
            answers = [rendered.chosen_ids, rendered.rejected_ids]
            stats.reasoning_untrained += rendered.chosen.reasoning_untrained + rendered.rejected.reasoning_untrained
        else:
            rows.append({"prompt_ids": rendered.prompt_ids, "completion_ids": rendered.completion_ids,
                         "label": rendered.label, "prompt": record["prompt"],
                         "completion": record["completion"], "source": source})
            answers = [rendered.completion_ids]
            stats.reasoning_untrained += rendered.row.reasoning_untrained
        stats.rows_out += 1
        stats.truncated += rendered.truncated
        stats.answer_tokens_lost += rendered.answer_tokens_lost
        stats.total_tokens += sum(len(rendered.prompt_ids) + len(a) for a in answers)
        stats.trained_tokens += sum(len(a) for a in answers)
        if progress and stats.rows_in % 100 == 0:
            progress(stats.rows_in, total)
    stats.notes = list(fmt.notes)
    if progress:
        progress(stats.rows_in, total)
    return rows, stats


def format_pair(tokenizer: Any, pair: RenderedPair | RenderedCompletion,
                trained_marker: tuple[str, str] = ("«", "»")) -> str:
    """The shared prompt once, then each answer with its trained tokens marked (`«...»`)."""
    prompt = tokenizer.decode(pair.prompt_ids, skip_special_tokens=False)
    if isinstance(pair, RenderedPair):
        sides = [("chosen", pair.chosen_ids, pair.chosen), ("rejected", pair.rejected_ids, pair.rejected)]
        title = f"prompt: {len(pair.prompt_ids)} tokens, shared by both answers, not trained"
    else:
        verdict = "desirable" if pair.label else "undesirable"
        sides = [(f"completion (label {str(pair.label).lower()}: {verdict})", pair.completion_ids, pair.row)]
        title = f"prompt: {len(pair.prompt_ids)} tokens, not trained"
    out = [f"── {title}", prompt]
    for name, ids, row in sides:
        cut = f"; cut to fit max_seq_len, {row.answer_tokens_lost} tokens lost" if row.truncated else ""
        out.append(f"── {name}: {len(ids)} tokens trained (marked {trained_marker[0]}…{trained_marker[1]}){cut}")
        out.append(format_rendered(tokenizer, {"input_ids": ids, "assistant_masks": [1] * len(ids)},
                                   trained_marker))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Internals


@dataclass
class _Side:
    prompt_ids: list[int]
    answer_ids: list[int]
    text: str
    method: str
    why: str
    reasoning_untrained: int

    def row(self, prompt_ids: list[int], answer_ids: list[int], lost: int) -> RenderedRow:
        return RenderedRow(list(prompt_ids) + list(answer_ids), [0] * len(prompt_ids) + [1] * len(answer_ids),
                           self.text, truncated=bool(lost), answer_tokens_lost=lost, method=self.method,
                           why=self.why, reasoning_untrained=self.reasoning_untrained)


def _render_side(tokenizer: Any, prompt: list[dict], answer: list[dict], tools: list[dict] | None,
                 fmt: ChatFormat, name: str) -> _Side:
    if not answer:
        raise PairDropped(f"the {name} side has no answer to train on")
    messages = list(prompt) + list(answer)
    row = render_rows(tokenizer, messages, "assistant", None, tools=tools, fmt=fmt)[-1]
    runs = _trained_runs(row.assistant_masks)
    answers = _answer_turns(fmt, prompt, messages) if len(answer) > 1 else 1
    if answers > 1 and row.method == "per-turn":
        raise PairDropped(
            f"the {name} answer has {answers} assistant turns, and {fmt.name} renders earlier turns "
            "differently from the last one, so it cannot be trained as one answer",
            hint="keep one assistant message per answer (put earlier turns in the prompt)")
    if len(runs) < answers or not runs:
        raise PairDropped(f"the {name} answer has no trained token in the rendering "
                          f"({fmt.name}); it may render empty")
    first, last = runs[-answers][0], runs[-1][1]
    return _Side(list(row.input_ids[:first]), list(row.input_ids[first:last]), row.text, row.method,
                 row.why, row.reasoning_untrained)


def _answer_turns(fmt: ChatFormat, prompt: list[dict], messages: list[dict]) -> int:
    """How many assistant turns the answer renders as (a text plus a tool call is one)."""
    def count(ms: list[dict]) -> int:
        return sum(m["role"] == "assistant" for m in fmt.prepare(ms))
    return count(messages) - count(prompt)


def _trained_runs(mask: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(mask)))
    return runs


def _check_room(prompt_ids: list[int], max_seq_len: int | None) -> None:
    if max_seq_len is not None and len(prompt_ids) >= max_seq_len:
        raise PairDropped(
            f"the prompt alone is {len(prompt_ids)} tokens and max_seq_len is {max_seq_len}: no "
            "answer token fits after it",
            hint="raise train.max_seq_len, or shorten (or drop) the long prompts")


def _fit(prompt_ids: list[int], answer_ids: list[int], max_seq_len: int | None) -> tuple[list[int], int]:
    """The answer cut at its end so that prompt + answer <= max_seq_len, and the tokens lost."""
    if max_seq_len is None or len(prompt_ids) + len(answer_ids) <= max_seq_len:
        return list(answer_ids), 0
    keep = max_seq_len - len(prompt_ids)
    return list(answer_ids[:keep]), len(answer_ids) - keep
