"""Every file format and schema the loader reads, the errors people see, and real sample data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from workbench.data import DataError, LoadReport, dataset_hash, iter_records, load_records
from workbench.data import readers

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 2", "output": "4"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    return path


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real sample {path} is not present")
    return path


# --- CSV / TSV ---------------------------------------------------------------------------------


def test_csv_quoted_multiline_fields_keep_start_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'instruction,input,output\n'
        'Say hi.,,hi\n'
        '\n'
        '"Write two lines,\nplease.",,"one\n""two"""\n'
        'Last.,x,y\n',
        encoding="utf-8",
    )
    report = LoadReport()
    records = load_records(path, report=report)
    assert [r["source"]["row"] for r in records] == [2, 4, 7]  # the quoted row spans lines 4-6
    assert records[1]["messages"] == [
        {"role": "user", "content": "Write two lines,\nplease."},
        {"role": "assistant", "content": 'one\n"two"'},
    ]
    assert records[2]["messages"][0]["content"] == "Last.\n\nx"
    assert report.kinds == {str(path): "csv"} and report.formats == {str(path): "alpaca"}


def test_tsv_with_crlf_and_bom(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xef\xbb\xbfprompt\tcompletion\r\nHi, you\tHello\r\n")
    (record,) = load_records(path)
    assert record["messages"] == [
        {"role": "user", "content": "Hi, you"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert record["source"]["row"] == 2


def test_csv_ragged_rows_are_row_errors(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("instruction,output\na,b\nc,d,e\nf\ng,h\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_records(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: expected 2 fields (as in the header on line 1), got 3")
    assert "double quotes" in text and "--skip-bad-rows" in text
    report = LoadReport()
    records = load_records(path, on_bad_line="skip", report=report)
    assert [r["source"]["row"] for r in records] == [2, 5]
    assert [(line, reason.split(",")[0]) for _, line, reason in report.skipped] == [
        (3, "expected 2 fields (as in the header on line 1)"),
        (4, "expected 2 fields (as in the header on line 1)"),
    ]
    assert report.skipped[1][2].endswith("got 1")


def test_csv_invalid_utf8_row_names_line_and_byte(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"instruction,output\nok,fine\ncaf\xe9,y\nlast,z\n")
    with pytest.raises(DataError, match=r"latin.csv:3:4: not valid UTF-8: byte 0xe9") as err:
        load_records(path)
    assert 'data.encoding = "latin-1"' in str(err.value)
    report = LoadReport()
    assert [r["source"]["row"] for r in load_records(path, on_bad_line="skip", report=report)] == [2, 4]
    assert report.skipped[0][1] == 3
    # Told the real encoding, the same file loads whole.
    assert load_records(path, encoding="latin-1")[1]["messages"][0]["content"] == "café"


def test_csv_json_cells_and_long_fields(tmp_path):
    path = tmp_path / "j.csv"
    long_output = "x" * 300_000  # over csv's default 128 KiB field limit
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "output", "history", "system"])
        writer.writerow(["q", long_output, json.dumps([["a", "b"]]), ""])
    (record,) = load_records(path)
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "user", "assistant"]
    assert record["messages"][-1]["content"] == long_output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "file is empty"),
        ("instruction,output\n\n", "has a header but no data rows"),
        ("instruction,output,instruction\nx,y,z\n", "names column 'instruction' twice"),
    ],
)
def test_csv_file_level_problems(tmp_path, content, expected):
    path = tmp_path / "c.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        load_records(path)


# --- Parquet -----------------------------------------------------------------------------------


def test_parquet_nested_messages_and_zero_based_rows(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
    ]
    path = write_parquet(tmp_path / "m.parquet", rows)
    report = LoadReport()
    records = load_records(path, report=report)
    assert [r["source"] for r in records] == [{"file": str(path), "row": 0}, {"file": str(path), "row": 1}]
    assert records[1]["messages"][1] == {"role": "assistant", "content": "4"}
    assert report.kinds[str(path)] == "parquet"


def test_parquet_streams_in_batches(tmp_path):
    path = write_parquet(tmp_path / "big.parquet", [dict(ALPACA, output=str(i)) for i in range(2500)])
    records = list(iter_records(path))
    assert len(records) == 2500 and records[-1]["source"]["row"] == 2499
    assert records[-1]["messages"][-1]["content"] == "2499"


