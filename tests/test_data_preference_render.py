"""Rendering preference pairs on real chat templates: exactly each final answer is trained.

For every template family in tests/chat_templates (reasoning templates included: Qwen3, QwQ,
DeepSeek-R1 distills, gpt-oss) a pair with a multi-turn prompt must train exactly the chosen and
the rejected answer, each with the template's own wrapping and end-of-turn marker, nothing of
the prompt (earlier answers included), and both sides must share the same prompt tokens: the
tokens SFT's mask leaves untrained before the answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _tokenizers import build_chatml_tokenizer, trained_segments
from chat_template_corpus import FAMILIES, family_tokenizer
from workbench.data.errors import DataError
from workbench.data.preference_render import (
    PairDropped,
    RenderedPair,
    format_pair,
    render_pair,
    render_preference_dataset,
    render_unpaired,
)
from workbench.data.render import render_conversation

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "assets" / "tiny-model"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

SYSTEM = "You are terse and exact."
HISTORY = [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}]
QUESTION = {"role": "user", "content": "And three plus three?"}
CHOSEN = "Six, which is even."
REJECTED = "Seven."

# What a template may put around an answer inside the trained span (as tests/test_chat_templates.py).
_WRAP = {
    "qwen3": r"<think>\n\n</think>\n\n",
    "gpt-oss": r"<\|channel\|>final<\|message\|>",
    "deepseek-r1-qwen": r"(\n\n)?",
    "deepseek-r1-llama": r"(\n\n)?",
}


def pair_record(system: bool = True, history: bool = True) -> dict:
    prompt = ([{"role": "system", "content": SYSTEM}] if system else []) + (HISTORY if history else []) + [QUESTION]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": CHOSEN}],
            "rejected": [{"role": "assistant", "content": REJECTED}], "source": {"file": "pairs.jsonl", "row": 3}}


def check_answer(name: str, text: str, answer: str) -> None:
    family = FAMILIES[name]
    ends = "|".join(re.escape(e) for e in family.end)
    pattern = f"{_WRAP.get(name, '')}{re.escape(answer)}\\s*({ends})"
    assert re.fullmatch(pattern, text), f"{name}: trained {text!r}, expected /{pattern}/"


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("system,history", [(False, False), (True, True)])
def test_pair_trains_exactly_each_answer_on_real_templates(name, system, history):
    tok = family_tokenizer(name)
    record = pair_record(system, history)
    pair = render_pair(tok, record)
    for side, ids, row, answer in (("chosen", pair.chosen_ids, pair.chosen, CHOSEN),
                                   ("rejected", pair.rejected_ids, pair.rejected, REJECTED)):
        check_answer(name, tok.decode(ids, skip_special_tokens=False), answer)
        # the row is the trained sequence: prompt_ids, then exactly the answer's tokens marked
        assert row.input_ids == pair.prompt_ids + ids
        assert row.assistant_masks == [0] * len(pair.prompt_ids) + [1] * len(ids)
        assert trained_segments(tok, row) == [tok.decode(ids, skip_special_tokens=False)]
        prompt_text = tok.decode(pair.prompt_ids, skip_special_tokens=False)
        assert QUESTION["content"] in prompt_text and answer not in prompt_text
        if history:
            assert "Four." in prompt_text  # the earlier answer is context, not trained
        # What SFT trains for this answer (its last trained stretch) is what the pair trains.
        sft = render_conversation(tok, record["prompt"] + record[side])
        assert trained_segments(tok, sft)[-1] == tok.decode(ids, skip_special_tokens=False)
        assert sft.input_ids[: len(pair.prompt_ids)] == pair.prompt_ids
    assert not pair.truncated


@pytest.mark.parametrize("name", ["qwen2.5", "llama-3.1", "qwen3", "smollm3"])
def test_prompt_ids_are_the_generation_prompt(name):
    tok = family_tokenizer(name)
    record = pair_record(system=True, history=True)
    pair = render_pair(tok, record)
    expected = tok.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    assert tok.decode(pair.prompt_ids, skip_special_tokens=False) == expected


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1-qwen"])
def test_reasoning_answers_on_reasoning_templates(name):
    tok = family_tokenizer(name)
    record = pair_record(system=False, history=True)
    record["chosen"] = [{"role": "assistant", "content": CHOSEN, "reasoning_content": "Three and three make six."}]
    pair = render_pair(tok, record)
    chosen = tok.decode(pair.chosen_ids, skip_special_tokens=False)
    if name == "qwen3":  # renders the last answer's reasoning: it is trained
        assert chosen == f"<think>\nThree and three make six.\n</think>\n\n{CHOSEN}<|im_end|>"
        assert pair.chosen.reasoning_untrained == 0
    else:  # the R1 distill template strips reasoning: not trained, and said so
        assert "Three and three" not in chosen and CHOSEN in chosen
        assert pair.chosen.reasoning_untrained == 1
    assert tok.decode(pair.rejected_ids, skip_special_tokens=False).endswith(f"{REJECTED}<|im_end|>"
                                                                            if name == "qwen3" else REJECTED + "<｜end▁of▁sentence｜>")


def test_tool_call_answer_is_trained_as_the_template_writes_it():
    tok = family_tokenizer("qwen2.5")
    record = pair_record(system=False, history=False)
    record["tools"] = [{"name": "add", "parameters": {"type": "object", "properties": {}}}]
    record["chosen"] = [{"role": "assistant", "content": json.dumps({"name": "add", "arguments": {"a": 3}}),
                         "tool_call": True}]
    pair = render_pair(tok, record)
    chosen = tok.decode(pair.chosen_ids, skip_special_tokens=False)
    assert chosen.startswith("<tool_call>") and '"add"' in chosen and chosen.endswith("<|im_end|>")


def test_unpaired_completion_on_a_real_template():
    tok = family_tokenizer("llama-3.1")
    record = {"prompt": HISTORY + [QUESTION], "completion": [{"role": "assistant", "content": CHOSEN}],
              "label": False, "source": {"file": "k.jsonl", "row": 1}}
    rendered = render_unpaired(tok, record)
    assert rendered.label is False
    assert tok.decode(rendered.completion_ids, skip_special_tokens=False) == CHOSEN + "<|eot_id|>"
    assert rendered.row.input_ids == rendered.prompt_ids + rendered.completion_ids
    text = format_pair(tok, rendered)
    assert f"«{CHOSEN}<|eot_id|>»" in text and "label false: undesirable" in text


# --- the bundled tiny model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    if not (TINY / "tokenizer.json").exists():
        pytest.skip("assets/tiny-model is missing")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def test_tiny_model_pair_and_format_pair(tiny):
    pair = render_pair(tiny, pair_record())
    assert tiny.decode(pair.chosen_ids, skip_special_tokens=False) == CHOSEN + "<|im_end|>"
    assert tiny.decode(pair.rejected_ids, skip_special_tokens=False) == REJECTED + "<|im_end|>"
    assert tiny.decode(pair.prompt_ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    text = format_pair(tiny, pair)
    assert f"«{CHOSEN}<|im_end|>»" in text and f"«{REJECTED}<|im_end|>»" in text
    assert text.index("chosen") < text.index("rejected") and "«" not in text.split("── chosen")[0]


def test_truncation_keeps_the_prompt_and_cuts_the_answers_end(tiny):
    record = pair_record()
    full = render_pair(tiny, record)
    budget = len(full.prompt_ids) + 2
    cut = render_pair(tiny, record, max_seq_len=budget)
    assert cut.prompt_ids == full.prompt_ids and cut.truncated
    assert cut.chosen_ids == full.chosen_ids[:2] and cut.rejected_ids == full.rejected_ids[:2]
    assert cut.answer_tokens_lost == len(full.chosen_ids) + len(full.rejected_ids) - 4
    assert len(cut.chosen.input_ids) == budget and cut.chosen.truncated
    with pytest.raises(PairDropped, match="no answer token fits"):
        render_pair(tiny, record, max_seq_len=len(full.prompt_ids))


def test_render_dataset_drops_with_file_row_and_why(tiny):
    good = pair_record()
    same = {**pair_record(), "rejected": [{"role": "assistant", "content": CHOSEN}], "source": {"file": "p", "row": 4}}
    long_prompt = {**pair_record(), "prompt": [{"role": "user", "content": "word " * 400}],
                   "source": {"file": "p", "row": 5}}
    full = render_pair(tiny, good)
    rows, stats = render_preference_dataset(tiny, [good, same, long_prompt], max_seq_len=len(full.prompt_ids) + 50)
    assert len(rows) == 1 and set(rows[0]) == {"prompt_ids", "chosen_ids", "rejected_ids", "prompt", "chosen",
                                               "rejected", "source"}
    assert rows[0]["chosen_ids"] == full.chosen_ids and rows[0]["source"] == good["source"]
    assert [(f, r) for f, r, _ in stats.dropped] == [("p", 4), ("p", 5)]
    assert "same answer" in stats.dropped[0][2] and "prompt alone" in stats.dropped[1][2]
    assert stats.rows_in == 3 and stats.rows_out == 1
    assert stats.trained_tokens == len(full.chosen_ids) + len(full.rejected_ids)
    assert stats.total_tokens == 2 * len(full.prompt_ids) + stats.trained_tokens
    assert "3 pairs in, 1 rendered, 2 dropped" in stats.describe()


def test_render_dataset_unpaired(tiny):
    rows = [{"prompt": [QUESTION], "completion": [{"role": "assistant", "content": a}], "label": label,
             "source": {"file": "k", "row": i}} for i, (a, label) in enumerate([("Six.", True), ("Nine.", False)])]
    out, stats = render_preference_dataset(tiny, rows)
    assert [r["label"] for r in out] == [True, False] and stats.kind == "unpaired"
    assert tiny.decode(out[1]["completion_ids"], skip_special_tokens=False) == "Nine.<|im_end|>"


def test_real_dpo_sample_renders_with_the_tiny_model(tiny):
    path = SHARED_DATA / "dpo_en_demo.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from workbench.data.preference import load_preference_records

    records = load_preference_records(path)[:40]
    rows, stats = render_preference_dataset(tiny, records, max_seq_len=1024)
    assert stats.rows_out + len(stats.dropped) == 40 == stats.rows_in
    assert all(why for _, _, why in stats.dropped)
    for row, record in zip(rows, [r for r in records if r["source"] in [x["source"] for x in rows]]):
        assert len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 1024
        assert row["chosen"] == record["chosen"]


def test_cli_show_marks_both_sides(tiny, tmp_path, capsys):
    from workbench.data.cli import data_main

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."}) + "\n",
                    encoding="utf-8")
    assert data_main(["data", "show", str(path), "--row", "1", "--model", str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "a preference pair (pairs)" in out
    assert "«Four.<|im_end|>»" in out and "«Five.<|im_end|>»" in out
    assert data_main(["data", "show", str(path), "--row", "1", "--model", str(TINY), "--train-on", "all"]) == 2
    assert "answers only" in capsys.readouterr().err


def test_cli_inspect_with_a_tokenizer_counts_trained_tokens(tiny, tmp_path, capsys):
    from workbench.data.cli import data_main

    rows = [{"prompt": f"Question {i}?", "chosen": "A fairly long and careful answer. " * 4, "rejected": "No."}
            for i in range(6)]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert data_main(["data", "inspect", str(path), "--model", str(TINY), "--max-seq-len", "32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tokens = report["lengths"]["tokens"]
    assert tokens["rejected"]["median"] == len(tiny("No.<|im_end|>", add_special_tokens=False)["input_ids"])
    assert tokens["chosen_longer_share"] == 1.0 and "longer" in report["length_bias"]
    assert report["tokens"]["over_limit"]["rows"] == 6


# --- templates that render the prompt differently per answer -------------------------------------


def test_sides_with_different_prompt_tokens_are_dropped_with_why(tmp_path):
    # The generation prompt ends with a space: " Four" is one token, so the chosen answer takes
    # the space from the prompt, while "\nFive." leaves it there. The sides' prompt tokens differ.
    template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    tok = build_chatml_tokenizer(tmp_path, template)
    record = pair_record(system=False, history=False)
    record["chosen"] = [{"role": "assistant", "content": "Four."}]
    record["rejected"] = [{"role": "assistant", "content": "\nFive."}]
    with pytest.raises(PairDropped, match="renders the prompt differently"):
        render_pair(tok, record)
    rows, stats = render_preference_dataset(tok, [record])
    assert rows == [] and stats.dropped[0][:2] == ("pairs.jsonl", 3)
    assert "renders the prompt differently" in stats.dropped[0][2]
    record["rejected"] = [{"role": "assistant", "content": "Five."}]  # both answers start alike: fine
    assert tok.decode(render_pair(tok, record).chosen_ids) == " Four.<|im_end|>"


def test_a_template_failure_names_the_row(tmp_path):
    tok = build_chatml_tokenizer(tmp_path, "{{ raise_exception('no') }}")
    with pytest.raises(DataError) as err:
        render_preference_dataset(tok, [pair_record()])
    assert not isinstance(err.value, PairDropped)
    assert err.value.file == "pairs.jsonl" and "row 3" in err.value.message


def test_rendered_pair_is_the_documented_dataclass():
    fields = RenderedPair.__dataclass_fields__
    assert list(fields)[:6] == ["prompt_ids", "chosen_ids", "rejected_ids", "chosen", "rejected", "truncated"]
