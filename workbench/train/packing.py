"""Padding-free batches for supervised fine-tuning (train.packing = "auto" | true | false).

Why: a padded micro-batch computes on as many rows x its longest row tokens; on instruction
data most of them are padding (bench/train_throughput.md). Here rows are packed, best fit
decreasing and never cut, into packs of at most train.max_seq_len tokens, each row keeping its
own position ids (0, 1, 2, ... from its first token). transformers 5 turns position ids that
restart into a block-diagonal causal mask for SDPA and eager attention (masking_utils
`find_packed_sequence_indices`), and FlashAttention runs its variable-length kernel over the
same boundaries, so no token of a packed row sees another row: the same loss and gradients as
padded batches of those rows, without the padding.

Layouts: for SDPA and eager a micro-batch is (packs x longest pack) with the packs as batch
rows, so attention costs what it costs within a pack (trl flattens every pack of the batch
into one sequence, whose attention then spans batch x max_seq_len tokens); FlashAttention
takes one flattened sequence (its varlen kernels need batch size 1) with the cumulative
lengths given, as trl does.

The loss is the same quantity as without packing: trl divides the summed token losses by the
trained tokens of the whole accumulated batch. Each row's first label is ignored in both
layouts: nothing predicts a row's first token (padded, it has nothing before it; packed,
the previous row's last token would).

When packing cannot be shown exact (an attention implementation or model code that does not
build its mask from position ids, or remote code), batches of similar lengths are used instead
(the sampler groups by length), and the run's log says why.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

EXACT_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
FLASH = ("flash_attention_2", "flash_attention_3")
# transformers' mask builders that read position ids (masking_utils); a model's modeling code
# that calls one of them gets block-diagonal masks for packed rows.
MASK_BUILDERS = ("create_causal_mask", "create_sliding_window_causal_mask",
                 "create_masks_for_generate", "create_chunked_causal_mask")

# Layers that carry a state along the sequence: no mask keeps packed rows apart there.
RECURRENT_LAYERS = ("Mamba", "selective_scan", "causal_conv1d", "chunk_gated_delta_rule",
                    "ShortConv", "linear_attention")


@dataclass(frozen=True)
class PackingChoice:
    mode: str  # "packed" | "grouped" (by length, padded) | "padded" (as trl does by default)
    flat: bool = False  # packed into one flattened sequence (FlashAttention's varlen kernels)
    why: str = ""

    @property
    def packed(self) -> bool:
        return self.mode == "packed"


def choose(setting, method: str, attn: str, model_source: str | None,
           remote_code: bool) -> PackingChoice:
    """What train.packing means for this run, before the model is loaded (no torch).
    `model_source`: the text of the model's modeling module (`modeling_source`)."""
    if method != "sft" or setting is False:
        return PackingChoice("padded")
    exact, why = packs_exactly(attn, model_source, remote_code)
    if exact:
        return PackingChoice("packed", flat=attn in FLASH)
    return PackingChoice("grouped", why=why)


def packs_exactly(attn: str, model_source: str | None, remote_code: bool) -> tuple[bool, str]:
    """(True, "") when this attention and model code keep packed rows apart; else why not.
    Recurrent models (Mamba, RWKV) carry state from one row into the next: their code builds
    no causal mask, so they fall back too."""
    if attn not in EXACT_ATTENTION:
        return False, f"attention {attn!r} is not known to keep packed rows apart"
    if remote_code:
        return False, "the model's own code (trust_remote_code) may not build masks from position ids"
    if model_source is None:
        return False, "transformers' code for this model could not be read to check its masks"
    if not any(name in model_source for name in MASK_BUILDERS):
        return False, ("the model's attention mask is not built by transformers' masking "
                       "utilities, so packed rows could see each other")
    recurrent = [name for name in RECURRENT_LAYERS if name in model_source]
    if recurrent:  # hybrids (Jamba, Qwen3-Next, LFM2...): attention masked, state not reset
        return False, (f"the model has recurrent layers ({recurrent[0]}) whose state would run "
                       "from one packed row into the next")
    return True, ""


