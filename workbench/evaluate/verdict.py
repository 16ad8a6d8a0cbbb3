"""Which metric decides, and whether a difference between two systems is real.

Metric: free-form answers scored by exact match are almost always 0 (issue 12: a run's verdict
"few-shot is as good (exact_match: fine-tuned 0.0, few-shot 1.0)" was decided by one lucky
hit). The primary metric follows the references unless `eval.metric` names one:

- closed answers (median reference of at most 3 words): exact match;
- short answers (at most 12 words): token F1;
- long-form answers: ROUGE-L (chrF is reported beside it).

Answer-token perplexity is always reported (report.py); it needs no generation.

Difference: a paired bootstrap over the test rows. The same resampled rows are scored for both
systems (they answered the same prompts), 2,000 resamples, seeded; the 95% interval is the 2.5th
to 97.5th percentile of the mean difference. A system "beats" another only when the interval
excludes zero; otherwise the verdict says the test set is too small to tell and how many rows
would (the interval narrows as 1 / sqrt(rows)).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Sequence

from workbench.evaluate.metrics import METRICS, sentence_scores

CLOSED_WORDS = 3
SHORT_WORDS = 12
RESAMPLES = 2000
NAMES = {"exact_match": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L", "chrf": "chrF",
         "bleu": "BLEU"}


def choose_metric(references: Sequence[str], requested: str = "auto") -> tuple[str, str]:
    """(the primary metric, why) for these references."""
    if requested and requested != "auto":
        return requested, f"eval.metric = \"{requested}\""
    words = [len((r or "").split()) for r in references] or [0]
    median = statistics.median(words)
    if median <= CLOSED_WORDS:
        return "exact_match", f"the references are closed answers (median {median:g} words)"
    if median <= SHORT_WORDS:
        return "token_f1", f"the references are short answers (median {median:g} words)"
    return "rouge_l", f"the references are long-form (median {median:g} words)"


def companions(primary: str) -> list[str]:
    """Metrics reported beside the primary one."""
    return {"exact_match": ["token_f1"], "token_f1": ["exact_match"], "rouge_l": ["chrf"],
            "chrf": ["rouge_l"], "bleu": ["chrf"]}.get(primary, [])


def row_scores(metric: str, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """One score per row (BLEU is not defined per row: its rows use chrF's)."""
    per_row = metric if metric != "bleu" else "chrf"
    return [sentence_scores([per_row], p, r)[per_row] for p, r in zip(predictions, references)]


@dataclass
class Difference:
    a: str
    b: str
    metric: str
    delta: float  # mean of a - b, points
    low: float
    high: float
    rows: int
    a_mean: float = 0.0
    b_mean: float = 0.0

    @property
    def decided(self) -> bool:
        return self.low > 0 or self.high < 0

    def rows_to_tell(self) -> int | None:
        """Rows at which an interval of today's width relative to |delta| would exclude zero."""
        half = (self.high - self.low) / 2
        if not self.delta or half <= 0:
            return None
        return int(self.rows * (half / abs(self.delta)) ** 2) + 1

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, "delta": round(self.delta, 2),
                "means": [round(self.a_mean, 2), round(self.b_mean, 2)],
                "ci95": [round(self.low, 2), round(self.high, 2)], "rows": self.rows,
                "decided": self.decided, "rows_to_tell": self.rows_to_tell()}


def paired_bootstrap(a_name: str, a: Sequence[float], b_name: str, b: Sequence[float], metric: str,
                     seed: int = 0, resamples: int = RESAMPLES) -> Difference:
    n = len(a)
    diffs = [x - y for x, y in zip(a, b)]
    delta = sum(diffs) / n if n else 0.0
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)) if n else [0.0]
    low = means[int(0.025 * (len(means) - 1))]
    high = means[int(0.975 * (len(means) - 1))]
    return Difference(a_name, b_name, metric, delta, low, high, n,
                      sum(a) / n if n else 0.0, sum(b) / n if n else 0.0)


def sentence(d: Difference) -> str:
    name = NAMES.get(d.metric, d.metric)
    ci = (f"{d.a} {d.a_mean:.1f} vs {d.b} {d.b_mean:.1f}; 95% CI {d.low:+.1f} to {d.high:+.1f}, "
          f"{d.rows} rows")
    if d.low == d.high == d.delta == 0:
        return f"{d.a} and {d.b} score the same on {name} on every one of the {d.rows} rows ({ci})"
    if d.low > 0:
        return f"{d.a} beats {d.b} by {d.delta:+.1f} {name} ({ci})"
    if d.high < 0:
        return f"{d.b} beats {d.a} by {-d.delta:+.1f} {name} ({ci})"
    need = d.rows_to_tell()
    tell = (f"; about {need:,} rows would tell a difference of this size" if need and need > d.rows
            else "")
    return (f"{d.a} and {d.b} are within noise on {name}: {d.delta:+.1f} ({ci}); the test set is "
            f"too small to tell{tell}")


def judge(per_row: dict[str, list[float]], metric: str, seed: int = 0) -> dict:
    """The verdict over systems' per-row scores of the primary metric: fine-tuned against
    few-shot (prompting the base model well) and against the base model."""
    if "fine-tuned" not in per_row:
        return {"text": "no verdict: no fine-tuned system", "comparisons": []}
    others = [s for s in ("few-shot", "base") if s in per_row]
    diffs = [paired_bootstrap("fine-tuned", per_row["fine-tuned"], o, per_row[o], metric, seed)
             for o in others]
    if not diffs:
        return {"text": "no verdict: nothing to compare with", "comparisons": []}
    main = diffs[0]
    text = sentence(main)
    if main.high < 0 and main.b == "few-shot":
        text += ": fine-tuning did not pay off here, prompting the base model with examples is better"
    elif not main.decided and main.b == "few-shot":
        text += "; fine-tuning has not shown it beats prompting the base model with examples"
    return {"text": text, "comparisons": [d.to_dict() for d in diffs],
            "lines": [sentence(d) for d in diffs]}


__all__ = ["METRICS", "choose_metric", "companions", "row_scores", "paired_bootstrap", "judge"]