def test_parquet_wrong_field_type_names_the_row(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", [{"instruction": "a", "output": 1}, {"instruction": "b", "output": 4}])
    with pytest.raises(DataError, match=r"t.parquet: row 1: field 'output' must be a string, found a number 1"):
        load_records(path)


def test_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text(json.dumps(ALPACA) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="fake.parquet: is not a Parquet file") as err:
        load_records(path)
    assert ".jsonl" in str(err.value)
    truncated = tmp_path / "cut.parquet"
    truncated.write_bytes(b"PAR1" + b"\0" * 20)
    with pytest.raises(DataError, match="cut.parquet: cannot read the Parquet file"):
        load_records(truncated)


# --- saved datasets and the Hub ----------------------------------------------------------------


def test_saved_dataset_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = tmp_path / "single"
    datasets.Dataset.from_list([ALPACA, dict(ALPACA, output="5")]).save_to_disk(str(single))
    records = load_records(single)
    assert [r["source"] for r in records] == [{"file": str(single), "row": 0}, {"file": str(single), "row": 1}]
    both = tmp_path / "both"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list([ALPACA]),
        test=datasets.Dataset.from_list([{"text": "held out"}]),
    ).save_to_disk(str(both))
    assert len(load_records(both)) == 1
    (held,) = load_records(both, split="test")
    assert held["text_only"] is True
    with pytest.raises(DataError, match="no split 'validation'; available splits: train, test"):
        load_records(both, split="validation")
    # Hashing a folder covers its files.
    before = dataset_hash(single)
    assert before == dataset_hash(single) and before != dataset_hash(both)


