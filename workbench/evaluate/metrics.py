"""Task metrics on generated answers against references, all on a 0-100 scale so that
deltas between systems read the same way for every metric.

exact match, token F1 and ROUGE-L are a few lines each and have no dependency (ROUGE-L is
the LCS F-measure over whitespace tokens of normalized text, as in rouge-score without
stemming). chrF and BLEU come from sacrebleu, the maintained reference implementation,
imported only when one of them is asked for.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Callable, Sequence

METRICS = ("exact_match", "token_f1", "rouge_l", "chrf", "bleu")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: "Le chat." == "le chat"."""
    return " ".join(_PUNCT.sub(" ", (text or "").lower()).split())


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 * (normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return 100.0 * (pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 100.0 * 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return 100.0 * (pred == ref)
    lcs = _lcs(pred, ref)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 100.0 * 2 * precision * recall / (precision + recall)


_SENTENCE: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}


def _sacrebleu(metric: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    try:
        import sacrebleu
    except ImportError as exc:  # a declared dependency; say how to fix a broken install
        from workbench.evaluate.errors import EvaluateError

        raise EvaluateError(f"eval.metrics asks for {metric!r}, which needs sacrebleu",
                            hint="pip install 'sacrebleu>=2.4'") from exc
    refs = [list(references)]
    if metric == "chrf":
        return float(sacrebleu.corpus_chrf(list(predictions), refs).score)
    return float(sacrebleu.corpus_bleu(list(predictions), refs).score)


def score(metric: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """The corpus score of one metric (0-100) over aligned prediction / reference pairs."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not predictions:
        return float("nan")
    if metric in _SENTENCE:
        fn = _SENTENCE[metric]
        return sum(fn(p, r) for p, r in zip(predictions, references)) / len(predictions)
    return _sacrebleu(metric, predictions, references)


def score_all(metrics: Sequence[str], predictions: Sequence[str],
              references: Sequence[str]) -> dict[str, float]:
    return {m: round(score(m, predictions, references), 2) for m in metrics}


def sentence_scores(metrics: Sequence[str], prediction: str, reference: str) -> dict[str, float]:
    """Per-answer scores for the side-by-side table (chrF per sentence via sacrebleu;
    BLEU is not meaningful per sentence and is left out)."""
    out = {}
    for m in metrics:
        if m in _SENTENCE:
            out[m] = round(_SENTENCE[m](prediction, reference), 1)
        elif m == "chrf":
            out[m] = round(_sacrebleu("chrf", [prediction], [reference]), 1)
    return out
