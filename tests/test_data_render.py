"""Rendering conversations through a real chat template into input_ids + assistant_masks."""

from __future__ import annotations

import os
import threading

import pytest

from _tokenizers import NO_END_TEMPLATE, NO_SYSTEM_TEMPLATE, build_chatml_tokenizer, trained_segments
from workbench.data import (
    DataError,
    TemplateError,
    check_template,
    format_rendered,
    render_conversation,
    render_dataset,
)
from workbench.data.chat_format import ChatFormat
from workbench.data.render import render_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    return build_chatml_tokenizer(tmp_path_factory.mktemp("chatml"))


@pytest.fixture(scope="module")
def no_system(tmp_path_factory):
    return build_chatml_tokenizer(tmp_path_factory.mktemp("nosys"), NO_SYSTEM_TEMPLATE)


@pytest.fixture(scope="module")
def no_template(tmp_path_factory):
    return build_chatml_tokenizer(tmp_path_factory.mktemp("notemplate"), chat_template=None)


def conversation(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


ONE_TURN = conversation(
    ("system", "You are a helpful assistant."),
    ("user", "What is two plus two?"),
    ("assistant", "Four, of course."),
)
TWO_TURNS = conversation(
    ("user", "What is two plus two?"),
    ("assistant", "Four."),
    ("user", "And three plus three?"),
    ("assistant", "Six, I think."),
)


def test_text_is_the_real_chat_template(chatml):
    row = render_conversation(chatml, ONE_TURN)
    assert row.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is two plus two?<|im_end|>\n"
        "<|im_start|>assistant\nFour, of course.<|im_end|>\n"
    )
    assert chatml.decode(row.input_ids, skip_special_tokens=False) == row.text
    assert len(row.input_ids) == len(row.assistant_masks)
    assert not row.truncated and row.answer_tokens_lost == 0


def test_mask_covers_exactly_the_answer_and_end_token(chatml):
    row = render_conversation(chatml, ONE_TURN)
    assert trained_segments(chatml, row) == ["Four, of course.<|im_end|>"]
    im_end = chatml.convert_tokens_to_ids("<|im_end|>")
    # The last <|im_end|> (the assistant's) is trained; the system's and user's are not.
    ends = [i for i, t in enumerate(row.input_ids) if t == im_end]
    assert [row.assistant_masks[i] for i in ends] == [0, 0, 1]


def test_multi_turn_masks_both_answers_and_no_user_text(chatml):
    row = render_conversation(chatml, TWO_TURNS)
    assert trained_segments(chatml, row) == ["Four.<|im_end|>", "Six, I think.<|im_end|>"]
    untrained = chatml.decode([t for t, m in zip(row.input_ids, row.assistant_masks) if not m], skip_special_tokens=False)
    assert "What is two plus two?" in untrained and "And three plus three?" in untrained


def test_train_on_all(chatml):
    row = render_conversation(chatml, TWO_TURNS, train_on="all")
    assert all(row.assistant_masks)


def test_unknown_train_on(chatml):
    with pytest.raises(DataError, match="unknown train_on value 'last'"):
        render_conversation(chatml, TWO_TURNS, train_on="last")


def test_truncation_counts_lost_answer_tokens(chatml):
    full = render_conversation(chatml, TWO_TURNS)
    cut = len(full.input_ids) - 3  # the last answer loses its last two tokens plus the newline
    row = render_conversation(chatml, TWO_TURNS, max_seq_len=cut)
    assert row.truncated and len(row.input_ids) == cut == len(row.assistant_masks)
    assert row.answer_tokens_lost == sum(full.assistant_masks[cut:]) == 2
    assert row.input_ids == full.input_ids[:cut]
    assert row.text == full.text  # the text stays whole; only tokens are cut


def test_format_rendered_marks_trained_stretches(chatml):
    view = format_rendered(chatml, render_conversation(chatml, TWO_TURNS))
    assert "assistant\n«Four.<|im_end|>»\n" in view
    assert "«Six, I think.<|im_end|>»" in view
    assert "«" not in view.split("assistant")[0]
    row = render_conversation(chatml, TWO_TURNS)
    as_dict = {"input_ids": row.input_ids, "assistant_masks": row.assistant_masks}
    assert format_rendered(chatml, as_dict, trained_marker=("[", "]")).count("[") == 2


