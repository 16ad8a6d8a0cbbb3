"""`workbench data ...` end to end: inspect, clean, split, show, and errors people can act on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA, TINY_MODEL
from workbench.data.cli import data_main
from workbench.data.save import is_saved_dataset, load_manifest

LONG = ("The committee met on Tuesday to review the budget for the coming year, and after a long "
        "discussion about maintenance costs, staffing and the new library wing, it agreed to "
        "postpone the final vote until the auditors had delivered their report in March.")


# Thirty short, different rows (different enough that none is a near duplicate of another).
PHRASES = [(f"the {adj} {noun}", f"{fr_noun} {fr_adj}") for (adj, fr_adj) in
           [("red", "rouge"), ("black", "noire"), ("small", "petite"), ("green", "verte"), ("old", "vieille")]
           for (noun, fr_noun) in [("apple", "la pomme"), ("house", "la maison"), ("door", "la porte"),
                                   ("chair", "la chaise"), ("window", "la fenêtre"), ("bicycle", "la bicyclette")]]


def chat(user, answer):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def data_file(tmp_path):
    rows = [chat(f"Translate to French: {english}", french) for english, french in PHRASES]
    rows += [chat("Summarize the meeting.", LONG), chat("Summarize the meeting.", LONG.replace("Tuesday", "Monday")),
             chat("Translate to French: the red apple", "la pomme rouge"),  # exact copy of row 1
             chat("Who are you?", "I am {{name}}, made by {{author}}.   \n\n\n\n\nAsk me anything."),
             chat("Empty answer", ""), chat("Short", "k"), chat("Long one", " ".join(f"step {i}: stir pot {i * 7} gently." for i in range(60)))]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny():
    if not (TINY_MODEL / "tokenizer.json").exists():
        pytest.skip("assets/tiny-model is missing")
    return str(TINY_MODEL)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_clean_end_to_end_json(data_file, tmp_path, tiny, capsys):
    out = tmp_path / "out"
    code = data_main(["data", "clean", str(data_file), "-o", str(out),
                      "--steps", "drop_empty,drop_short,normalize_whitespace,dedup_exact,dedup_near,"
                                 "length_filter,fill_placeholders",
                      "--max-tokens", "256", "--model", tiny, "--near-dup-threshold", "0.8",
                      "--fill", "name=Workbench,author=Us", "--seed", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    ops = {op["name"]: op for op in report["clean"]["operations"]}
    assert list(ops) == ["drop_empty", "drop_short", "normalize_whitespace", "dedup_exact", "dedup_near",
                         "length_filter", "fill_placeholders"]
    assert len(ops["drop_empty"]["removed"]) == 1 and len(ops["drop_short"]["removed"]) == 1
    assert len(ops["dedup_exact"]["removed"]) == 1 and len(ops["dedup_near"]["removed"]) == 1
    assert len(ops["length_filter"]["removed"]) == 1 and ops["normalize_whitespace"]["changed"] == 1
    assert report["clean"]["rows_in"] == 37 and report["clean"]["rows_out"] == 32
    assert report["split"]["leakage"]["clean"] and sum(report["split"]["sizes"].values()) == 32

    assert is_saved_dataset(out)
    manifest = load_manifest(out)
    assert manifest["seed"] == 3 and manifest["near_dup_threshold"] == 0.8
    assert [op["name"] for op in manifest["operations"]][0] == "drop_empty"
    assert manifest["tokenizer"]["local"] and manifest["sources"][0]["format"] == "messages"
    text = "".join((out / f"{n}.jsonl").read_text(encoding="utf-8") for n in ("train", "validation", "test"))
    assert "{{" not in text and "I am Workbench, made by Us.\\n\\n\\nAsk me anything." in text


def test_clean_human_report_and_refuses_existing_output(data_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert data_main(["data", "clean", str(data_file), "-o", str(out), "--steps", "drop_empty,dedup_exact"]) == 0
    text = capsys.readouterr().out
    assert "clean: 37 rows in" in text and "drop_empty" in text and "split (seed 42)" in text
    assert "leakage: none" in text and f"saved: {out}" in text
    assert data_main(["data", "clean", str(data_file), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refusing to overwrite" in err and "Traceback" not in err
    assert data_main(["data", "clean", str(data_file), "-o", str(out), "--overwrite"]) == 0


def test_clean_with_profile_settings(data_file, tmp_path, capsys):
    profile = tmp_path / "p.toml"
    profile.write_text(
        f'[model]\nname_or_path = "{TINY_MODEL}"\n[data]\ntrain = "{data_file}"\nsplit = [0.5, 0.5, 0.0]\n'
        '[clean]\nsteps = ["drop_empty", "fill_placeholders"]\nplaceholders = { name = "W", author = "U" }\n',
        encoding="utf-8")
    out = tmp_path / "out"
    assert data_main(["data", "clean", "-o", str(out), "--profile", str(profile), "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert [op["name"] for op in report["clean"]["operations"]] == ["drop_empty", "fill_placeholders"]
    assert report["split"]["fractions"] == [0.5, 0.5, 0.0] and report["split"]["sizes"]["test"] == 0


def test_split_end_to_end(data_file, tmp_path, capsys):
    out = tmp_path / "split"
    assert data_main(["data", "split", str(data_file), "-o", str(out), "--fractions", "0.6,0.2,0.2",
                      "--seed", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"]["leakage"]["clean"]
    sizes = report["split"]["sizes"]
    assert sum(sizes.values()) == 37 and sizes == {n: len(read_jsonl(out / f"{n}.jsonl")) for n in sizes}
    assert load_manifest(out)["operations"] == []
    assert data_main(["data", "split", str(data_file), "-o", str(tmp_path / "s2")]) == 0
    assert "leakage: none" in capsys.readouterr().out


def test_show_marks_trained_tokens(data_file, tiny, capsys):
    assert data_main(["data", "show", str(data_file), "--row", "2", "--model", tiny]) == 0
    out = capsys.readouterr().out
    assert "row 2:" in out and "«la maison rouge<|im_end|>»" in out
    assert data_main(["data", "show", str(data_file), "--row", "2", "--model", tiny, "--train-on", "all"]) == 0
    assert "«<|im_start|>user" in capsys.readouterr().out
    assert data_main(["data", "show", str(data_file), "--row", "999", "--model", tiny]) == 2
    assert "error: " in capsys.readouterr().err


def test_inspect_text_and_json(data_file, tiny, capsys):
    pytest.importorskip("workbench.data.inspect")
    assert data_main(["data", "inspect", str(data_file), "--model", tiny, "--max-seq-len", "64"]) == 0
    assert capsys.readouterr().out.strip()
    assert data_main(["data", "inspect", str(data_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict) and report


@pytest.mark.parametrize("argv, needle", [
    (["data", "clean", "MISSING.jsonl", "-o", "OUT"], "no such file"),
    (["data", "clean", "DATA", "-o", "OUT", "--steps", "dedupe_exact"], "did you mean 'dedup_exact'"),
    (["data", "clean", "DATA", "-o", "OUT", "--steps", "length_filter"], "needs a tokenizer"),
    (["data", "clean", "DATA", "-o", "OUT", "--fill", "name=x"], "fill_placeholders is not among the steps"),
    (["data", "clean", "DATA", "-o", "OUT", "--profile", "no-such-profile"], "no-such-profile"),
    (["data", "split", "DATA", "-o", "OUT", "--fractions", "0.5,0.6"], "add up to 1"),
    (["data", "show", "DATA", "--row", "1", "--model", "OUT/no-model"], "could not load the tokenizer"),
])
def test_errors_exit_2_without_traceback(argv, needle, data_file, tmp_path):
    argv = [a.replace("DATA", str(data_file)).replace("OUT", str(tmp_path / "out")) for a in argv]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "workbench.data.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr
    assert "error: " in proc.stderr
    assert not (tmp_path / "out").exists()


def test_data_modules_import_light():
    code = ("import sys, workbench.data.clean, workbench.data.split, workbench.data.save, workbench.data.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'textual', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_identity_placeholders_filled(tmp_path, capsys):
    identity = SHARED_DATA / "identity.json"
    if not identity.exists():
        pytest.skip(f"{identity} is absent")
    out = tmp_path / "identity"
    assert data_main(["data", "clean", str(identity), "-o", str(out), "--steps", "fill_placeholders",
                      "--fill", "name=Workbench,author=Us", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    op = report["clean"]["operations"][0]
    assert op["changed"] > 0 and op["flagged"] == []
    rows = sum((read_jsonl(out / f"{n}.jsonl") for n in ("train", "validation", "test")), [])
    assert len(rows) == report["clean"]["rows_out"] == 91
    text = json.dumps(rows, ensure_ascii=False)
    assert "{{" not in text and "Workbench" in text


def test_malformed_json_is_placed_at_file_line_column_by_inspect_and_clean(tmp_path, capsys):
    """Line 3 lacks its closing brace, so the problem is at column 119, the end of the line.
    Both commands name file:3:119, and the hint names the flag a person types."""
    from workbench.cli import main

    rows = [chat(f"Translate to French: {english}", french) for english, french in PHRASES[:6]]
    lines = [json.dumps(r) for r in rows]
    pad = 118 - len(json.dumps({"instruction": "", "output": "ok"})[:-1])
    lines.insert(2, json.dumps({"instruction": "x" * pad, "output": "ok"})[:-1])
    assert len(lines[2]) == 118
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert main(["data", "inspect", str(path)]) == 0  # inspect reports bad rows, it does not stop
    assert "broken.jsonl:3:119: invalid JSON: Expecting ',' delimiter" in capsys.readouterr().out
    assert main(["data", "inspect", str(path), "--json"]) == 0
    (skipped,) = json.loads(capsys.readouterr().out)["skipped_examples"]
    assert (skipped["row"], skipped["column"]) == (3, 119)

    assert main(["data", "clean", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:3:119: invalid JSON: Expecting ',' delimiter")
    assert "--skip-bad-rows" in err and 'data.on_bad_rows = "skip"' in err
    assert "on_bad_line" not in err and "Traceback" not in err
    assert main(["data", "clean", str(path), "-o", str(tmp_path / "out"), "--skip-bad-rows"]) == 0
    assert f"skipped {path}:3:119: invalid JSON" in capsys.readouterr().out
