"""`workbench compare`'s text output: multi-line and long answers stay in their column."""

from __future__ import annotations

import re

from workbench.evaluate.sidebyside import format_compare

NAMES = ["base", "few-shot", "fine-tuned"]
ANSWER_COLUMN = 16  # 4 spaces, the longest label ("fine-tuned", "reference") and 2 spaces


def _result():
    return [
        {"prompt": "List three French colours\nand say which one is warm",
         "reference": "rouge\nbleu\nvert",
         "answers": {"base": "1. red\n2. blue\n\n    indented code = 1\n" + "very long " * 30,
                     "few-shot": "rouge, bleu, vert", "fine-tuned": "rouge\nbleu\nvert"}},
        {"prompt": "Translate: the cat", "reference": None,
         "answers": {"base": "", "few-shot": "le chat", "fine-tuned": "le\tchat"}},
    ]


def test_every_answer_line_stays_in_its_column():
    width = 60
    text = format_compare(_result(), NAMES, {}, 0, {}, width=width)
    answers = text.split("\n\nspeed")[0]
    label = re.compile(r"^    (reference|base|few-shot|fine-tuned)( +\S|$)")
    for line in answers.splitlines():
        assert len(line) <= width, line
        if not line or line.startswith("[") or label.match(line):
            continue
        # anything else continues the line above: the prompt's column, or an answer's
        assert line.startswith(" " * 4) and line.strip(), repr(line)
        if not line.startswith(" " * ANSWER_COLUMN):
            assert line == "    and say which one is warm", repr(line)  # the prompt's second line
    lines = answers.splitlines()
    # a labelled line starts its answer in the answer column
    assert "    base        1. red" in lines and "                2. blue" in lines
    assert "    reference   rouge" in lines and "                bleu" in lines
    # a line's own indentation is kept inside the column
    assert "                    indented code = 1" in lines
    # long lines wrap inside the column rather than running to column 0
    wrapped = [ln for ln in lines if "very" in ln]
    assert len(wrapped) > 3
    assert all(ln.startswith(" " * ANSWER_COLUMN) and ln[ANSWER_COLUMN] != " " for ln in wrapped)
    # an empty answer still has its label; tabs become spaces
    assert "    base" in lines and "    fine-tuned  le  chat" in lines


def test_metrics_and_speed_follow_the_answers():
    timing = {n: {"tokens": 12, "latency_s": 0.5, "tokens_per_s": 24.0} for n in NAMES}
    metrics = {n: {"exact_match": 50.0} for n in NAMES}
    text = format_compare(_result(), NAMES, metrics, 1, timing, width=100)
    assert "metrics over 1 prompts with a reference (0-100):\n  base        exact_match 50.0" in text
    assert text.endswith("  fine-tuned  12 tokens, 0.50 s, 24.0 tok/s")
