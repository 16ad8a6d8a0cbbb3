"""Answer-only loss masks on real chat templates (tests/chat_templates, see SOURCES.md).

For every family and every conversation shape (with and without a system message, 1 to 3 turns,
tool use where the template takes tools, reasoning where it has it) the trained tokens must
decode to exactly the answers, each with the template's own wrapping and end-of-turn marker, and
nothing of the prompts; every answer is trained exactly once across a conversation's rows.
Templates that cannot handle a shape must refuse with a message naming the template, never a
traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _tokenizers import trained_segments
from chat_template_corpus import FAMILIES, family_tokenizer
from workbench.data.chat_format import ChatFormat
from workbench.data.errors import DataError, TemplateError
from workbench.data.render import render_dataset, render_rows

SYSTEM = "You are terse and exact."
TURNS = [
    ("What is two plus two?", "Four."),
    ("And three plus three?", "Six, which is even."),
    ("Name a colour of the sky.", "Blue."),
]
REASONING = ["Two and two make four.", "Three and three make six.", "The sky scatters blue light."]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                   "required": ["city"]}}}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
RESULT = '{"temp_c": 21}'
FINAL = "It is 21 degrees in Paris."


def conversation(turns: int, system: bool, reasoning: bool = False) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}] if system else []
    for i, (question, answer) in enumerate(TURNS[:turns]):
        messages.append({"role": "user", "content": question})
        reply = {"role": "assistant", "content": answer}
        if reasoning:  # both ways datasets carry it: a field, and a <think> block in the content
            if i % 2 == 0:
                reply["reasoning_content"] = REASONING[i]
            else:
                reply["content"] = f"<think>\n{REASONING[i]}\n</think>\n\n{answer}"
        messages.append(reply)
    return messages


def tool_conversation(system: bool) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}] if system else []
    return messages + [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": json.dumps(CALL), "tool_call": True},
        {"role": "tool", "content": RESULT},
        {"role": "assistant", "content": FINAL},
    ]


# What a template may put around an answer inside the trained span (R = that answer's reasoning).
_WRAP = {
    "qwen3": r"<think>\n(R)?\n</think>\n\n",
    "qwq": r"(R\n</think>\n\n)?",  # its generation prompt opens "<think>\n" itself
    "gpt-oss": r"(<\|channel\|>analysis<\|message\|>R<\|end\|><\|start\|>assistant)?<\|channel\|>final<\|message\|>",
    "deepseek-r1-qwen": r"(\n\n)?",  # reasoning is removed by the template; "\n\n" after </think> stays
    "deepseek-r1-llama": r"(\n\n)?",
}
_INLINE = r"(<think>\nR\n</think>\n\n)?"  # templates without a reasoning field get it inline


def check_answer_segment(name: str, segment: str, answer: str, reasoning: str | None) -> None:
    family = FAMILIES[name]
    wrap = _WRAP.get(name, _INLINE if family.reasoning == "none" else "")
    wrap = wrap.replace("R", re.escape(reasoning or "")) if reasoning else wrap.replace("R", "")
    ends = "|".join(re.escape(e) for e in family.end)
    pattern = f"{wrap}{re.escape(answer)}\\s*({ends})"
    assert re.fullmatch(pattern, segment), f"{name}: trained {segment!r}, expected /{pattern}/"


def check_no_prompt(segments: list[str], messages: list[dict]) -> None:
    for m in messages:
        if m["role"] in ("user", "system", "tool"):
            for segment in segments:
                assert m["content"] not in segment, f"prompt text {m['content']!r} trained in {segment!r}"


SHAPES = [(turns, system) for turns in (1, 2, 3) for system in (False, True)]


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("turns,system", SHAPES)
def test_answers_and_only_answers_are_trained(name, turns, system):
    tok = family_tokenizer(name)
    messages = conversation(turns, system)
    rows = render_rows(tok, messages)
    segments = [s for row in rows for s in trained_segments(tok, row)]
    answers = [a for _, a in TURNS[:turns]]
    assert len(segments) == len(answers), segments
    for segment, answer in zip(segments, answers):
        check_answer_segment(name, segment, answer, None)
    check_no_prompt(segments, messages)
    one_row = FAMILIES[name].method == "prefix" and not (system and FAMILIES[name].system_moves)
    expected_rows = 1 if one_row or turns == 1 else turns
    assert len(rows) == expected_rows
    if system:  # the system text reaches the model (kept or folded), in every row
        assert all(SYSTEM in row.text for row in rows)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_reasoning_is_trained_in_the_last_turn(name):
    tok = family_tokenizer(name)
    messages = conversation(3, system=False, reasoning=True)
    rows = render_rows(tok, messages)
    assert len(rows) == 3  # one row per answer: history reasoning is left out, as at inference
    for i, row in enumerate(rows):
        segments = trained_segments(tok, row)
        assert len(segments) == 1
        stripped = FAMILIES[name].reasoning == "stripped"
        check_answer_segment(name, segments[0], TURNS[i][1], None if stripped else REASONING[i])
        assert row.reasoning_untrained == (1 if stripped else 0)
        for earlier in REASONING[:i]:  # earlier answers' reasoning is not in the history
            assert earlier not in row.text


@pytest.mark.parametrize("name", list(FAMILIES))
def test_reasoning_drop_trains_answers_only(name):
    tok = family_tokenizer(name)
    fmt = ChatFormat(tok, reasoning="drop")
    rows = render_rows(tok, conversation(2, system=False, reasoning=True), fmt=fmt)
    for row in rows:
        assert not any(r in row.text for r in REASONING)


TOOL_FAMILIES = [n for n, f in FAMILIES.items() if f.tools]


@pytest.mark.parametrize("name", TOOL_FAMILIES)
@pytest.mark.parametrize("system", [False, True])
def test_tool_calls_render_and_train_as_the_template_writes_them(name, system):
    tok = family_tokenizer(name)
    messages = tool_conversation(system)
    rows = render_rows(tok, messages, tools=TOOLS)
    segments = [s for row in rows for s in trained_segments(tok, row)]
    assert len(segments) == 2, segments
    call, final = segments
    assert "get_weather" in call and "Paris" in call and RESULT not in call
    check_answer_segment(name, final, FINAL, None)
    check_no_prompt(segments, messages)
    assert all("get_weather" in row.text for row in rows)  # the tool schema reached the prompt
    assert "temp_c" in rows[-1].text  # and the result the history


@pytest.mark.parametrize("name", ["gemma-2", "phi-3.5"])
def test_templates_without_tool_results_refuse_with_the_reason(name):
    tok = family_tokenizer(name)
    with pytest.raises(TemplateError) as err:
        render_rows(tok, tool_conversation(False), tools=TOOLS)
    assert "does not render tool results" in err.value.message
    assert str(tok.name_or_path) in err.value.message  # names the template's source
    assert err.value.hint


def test_hermes_tool_template_renders_a_conversation_without_tools():
    """Hermes-3 loops over `tools` unconditionally: it gets [] rather than None (was a TypeError)."""
    tok = family_tokenizer("hermes-3")
    rows = render_rows(tok, conversation(1, system=False))
    assert trained_segments(tok, rows[0]) == ["Four.<|im_end|>"]


def test_gemma_system_modes():
    tok = family_tokenizer("gemma-2")
    messages = conversation(1, system=True)
    fmt = ChatFormat(tok)
    rows = render_rows(tok, messages, fmt=fmt)
    assert f"<start_of_turn>user\n{SYSTEM}\n\n{TURNS[0][0]}" in rows[0].text
    assert any("folded into the first user turn" in n and "refuses a system role" in n for n in fmt.notes)
    dropped = render_rows(tok, messages, fmt=ChatFormat(tok, system="drop"))
    assert SYSTEM not in dropped[0].text
    with pytest.raises(TemplateError) as err:
        render_rows(tok, messages, fmt=ChatFormat(tok, system="keep"))
    assert "System role not supported" in err.value.message
    assert 'data.system = "fold"' in err.value.hint


def test_mistral_nemo_puts_the_system_text_where_inference_does():
    """Nemo renders the system text in the last user turn: each answer's row has it there."""
    tok = family_tokenizer("mistral-nemo")
    rows = render_rows(tok, conversation(2, system=True))
    assert rows[0].text.startswith(f"<s>[INST]{SYSTEM}\n\n{TURNS[0][0]}[/INST]")
    assert f"[INST]{TURNS[0][0]}[/INST]" in rows[1].text
    assert f"[INST]{SYSTEM}\n\n{TURNS[1][0]}[/INST]" in rows[1].text


