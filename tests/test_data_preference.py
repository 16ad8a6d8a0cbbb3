"""Preference data (DPO / ORPO / SimPO / KTO): detection, normalization, checks, report, split, CLI.

Real rows come from LLaMA-Factory's samples in ../shared/data (skipped when absent); every other
shape is written here, in JSON Lines, JSON and CSV. Nothing may be dropped without its file, row
and reason.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.data import DataError, LoadReport, load_records
from workbench.data.preference import (
    PREFERENCE_FORMATS,
    detect_preference_format,
    is_preference_data,
    iter_preference_records,
    load_preference_records,
    records_kind,
)
from workbench.data.preference_checks import (
    check_pairs,
    format_preference_report,
    inspect_preferences,
    prompt_key,
    split_preference_records,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real sample {path} is not present")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                             for k, v in row.items()})
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alpaca_en_demo.json", "glaive_toolcall_en_demo.json", "identity.json",
                                  "c4_demo.jsonl"])
def test_sft_samples_are_not_preference_data(name):
    assert is_preference_data(shared(name)) is False


@pytest.mark.parametrize("name", ["prompts.jsonl", "translate_en_fr.jsonl"])
def test_bundled_demo_data_is_not_preference_data(name):
    assert is_preference_data(REPO / "assets" / "demo" / name) is False


@pytest.mark.parametrize("name", ["dpo_en_demo.json", "kto_en_demo.json"])
def test_llama_factory_preference_samples_are_preference_data(name):
    assert is_preference_data(shared(name)) is True


@pytest.mark.parametrize("row, expected", [
    ({"conversations": [], "chosen": {}, "rejected": {}}, "sharegpt_pairs"),
    ({"instruction": "x", "chosen": "a", "rejected": "b"}, "alpaca_pairs"),
    ({"prompt": "x", "chosen": "a", "rejected": "b"}, "pairs"),
    ({"chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]}, "pairs"),
    ({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "pairs"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}, "hh"),
    ({"messages": [user("q"), assistant("a")], "label": True}, "kto_messages"),
    ({"messages": [user("q"), assistant("a")], "kto_tag": False}, "kto_messages"),
    ({"conversations": [{"from": "human", "value": "q"}], "label": "true"}, "kto_messages"),
    ({"prompt": "q", "completion": "a", "label": False}, "unpaired"),
    # SFT shapes stay SFT
    ({"messages": [user("q"), assistant("a")]}, None),
    ({"prompt": "q", "completion": "a"}, None),
    ({"messages": [user("q"), assistant("a")], "label": "sports"}, None),  # a category, not a verdict
    ({"instruction": "q", "output": "a"}, None),
    ({"text": "plain"}, None),
])
def test_detect_preference_format(row, expected):
    assert detect_preference_format(row) == expected


# --- real samples ----------------------------------------------------------------------------------


def test_real_dpo_sample_normalizes_to_pairs():
    path = shared("dpo_en_demo.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    report = LoadReport()
    records = load_preference_records(path, report=report)
    assert len(records) == 300 and not report.skipped
    assert report.formats[str(path)] == "sharegpt_pairs" and records_kind(records) == "paired"
    assert [r["source"]["row"] for r in records] == list(range(300))  # JSON array: 0-based index
    for record, row in zip(records, raw):
        assert set(record) == {"prompt", "chosen", "rejected", "source"}
        assert record["chosen"] == [assistant(row["chosen"]["value"])]
        assert record["rejected"] == [assistant(row["rejected"]["value"])]
        assert record["prompt"][-1] == user(row["conversations"][-1]["value"])
        assert len(record["prompt"]) == len(row["conversations"])
    with_system = [r for r in records if r["prompt"][0]["role"] == "system"]
    assert len(with_system) == 80  # the sample's ("system", "human") conversations
    multi = next(r for r, row in zip(records, raw) if len(row["conversations"]) == 5)
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user", "assistant", "user"]
    kept, dropped = check_pairs(records)
    assert len(kept) == 300 and dropped == []


def test_real_kto_sample_normalizes_to_unpaired_rows():
    path = shared("kto_en_demo.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    records = load_preference_records(path, system_prompt="Be kind.")
    assert len(records) == 300 and records_kind(records) == "unpaired"
    assert sum(r["label"] for r in records) == 150
    for record, row in zip(records, raw):
        assert set(record) == {"prompt", "completion", "label", "source"}
        assert record["label"] is row["label"]
        assert record["completion"] == [assistant(row["messages"][-1]["content"])]
        assert record["prompt"][0] == {"role": "system", "content": "Be kind."}
        assert record["prompt"][1:] == [{"role": m["role"], "content": m["content"]} for m in row["messages"][:-1]]


# --- hand-made shapes --------------------------------------------------------------------------


PAIRS = [
    {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."},
    {"prompt": "Name a colour of the sky.", "chosen": "Blue.", "rejected": "Green, mostly."},
]


@pytest.mark.parametrize("writer, suffix, first_row", [(write_jsonl, ".jsonl", 1), (write_json, ".json", 0),
                                                       (write_csv, ".csv", 2)])
def test_standard_pairs_in_every_file_type(tmp_path, writer, suffix, first_row):
    path = writer(tmp_path / f"pairs{suffix}", PAIRS)
    assert is_preference_data(path)
    report = LoadReport()
    records = load_preference_records(path, report=report, system_prompt="Be exact.")
    assert report.formats[str(path)] == "pairs"
    assert records[0]["prompt"] == [{"role": "system", "content": "Be exact."}, user("What is two plus two?")]
    assert records[0]["chosen"] == [assistant("Four.")] and records[0]["rejected"] == [assistant("Five.")]
    assert records[0]["source"] == {"file": str(path), "row": first_row}
    assert records[1]["source"]["row"] == first_row + 1


def test_conversational_pairs_with_explicit_prompt_json_and_csv(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "Terse."}, user("Hi?"), assistant("Hello."), user("2+2?")],
             "chosen": [assistant("4")], "rejected": [assistant("5")]}]
    for path in (write_json(tmp_path / "c.json", rows), write_csv(tmp_path / "c.csv", rows)):
        (record,) = load_preference_records(path)
        assert [m["role"] for m in record["prompt"]] == ["system", "user", "assistant", "user"]
        assert record["chosen"] == [assistant("4")] and record["rejected"] == [assistant("5")]


def test_implicit_prompt_conversations_split_before_the_answer(tmp_path):
    convo = [user("Hi?"), assistant("Hello."), user("2+2?")]
    rows = [{"chosen": convo + [assistant("4")], "rejected": convo + [assistant("5")]}]
    for path in (write_jsonl(tmp_path / "i.jsonl", rows), write_csv(tmp_path / "i.csv", rows)):
        (record,) = load_preference_records(path)
        assert record["prompt"] == convo
        assert record["chosen"] == [assistant("4")] and record["rejected"] == [assistant("5")]
        assert "prompt_mismatch" not in record


def test_implicit_prompt_strings_split_at_a_word_boundary(tmp_path):
    rows = [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
            {"chosen": "Translate: chat", "rejected": "Translate: chien"},
            {"chosen": "Q: 2+2?\nA: 4", "rejected": "Q: 2+2?\nA: 5"}]
    records = load_preference_records(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in records] == [
        ("The sky is", "blue.", "green."),
        ("Translate:", "chat", "chien"),
        ("Q: 2+2?\nA:", "4", "5"),
    ]


def test_anthropic_hh_transcripts(tmp_path):
    shared_turns = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?"
    rows = [{"chosen": shared_turns + "\n\nAssistant: It is 4.", "rejected": shared_turns + "\n\nAssistant: No idea."}]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    report = LoadReport()
    (record,) = load_preference_records(path, report=report)
    assert report.formats[str(path)] == "hh"
    assert record["prompt"] == [user("Hi there"), assistant("Hello! How can I help?"), user("What is 2+2?")]
    assert record["chosen"] == [assistant("It is 4.")] and record["rejected"] == [assistant("No idea.")]


def test_unpaired_rows_strings_lists_and_csv_labels(tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4", "label": "true"},
            {"prompt": "2+2?", "completion": "5", "label": "False"},
            {"prompt": "3+3?", "completion": "6", "label": "1"}]
    path = write_csv(tmp_path / "u.csv", rows)
    records = load_preference_records(path)
    assert [r["label"] for r in records] == [True, False, True]
    assert records[0]["prompt"] == [user("2+2?")] and records[0]["completion"] == [assistant("4")]
    assert records_kind(records) == "unpaired"
    lists = [{"prompt": [user("2+2?")], "completion": [assistant("4")], "label": True}]
    (record,) = load_preference_records(write_json(tmp_path / "u.json", lists))
    assert record["completion"] == [assistant("4")] and record["label"] is True


def test_kto_sharegpt_conversations_with_kto_tag(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
             "kto_tag": False, "system": "Be brief."}]
    (record,) = load_preference_records(write_jsonl(tmp_path / "k.jsonl", rows))
    assert record == {"prompt": [{"role": "system", "content": "Be brief."}, user("Hi")],
                      "completion": [assistant("Hello")], "label": False,
                      "source": {"file": str(tmp_path / "k.jsonl"), "row": 1}}


def test_alpaca_ranking_pairs(tmp_path):
    rows = [{"instruction": "Add.", "input": "2 and 2", "chosen": "4", "rejected": "22",
             "history": [["Hi", "Hello"]], "system": "Math."}]
    (record,) = load_preference_records(write_json(tmp_path / "a.json", rows))
    assert record["prompt"] == [{"role": "system", "content": "Math."}, user("Hi"), assistant("Hello"),
                                user("Add.\n\n2 and 2")]


def test_column_map_for_any_other_names(tmp_path):
    rows = [{"question": "2+2?", "good": "4", "bad": "5"}]
    path = write_csv(tmp_path / "m.csv", rows)
    assert not is_preference_data(path)
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert is_preference_data(path, columns=columns)
    (record,) = load_preference_records(path, columns=columns)
    assert record["prompt"] == [user("2+2?")] and record["chosen"] == [assistant("4")]
    with pytest.raises(DataError, match="no preference format reads"):
        load_preference_records(path, columns={"answer": "good"})
    with pytest.raises(DataError, match="no such column"):
        load_preference_records(path, columns={"prompt": "query", "chosen": "good", "rejected": "bad"})


def test_sides_that_are_whole_conversations_are_checked_against_the_prompt(tmp_path):
    """UltraFeedback's files: a prompt column plus sides that repeat it as a conversation."""
    rows = [{"prompt": "2+2?", "chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")]},
            {"prompt": "2+2?", "chosen": [user("3+3?"), assistant("6")], "rejected": [user("2+2?"), assistant("5")]}]
    same, other = load_preference_records(write_jsonl(tmp_path / "uf.jsonl", rows))
    assert same["chosen"] == [assistant("4")] and "prompt_mismatch" not in same
    assert other["prompt_mismatch"] is True and "different prompt" in other["prompt_mismatch_why"]


