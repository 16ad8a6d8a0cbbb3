"""Issue 26: the data commands' hints and reports say what works and what is true: placeholders
that `inspect` lists can be filled, a CSV with its own column names can be inspected, rows are
numbered one way, the report's time is the command's, lists say what they leave out, and
transformers' own warnings do not leak into the output."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TINY_MODEL

from workbench.data.cli import data_main


def _alpaca(tmp_path: Path, name: str, outputs: list[str]) -> Path:
    rows = [{"instruction": f"question {i}", "input": "", "output": o} for i, o in enumerate(outputs)]
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


# ---- --fill fills every placeholder style `data inspect` lists --------------------------------

def test_fill_fills_the_placeholders_inspect_lists(tmp_path, capsys):
    data = _alpaca(tmp_path, "id.json", ["I am [Your Name].", "Hello, I am {{name}}.",
                                         "Call me [Your Name], or <YOUR_NAME>."])
    assert data_main(["data", "inspect", str(data)]) == 0
    out = capsys.readouterr().out
    assert "[Your Name]" in out and '--fill "Your Name=..."' in out  # how to fill them
    assert data_main(["data", "clean", str(data), "-o", str(tmp_path / "out"), "--split", "1,0,0",
                      "--steps", "fill_placeholders", "--fill", "Your Name=Ada", "--fill", "name=Bob",
                      "--fill", "<YOUR_NAME>=Ada L."]) == 0
    out = capsys.readouterr().out
    assert "placeholder with no value" not in out
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    answers = sorted(r["messages"][-1]["content"] for r in rows)
    assert answers == ["Call me Ada, or Ada L..", "Hello, I am Bob.", "I am Ada."]


# ---- data inspect reads a CSV with its own column names ----------------------------------------

def test_inspect_takes_columns_and_a_profile(tmp_path, capsys):
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n", encoding="utf-8")
    assert data_main(["data", "inspect", str(csv)]) == 2
    assert "--columns" in capsys.readouterr().err  # the hint names the flag
    assert data_main(["data", "inspect", str(csv), "--columns", "instruction=question,output=answer"]) == 0
    out = capsys.readouterr().out
    assert "schema alpaca" in out and "rows inspected                          2" in out
    profile = tmp_path / "qa.toml"
    profile.write_text('[model]\nname_or_path = "x/y"\n[data]\ntrain = "qa.csv"\n'
                       'columns = { instruction = "question", output = "answer" }\n', encoding="utf-8")
    assert data_main(["data", "inspect", "--profile", str(profile)]) == 0
    assert "schema alpaca" in capsys.readouterr().out


# ---- one numbering: JSON-array rows are `file.json row N`, from 1 -------------------------------

def test_json_array_rows_are_numbered_from_one_and_said_so(tmp_path, capsys):
    data = _alpaca(tmp_path, "a.json", ["ok answer", "x", "another ok answer"])  # row 2 is short
    assert data_main(["data", "clean", str(data), "-o", str(tmp_path / "out"),
                      "--steps", "drop_short", "--split", "1,0,0"]) == 0
    out = capsys.readouterr().out
    assert "a.json row 2" in out and "a.json:1" not in out
    lines = _alpaca(tmp_path, "a.jsonl", ["ok answer", "x", "another ok answer"])
    assert data_main(["data", "clean", str(lines), "-o", str(tmp_path / "out2"),
                      "--steps", "drop_short", "--split", "1,0,0"]) == 0
    assert "a.jsonl:2" in capsys.readouterr().out  # JSON Lines: the line, as an editor shows it
    # `data show --row N` takes the number as shown.
    assert data_main(["data", "show", str(data), "--row", "2", "--model", str(TINY_MODEL)]) == 0
    assert "question 1" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 4}]))
    assert data_main(["data", "inspect", str(bad)]) == 0
    assert "bad.json row 2" in capsys.readouterr().out


# ---- lists say how much they leave out ---------------------------------------------------------

def test_inspect_says_how_many_duplicate_groups_it_does_not_list(tmp_path, capsys):
    outputs = [f"answer number {i} is here" for i in range(13) for _ in range(2)]
    rows = [{"instruction": "same", "input": "", "output": o} for o in outputs]
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert data_main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "exact duplicate groups                 13" in out
    assert "… and 10 more groups" in out


# ---- the report's time is the command's, tokenizer included ------------------------------------

def test_inspect_time_counts_loading_the_tokenizer(tmp_path, capsys, monkeypatch):
    import time

    from workbench.data import cli

    data = _alpaca(tmp_path, "t.jsonl", ["an answer"])
    real = cli._load_tokenizer

    def slow(*args):
        time.sleep(1.0)  # a tokenizer that takes its time to load, as a real one does
        return real(*args)
    monkeypatch.setattr(cli, "_load_tokenizer", slow)
    assert data_main(["data", "inspect", str(data), "--model", str(TINY_MODEL)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    seconds = float(last.strip("(").split(" s")[0])
    assert seconds >= 1.0, last


# ---- transformers' "Token indices sequence length is longer..." stays out -----------------------

def test_no_sequence_length_warning_from_transformers(tmp_path, capfd):
    data = _alpaca(tmp_path, "long.jsonl", [" ".join(["word"] * 600), "short answer"])
    assert data_main(["data", "show", str(data), "--row", "1", "--model", str(TINY_MODEL),
                      "--max-seq-len", "128"]) == 0
    assert data_main(["data", "clean", str(data), "-o", str(tmp_path / "out"), "--steps",
                      "length_filter", "--model", str(TINY_MODEL), "--max-tokens", "100",
                      "--split", "1,0,0"]) == 0
    captured = capfd.readouterr()
    assert "Token indices sequence length" not in captured.out + captured.err
