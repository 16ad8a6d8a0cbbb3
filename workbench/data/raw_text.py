"""Raw text for continued pretraining: documents -> tokens -> blocks of train.max_seq_len.

A run trains on raw text when data.format = "text", or when its data is detected as text (every
row holds only `text`, a `.txt` / `.md` file, or a folder of them). Documents come from:

- JSON Lines / JSON / CSV / Parquet rows with a `text` column (or one mapped to it by
  data.columns): one document a row;
- a `.txt`, `.md` or `.markdown` file: the whole file is one document;
- a folder holding such files (searched recursively, hidden files skipped, in sorted path
  order) and no other data files: each file is one document (data/text_files.py, which the
  readers call).

Each document is tokenized with the model's tokenizer as plain text: no chat template, no
special tokens added. Documents are joined with the tokenizer's end-of-text token
(`tokenizer.eos_token_id`), one after every document, so the model learns where a document
ends and never reads one document as the continuation of another without a marker. The
stream is cut into blocks of exactly max_seq_len tokens (packed: a block may hold the end of
one document and the start of the next), and every token of a block is trained.

The last partial block of the training stream is dropped: every training row is then exactly
max_seq_len long (no padding, nothing to mask), and what is lost is less than one block,
said in the run's notes. Held-out text keeps its last partial block: it is only scored, and
every held-out token should count.

Held-out text is split off by document (data.validation_split, as for conversations), before
any packing: no document has tokens on both sides.

This module knows data only; the training method (train/methods/sft.py) and the evaluation
(evaluate/text_perplexity.py) build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError
from workbench.data.text_files import TEXT_EXTENSIONS, is_text_path  # noqa: F401 - re-exported

_TOKENIZE_BATCH = 256  # documents a tokenizer call: fast tokenizers parallelize within a call


def is_text_data(profile) -> bool:
    """Whether a profile's run trains on raw text (continued pretraining): supervised
    fine-tuning on data.format = "text", on a text file / folder, or, with data.format = "auto",
    on a local file whose first row is detected as text. One decision for the training data,
    the evaluation and the plan's words."""
    d = profile.data
    if getattr(profile.train, "method", "sft") != "sft" or not d.train:
        return False
    return is_text_source(d.train, d.format, d.columns or None, d.encoding or None)


def is_text_source(path: str | Path, format: str = "auto", columns: dict | None = None,
                   encoding: str | None = None) -> bool:
    """Whether one dataset is raw text: format "text", a text file or folder, or, with format
    "auto", a local file whose first row is detected as text (holds `text` and no
    conversation). A Hub id or a data folder is raw text only when the format says so: peeking
    would download it, or prepare a whole folder of shards, to read one row."""
    if format == "text" or is_text_path(path):
        return True
    if format != "auto" or not Path(path).is_file():
        return False
    from workbench.data.load import iter_records

    try:
        first = next(iter(iter_records(path, columns=columns, encoding=encoding,
                                       on_bad_line="skip")), None)
    except DataError:
        return False  # loading the data says what is wrong, where it is loaded for real
    return bool(first and first.get("text_only"))


def documents_of(records: Sequence[dict]) -> list[str]:
    """The text of each loaded record (schemas.text_to_messages: one assistant message);
    a system message data.system_prompt may have added is not part of a document."""
    out = []
    for record in records:
        if not record.get("text_only"):
            where = record.get("source", {})
            raise DataError(
                f"row {where.get('row')} is a conversation, not raw text",
                file=where.get("file"),
                hint="raw text (data.format = \"text\") needs every row to hold only `text`; "
                     "train conversations with data.format = \"auto\" or their own format")
        out.append(record["messages"][-1]["content"])
    return out


# ---------------------------------------------------------------------------------------------
# Tokens and blocks


# Tokens models were pretrained with between documents. An instruct model's eos_token is often
# its end of TURN (SmolLM2, Qwen2.5: <|im_end|>; Llama 3.1: <|eot_id|>), which is not what
# separated its pretraining documents; the end-of-text token it still ships is.
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "<|end▁of▁sentence|>", "</s>", "<eos>")


def end_of_text(tokenizer) -> tuple[int, str]:
    """(id, text) of the token documents are joined with: the model's end-of-text token when
    it has one of END_OF_TEXT_TOKENS among its special tokens, else its eos_token."""
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    special |= {str(t) for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
                if getattr(t, "special", False)}
    for text in END_OF_TEXT_TOKENS:
        if text in special:
            token = tokenizer.convert_tokens_to_ids(text)
            if isinstance(token, int):
                return token, text
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError(
            "the tokenizer has no end-of-text token (eos_token) to join documents with",
            hint="raw text needs a tokenizer with an eos_token; set one in the model's "
                 "tokenizer_config.json, or train on another model")
    return int(eos), str(tokenizer.eos_token)


