"""Clean operations: what each removes or changes, why, and that every removal is counted."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import TINY_MODEL
from workbench.data import DataError
from workbench.data.clean import STEPS, CleanConfig, clean_records, format_clean_report, normalize_text


def rec(row: int, user: str = "a question", answer: str = "an answer", file: str = "d.jsonl", system: str | None = None):
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "source": {"file": file, "row": row}}


def run(records, *steps, tokenizer=None, **params):
    return clean_records(records, CleanConfig(steps=list(steps), **params), tokenizer=tokenizer)


def assert_accounted(report):
    """Nothing removed uncounted: each op's in - out equals its removed list."""
    for op in report.operations:
        assert op.rows_in - op.rows_out == len(op.removed), op.name
    assert report.rows_in - report.rows_out == report.removed_total


LONG = ("The committee met on Tuesday to review the budget for the coming year, and after a long "
        "discussion about maintenance costs, staffing and the new library wing, it agreed to "
        "postpone the final vote until the auditors had delivered their report in March.")


def test_drop_empty_removes_empty_messages_and_missing_answers():
    no_answer = {"messages": [{"role": "user", "content": "hi"}], "source": {"file": "d.jsonl", "row": 3}}
    rows = [rec(1), rec(2, user="   "), no_answer, rec(4, answer="")]
    kept, report = run(rows, "drop_empty")
    assert [r["source"]["row"] for r in kept] == [1]
    removed = {e["row"]: e["reason"] for e in report.operations[0].removed}
    assert removed[2] == "message 0 (user) is empty"
    assert removed[3] == "no assistant answer"
    assert "assistant" in removed[4] and "empty" in removed[4]
    assert all(e["file"] == "d.jsonl" for e in report.operations[0].removed)
    assert_accounted(report)


def test_drop_short_uses_min_answer_chars():
    rows = [rec(1, answer="4"), rec(2, answer="ok"), rec(3, answer="  x  ")]
    kept, report = run(rows, "drop_short")  # default min_answer_chars=2
    assert [r["source"]["row"] for r in kept] == [2]
    assert "1 characters (< min_answer_chars=2)" in report.operations[0].removed[0]["reason"]
    kept, report = run(rows, "drop_short", min_answer_chars=3)
    assert kept == [] and len(report.operations[0].removed) == 3
    assert report.operations[0].params == {"min_answer_chars": 3}
    assert_accounted(report)


def test_normalize_whitespace_tidies_prose_and_leaves_code_alone():
    code = "```python\ndef f():   \n    return 1\t\n\n\n\n\n    # end\n```"
    answer = "  Sure.   \r\nHere it is:\r\n\r\n\r\n\r\n\r\n" + code + "\n\nDone.  \n\n\n"
    rows = [rec(1, answer=answer), rec(2, answer="already tidy")]
    kept, report = run(rows, "normalize_whitespace")
    tidy = kept[0]["messages"][1]["content"]
    assert tidy == "Sure.\nHere it is:\n\n\n" + code + "\n\nDone."
    assert code in tidy  # trailing spaces, tab and blank lines inside the fence survive
    assert report.operations[0].changed == 1
    assert report.operations[0].removed == []
    assert rows[0]["messages"][1]["content"] == answer  # the caller's records are not modified


def test_normalize_text_keeps_indentation_and_unclosed_fences():
    assert normalize_text("line\n    indented  \n\tx") == "line\n    indented\n\tx"
    assert normalize_text("a\n\n\n\n\nb") == "a\n\n\nb"  # 4 blank lines -> 2
    assert normalize_text("a\n\n\nb") == "a\n\n\nb"  # 2 blank lines stay
    unclosed = "see:\n~~~\nx   \n\n\n\n\n"
    assert normalize_text(unclosed) == unclosed


def test_dedup_exact_keeps_first_and_names_it():
    rows = [rec(1, answer="Paris"), rec(2, answer="London"), rec(3, answer="paris "), rec(4, answer="Paris")]
    kept, report = run(rows, "dedup_exact")
    assert [r["source"]["row"] for r in kept] == [1, 2]
    reasons = [e["reason"] for e in report.operations[0].removed]
    assert reasons == ["exact duplicate of d.jsonl:1", "exact duplicate of d.jsonl:1"]
    assert_accounted(report)


def test_dedup_near_removes_near_copies_only():
    rows = [rec(1, answer=LONG), rec(2, answer="Something else entirely, about cats and their naps."),
            rec(3, answer=LONG.replace("Tuesday", "Wednesday"))]
    kept, report = run(rows, "dedup_near", near_dup_threshold=0.8)
    assert [r["source"]["row"] for r in kept] == [1, 2]
    (entry,) = report.operations[0].removed
    assert entry["row"] == 3 and "near duplicate (>= 0.8) of d.jsonl:1" == entry["reason"]
    assert report.operations[0].params["threshold"] == 0.8


@pytest.fixture(scope="module")
def tiny_tokenizer():
    if not (TINY_MODEL / "tokenizer.json").exists():
        pytest.skip("assets/tiny-model is missing")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_MODEL)