def test_tool_definitions_are_kept(tmp_path):
    tools = [{"name": "get_weather", "parameters": {"type": "object"}}]
    rows = [{"conversations": [{"from": "human", "value": "Weather?"}],
             "chosen": {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {}})},
             "rejected": {"from": "gpt", "value": "Sunny."}, "tools": json.dumps(tools)}]
    (record,) = load_preference_records(write_json(tmp_path / "t.json", rows))
    assert record["tools"] == tools and record["chosen"][0]["tool_call"] is True


def test_forced_format_and_errors_for_people(tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"messages": [user("q"), assistant("a")]}])
    with pytest.raises(DataError) as err:
        load_preference_records(sft)
    assert "SFT data (messages)" in str(err.value) and "sft.jsonl:1" in str(err.value)
    with pytest.raises(DataError, match="unknown preference data format"):
        load_preference_records(sft, format="dpo")
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "completion": "a", "label": True}])
    with pytest.raises(DataError, match="missing field 'chosen'"):
        load_preference_records(path, format="pairs")


# --- messy rows: every problem named with its row --------------------------------------------------


MESSY = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},                            # line 1: fine
    {"prompt": "2+2?", "chosen": "Four.", "rejected": "Four."},                    # line 2: chosen = rejected
    {"prompt": "3+3?", "chosen": "6", "rejected": "   "},                          # line 3: empty side
    {"prompt": "4+4?", "chosen": "8"},                                             # line 4: missing side
    {"prompt": "5+5?", "chosen": "10", "rejected": None},                          # line 5: null side
    {"prompt": "", "chosen": "yes", "rejected": "no"},                             # line 6: empty prompt
    {"prompt": "6+6?", "chosen": "12", "rejected": "twelve-ish"},                  # line 7: fine
]
IMPLICIT = [
    {"chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")]},    # fine
    {"chosen": [user("2+2?"), assistant("4")], "rejected": [user("3+3?"), assistant("6")]},    # prompts differ
    {"chosen": "Apples are red.", "rejected": "Bananas are yellow."},                          # nothing shared
]


