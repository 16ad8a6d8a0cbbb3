"""The built-in GRPO rewards: right, wrong and malformed completions, specs, and real tool rows."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from workbench.rewards.builtin import (
    BUILTINS, builtin_for, extract_answer, find_tool_calls, numbers_in, text_of,
)

OPTIONS = SimpleNamespace(answer_column="answer", answer_tag="answer", tolerance=1e-6,
                          schema_column="schema", tools_column="tools")
GLAIVE = Path("/work/shared/data/glaive_toolcall_en_demo.json")


def reward(spec, options=OPTIONS):
    found = builtin_for(spec)
    assert found, spec
    builtin, arg = found
    return builtin.make(arg, options)


def chat(text):
    return [{"role": "assistant", "content": text}]


def scores(spec, completions, options=OPTIONS, **columns):
    """Score string completions, and the same as conversations: both must agree."""
    f = reward(spec, options)
    plain = f(["p"] * len(completions), completions, **columns, trainer_state=None,
              log_extra=None, log_metric=None)
    assert f(["p"] * len(completions), [chat(c) for c in completions], **columns) == plain
    assert all(isinstance(s, float) for s in plain)
    return plain


def test_text_of():
    assert text_of("hi") == "hi"
    assert text_of(chat("hi")) == "hi"
    assert text_of({"role": "assistant", "content": "hi"}) == "hi"
    conversation = [{"role": "assistant", "content": "a"}, {"role": "tool", "content": "out"},
                    {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]
    assert text_of(conversation) == "a\nb"


def test_builtin_for():
    assert builtin_for("regex:^a:b") == (BUILTINS["regex"], "^a:b")
    assert builtin_for("length:200") == (BUILTINS["length"], "200")
    assert builtin_for("answer:exact") == (BUILTINS["answer:exact"], None)
    assert builtin_for("format:think_answer") == (BUILTINS["format:think_answer"], None)
    assert builtin_for("answer") is None  # a family, not a built-in
    assert builtin_for("answer:exact:x") is None  # takes no argument
    assert builtin_for("my_rewards.py:score") is None
    assert builtin_for("regexp:x") is None


def test_every_builtin_is_described_and_named_by_its_spec():
    for name, b in BUILTINS.items():
        assert b.name == name and b.summary and "\n" not in b.summary
        assert isinstance(b.columns(OPTIONS), tuple)
        spec = {"regex": "regex:^x", "length": "length:5"}.get(name, name)
        assert reward(spec).__name__ == spec
    solution = SimpleNamespace(answer_column="solution")
    assert BUILTINS["answer:exact"].columns(solution) == ("solution",)
    assert BUILTINS["tool_call:valid"].columns(OPTIONS) == ("tools",)
    assert BUILTINS["regex"].columns(OPTIONS) == ()


def test_format_answer_tags():
    assert scores("format:answer_tags", [
        "so <answer>42</answer>", "<answer>  </answer>", "<answer>42", "42", "<ANSWER>4</ANSWER>",
    ]) == [1.0, 0.0, 0.0, 0.0, 0.0]
    other = SimpleNamespace(answer_tag="final")
    assert scores("format:answer_tags", ["<final>4</final>", "<answer>4</answer>"], other) == \
        [1.0, 0.0]


def test_format_think_answer():
    assert scores("format:think_answer", [
        "<think>\n2+2 is 4\n</think>\n<answer>4</answer>\n",
        "<think>x</think><answer> </answer>",          # blank answer: the think block only
        "<answer>4</answer>",                          # answer only
        "Sure! <think>x</think><answer>4</answer>",    # text outside the shape
        "<answer>4</answer><think>x</think>",          # wrong order
        "just 4", "<think></think><answer></answer>", "<think>x<answer>4</answer>",
    ]) == [1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.5]


def test_extract_answer():
    assert extract_answer("<answer>1</answer> no, <answer> 2 </answer>") == "2"
    assert extract_answer("  Paris \n") == "Paris"
    assert extract_answer("<a>x</a>", "a") == "x"


def test_answer_exact():
    refs = ["New  York", "New York", "New York", "new york", 4, None]
    assert scores("answer:exact", [
        "<answer> New\nYork </answer>", "New York City", "<answer>Boston</answer>",
        "<answer>New York</answer>", "<answer>4</answer>", "None",
    ], answer=refs) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_answer_exact_names_the_missing_column():
    with pytest.raises(ValueError, match="'answer'.*they have: question"):
        reward("answer:exact")(["p"], ["x"], question=["q"], trainer_state=None)


def test_numbers_in():
    assert numbers_in("1,234.5 and -3, then 3/4") == [1234.5, -3.0, 0.75]
    assert numbers_in("from 3-5 items; x=-2; .5; $2,000.") == [3.0, 5.0, -2.0, 0.5, 2000.0]
    assert numbers_in("no digits") == []


def test_answer_numeric():
    completions = [
        "<think>6*12</think><answer>72</answer>", "The total is $1,234.",
        "<answer>72.0000001</answer>",
        "<answer>73</answer>", "<answer>three</answer>", "<answer>3/4</answer>", "-5 degrees",
        "72", "<answer>I had 3 apples, then 72</answer>",
    ]
    refs = ["Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "1234", 72, "72", "3", "0.75",
            -5, "no number here", "72"]
    assert scores("answer:numeric", completions, answer=refs) == \
        [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    loose = SimpleNamespace(tolerance=0.05)
    assert scores("answer:numeric", ["<answer>74</answer>", "<answer>80</answer>"], loose,
                  answer=[72, 72]) == [1.0, 0.0]


def test_answer_contains():
    assert scores("answer:contains", [
        "The capital is PARIS.", "It is Lyon.", "anything", "anything",
    ], answer=["Paris", "Paris", "  ", None]) == [1.0, 0.0, 0.0, 0.0]


def test_regex():
    assert scores("regex:^\\d+$", ["123", "12a", ""]) == [1.0, 0.0, 0.0]
    assert scores("regex:start.*end", ["start\nmiddle\nend", "end start"]) == [1.0, 0.0]


@pytest.mark.parametrize("spec", ["regex:(unclosed", "regex:*", "regex:[a-"])
def test_bad_regex_names_spec_and_error(spec):
    with pytest.raises(ValueError) as e:
        reward(spec)
    assert spec in str(e.value) and "not a valid regular expression" in str(e.value)


def test_regex_needs_a_pattern():
    with pytest.raises(ValueError, match="needs a pattern"):
        reward("regex")


def test_json_parses():
    assert scores("json:parses", [
        '{"a": 1}', 'Here:\n```json\n{"a": [1, 2]}\n```\nDone.', "```\n[1, 2]\n```",
        '<answer>{"a": 1}</answer> then {broken', '{"a": 1,}', "```json\n{'a': 1}\n```", "",
        "null",
    ]) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def test_json_schema():
    completions = ['{"name": "Ann", "age": 31}', '{"name": "Ann", "age": "31"}', '{"name": "Ann"}',
                   "not json", '```json\n{"name": "Bo", "age": 5}\n```']
    as_text = json.dumps(SCHEMA)  # datasets often keep the schema as a JSON string
    schemas = [SCHEMA, as_text, SCHEMA, SCHEMA, as_text]
    assert scores("json:schema", completions, schema=schemas) == [1.0, 0.5, 0.5, 0.0, 1.0]


def test_json_schema_invalid_schema_names_the_column():
    f = reward("json:schema")
    with pytest.raises(ValueError, match="column 'schema'.*not a valid JSON schema"):
        f(["p"], ["{}"], schema=[{"type": "no-such-type"}])
    with pytest.raises(ValueError, match="column 'schema'"):
        f(["p"], ["{}"], schema=["{not json"])


WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}]


def test_tool_call_shapes():
    tools = [WEATHER] * 10
    assert scores("tool_call:valid", [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\", \\"days\\": 2}"}',
        'Calling: [{"name": "get_weather", "parameters": {"city": "Oslo"}}]',
        '<tool_call>{"name": "get_weather", "arguments": {"days": 2}}</tool_call>',  # no city
        '<tool_call>{"name": "get_weather", "arguments": {"city": 7}}</tool_call>',  # wrong type
        '<tool_call>{"name": "get_wether", "arguments": {"city": "Oslo"}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}</tool_call>',  # broken
        'My name is {"name": "Ann"} and I like {braces}.',  # JSON, but not a call
        "It is sunny in Oslo.",
        'For {"name": "Ann"}: {"name": "get_weather", "arguments": {"city": "Oslo"}}',
    ], tools=tools) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0]


def test_tool_call_several_calls_must_all_be_right():
    right = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    wrong = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    broken = "<tool_call>{</tool_call>"
    assert scores("tool_call:valid", [right + right, right + wrong, right + broken],
                  tools=[json.dumps(WEATHER)] * 3) == [1.0, 0.5, 0.5]


def test_tool_call_parsed_by_trl():
    # With a response schema TRL hands parsed calls in the message, its content emptied.
    message = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}
    assert find_tool_calls([message]) == [("get_weather", {"city": "Oslo"})]
    assert reward("tool_call:valid")(["p"], [[message]], tools=[WEATHER]) == [1.0]


def test_tool_call_bad_tools_column():
    with pytest.raises(ValueError, match="column 'tools'"):
        reward("tool_call:valid")(["p"], ["{}"], tools=['{"name": "x"}'])


@pytest.fixture(scope="module")
def glaive_calls():
    if not GLAIVE.exists():
        pytest.skip(f"{GLAIVE} is not here")
    rows = json.loads(GLAIVE.read_text())
    calls = [(row["tools"], turn["value"]) for row in rows for turn in row["conversations"]
             if turn["from"] == "function_call"]
    prose = [(row["tools"], turn["value"]) for row in rows for turn in row["conversations"]
             if turn["from"] == "gpt"]
    assert len(calls) > 100 and len(prose) > 100
    return calls, prose


def test_glaive_tool_calls(glaive_calls):
    calls, prose = glaive_calls
    f = reward("tool_call:valid")
    tools, texts = [t for t, _ in calls], [c for _, c in calls]
    right = f(["p"] * len(calls), texts, tools=tools)
    # One call in the demo data passes a list where its tool's schema says a number.
    assert [(s, "[150, 350, 800]" in c) for s, c in zip(right, texts) if s != 1.0] == [(0.5, True)]
    as_hermes = [f"<tool_call>\n{c}\n</tool_call>" for c in texts]
    assert f(["p"] * len(calls), [chat(c) for c in as_hermes], tools=tools) == right

    misspelled = []
    for text in texts:
        call = json.loads(text)
        misspelled.append(json.dumps({**call, "name": call["name"] + "x"}))
    assert set(f(["p"] * len(calls), misspelled, tools=tools)) == {0.5}
    assert set(f(["p"] * len(prose), [p for _, p in prose], tools=[t for t, _ in prose])) == {0.0}


def test_length():
    f = reward("length:4")
    assert f(["p"] * 4, ["a b c d", "a b", "a b c d e f g h i j", ""]) == [1.0, 0.5, 0.0, 0.0]
    # Token ids, when TRL passes them, count instead of words.
    assert f(["p", "p"], ["one", chat("one")], completion_ids=[[1, 2, 3], [1] * 6]) == [0.75, 0.5]


@pytest.mark.parametrize("spec", ["length:0", "length:-3", "length:2.5", "length:ten", "length:",
                                  "length"])
def test_bad_length_names_spec(spec):
    with pytest.raises(ValueError, match="positive whole number") as e:
        reward(spec)
    assert str(e.value).startswith(spec + ":")