def test_length_filter_drops_long_rows(tiny_tokenizer):
    rows = [rec(1, answer="short"), rec(2, answer=LONG * 3)]
    kept, report = run(rows, "length_filter", tokenizer=tiny_tokenizer, max_tokens=64)
    assert [r["source"]["row"] for r in kept] == [1]
    reason = report.operations[0].removed[0]["reason"]
    assert "> max_tokens=64" in reason and "answer tokens would be cut" in reason
    # The policy that only minds lost answer tokens keeps a long prompt with a short answer
    # only if the answer still fits; here it does not fit either, so the row still goes.
    kept, report = run(rows, "length_filter", tokenizer=tiny_tokenizer, max_tokens=64, length_policy="answer_truncated")
    assert [r["source"]["row"] for r in kept] == [1]


def test_length_filter_needs_a_tokenizer_and_a_limit(tiny_tokenizer):
    with pytest.raises(DataError, match="needs a tokenizer"):
        run([rec(1)], "length_filter", max_tokens=10)
    with pytest.raises(DataError, match="max_tokens"):
        run([rec(1)], "length_filter", tokenizer=tiny_tokenizer)


def test_fill_placeholders_fills_flags_and_optionally_drops():
    rows = [rec(1, answer="I am {{name}} by {{ author }}."), rec(2, answer="Ask {{boss}}, [YOUR NAME]."), rec(3)]
    kept, report = run(rows, "fill_placeholders", placeholders={"name": "Workbench", "author": "Us"})
    op = report.operations[0]
    assert kept[0]["messages"][1]["content"] == "I am Workbench by Us."
    assert len(kept) == 3 and op.changed == 1
    assert op.flagged == [{"file": "d.jsonl", "row": 2, "reason": "placeholder with no value: {{boss}}, [YOUR NAME]"}]
    kept, report = run(rows, "fill_placeholders", placeholders={"name": "W", "author": "U"}, drop_unfilled=True)
    assert [r["source"]["row"] for r in kept] == [1, 3]
    assert report.operations[0].removed[0]["row"] == 2
    assert_accounted(report)


def test_drop_secrets_names_the_kind_never_the_secret():
    key = "AKIA" + "Q3EGRI7ZTMLX2P4N"
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    rows = [rec(1), rec(2, answer=f"use key {key} now"), rec(3, user=f"my token is {token}"),
            rec(4, answer="mail me at jane.doe@example.com")]
    kept, report = run(rows, "drop_secrets")
    assert [r["source"]["row"] for r in kept] == [1, 4]
    reasons = " ".join(e["reason"] for e in report.operations[0].removed)
    assert "secret" in reasons and key not in reasons and token not in reasons
    kept, report = run(rows, "drop_secrets", drop_pii=True)
    assert [r["source"]["row"] for r in kept] == [1]
    assert "personal data" in report.operations[0].removed[-1]["reason"]
    assert "jane.doe" not in report.to_json()


def test_steps_run_in_the_given_order_and_are_recorded():
    rows = [rec(1, answer="Paris  "), rec(2, answer="Paris"), rec(3, answer="")]
    # normalize first: the copies become equal before dedup sees them (dedup ignores spacing
    # anyway, so the order shows up in the report, not the result).
    kept, report = run(rows, "normalize_whitespace", "drop_empty", "dedup_exact")
    assert [op.name for op in report.operations] == ["normalize_whitespace", "drop_empty", "dedup_exact"]
    assert [(op.rows_in, op.rows_out) for op in report.operations] == [(3, 3), (3, 2), (2, 1)]
    assert [r["source"]["row"] for r in kept] == [1]
    _, report = run(rows, "dedup_exact", "drop_empty")
    assert [op.name for op in report.operations] == ["dedup_exact", "drop_empty"]
    assert_accounted(report)
    data = json.loads(report.to_json())
    assert data["rows_in"] == 3 and data["operations"][0]["name"] == "dedup_exact"
    text = format_clean_report(report)
    assert "dedup_exact" in text and "removed d.jsonl:3" in text


def test_no_steps_keeps_everything():
    kept, report = run([rec(1), rec(2)])
    assert len(kept) == 2 and report.operations == []
    assert "no operations" in format_clean_report(report)


def test_unknown_step_lists_valid_ones_with_a_guess():
    with pytest.raises(DataError) as info:
        run([rec(1)], "dedupe_exact")
    text = str(info.value)
    assert "unknown clean operation 'dedupe_exact'" in text
    assert "did you mean 'dedup_exact'" in text
    assert all(step in text for step in STEPS)
    with pytest.raises(DataError, match="listed twice"):
        run([rec(1)], "drop_empty", "drop_empty")


def test_cancel_stops_between_steps():
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done >= 2:
            cancel.set()

    rows = [rec(1), rec(2)]
    kept, report = clean_records(rows, CleanConfig(steps=["drop_empty", "drop_short"]),
                                 progress=progress, cancel=cancel)
    assert report.cancelled and [op.name for op in report.operations] == ["drop_empty"]
    assert seen[0] == (0, 4)
    assert "cancelled" in format_clean_report(report)