def test_missing_side_is_a_bad_row_named_by_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "messy.jsonl", MESSY)
    with pytest.raises(DataError) as err:
        load_preference_records(path)
    assert err.value.line == 4 and "missing field 'rejected'" in err.value.message
    assert "--skip-bad-rows" in err.value.hint


def test_messy_rows_are_all_accounted_for(tmp_path):
    path = write_jsonl(tmp_path / "messy.jsonl", MESSY)
    report = LoadReport()
    records = load_preference_records(path, on_bad_line="skip", report=report)
    assert [(row, "rejected" in why) for _, row, why in report.skipped] == [(4, True), (5, True)]
    assert "null" in report.skipped[1][2]
    kept, dropped = check_pairs(records)
    assert [r["source"]["row"] for r in kept] == [1, 7]
    assert [(Path(f).name, row) for f, row, _ in dropped] == [("messy.jsonl", 2), ("messy.jsonl", 3),
                                                              ("messy.jsonl", 6)]
    whys = [why for _, _, why in dropped]
    assert "same answer" in whys[0] and "rejected answer is empty" in whys[1] and "prompt is empty" in whys[2]
    # nothing silent: every line of the file is loaded-and-kept, dropped or skipped
    assert len(kept) + len(dropped) + len(report.skipped) == len(MESSY) == report.rows_read