def test_phi_trains_the_closing_eos_as_the_end_of_the_last_answer():
    tok = family_tokenizer("phi-3.5")
    rows = render_rows(tok, conversation(2, system=True))
    assert trained_segments(tok, rows[0]) == ["Four.<|end|>", "Six, which is even.<|end|>\n<|endoftext|>"]


def test_any_exception_inside_a_template_becomes_a_message():
    tok = family_tokenizer("qwen2.5")
    tok.chat_template = "{% for m in messages %}{{ m.content + 1 }}{% endfor %}"  # str + int: TypeError
    records = [{"messages": conversation(1, False), "source": {"file": "data.jsonl", "row": 7}}]
    with pytest.raises(DataError) as err:
        render_dataset(tok, records)
    text = str(err.value)
    assert "data.jsonl" in text and "row 7" in text and "failed to render" in text
    assert "TypeError" in text and "Traceback" not in text


def test_render_dataset_reports_rows_in_rows_out_and_why():
    tok = family_tokenizer("qwen3")
    records = [{"messages": conversation(n, True), "source": {"file": "d.jsonl", "row": n}} for n in (1, 2, 3)]
    rows, stats = render_dataset(tok, records)
    assert (stats.rows_in, stats.rows_out, len(rows)) == (3, 6, 6)
    assert stats.per_turn_rows == 5
    text = stats.describe_expansion()
    assert "2 conversations with several answers became 5 rows" in text
    assert "renders earlier turns differently" in text