def test_hub_id_when_offline(tmp_path, monkeypatch):
    """Offline, an id that is not in the cache fails at once, naming the caches and what to do
    (a cached one loads: tests/test_hub_datasets.py)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(DataError) as err:
        load_records("someone/some-dataset")
    text = str(err.value)
    assert text.startswith("someone/some-dataset: this Hub dataset is not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1 is set" in text and "Traceback" not in text
    assert "hf download someone/some-dataset --repo-type dataset" in text
    assert dataset_hash("someone/data", revision="abc") != dataset_hash("someone/data", revision="def")
    assert dataset_hash("someone/data", revisions={"someone/data": "abc"}) == dataset_hash(
        "someone/data", revision="abc")


def test_missing_local_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="data/train.jsonl: no such file"):
        load_records("data/train.jsonl")
    assert not readers.looks_like_hub_id("./a/b") and not readers.looks_like_hub_id("a/b/c")
    assert readers.looks_like_hub_id("tatsu-lab/alpaca")


# --- schemas -----------------------------------------------------------------------------------


SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp": 20}'},
        {"from": "gpt", "value": "It is 20 degrees."},
    ],
    "system": "You can call tools.",
    "tools": '[{"name": "weather", "parameters": {"type": "object"}}]',
}


def test_sharegpt_with_tool_calls_and_tools(tmp_path):
    (record,) = load_records(write_jsonl(tmp_path / "s.jsonl", [SHAREGPT]))
    assert record["messages"] == [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": '{"name": "weather", "arguments": {"city": "Paris"}}', "tool_call": True},
        {"role": "tool", "content": '{"temp": 20}'},
        {"role": "assistant", "content": "It is 20 degrees."},
    ]
    assert record["tools"] == [{"name": "weather", "parameters": {"type": "object"}}]
    list_tools = dict(SHAREGPT, tools=[{"name": "weather"}])
    assert load_records(write_jsonl(tmp_path / "l.jsonl", [list_tools]))[0]["tools"] == [{"name": "weather"}]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tools": "[{not json"}, "field 'tools' is not valid JSON"),
        ({"tools": "[1, 2]"}, "field 'tools' must be a list of objects"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, r"conversations\[0\] has from='robot'"),
        ({"conversations": [{"from": "function_call", "value": "weather(Paris)"}]}, "function_call whose value is not valid JSON"),
        ({"conversations": [{"from": "human", "value": 3}]}, r"conversations\[0\].value must be a string"),
        ({"conversations": [{"from": "human", "value": "only a question"}]}, "no assistant message"),
        ({"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "x"}]}, "both a top-level 'system'"),
        ({"conversations": []}, "'conversations' is an empty list"),
    ],
)
def test_sharegpt_bad_rows(tmp_path, change, expected):
    path = write_jsonl(tmp_path / "s.jsonl", [dict(SHAREGPT, **change)])
    with pytest.raises(DataError, match=expected) as err:
        load_records(path)
    assert str(err.value).startswith(f"{path}:1:")


def test_openai_tool_calls(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "20"},
            {"role": "assistant", "content": "20 degrees.", "tool_calls": None},
        ],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
    }
    (record,) = load_records(write_jsonl(tmp_path / "o.jsonl", [row]))
    assert record["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "assistant", "content": '{"name": "weather", "arguments": {"city": "Paris"}}', "tool_call": True},
        {"role": "tool", "content": "20"},
        {"role": "assistant", "content": "20 degrees."},
    ]
    assert record["tools"] == row["tools"]
    bad = {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}
    with pytest.raises(DataError, match=r"messages\[0\].tool_calls\[0\].function.arguments is not valid JSON"):
        load_records(write_jsonl(tmp_path / "b.jsonl", [bad]))


def test_reasoning_fields_are_kept(tmp_path):
    """reasoning_content (Qwen3 / DeepSeek APIs), reasoning and thinking (gpt-oss) all survive
    loading as `reasoning_content`; a <think> block stays in the content for the renderer."""
    rows = [{"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4", key: "Add them."}]}
            for key in ("reasoning_content", "reasoning", "thinking")]
    rows.append({"messages": [{"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "<think>Add them.</think>4"}]})
    records = load_records(write_jsonl(tmp_path / "r.jsonl", rows))
    assert [r["messages"][1].get("reasoning_content") for r in records] == ["Add them."] * 3 + [None]
    assert records[3]["messages"][1]["content"] == "<think>Add them.</think>4"
    bad = {"messages": [{"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a", "reasoning_content": ["x"]}]}
    with pytest.raises(DataError, match=r"messages\[1\].reasoning_content must be a string"):
        load_records(write_jsonl(tmp_path / "b.jsonl", [bad]))


def test_prompt_completion_strings_and_lists(tmp_path):
    rows = [
        {"prompt": "2+2?", "completion": "4"},
        {
            "prompt": [{"role": "system", "content": "Terse."}, {"role": "user", "content": "Hi"}],
            "completion": [{"role": "assistant", "content": "Yo"}],
        },
        {"prompt": "x", "completion": [{"role": "user", "content": "no answer"}]},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    report = LoadReport()
    first, second = load_records(path, on_bad_line="skip", report=report)
    assert first["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant"]
    assert report.skipped == [(str(path), 3, "field 'completion' has no assistant message, so there is nothing to train on")]


def test_text_rows_are_marked_text_only(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "Once upon a time."}, {"text": "  "}])
    report = LoadReport()
    (record,) = load_records(path, on_bad_line="skip", report=report)
    assert record == {
        "messages": [{"role": "assistant", "content": "Once upon a time."}],
        "text_only": True,
        "source": {"file": str(path), "row": 1},
    }
    assert "field 'text' is empty" in report.skipped[0][2]


def test_column_mapping(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer,id\nWhat is 2+2?,4,a1\n", encoding="utf-8")
    (record,) = load_records(path, columns={"instruction": "question", "output": "answer"})
    assert record["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    # Forcing a format together with a mapping.
    (forced,) = load_records(path, format="prompt_completion", columns={"prompt": "question", "completion": "answer"})
    assert forced["messages"][1]["content"] == "4"
    with pytest.raises(DataError, match="data.columns names 'instructions', which no format reads"):
        load_records(path, columns={"instructions": "question"})
    with pytest.raises(DataError, match=r"qa.csv:2: data.columns maps output = 'reply', but the data has no such column; its columns are 'answer', 'id', 'question'"):
        load_records(path, columns={"instruction": "question", "output": "reply"})


def test_sharegpt_column_mapping(tmp_path):
    row = {"dialog": SHAREGPT["conversations"], "functions": SHAREGPT["tools"]}
    (record,) = load_records(write_jsonl(tmp_path / "d.jsonl", [row]), columns={"conversations": "dialog", "tools": "functions"})
    assert record["tools"][0]["name"] == "weather" and len(record["messages"]) == 4


# --- encodings and odd files -------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_bom_are_decoded(tmp_path, codec):
    bom = {"utf-16": "", "utf-16-be": "\ufeff", "utf-32": ""}[codec]  # python's utf-16/32 write a BOM
    text = bom + json.dumps(dict(ALPACA, output="café"), ensure_ascii=False) + "\n"
    jsonl = tmp_path / "w.jsonl"
    jsonl.write_bytes(text.encode(codec))
    array = tmp_path / "w.json"
    array.write_bytes((bom + json.dumps([ALPACA])).encode(codec))
    csv_path = tmp_path / "w.csv"
    csv_path.write_bytes((bom + "instruction,output\ncafé,y\n").encode(codec))
    assert load_records(jsonl)[0]["messages"][1]["content"] == "café"
    assert len(load_records(array)) == 1
    assert load_records(csv_path)[0]["source"]["row"] == 2


def test_utf16_without_bom_is_recognised(tmp_path):
    path = tmp_path / "le.jsonl"
    path.write_bytes((json.dumps(ALPACA) + "\n").encode("utf-16-le"))
    assert len(load_records(path)) == 1
    path.write_bytes((json.dumps(ALPACA) + "\n").encode("utf-16-be"))
    assert len(load_records(path)) == 1


def test_latin1_jsonl_with_encoding_and_unknown_encoding(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"instruction": "café", "output": "y"}\n'.encode("latin-1"))
    assert load_records(path, encoding="latin-1")[0]["messages"][0]["content"] == "café"
    with pytest.raises(DataError, match="unknown text encoding 'klingon'"):
        load_records(path, encoding="klingon")


def test_wrong_forced_encoding_is_a_clear_file_error(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [ALPACA, ALPACA])
    with pytest.raises(DataError, match="cannot decode the file as utf-16"):
        load_records(path, encoding="utf-16")


def test_empty_array_has_no_records(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="e.json: has no records"):
        load_records(path)


def test_json_file_holding_lines_is_sniffed(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", [ALPACA, ALPACA])  # JSON Lines named .json
    report = LoadReport()
    assert [r["source"]["row"] for r in load_records(path, report=report)] == [1, 2]
    assert report.kinds[str(path)] == "jsonl"
    ndjson = write_jsonl(tmp_path / "x.ndjson", [ALPACA])
    assert len(load_records(ndjson)) == 1


def test_skip_mode_lists_every_malformed_line(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps(ALPACA), "{bad", json.dumps(ALPACA), '{"a": }', "[1,", json.dumps(ALPACA)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m.jsonl:2:2: invalid JSON.*\n.*--skip-bad-rows"):
        load_records(path)
    report = LoadReport()
    assert len(load_records(path, on_bad_line="skip", report=report)) == 3
    assert [row for _, row, _ in report.skipped] == [2, 4, 5]
    assert all(reason.startswith("invalid JSON") for _, _, reason in report.skipped)


# --- size and memory ---------------------------------------------------------------------------


def test_a_50_mb_row_loads(tmp_path):
    path = tmp_path / "huge.jsonl"
    big = "y" * (50 * 1024 * 1024)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(ALPACA) + "\n")
        handle.write(json.dumps(dict(ALPACA, output=big)) + "\n")
    del big
    records = iter_records(path)
    next(records)
    second = next(records)
    assert len(second["messages"][-1]["content"]) == 50 * 1024 * 1024 and second["source"]["row"] == 2


def _peak_while_streaming(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records(path))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_memory_stays_bounded_while_streaming(tmp_path, kind):
    n = 30_000
    rows = [dict(ALPACA, output=f"answer {i} " + "z" * 200) for i in range(n)]
    path = tmp_path / f"many.{kind}"
    if kind == "jsonl":
        write_jsonl(path, rows)
    elif kind == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(ALPACA))
            writer.writeheader()
            writer.writerows(rows)
    else:
        write_parquet(path, rows)
    del rows
    size = path.stat().st_size
    count, peak = _peak_while_streaming(path)
    assert count == n
    # Holding the whole dataset would take several times its file size; streaming stays far below.
    assert peak < max(size // 3, 2_000_000), (kind, size, peak)


# --- real samples (../shared/data) -------------------------------------------------------------


def test_real_alpaca_sample():
    path = shared("alpaca_en_demo.json")
    report = LoadReport()
    records = load_records(path, report=report)
    assert len(records) == 999 and report.formats[str(path)] == "alpaca" and not report.skipped
    assert all(r["messages"][-1]["role"] == "assistant" for r in records)


def test_real_sharegpt_toolcall_sample():
    path = shared("glaive_toolcall_en_demo.json")
    report = LoadReport()
    records = load_records(path, report=report)
    assert len(records) == 300 and report.formats[str(path)] == "sharegpt" and not report.skipped
    roles = {m["role"] for r in records for m in r["messages"]}
    assert {"user", "assistant", "tool"} <= roles
    calls = [m for r in records for m in r["messages"] if m.get("tool_call")]
    assert len(calls) == 211 and all(m["role"] == "assistant" and json.loads(m["content"])["name"] for m in calls)
    with_tools = [r for r in records if "tools" in r]
    assert with_tools and all(isinstance(t, dict) for r in with_tools for t in r["tools"])


def test_real_identity_sample():
    path = shared("identity.json")
    records = load_records(path)
    assert len(records) == 91
    assert any("{{name}}" in m["content"] for r in records for m in r["messages"])


# --- import hygiene ----------------------------------------------------------------------------


def test_readers_import_no_heavy_modules():
    code = (
        "import sys, workbench.data, workbench.data.readers, workbench.data.schemas\n"
        "bad = [m for m in ('torch', 'transformers', 'textual', 'datasets', 'pyarrow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