def test_implicit_prompts_that_differ_are_reported(tmp_path):
    path = write_json(tmp_path / "implicit.json", IMPLICIT)
    records = load_preference_records(path)
    assert len(records) == 3
    kept, dropped = check_pairs(records)
    assert [r["source"]["row"] for r in kept] == [0]
    assert [row for _, row, _ in dropped] == [1, 2]
    assert "differ at message 1" in dropped[0][2] and "share no words" in dropped[1][2]


def test_unpaired_checks(tmp_path):
    rows = [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "", "label": False},
            {"prompt": "q", "completion": "b", "label": "maybe"}]
    report = LoadReport()
    records = load_preference_records(write_jsonl(tmp_path / "u.jsonl", rows), on_bad_line="skip", report=report)
    assert report.skipped[0][1] == 3 and "true" in report.skipped[0][2]
    kept, dropped = check_pairs(records)
    assert len(kept) == 1 and dropped[0][1] == 2 and "completion answer is empty" in dropped[0][2]


def test_records_kind_refuses_a_mix():
    paired = {"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b")],
              "source": {"file": "a.jsonl", "row": 1}}
    unpaired = {"prompt": [user("q")], "completion": [assistant("a")], "label": True,
                "source": {"file": "b.jsonl", "row": 3}}
    assert records_kind([paired]) == "paired"
    with pytest.raises(DataError, match="b.jsonl:3 is unpaired"):
        records_kind([paired, unpaired])
    with pytest.raises(DataError):
        records_kind([])