def test_untrained_reasoning_is_reported():
    tok = family_tokenizer("deepseek-r1-qwen")
    records = [{"messages": conversation(2, False, reasoning=True), "source": {}}]
    _, stats = render_dataset(tok, records)
    assert stats.reasoning_untrained == 2
    assert "not trained" in stats.describe_reasoning()


GENERATION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_generation_blocks_mark_the_answers():
    tok = family_tokenizer("qwen2.5")
    tok.chat_template = GENERATION_TEMPLATE
    rows = render_rows(tok, conversation(2, True))
    assert len(rows) == 1 and rows[0].method == "generation"
    assert trained_segments(tok, rows[0]) == ["Four.<|im_end|>", "Six, which is even.<|im_end|>"]


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "llama-3.1", "hermes-3", "mistral-nemo", "gpt-oss"])
def test_real_tool_call_dataset_renders_through_tool_templates(name):
    """The 300 real ShareGPT tool-use conversations (glaive sample): every call is trained, as
    the template writes calls, and no tool result is trained."""
    path = SHARED_DATA / "glaive_toolcall_en_demo.json"
    if not path.is_file():
        pytest.skip(f"real sample {path} is not present")
    from workbench.data import load_records

    tok = family_tokenizer(name)
    records = load_records(path)
    rows, stats = render_dataset(tok, records)
    assert stats.rows_in == 300 and not stats.dropped
    calls = [m for r in records for m in r["messages"] if m.get("tool_call")]
    trained = [tok.decode([t for t, bit in zip(r["input_ids"], r["assistant_masks"]) if bit],
                          skip_special_tokens=False) for r in rows]
    joined = "\n".join(trained)
    names = {json.loads(c["content"])["name"] for c in calls}
    assert all(n in joined for n in names)
    results = [m["content"] for r in records for m in r["messages"] if m["role"] == "tool"]
    assert not any(len(res) > 20 and res in joined for res in results)


OLLAMA_REFUSED = {"gemma-2", "phi-3.5", "mistral-nemo", "gpt-oss"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_ollama_template_reproduces_the_training_prompt_or_says_why_not(name):
    """The Modelfile's Go TEMPLATE is checked against the prompt training used (the run's
    ChatFormat); templates it cannot express are refused with the reason, never a traceback."""
    from types import SimpleNamespace

    from workbench.export.common import ExportError
    from workbench.export.ollama import build_modelfile

    tok = family_tokenizer(name)
    profile = SimpleNamespace(data=SimpleNamespace(system_prompt="Be brief.", system="auto", reasoning="keep"))
    if name in OLLAMA_REFUSED:
        with pytest.raises(ExportError) as err:
            build_modelfile(tok, profile, "./model")
        assert "cannot derive an Ollama TEMPLATE" in err.value.message and err.value.hint
    else:
        text, stops = build_modelfile(tok, profile, "./model")
        assert "TEMPLATE" in text and stops
