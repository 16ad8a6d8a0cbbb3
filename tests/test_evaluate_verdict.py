"""The verdict: the metric chosen from the references, and a paired bootstrap interval that
decides "beats" only when it excludes zero (issue 12)."""

from __future__ import annotations

import random

from workbench.evaluate.verdict import choose_metric, judge, paired_bootstrap, row_scores


def test_metric_follows_the_references():
    assert choose_metric(["Paris", "le chat", "4"])[0] == "exact_match"
    assert choose_metric(["The capital of France is Paris, on the Seine."] * 3)[0] == "token_f1"
    long = ["Photosynthesis is the process by which green plants use sunlight, water and carbon "
            "dioxide to make glucose and oxygen, which feeds nearly all life on Earth."] * 5
    metric, why = choose_metric(long)
    assert metric == "rouge_l" and "long-form" in why
    assert choose_metric(long, "chrf") == ("chrf", 'eval.metric = "chrf"')


def test_a_clear_difference_is_decided_with_its_interval():
    rng = random.Random(1)
    base = [rng.uniform(20, 40) for _ in range(100)]
    tuned = [b + 6 + rng.uniform(-3, 3) for b in base]
    d = paired_bootstrap("fine-tuned", tuned, "base", base, "rouge_l")
    assert d.decided and 5 < d.delta < 7 and 0 < d.low < d.delta < d.high
    out = judge({"base": base, "fine-tuned": tuned}, "rouge_l")
    assert out["text"].startswith("fine-tuned beats base by +")
    assert "95% CI" in out["text"] and "ROUGE-L" in out["text"]


def test_one_lucky_hit_is_noise_not_a_verdict():
    """Issue 12: exact match 0 vs 1 hit out of 100 decided "few-shot is as good"."""
    few = [0.0] * 99 + [100.0]
    tuned = [0.0] * 100
    out = judge({"base": [0.0] * 100, "few-shot": few, "fine-tuned": tuned}, "exact_match")
    assert "within noise" in out["text"] and "too small to tell" in out["text"]
    assert out["comparisons"][0]["decided"] is False


def test_few_shot_winning_is_said():
    rng = random.Random(2)
    few = [rng.uniform(40, 60) for _ in range(80)]
    tuned = [f - 10 + rng.uniform(-2, 2) for f in few]
    out = judge({"base": [10.0] * 80, "few-shot": few, "fine-tuned": tuned}, "token_f1")
    assert out["text"].startswith("few-shot beats fine-tuned") and "did not pay off" in out["text"]
    assert out["lines"][1].startswith("fine-tuned beats base")


def test_rows_needed_grows_as_the_difference_shrinks():
    rng = random.Random(3)
    a = [rng.uniform(0, 100) for _ in range(40)]
    b = [x + rng.uniform(-30, 31) for x in a]
    d = paired_bootstrap("fine-tuned", b, "base", a, "rouge_l")
    if not d.decided:
        assert d.rows_to_tell() > 40
    assert row_scores("exact_match", ["Paris", "x"], ["paris", "y"]) == [100.0, 0.0]