# --- the inspection report ---------------------------------------------------------------------


def test_inspection_report_counts_checks_with_locations(tmp_path):
    path = write_jsonl(tmp_path / "messy.jsonl", MESSY + [MESSY[0]])
    report = LoadReport()
    records = load_preference_records(path, on_bad_line="skip", report=report)
    result = inspect_preferences(records, load_report=report, inputs=[str(path)])
    data = result.to_json()
    assert data["rows_read"] == 8 and data["rows"] == 6 and data["rows_skipped"] == 2 and data["kept"] == 3
    assert data["checks"]["identical"] == {"label": "chosen equals rejected", "count": 1,
                                           "examples": [f"{path}:2"]}
    assert data["checks"]["empty_answer"]["examples"] == [f"{path}:3"]
    assert data["checks"]["empty_prompt"]["count"] == 1
    assert data["duplicates"]["duplicate_rows"] == 1 and data["duplicates"]["prompts_with_several_rows"] == 1
    text = format_preference_report(result)
    assert "chosen equals rejected" in text and "messy.jsonl:2" in text and "messy.jsonl:4" in text
    json.dumps(data)  # the app and --json need plain data


def test_length_bias_is_said_in_plain_words():
    def pair(i, chosen, rejected):
        return {"prompt": [user(f"q{i}")], "chosen": [assistant(chosen)], "rejected": [assistant(rejected)],
                "source": {"file": "f", "row": i}}
    biased = [pair(i, "a long and careful answer " * 3, "short") for i in range(8)] + [pair(8, "x", "y z")]
    report = inspect_preferences(biased)
    assert report.lengths["chars"]["chosen_longer_share"] == pytest.approx(8 / 9, abs=1e-3)
    assert report.length_bias and "longer than rejected ones in 89% of pairs" in report.length_bias
    balanced = [pair(i, "same size" if i % 2 else "tiny", "tiny" if i % 2 else "same size") for i in range(8)]
    assert inspect_preferences(balanced).length_bias is None


def test_kto_report_labels_and_balance_note():
    rows = [{"prompt": [user(f"q{i}")], "completion": [assistant("fine answer")], "label": i < 6,
             "source": {"file": "f", "row": i}} for i in range(8)]
    report = inspect_preferences(rows)
    assert report.labels["desirable"] == 6 and report.labels["undesirable"] == 2
    assert "desirable_weight" in report.labels["note"]
    assert "identical" not in report.checks


# --- the pair-aware split ------------------------------------------------------------------------


def test_split_keeps_every_row_of_a_prompt_on_one_side():
    records = []
    for p in range(60):
        for k in range(1 + p % 4):  # 1 to 4 rows per prompt, spelled differently
            text = f"Question   number {p}?" if k % 2 else f"question number {p}?"
            records.append({"prompt": [user(text)], "chosen": [assistant(f"a{k}")], "rejected": [assistant("b")],
                            "source": {"file": "f", "row": len(records)}})
    result = split_preference_records(records, (0.8, 0.1, 0.1), seed=7)
    sides = {}
    for name, part in result.as_dict().items():
        for record in part:
            sides.setdefault(prompt_key(record), set()).add(name)
    assert len(sides) == 60 and all(len(s) == 1 for s in sides.values())
    assert result.report["prompts_shared"] == 0
    assert sum(result.report["sizes"].values()) == len(records)
    assert abs(result.report["sizes"]["train"] - 0.8 * len(records)) <= 4
    again = split_preference_records(records, (0.8, 0.1, 0.1), seed=7)
    assert again.as_dict() == result.as_dict()
    other = split_preference_records(records, (0.8, 0.1, 0.1), seed=8)
    assert other.as_dict() != result.as_dict()