def tokenize_documents(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each document's token ids: plain text, no chat template, no special tokens added."""
    out: list[list[int]] = []
    for lo in range(0, len(texts), _TOKENIZE_BATCH):
        # verbose=False: a document longer than the model's context is normal here (it is cut
        # into blocks), so the tokenizer's warning about it would only alarm.
        out += tokenizer(list(texts[lo:lo + _TOKENIZE_BATCH]), add_special_tokens=False,
                         verbose=False)["input_ids"]
    return out


@dataclass
class Blocks:
    """Documents packed into blocks, and what the packing cost."""

    blocks: list[list[int]]
    documents: int
    tokens: int  # the documents' own tokens, end-of-text tokens not counted
    dropped: int = 0  # tokens of a last partial block that was dropped (training only)

    @property
    def joined(self) -> int:
        """Tokens of the joined stream: the documents' and one end-of-text token each."""
        return self.tokens + self.documents

    def rows(self) -> list[dict]:
        """Training rows: every token trained (the renderer's mask, all ones)."""
        return [{"input_ids": b, "assistant_masks": [1] * len(b)} for b in self.blocks]


def pack_blocks(documents: Sequence[Sequence[int]], eos: int, block_len: int,
                keep_last: bool = False) -> Blocks:
    """The documents joined with `eos` (one after each) and cut into blocks of `block_len`;
    the last partial block kept only with `keep_last`."""
    if block_len < 2:
        raise DataError(f"train.max_seq_len = {block_len} is too short for a block of text",
                        hint="set train.max_seq_len to the context you train (e.g. 1024)")
    stream: list[int] = []
    for ids in documents:
        stream.extend(ids)
        stream.append(eos)
    full = len(stream) // block_len * block_len
    blocks = [stream[i:i + block_len] for i in range(0, full, block_len)]
    rest = len(stream) - full
    if rest and keep_last:
        blocks.append(stream[full:])
    tokens = len(stream) - len(documents)
    return Blocks(blocks, len(documents), tokens, 0 if keep_last else rest)


@dataclass
class TextData:
    """A raw-text run's training and held-out blocks, and the words that describe them."""

    train: Blocks
    held_out: Blocks
    eos: int
    eos_text: str
    block_len: int

    def describe(self) -> str:
        t, h = self.train, self.held_out
        lost = (f"the last partial block ({t.dropped} tokens) dropped" if t.dropped
                else "no partial block left over")
        return (f"data: raw text (continued pretraining, no chat template): {t.documents} "
                f"training documents, {t.tokens} tokens, joined with {self.eos_text!r} "
                f"(token {self.eos}) into {len(t.blocks)} blocks of "
                f"{self.block_len} tokens, every token trained; {lost}; {h.documents} held-out "
                f"documents ({h.tokens} tokens, {len(h.blocks)} blocks, the last one kept)")


def prepare_text(train_records: Sequence[dict], held_out_records: Sequence[dict], tokenizer,
                 block_len: int) -> TextData:
    """Training and held-out records (split by document beforehand) as blocks."""
    eos, eos_text = end_of_text(tokenizer)
    train = pack_blocks(tokenize_documents(tokenizer, documents_of(train_records)), eos,
                        block_len)
    held = pack_blocks(tokenize_documents(tokenizer, documents_of(held_out_records)), eos,
                       block_len, keep_last=True)
    return TextData(train, held, eos, eos_text, block_len)


# ---------------------------------------------------------------------------------------------
# `workbench data inspect` on raw text


@dataclass
class TextReport:
    path: str
    documents: int
    characters: int
    skipped: list[tuple[str, int, str]]
    tokens: int | None = None  # with a tokenizer only, as every token count of inspect
    block_len: int | None = None
    blocks: int | None = None
    dropped: int | None = None
    eos: str | None = None
    shortest: int | None = None
    longest: int | None = None
    kind: str = ""

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"format": "text", **asdict(self)}


def inspect_text(path: str, tokenizer=None, max_seq_len: int | None = None, *,
                 columns: dict | None = None, on_bad_line: str = "error",
                 encoding: str | None = None) -> TextReport:
    """Documents, characters and, with a tokenizer, tokens and the blocks of max_seq_len
    (default 1024, training's default) they pack into, counted as training counts them."""
    from workbench.data.load import LoadReport, iter_records

    load = LoadReport()
    records = list(iter_records(path, format="text", columns=columns, on_bad_line=on_bad_line,
                                report=load, encoding=encoding))
    docs = documents_of(records)
    report = TextReport(str(path), len(docs), sum(len(d) for d in docs), list(load.skipped),
                        kind=next(iter(load.kinds.values()), ""))
    if tokenizer is not None:
        eos, report.eos = end_of_text(tokenizer)
        ids = tokenize_documents(tokenizer, docs)
        report.block_len = max_seq_len or 1024
        packed = pack_blocks(ids, eos, report.block_len)
        report.tokens, report.blocks, report.dropped = packed.tokens, len(packed.blocks), packed.dropped
        lengths = [len(i) for i in ids]
        report.shortest, report.longest = (min(lengths), max(lengths)) if lengths else (0, 0)
    return report


def format_text_report(report: TextReport) -> str:
    lines = [f"{report.path}: raw text (continued pretraining: no chat template, every token "
             "trained)",
             f"  documents: {report.documents:,} ({report.characters:,} characters)"]
    if report.skipped:
        lines.append(f"  skipped: {len(report.skipped)} unreadable documents (first: "
                     f"{report.skipped[0][2]})")
    if report.tokens is None:
        lines.append("  tokens and blocks: pass --model M (or --profile P) to count them with "
                     "the model's tokenizer")
        return "\n".join(lines)
    lines.append(f"  tokens: {report.tokens:,} (documents {report.shortest:,} to "
                 f"{report.longest:,} tokens), {report.tokens + report.documents:,} joined with "
                 f"{report.eos!r} after each document")
    lines.append(f"  blocks: {report.blocks:,} of {report.block_len} tokens (max_seq_len)"
                 + (f", the last partial block ({report.dropped} tokens) dropped in training"
                    if report.dropped else ""))
    if not report.blocks:
        lines.append(f"  problem: the text is shorter than one block of {report.block_len} "
                     "tokens; lower train.max_seq_len or add text")
    return "\n".join(lines)
