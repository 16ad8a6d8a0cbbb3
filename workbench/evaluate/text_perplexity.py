"""A raw-text run's evaluation (continued pretraining, data/raw_text.py): perplexity on the
held-out text, base (adapter off) against fine-tuned (adapter on), with 95% intervals.

The SFT evaluation (answers generated to prompts, compared with references) has nothing to
stand on here: raw text has no prompts and no answers. What continued pretraining promises is
that the model predicts text of this kind better, and the measure of that is perplexity on
text it never trained on.

- The held-out text is the run's held-out documents (data.validation_split, split by document
  before packing) packed exactly as training packs (joined with the end-of-text token, cut into
  train.max_seq_len blocks, the last partial block kept), so its tokens are scored in the
  contexts training saw. A block is scored on its own: its first token, which nothing
  predicts, is not scored.
- Perplexity is token-weighted: exp(total NLL / total scored tokens) over the blocks scored.
- The interval: a paired bootstrap over the blocks (RESAMPLES resamples, train.seed): each
  resample draws blocks with replacement and scores both systems on the same draw; the 2.5th
  and 97.5th percentiles bound each system's perplexity and the change. The perplexity fell
  when the whole interval of the change lies below zero.
- eval.max_test_rows caps the blocks scored (a seeded sample, said in the notes).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from workbench.evaluate.compare import BASE
from workbench.evaluate.errors import EvaluateError, check_stop

RESAMPLES = 2000
BATCH_SIZE = 8  # blocks a forward pass


def is_text_run(profile) -> bool:
    from workbench.data.raw_text import is_text_data

    return is_text_data(profile)


def load_text_rows(profile, tokenizer, log: Callable[[str], None] = lambda s: None
                   ) -> tuple[list[dict], int]:
    """(the held-out blocks, the held-out documents) as training made them, for an evaluation
    run without the training plan at hand (`workbench eval RUN`)."""
    from workbench.data import DataError
    from workbench.data.raw_text import (documents_of, end_of_text, pack_blocks,
                                         tokenize_documents)
    from workbench.train.plan import load_training_data

    try:
        data = load_training_data(profile, log)
        eos, _ = end_of_text(tokenizer)
        held = pack_blocks(tokenize_documents(tokenizer, documents_of(data.validation)), eos,
                           profile.train.max_seq_len, keep_last=True)
    except DataError as exc:
        raise EvaluateError(f"could not load the run's held-out text: {exc}",
                            hint="the run reads data.train from its profile.toml; check the "
                                 "data is still there") from exc
    return held.rows(), held.documents


def block_losses(engine, blocks: Sequence[Sequence[int]], adapter: str, cancel=None,
                 on_batch: Callable[[int, int], None] | None = None,
                 batch_size: int = BATCH_SIZE) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) of each block under one system: every token but the
    block's first, which nothing predicts."""
    import torch

    pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else 0
    out: list[tuple[float, int]] = []
    for lo in range(0, len(blocks), batch_size):
        check_stop(cancel)
        chunk = blocks[lo:lo + batch_size]
        width = max(len(b) for b in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, block in enumerate(chunk):  # right padding: positions stay 0..n
            ids[i, :len(block)] = torch.tensor(list(block))
            attn[i, :len(block)] = 1
        with torch.inference_mode(), engine.using(adapter):
            logits = engine.model(input_ids=ids.to(engine.device),
                                  attention_mask=attn.to(engine.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # token t is predicted at t-1
        target = ids[:, 1:].to(logp.device)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        scored = attn[:, 1:].to(nll.device).bool()
        for i in range(len(chunk)):
            out.append((float(nll[i][scored[i]].sum()), int(scored[i].sum())))
        if on_batch is not None:
            on_batch(lo + len(chunk), len(blocks))
    return out


def paired_bootstrap(base: Sequence[float], tuned: Sequence[float], tokens: Sequence[int],
                     seed: int, resamples: int = RESAMPLES) -> dict:
    """Token-weighted perplexity of both systems and their change, each with its 95% interval,
    from a bootstrap over blocks that draws the same blocks for both systems."""
    import numpy as np

    base_a, tuned_a = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    tok = np.asarray(tokens, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(tok), size=(resamples, len(tok)))
    n = np.maximum(tok[idx].sum(axis=1), 1.0)
    ppl_b = np.exp(base_a[idx].sum(axis=1) / n)
    ppl_t = np.exp(tuned_a[idx].sum(axis=1) / n)
    change, pct = ppl_t - ppl_b, (ppl_t / ppl_b - 1) * 100

    def interval(values) -> list[float]:
        lo, hi = np.percentile(values, [2.5, 97.5])
        return [round(float(lo), 4), round(float(hi), 4)]

    total = max(float(tok.sum()), 1.0)
    point_b, point_t = math.exp(base_a.sum() / total), math.exp(tuned_a.sum() / total)
    return {"base": {"ppl": round(point_b, 4), "interval": interval(ppl_b)},
            "fine-tuned": {"ppl": round(point_t, 4), "interval": interval(ppl_t)},
            "change": {"ppl": round(point_t - point_b, 4), "interval": interval(change),
                       "pct": round((point_t / point_b - 1) * 100, 2),
                       "pct_interval": interval(pct)},
            "resamples": resamples}


def _pct(value: float) -> str:
    """A change in percent; near -100% with two decimals, so a fall is never shown as -100.0%."""
    return f"{value:+.1f}%" if abs(value) < 99.5 else f"{value:+.2f}%"


def text_verdict(summary: dict) -> dict:
    """Did the held-out perplexity fall: only when the 95% interval of the change lies below 0."""
    b, t, c = summary["base"], summary["fine-tuned"], summary["change"]
    lo, hi = c["pct_interval"]
    moved = (f"from {b['ppl']:.3f} to {t['ppl']:.3f} ({_pct(c['pct'])}; 95% interval "
             f"{_pct(lo)} to {_pct(hi)})")
    if c["interval"][1] < 0:
        return {"text": f"held-out perplexity fell {moved}: the fine-tuned model predicts the "
                        "held-out text better than the base", "fell": True}
    if c["interval"][0] > 0:
        return {"text": f"held-out perplexity rose {moved}: the fine-tuned model predicts the "
                        "held-out text worse than the base", "fell": False}
    return {"text": f"held-out perplexity did not change measurably, {moved}: the interval "
                    "includes no change", "fell": False}


def evaluate_text(engine, rows: list[dict], options, *, tuned: str, documents: int | None = None,
                  log: Callable[[str], None] = lambda s: None, cancel=None,
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The evaluation of a raw-text run: the "text" part of the result dict (report.py's
    Perplexity section and verdict)."""
    if not rows:
        raise EvaluateError("the run has no held-out text to measure perplexity on",
                            hint="keep data.validation_split above 0 (held-out documents), or "
                                 "give data.validation")
    blocks = [r["input_ids"] for r in rows]
    if documents is None:  # one end-of-text token closes each held-out document
        from workbench.data.raw_text import end_of_text

        eos = end_of_text(engine.tokenizer)[0]
        documents = sum(b.count(eos) for b in blocks)
    notes = []
    if options.max_test_rows and len(blocks) > options.max_test_rows:
        keep = sorted(random.Random(options.seed).sample(range(len(blocks)),
                                                         options.max_test_rows))
        notes.append(f"scored a seeded sample of {len(keep)} of the {len(blocks)} held-out "
                     "blocks (eval.max_test_rows; 0 scores every block)")
        blocks = [blocks[i] for i in keep]
    say = progress or (lambda stage, done, total: None)
    losses = {}
    for name, adapter in (("base", BASE), ("fine-tuned", tuned)):
        stage = f"perplexity {name}"
        say(stage, 0, len(blocks))
        losses[name] = block_losses(engine, blocks, adapter, cancel=cancel,
                                    on_batch=lambda done, total, s=stage: say(s, done, total))
    tokens = [n for _, n in losses["base"]]
    summary = paired_bootstrap([v for v, _ in losses["base"]],
                               [v for v, _ in losses["fine-tuned"]], tokens, options.seed)
    verdict = text_verdict(summary)
    where = f" of {documents} held-out documents" if documents is not None else ""
    log(f"held-out text: {len(blocks)} blocks{where}, {sum(tokens)} scored tokens")
    log(f"  perplexity: base {summary['base']['ppl']:.3f}, fine-tuned "
        f"{summary['fine-tuned']['ppl']:.3f}")
    log(f"  verdict: {verdict['text']}")
    return {"source": "the run's held-out documents, packed as training packs them",
            "documents": documents, "blocks": len(blocks), "block_len": max(map(len, blocks)),
            "tokens": sum(tokens), "notes": notes, **summary, "fell": verdict["fell"],
            "verdict": verdict}


def report_lines(text: dict) -> list[str]:
    """The Perplexity section of a raw-text run's report."""
    docs = f" from {text['documents']} held-out documents" if text.get("documents") else ""
    L = [f"held-out text: {text['blocks']} blocks of up to {text['block_len']} tokens{docs} "
         f"({text['tokens']} scored tokens), packed as training packs; token-weighted, lower "
         "is better; 95% intervals from a paired bootstrap over the blocks "
         f"({text['resamples']} resamples)", ""]
    L += [f"- note: {n}" for n in text.get("notes", [])]
    L += ["", "| system | perplexity | 95% interval |", "|---|---|---|"]
    for name in ("base", "fine-tuned"):
        s = text[name]
        L.append(f"| {name} | {s['ppl']:.3f} | {s['interval'][0]:.3f} to {s['interval'][1]:.3f} |")
    c = text["change"]
    L.append(f"| change | {c['ppl']:+.3f} ({_pct(c['pct'])}) | {c['interval'][0]:+.3f} to "
             f"{c['interval'][1]:+.3f} ({_pct(c['pct_interval'][0])} to "
             f"{_pct(c['pct_interval'][1])}) |")
    return L