def test_split_of_the_real_sample_keeps_duplicate_prompts_together():
    records = load_preference_records(shared("dpo_en_demo.json"))
    result = split_preference_records(records)
    assert result.report["prompts_shared"] == 0 and not result.test
    assert abs(len(result.validation) - 30) <= 2


# --- command line ------------------------------------------------------------------------------


def test_cli_inspect_prints_pairs_and_checks(capsys):
    from workbench.cli import main

    path = shared("dpo_en_demo.json")
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Preference data inspection" in out and "sharegpt_pairs" in out
    assert "pairs (chosen / rejected)                 300" in out
    for check in ("chosen equals rejected", "empty answer", "empty prompt", "sides reply to different prompts"):
        assert check in out
    assert "chosen longer" in out
    assert main(["data", "inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paired"] == 300 and data["kind"] == "paired" and data["kept"] == 300


def test_cli_inspect_messy_file_lists_rows(tmp_path, capsys):
    from workbench.data.cli import data_main

    path = write_jsonl(tmp_path / "messy.jsonl", MESSY)
    assert data_main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "messy.jsonl:4: missing field 'rejected'" in out
    assert "messy.jsonl:2" in out and "messy.jsonl:6" in out


def test_cli_sft_file_still_gets_the_sft_report(tmp_path, capsys):
    from workbench.data.cli import data_main

    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": [user("q"), assistant("a")]}])
    assert data_main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Dataset inspection") and "schema messages" in out


def test_cli_clean_refuses_and_split_keeps_prompts_together(tmp_path, capsys):
    from workbench.data.cli import data_main

    rows = [{"prompt": f"q{i % 10}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert data_main(["data", "clean", str(path), "-o", str(tmp_path / "c")]) == 2
    assert "is preference data" in capsys.readouterr().err
    assert data_main(["data", "split", str(path), "-o", str(tmp_path / "s"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["split"]
    assert report["prompts_shared"] == 0 and sum(report["sizes"].values()) == 40
    train = [json.loads(line) for line in (tmp_path / "s" / "train.jsonl").read_text().splitlines()]
    assert train and set(train[0]) == {"prompt", "chosen", "rejected", "source"}


def test_split_output_reads_back_with_its_problems(tmp_path, capsys):
    from workbench.data.cli import data_main

    path = write_json(tmp_path / "implicit.json", IMPLICIT * 4)
    assert data_main(["data", "split", str(path), "-o", str(tmp_path / "s"), "--fractions", "0.5,0.5"]) == 0
    capsys.readouterr()
    back = [r for name in ("train", "validation") for r in load_preference_records(tmp_path / "s" / f"{name}.jsonl")]
    assert len(back) == 12
    _, dropped = check_pairs(back)
    assert len(dropped) == 8 and sum("differ at message 1" in why for _, _, why in dropped) == 4


def test_cli_sft_loader_is_unchanged_for_sft_files(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "q", "completion": "a"}])
    (record,) = load_records(path)
    assert record["messages"] == [user("q"), assistant("a")]


def test_preference_modules_import_light():
    code = ("import sys, workbench.data.preference, workbench.data.preference_checks, "
            "workbench.data.preference_render; "
            "print(sorted(m for m in ('torch', 'transformers', 'textual', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_format_name_has_a_converter():
    from workbench.data import preference

    assert set(PREFERENCE_FORMATS) == set(preference._CONVERTERS)
    assert all(name in preference.__doc__ for name in PREFERENCE_FORMATS)


def test_iter_is_a_stream(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS * 3)
    stream = iter_preference_records(path)
    assert next(stream)["source"]["row"] == 1
