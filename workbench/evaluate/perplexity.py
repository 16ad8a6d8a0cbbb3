"""Perplexity of each system on the test split, token-weighted: exp(total NLL / total tokens)
over the whole split, not a mean of per-row perplexities (which short rows would dominate).

Two numbers per system: over the answer tokens (the renderer's assistant mask: the answers and
their end-of-turn tokens, what training optimized) and over all tokens of the conversation.
For the few-shot system the examples are prepended as earlier turns and only the test
conversation's own tokens are scored, so the three systems are scored on the same tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from workbench.evaluate.compare import BASE, System


@dataclass
class Perplexity:
    answer: float
    all: float
    answer_tokens: int
    all_tokens: int

    def to_dict(self) -> dict:
        return {"answer_ppl": round(self.answer, 4), "all_ppl": round(self.all, 4),
                "answer_tokens": self.answer_tokens, "all_tokens": self.all_tokens}


def _scored_rows(tokenizer, records: Sequence[dict], system: System, picker, system_prompt: str,
                 max_len: int, fmt=None):
    """(input_ids, answer_mask, all_mask) per record, with few-shot examples in front."""
    from workbench.data.render import render_conversation
    from workbench.evaluate.fewshot import prompt_of, shot_messages

    out = []
    for rec in records:
        own = render_conversation(tokenizer, rec["messages"], "assistant", fmt=fmt)
        if system.shots and picker is not None:
            shots = picker.pick(prompt_of(rec))[: system.shots]
            prefix = shot_messages(shots, "")
            # The record's own system message stays first; examples go before the question.
            head = [m for m in rec["messages"] if m["role"] == "system"] or (
                [{"role": "system", "content": system_prompt}] if system_prompt else [])
            body = [m for m in rec["messages"] if m["role"] != "system"]
            full = render_conversation(tokenizer, head + prefix + body, "assistant", fmt=fmt)
        else:
            full = own
        ids = full.input_ids
        n_own = len(own.input_ids) - (1 if own.input_ids and own.input_ids[0] == tokenizer.bos_token_id
                                      and len(ids) > len(own.input_ids) else 0)
        start = max(len(ids) - n_own, 0)
        # Only the last sum(own mask) answer tokens belong to the test conversation.
        want = sum(own.assistant_masks)
        answer = [0] * len(ids)
        for pos in range(len(ids) - 1, -1, -1):
            if want == 0:
                break
            if full.assistant_masks[pos]:
                answer[pos], want = 1, want - 1
        # From the token after the conversation's first one: the first is unpredictable without
        # examples, so scoring it only in the few-shot rows would not compare like with like.
        every = [1 if pos >= start + 1 else 0 for pos in range(len(ids))]
        if len(ids) > max_len:  # keep the end: that is where the scored tokens are
            cut = len(ids) - max_len
            ids, answer, every = ids[cut:], answer[cut:], every[cut:]
        out.append((ids, answer, every))
    return out


def perplexity(engine, records: Sequence[dict], system: System, picker=None,
               batch_size: int = 8, max_len: int = 4096,
               on_batch: Callable[[int, int], None] | None = None, cancel=None) -> Perplexity:
    """`on_batch(rows scored, rows)` after each batch: a big model takes a while per system.
    `cancel` (an Event or a callable) asking to stop ends it before the next batch (`Stopped`)."""
    import torch

    from workbench.evaluate.errors import check_stop

    tok, model = engine.tokenizer, engine.model
    rows = _scored_rows(tok, records, system, picker, engine.system_prompt, max_len, engine.fmt)
    nll_answer = nll_all = 0.0
    n_answer = n_all = 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for lo in range(0, len(rows), batch_size):
        check_stop(cancel)
        chunk = rows[lo:lo + batch_size]
        width = max(len(r[0]) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        ans = torch.zeros((len(chunk), width), dtype=torch.bool)
        every = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (r_ids, r_ans, r_all) in enumerate(chunk):  # right padding: positions stay 0..n
            n = len(r_ids)
            ids[i, :n] = torch.tensor(r_ids)
            attn[i, :n] = 1
            ans[i, :n] = torch.tensor(r_ans, dtype=torch.bool)
            every[i, :n] = torch.tensor(r_all, dtype=torch.bool)
        with torch.inference_mode(), engine.using(system.adapter):
            logits = model(input_ids=ids.to(engine.device),
                           attention_mask=attn.to(engine.device)).logits.float()
        # Token t is predicted by the logits at t-1.
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = ids[:, 1:].to(logp.device)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        a, e = ans[:, 1:].to(nll.device), every[:, 1:].to(nll.device)
        nll_answer += float(nll[a].sum())
        n_answer += int(a.sum())
        nll_all += float(nll[e].sum())
        n_all += int(e.sum())
        if on_batch is not None:
            on_batch(lo + len(chunk), len(rows))
    return Perplexity(math.exp(nll_answer / n_answer) if n_answer else float("nan"),
                      math.exp(nll_all / n_all) if n_all else float("nan"), n_answer, n_all)


__all__ = ["Perplexity", "perplexity", "BASE"]