def modeling_source(config) -> str | None:
    """The text of transformers' modeling module for this config's causal LM class (read,
    not run; None when it has none, e.g. remote code)."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        return inspect.getsource(inspect.getmodule(cls))
    except (KeyError, TypeError, OSError, ValueError):
        return None


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best fit decreasing: row indices grouped into packs of at most `capacity` tokens, every
    row whole (a row longer than the capacity gets a pack of its own; the renderer already
    cuts rows at max_seq_len, so none is). Deterministic: ties keep the rows' order, so a
    resumed run rebuilds the same packs."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    # (room left, pack index), sorted: the tightest pack that still fits is found by bisect
    room: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(room, (n, -1))
        if at < len(room):
            left, p = room.pop(at)
            packs[p].append(i)
            bisect.insort(room, (left - n, p))
        else:
            packs.append([i])
            if capacity - n > 0:
                bisect.insort(room, (capacity - n, len(packs) - 1))
    return packs


@dataclass(frozen=True)
class PackStats:
    rows: int
    packs: int
    tokens: int
    capacity: int

    @property
    def fill(self) -> float:
        return self.tokens / max(1, self.packs * self.capacity)

    def describe(self) -> str:
        return (f"packing: {self.rows} rows into {self.packs} packs of up to {self.capacity} "
                f"tokens ({self.fill:.0%} full), no padding and no row cut")


def pack_stats(lengths: list[int], capacity: int) -> PackStats:
    return PackStats(len(lengths), len(pack(lengths, capacity)), sum(lengths), capacity)


def packed_rows(rows: list[dict], capacity: int) -> tuple[list[dict], PackStats]:
    """Training rows ({"input_ids", "labels"}) as packs: the rows' tokens and labels joined, and
    `seq_lengths` (trl's column name) for the collator to restart positions at."""
    groups = pack([len(r["input_ids"]) for r in rows], capacity)
    out = []
    for group in groups:
        ids, labels = [], []
        for i in group:
            ids += rows[i]["input_ids"]
            labels += rows[i]["labels"]
        out.append({"input_ids": ids, "labels": labels,
                    "seq_lengths": [len(rows[i]["input_ids"]) for i in group]})
    tokens = sum(len(r["input_ids"]) for r in rows)
    return out, PackStats(len(rows), len(out), tokens, capacity)


class PackedCollator:
    """Packs (from `packed_rows`) into a batch without an attention mask, so transformers
    derives the block-diagonal mask (or FlashAttention the varlen boundaries) from the position
    ids. Pads at the end of a shorter pack are their own one-token rows (position 0, label
    ignored): they see only themselves, and no real token sees them."""

    def __init__(self, pad_token_id: int, flat: bool = False):
        self.pad_token_id = pad_token_id
        self.flat = flat

    def __call__(self, features: list[dict]) -> dict:
        import torch

        if self.flat:
            return self._flat(features)
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        positions = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            positions[row, :n] = _positions(f["seq_lengths"])
        return {"input_ids": ids, "labels": labels, "position_ids": positions}

    def _flat(self, features: list[dict]) -> dict:
        import torch

        lengths = [n for f in features for n in f["seq_lengths"]]
        ids = torch.tensor([t for f in features for t in f["input_ids"]]).unsqueeze(0)
        labels = torch.tensor([t for f in features for t in f["labels"]]).unsqueeze(0)
        cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
        # trl's padding-free batches carry the boundaries, so FlashAttention does not derive
        # them from the position ids with a device sync in every layer.
        return {"input_ids": ids, "labels": labels, "position_ids": _positions(lengths).unsqueeze(0),
                "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                "max_length_q": max(lengths), "max_length_k": max(lengths)}


def _positions(lengths: list[int]):
    import torch

    return torch.cat([torch.arange(n) for n in lengths])


def real_tokens(inputs: dict) -> int | None:
    """Tokens of a packed batch that are not padding (trl counts only the sequence length of a
    batch without an attention mask). Padding is the trailing run of position-0 tokens of each
    pack (a real row has at least two tokens). None for other batches."""
    import torch

    positions = inputs.get("position_ids")
    if positions is None or "attention_mask" in inputs or positions.dim() != 2:
        return None
    trailing = torch.flip(positions, [1]).eq(0).to(torch.int32).cumprod(1).sum(1)
    return int(positions.numel() - trailing.sum())


def check_exact(model, rows: list[dict], flat: bool, pad_token_id: int) -> str | None:
    """The proof on the loaded model: two rows packed give the logits each gives alone. None
    when they do; else what differed (then the run falls back to padded batches). A few
    dozen tokens through the model, with dropout off and no gradients."""
    import torch

    sample = [r["input_ids"][:12] for r in rows[:2] if len(r["input_ids"]) >= 2]
    if not sample:
        return None
    if len(sample) == 1:
        sample = sample * 2
    device = next(model.parameters()).device
    collate = PackedCollator(pad_token_id, flat=flat)
    packed = collate([{"input_ids": sample[0] + sample[1], "labels": [-100] * (len(sample[0]) + len(sample[1])),
                       "seq_lengths": [len(sample[0]), len(sample[1])]}])
    packed.pop("labels")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in packed.items()}
            together = model(**inputs, use_cache=False).logits.float()[0]
            alone = [model(input_ids=torch.tensor([s], device=device), use_cache=False).logits.float()[0]
                     for s in sample]
    finally:
        model.train(was_training)
    expected = torch.cat(alone)
    diff = (together - expected).abs().max().item()
    scale = expected.abs().max().item() or 1.0
    tolerance = 1e-3 if expected.dtype == torch.float32 and _dtype(model) == torch.float32 else 3e-2
    if diff <= tolerance * scale:
        return None
    return (f"two rows packed together did not give the logits each gives alone "
            f"(largest difference {diff:.3g} of {scale:.3g})")


def _dtype(model):
    return next(model.parameters()).dtype