def test_non_ascii_answer_round_trips(chatml):
    row = render_conversation(chatml, conversation(("user", "Café?"), ("assistant", "Oui, café crème ☕")))
    assert trained_segments(chatml, row) == ["Oui, café crème ☕<|im_end|>"]


def test_conversation_starting_with_assistant_is_refused(chatml):
    with pytest.raises(DataError, match="starts with an assistant message"):
        render_conversation(chatml, conversation(("assistant", "Hi")))


# --- template trouble --------------------------------------------------------------------------


def test_no_chat_template(no_template):
    with pytest.raises(TemplateError, match="no chat template") as err:
        render_conversation(no_template, TWO_TURNS)
    assert "model.chat_template" in str(err.value)
    assert "no chat template" in check_template(no_template)[0]


def test_template_refusing_system_messages(no_system):
    # data.system = "keep": refused, with the template's own words and the option that works.
    with pytest.raises(TemplateError, match="System role not supported") as err:
        render_conversation(no_system, ONE_TURN, fmt=ChatFormat(no_system, system="keep"))
    assert 'data.system = "fold"' in err.value.hint
    assert render_conversation(no_system, TWO_TURNS).input_ids  # fine without a system message
    # "auto" (the default) folds the system text into the first user turn and says so.
    fmt = ChatFormat(no_system)
    row = render_conversation(no_system, ONE_TURN, fmt=fmt)
    assert "<|im_start|>user\nYou are a helpful assistant.\n\nWhat is two plus two?" in row.text
    assert check_template(no_system, fmt) == []
    assert any("folded into the first user turn" in note for note in fmt.notes)


def test_check_template_clean_chatml(chatml):
    assert check_template(chatml) == []


def test_check_template_missing_end_token(tmp_path):
    tokenizer = build_chatml_tokenizer(tmp_path, NO_END_TEMPLATE)
    problems = check_template(tokenizer)
    assert any("no end token" in p and "will not learn to stop" in p for p in problems)


def test_check_template_double_bos(tmp_path):
    tokenizer = build_chatml_tokenizer(tmp_path, "{{ bos_token + bos_token }}" + _chatml_body())
    tokenizer.bos_token = "<|endoftext|>"
    assert any("BOS token" in p and "twice" in p for p in check_template(tokenizer))


def test_template_that_is_not_prefix_stable(tmp_path):
    # Renders earlier assistant turns differently from the last one (like reasoning stripping).
    template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['role'] == 'assistant' and not loop.last %}{{ 'old' }}{% else %}{{ message['content'] }}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tokenizer = build_chatml_tokenizer(tmp_path, template)
    rows = render_rows(tokenizer, TWO_TURNS)  # one row per answer, each as inference renders it
    assert [r.method for r in rows] == ["per-turn", "per-turn"]
    assert [''.join(trained_segments(tokenizer, r)) for r in rows] == ["Four.<|im_end|>", "Six, I think.<|im_end|>"]
    assert rows[1].text.startswith(rows[0].text.replace("Four.", "old"))
    assert all(render_conversation(tokenizer, TWO_TURNS, train_on="all").assistant_masks)


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False
        chat_template = "x"

    with pytest.raises(TemplateError, match="slow .* tokenizer"):
        render_conversation(Slow(), TWO_TURNS)


def _chatml_body() -> str:
    from _tokenizers import CHATML_TEMPLATE

    return CHATML_TEMPLATE


# --- datasets ----------------------------------------------------------------------------------


def record(messages, row):
    return {"messages": messages, "source": {"file": "d.jsonl", "row": row}}


