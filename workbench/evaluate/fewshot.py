"""Few-shot examples for the "base model, prompted well" system.

Examples come from the train split only. Any train row whose prompt also appears in the
test split is excluded as well, so a few-shot prompt can never contain a test answer even
when the data has duplicates across splits. Two ways to choose:

- "fixed": one seeded choice of k rows, the same for every test prompt (the usual baseline);
- "bm25": for each test prompt, the k train rows whose prompt is most similar (Okapi BM25
  over lowercase word tokens; a few dozen lines, no dependency).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
SELECTIONS = ("fixed", "bm25")


def prompt_of(record: dict) -> str:
    """The last user message: what the model is asked."""
    for m in reversed(record["messages"]):
        if m["role"] == "user":
            return m["content"]
    return ""


def answer_of(record: dict) -> str:
    for m in reversed(record["messages"]):
        if m["role"] == "assistant":
            return m["content"]
    return ""


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _key(text: str) -> str:
    return " ".join(text.lower().split())


class BM25:
    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75):
        self.docs = [Counter(_tokens(d)) for d in documents]
        self.lengths = [sum(c.values()) for c in self.docs]
        self.avg = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df = Counter(t for c in self.docs for t in c)
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.k1, self.b = k1, b

    def scores(self, query: str) -> list[float]:
        q = _tokens(query)
        out = []
        for doc, length in zip(self.docs, self.lengths):
            s = 0.0
            norm = self.k1 * (1 - self.b + self.b * length / (self.avg or 1))
            for t in q:
                f = doc.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            out.append(s)
        return out


class FewShotPicker:
    """Chooses k examples from `train` for a test prompt; never a row whose prompt is in
    `exclude_prompts` (the test prompts)."""

    def __init__(self, train: Sequence[dict], k: int, seed: int = 42, selection: str = "fixed",
                 exclude_prompts: Sequence[str] = ()):
        if selection not in SELECTIONS:
            raise ValueError(f"few-shot selection {selection!r}: use one of {', '.join(SELECTIONS)}")
        banned = {_key(p) for p in exclude_prompts}
        # Single-turn rows with an answer make clean demonstrations; a row that repeats a
        # test prompt would leak its answer into the prompt.
        self.pool = [r for r in train
                     if answer_of(r) and prompt_of(r) and _key(prompt_of(r)) not in banned]
        self.excluded = len(train) - len(self.pool)
        self.k = min(k, len(self.pool))
        self.selection = selection
        self._fixed = random.Random(seed).sample(self.pool, self.k) if self.k else []
        self._bm25 = BM25([prompt_of(r) for r in self.pool]) if selection == "bm25" and self.k else None

    def pick(self, prompt: str) -> list[dict]:
        if not self.k:
            return []
        if self._bm25 is None:
            return list(self._fixed)
        scores = self._bm25.scores(prompt)
        best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: self.k]
        return [self.pool[i] for i in reversed(best)]  # most similar last: nearest the question

    def messages(self, prompt: str, system_prompt: str = "") -> list[dict]:
        """The chat for the few-shot system: each example as a user / assistant turn pair,
        then the question."""
        return shot_messages(self.pick(prompt), system_prompt) + [{"role": "user", "content": prompt}]


def shot_messages(shots: Sequence[dict], system_prompt: str = "") -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for r in shots:
        msgs += [{"role": "user", "content": prompt_of(r)},
                 {"role": "assistant", "content": answer_of(r)}]
    return msgs
