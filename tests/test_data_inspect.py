"""Dataset inspection: exact counts on a known dataset, tokens, secrets masked, shared data."""

import json
from pathlib import Path

import pytest

from workbench.data.inspect import format_report, inspect_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny-model"
SECRET = "sk-proj-abc123DEF456ghi789JKL012mno"
LONG = ("Paris is the capital of France and its largest city, known for the Eiffel Tower, the "
        "Louvre museum, wide boulevards, cafes and a long history of art and science. ")


@pytest.fixture
def dataset(tmp_path):
    rows = [
        {"instruction": "Capital of France?", "output": LONG},                 # 1 kept
        {"instruction": "capital of  France?", "output": LONG},                # 2 exact dup of 1
        {"instruction": "Capital of France?", "output": LONG.replace("cafes", "bistros")},  # 3 near
        {"instruction": "Say hi", "output": "k"},                              # 4 short
        {"instruction": "Empty", "output": ""},                                # 5 empty answer
        {"instruction": "Hello {{name}}", "output": f"I am {{{{name}}}}, key {SECRET}"},  # 6
        {"instruction": "Mail", "output": "write to jane.roe@corp-mail.com"},  # 7 pii
        {"instruction": "Broken", "output": "caf\u00c3\u00a9 au lait"},        # 8 mojibake
    ]
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")  # line 4 is bad; rows after it shift by one line
    path.write_text("\n".join(lines) + "\n")
    return path


def test_known_counts(dataset):
    r = inspect_dataset(dataset).to_json()
    assert r["schema_version"] == 1
    assert (r["rows_read"], r["rows"], r["rows_skipped"]) == (9, 8, 1)
    assert r["skipped_examples"][0]["row"] == 4
    assert r["rows_by_schema"] == {"alpaca": 8}
    assert r["roles"] == {"user": 8, "assistant": 8}
    assert r["empty_fields"]["counts"] == {"assistant": 1}
    assert r["empty_fields"]["examples"]["assistant"] == [{"file": str(dataset), "row": 6}]
    assert r["short_answers"]["rows"] == 1
    assert r["exact_duplicates"]["groups"] == 1 and r["exact_duplicates"]["rows_removable"] == 1
    assert [s["row"] for s in r["exact_duplicates"]["examples"][0]] == [1, 2]
    assert r["near_duplicates"]["groups"] == 1
    assert [s["row"] for s in r["near_duplicates"]["examples"][0]] == [1, 3]
    assert r["placeholders"]["counts"] == {"{{name}}": 2}
    assert r["placeholders"]["rows_by_placeholder"] == {"{{name}}": 1}
    assert r["secrets"]["counts"] == {"openai key": 1}
    assert r["pii"]["counts"] == {"email": 1}
    assert r["broken_text"]["counts"] == {"mojibake": 1}
    assert r["tokens"] is None
    assert r["chars"]["row"]["count"] == 8 and sum(r["chars"]["row"]["histogram"]["counts"]) == 8


def test_secrets_never_in_output(dataset):
    report = inspect_dataset(dataset)
    text, blob = format_report(report), json.dumps(report.to_json(), ensure_ascii=False)
    assert SECRET not in text and SECRET not in blob
    assert "sk-pr…no" in text and "sk-pr…no" in blob


def test_tokens_and_over_limit(dataset):
    transformers = pytest.importorskip("transformers")
    from workbench.data.render import render_conversation

    tok = transformers.AutoTokenizer.from_pretrained(TINY)
    r = inspect_dataset(dataset, tokenizer=tok, max_seq_len=40).to_json()
    t = r["tokens"]["row"]
    assert t["count"] == 8 and t["min"] <= t["p50"] <= t["max"]
    assert sum(t["histogram"]["counts"]) == 8
    over = r["tokens"]["over_limit"]
    first = {"messages": [{"role": "user", "content": "Capital of France?"},
                          {"role": "assistant", "content": LONG}]}
    exact = render_conversation(tok, first["messages"], max_seq_len=40)
    assert exact.truncated
    assert over["examples"][0] == {"source": {"file": str(dataset), "row": 1},
                                   "tokens": len(render_conversation(tok, first["messages"]).input_ids),
                                   "answer_tokens_lost": exact.answer_tokens_lost}
    assert over["rows"] >= 3 and over["answer_tokens_lost"] >= 3 * exact.answer_tokens_lost


def test_records_progress_cancel_and_no_near():
    recs = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
             "source": {"file": "mem", "row": i}} for i in range(5000)]
    calls = []

    class Stop:
        def is_set(self):
            return True

    r = inspect_dataset(recs, progress=lambda d, t: calls.append((d, t)), cancel=Stop(), near_dups=False)
    assert r.cancelled and r.rows == 2048 and calls == [(2048, None)]
    assert r.near_duplicates is None
    assert "CANCELLED" in format_report(r)


@pytest.mark.skipif(not (SHARED / "identity.json").exists(), reason="shared data absent")
def test_identity_placeholders():
    r = inspect_dataset(SHARED / "identity.json").to_json()
    text = (SHARED / "identity.json").read_text()
    assert r["placeholders"]["counts"]["{{name}}"] == text.count("{{name}}")
    assert r["placeholders"]["counts"]["{{author}}"] == text.count("{{author}}")


@pytest.mark.skipif(not (SHARED / "alpaca_en_demo.json").exists(), reason="shared data absent")
def test_alpaca_demo_inspects():
    r = inspect_dataset(SHARED / "alpaca_en_demo.json")
    assert r.rows > 0 and r.rows_skipped == 0
    assert "Problems" in format_report(r)


def test_inspect_counts_training_rows_per_answer_and_template_notes():
    """Conversations a template renders one row per answer are counted as the rows they become."""
    pytest.importorskip("transformers")
    from chat_template_corpus import family_tokenizer

    def chat(turns, system=False):
        head = [{"role": "system", "content": "Be brief."}] if system else []
        return {"messages": head + [m for k in range(turns) for m in (
            {"role": "user", "content": f"question {k}"}, {"role": "assistant", "content": f"answer {k}"})]}

    records = [chat(1), chat(2), chat(3, system=True)]
    qwen3 = inspect_dataset(records, tokenizer=family_tokenizer("qwen3")).to_json()["tokens"]["template"]
    assert (qwen3["rows_in"], qwen3["rows_out"], qwen3["per_answer_conversations"]) == (3, 6, 2)
    assert "renders earlier turns differently" in qwen3["why"][0]
    llama = inspect_dataset(records, tokenizer=family_tokenizer("llama-3.1")).to_json()["tokens"]["template"]
    assert (llama["rows_out"], llama["per_answer_conversations"]) == (3, 0)
    report = inspect_dataset(records, tokenizer=family_tokenizer("gemma-2"))
    gemma = report.to_json()["tokens"]["template"]
    assert gemma["rows_out"] == 3 and any("folded into the first user turn" in n for n in gemma["notes"])
    assert "folded into the first user turn" in format_report(report)