def test_render_dataset_drops_and_reports_rows_with_nothing_trainable(chatml):
    long_prompt = conversation(("user", "The quick brown fox jumps over the lazy dog. " * 8), ("assistant", "Yes."))
    short = record(TWO_TURNS, 1)
    records = [short, record(long_prompt, 2), record(ONE_TURN, 3)]
    limit = len(render_conversation(chatml, TWO_TURNS).input_ids)
    calls = []
    rows, stats = render_dataset(chatml, records, max_seq_len=limit, progress=lambda d, t: calls.append((d, t)))

    assert len(rows) == stats.rows_out == 2
    assert set(rows[0]) == {"input_ids", "assistant_masks"}
    assert stats.rows_in == 3
    assert len(stats.dropped) == 1
    file, row_no, reason = stats.dropped[0]
    assert (file, row_no) == ("d.jsonl", 2)
    assert "max_seq_len" in reason
    assert stats.truncated_rows >= 1 and stats.answer_tokens_lost >= 2
    assert stats.total_tokens == sum(len(r["input_ids"]) for r in rows)
    assert stats.trained_tokens == sum(sum(r["assistant_masks"]) for r in rows)
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)


def test_render_dataset_cancel(chatml):
    cancel = threading.Event()
    cancel.set()
    rows, stats = render_dataset(chatml, iter([record(TWO_TURNS, 1)]), cancel=cancel)
    assert rows == [] and stats.cancelled and stats.rows_in == 0


def test_render_dataset_errors_name_the_source(no_system):
    with pytest.raises(TemplateError, match=r"d.jsonl: row 7: the chat template of .* failed to render"):
        render_dataset(no_system, [record(ONE_TURN, 7)], fmt=ChatFormat(no_system, system="keep"))


def test_rows_feed_trl_style_columns(chatml):
    rows, _ = render_dataset(chatml, [record(TWO_TURNS, 1)])
    (row,) = rows
    assert isinstance(row["input_ids"], list) and set(row["assistant_masks"]) == {0, 1}


# Two more template families, written after the published ones: Llama 3 (header tokens,
# <|eot_id|>, BOS emitted by the template) and Mistral v0.3 ([INST] blocks, the system prompt
# folded into the last user turn, </s> closing answers). The mask must find the answers in both.
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ '<s>' }}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.last and system %}{{ '[INST] ' + system + '\n\n' + message['content'] + '[/INST]' }}"
    "{% else %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + '</s>' }}{% endif %}"
    "{% endfor %}"
)


@pytest.mark.parametrize("template, expected", [
    (LLAMA3_TEMPLATE, ["Four.<|eot_id|>", "Six, I think.<|eot_id|>"]),
    (MISTRAL_TEMPLATE, [" Four.</s>", " Six, I think.</s>"]),
], ids=["llama3", "mistral"])
def test_mask_on_other_template_families(tmp_path, template, expected):
    tok = build_chatml_tokenizer(tmp_path, chat_template=template)
    row = render_conversation(tok, TWO_TURNS)
    assert trained_segments(tok, row) == expected


def test_tools_reach_templates_that_render_them(tmp_path):
    # Templates read tools in the OpenAI / transformers shape; bare function schemas (glaive,
    # ShareGPT data) are wrapped as {"type": "function", "function": ...} on the way in.
    template = ("{% if tools %}{{ '<|im_start|>system\nTools: ' + (tools | map(attribute='function') | map(attribute='name') | join(', ')) + '<|im_end|>\n' }}{% endif %}"
                + "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
                + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tok = build_chatml_tokenizer(tmp_path, chat_template=template)
    messages = conversation(("user", "Weather in Paris?"),
                            ("assistant", '{"name": "weather", "arguments": {"city": "Paris"}}'),
                            ("tool", '{"temp": 21}'), ("assistant", "It is 21 degrees."))
    row = render_conversation(tok, messages, tools=[{"name": "weather"}])
    assert row.text.startswith("<|im_start|>system\nTools: weather")
    assert trained_segments(tok, row) == [
        '{"name": "weather", "arguments": {"city": "Paris"}}<|im_end|>', "It is 21 degrees.<|im_end|>"]


def test_plain_text_records_train_every_token_without_a_template(chatml):
    record = {"messages": [{"role": "assistant", "content": "The quick brown fox."}],
              "text_only": True, "source": {"file": "t.jsonl", "row": 1}}
    rows, stats = render_dataset(chatml, [record])
    ids = rows[0]["input_ids"]
    assert all(rows[0]["assistant_masks"])
    assert ids[-1] == chatml.eos_token_id
    assert chatml.decode(ids[:-1]) == "The quick brown fox."
