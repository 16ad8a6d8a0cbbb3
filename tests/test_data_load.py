"""Loading JSON / JSON Lines into the one record format, and the errors people see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.data import DataError, LoadReport, dataset_hash, detect_format, iter_records, load_records


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ALPACA = {"instruction": "Add the numbers.", "input": "2 and 2", "output": "4"}
CHAT = {
    "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
}


# --- schemas -----------------------------------------------------------------------------------


def test_alpaca_with_input_history_and_system(tmp_path):
    row = dict(ALPACA, system="Be exact.", history=[["1+1?", "2"], ["2+3?", "5"]])
    (record,) = load_records(write_jsonl(tmp_path / "a.jsonl", [row]))
    assert record["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Add the numbers.\n\n2 and 2"},
        {"role": "assistant", "content": "4"},
    ]
    assert record["source"] == {"file": str(tmp_path / "a.jsonl"), "row": 1}


def test_alpaca_without_input_has_bare_instruction(tmp_path):
    rows = [{"instruction": "Say hi.", "output": "hi"}, {"instruction": "Say yo.", "input": "", "output": "yo"}]
    records = load_records(write_jsonl(tmp_path / "a.jsonl", rows))
    assert [r["messages"][0]["content"] for r in records] == ["Say hi.", "Say yo."]


def test_messages_with_list_of_text_parts(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "text", "text": "this."}]},
            {"role": "assistant", "content": "Done.", "name": "ignored extra key"},
        ]
    }
    (record,) = load_records(write_jsonl(tmp_path / "m.jsonl", [row]))
    assert record["messages"] == [
        {"role": "user", "content": "Describe\nthis."},
        {"role": "assistant", "content": "Done."},
    ]


def test_image_part_is_refused(tmp_path):
    row = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, CHAT["messages"][1]]}
    with pytest.raises(DataError, match=r"m.jsonl:1: messages\[0\].content\[0\] is a 'image_url' part"):
        load_records(write_jsonl(tmp_path / "m.jsonl", [row]))


def test_system_prompt_prepended_only_when_missing(tmp_path):
    with_system = {"messages": [{"role": "system", "content": "Own."}] + CHAT["messages"]}
    path = write_jsonl(tmp_path / "m.jsonl", [CHAT, with_system])
    first, second = load_records(path, system_prompt="Profile prompt.")
    assert first["messages"][0] == {"role": "system", "content": "Profile prompt."}
    assert second["messages"][0] == {"role": "system", "content": "Own."}
    assert [m["role"] for m in second["messages"]].count("system") == 1


def test_detection_and_forcing(tmp_path):
    assert detect_format(ALPACA) == "alpaca"
    assert detect_format(CHAT) == "messages"
    assert detect_format({"prompt": "x", "completion": "y"}) == "prompt_completion"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"text": "x"}) == "text"
    assert detect_format({"question": "x", "answer": "y"}) is None
    report = LoadReport()
    load_records(write_jsonl(tmp_path / "m.jsonl", [CHAT]), report=report)
    assert report.formats == {str(tmp_path / "m.jsonl"): "messages"}
    # Forcing a format that does not fit makes each row fail with a named missing field.
    with pytest.raises(DataError, match=r"m.jsonl:1: missing field 'instruction'"):
        load_records(tmp_path / "m.jsonl", format="alpaca")


def test_unknown_format_name():
    with pytest.raises(DataError, match="unknown data format 'csv'") as err:
        load_records("whatever.jsonl", format="csv")
    assert "recognised by its extension" in str(err.value)


def test_json_array_rows_are_zero_based(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([ALPACA, ALPACA], indent=2), encoding="utf-8")
    records = load_records(path)
    assert [r["source"]["row"] for r in records] == [0, 1]


def test_json_array_bad_record_is_named_by_its_row_from_one(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([ALPACA, dict(ALPACA, output=4)]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_records(path)
    # Counted from 1, as messages count every row (issue 26): the second record is row 2.
    assert "a.json: row 2: field 'output' must be a string, found a number 4" in str(err.value)


def test_json_array_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"instruction": "x", "output": "y"}\n  {"instruction": "z"}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.json:3:3: invalid JSON: Expecting ',' delimiter"):
        load_records(path)


# --- file shapes -------------------------------------------------------------------------------


def test_utf8_bom_is_accepted(tmp_path):
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + json.dumps(ALPACA).encode() + b"\n")
    array = tmp_path / "bom.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([ALPACA]).encode())
    assert len(load_records(lines)) == 1
    assert len(load_records(array)) == 1


def test_blank_lines_are_skipped_and_rows_keep_line_numbers(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(f"\n{json.dumps(ALPACA)}\n   \n\n{json.dumps(ALPACA)}\n\n", encoding="utf-8")
    report = LoadReport()
    records = load_records(path, report=report)
    assert [r["source"]["row"] for r in records] == [2, 5]
    assert (report.rows_read, report.rows_loaded, report.skipped) == (2, 2, [])


def test_iter_records_streams(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [ALPACA] * 3)
    stream = iter_records(path)
    assert next(stream)["source"]["row"] == 1  # a generator: nothing else had to be read yet


# --- errors for people -------------------------------------------------------------------------


def test_malformed_line_names_file_line_column_and_suggests_skip(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ALPACA) + "\n" + '{"instruction": "x" "output": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_records(path)
    text = str(err.value)
    assert text.startswith(f"{path}:2:21: invalid JSON: Expecting ',' delimiter")
    # The hint names what a person types, not the loader's argument.
    assert '--skip-bad-rows' in text and 'data.on_bad_rows = "skip"' in text
    assert "on_bad_line" not in text
    assert (err.value.file, err.value.line, err.value.column) == (str(path), 2, 21)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_error_at_the_end_of_a_line_keeps_its_line_and_column(tmp_path, newline):
    """A missing closing brace is found at the end of the line; the line ending must not turn
    that into "line + 1, column 1"."""
    unclosed = json.dumps(ALPACA)[:-1]
    path = tmp_path / "data.jsonl"
    path.write_bytes((json.dumps(ALPACA) + newline + unclosed + newline).encode())
    with pytest.raises(DataError) as err:
        load_records(path)
    assert (err.value.line, err.value.column) == (2, len(unclosed) + 1)
    report = LoadReport()
    assert len(load_records(path, on_bad_line="skip", report=report)) == 1
    assert report.location(str(path), 2) == f"{path}:2:{len(unclosed) + 1}"
    assert report.location(str(path), 1) == f"{path}:1"  # no problem, no column


def test_skip_mode_counts_every_skipped_row(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(ALPACA),
                "{not json",
                json.dumps([1, 2]),
                json.dumps(dict(ALPACA, output=None)),
                json.dumps(ALPACA),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    report = LoadReport()
    records = load_records(path, on_bad_line="skip", report=report)
    assert [r["source"]["row"] for r in records] == [1, 5]
    assert report.rows_read == 5
    assert report.rows_loaded == 2
    assert [(f, line) for f, line, _ in report.skipped] == [(str(path), 2), (str(path), 3), (str(path), 4)]
    reasons = [reason for _, _, reason in report.skipped]
    assert reasons[0].startswith("invalid JSON")
    assert "expected a JSON object" in reasons[1] and "an array" in reasons[1]
    assert "'output' must be a string, found null" in reasons[2]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (dict(ALPACA, output=42), "field 'output' must be a string, found a number 42"),
        (dict(ALPACA, history=[["only one"]]), r"history\[0\] must be a \[user, assistant\] pair"),
        ({"messages": "hi"}, "field 'messages' must be a list, found a string"),
        ({"messages": []}, "field 'messages' is an empty list"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object"),
        ({"messages": [{"role": "human", "content": "x"}]}, r"messages\[0\] has role 'human'; expected one of"),
        ({"messages": [{"role": "user", "content": 3}]}, r"messages\[0\].content must be a string"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
    ],
)
def test_wrong_field_types(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "t.jsonl", [row])
    with pytest.raises(DataError, match=expected) as err:
        load_records(path)
    assert str(err.value).startswith(f"{path}:1:")


def test_non_object_record(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [ALPACA, "just a string"])
    with pytest.raises(DataError, match="t.jsonl:2: expected a JSON object .*found a string"):
        load_records(path)


def test_undetectable_schema_lists_keys_and_formats(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"question": "x", "answer": "y"}])
    with pytest.raises(DataError) as err:
        load_records(path, on_bad_line="skip")  # a schema problem is not a bad row: it still stops
    text = str(err.value)
    assert text.startswith(f"{path}:1: cannot tell the dataset format")
    assert "'answer', 'question'" in text
    for name in ("alpaca", "sharegpt", "messages", "prompt_completion", "text"):
        assert name in text
    assert 'columns = { instruction = "question", output = "answer" }' in text
    assert "data.format" in text


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: no such file") as err:
        load_records(tmp_path / "nope.jsonl")
    assert "data.train" in str(err.value)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "notes").mkdir()
    # train.jsonl in a folder is a dataset in the Hub's layout (tests/test_hub_datasets.py);
    # a folder of other files is not a dataset.
    (tmp_path / "train.jsonl").rename(tmp_path / "train.txt.bak")
    with pytest.raises(DataError, match="is a directory with no data files") as err:
        load_records(tmp_path)
    assert "it contains 2 entries: notes/, train.txt.bak" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t", b"\xef\xbb\xbf\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "e.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="e.jsonl: file is empty"):
        load_records(path)


def test_not_json_at_all(tmp_path):
    path = tmp_path / "d.dat"  # not .txt: a .txt file is a raw-text document (data/text_files.py)
    path.write_text("instruction,output\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="d.dat: does not look like JSON: it starts with 'i'") as err:
        load_records(path)
    assert ".csv" in str(err.value)  # the hint lists the supported file types


def test_non_utf8_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    good = json.dumps(ALPACA).encode()
    bad = '{"instruction": "caf\xe9", "output": "y"}'.encode("latin-1")
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(DataError) as err:
        load_records(path)
    text = str(err.value)
    assert text.startswith(f"{path}:2:21: not valid UTF-8: byte 0xe9")
    assert "re-save the file as UTF-8" in text
    report = LoadReport()
    assert len(load_records(path, on_bad_line="skip", report=report)) == 1
    assert report.skipped[0][1] == 2


def test_non_utf8_json_array(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes('[\n{"instruction": "caf\xe9", "output": "y"}\n]'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.json:2:21: not valid UTF-8"):
        load_records(path)


# --- hashing and import hygiene ----------------------------------------------------------------


def test_dataset_hash(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    b = write_jsonl(tmp_path / "b.jsonl", [CHAT])
    h = dataset_hash([a, b])
    assert len(h) == 64 and h == dataset_hash([str(a), str(b)])
    assert h != dataset_hash([b, a])
    assert dataset_hash(a) == dataset_hash([a])
    a.write_text(a.read_text() + "\n")
    assert dataset_hash([a, b]) != h
    with pytest.raises(DataError, match="no such file"):
        dataset_hash(tmp_path / "gone.jsonl")


def test_data_package_imports_no_heavy_or_ui_modules():
    code = (
        "import sys, workbench.data, workbench.data.load, workbench.data.render\n"
        "bad = [m for m in ('torch', 'transformers', 'textual', 'trl', 'datasets') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
