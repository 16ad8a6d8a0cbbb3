"""Inspection at scale (issue 27): compact exact index, bounded MinHash index, the batch
normalizer and pre-filter (same results as the per-row code), the MinHash worker process, and
`sample_rows` / `--sample`."""

import json
import random

import numpy as np
import pytest

import workbench.data.inspect as inspect_mod
from workbench.data.checks import broken_text_issues, find_pii, find_secrets
from workbench.data.cli import data_main
from workbench.data.dedup import (
    ExactIndex,
    MinHashLSH,
    near_duplicate_groups,
    normalize_batch,
    normalize_text,
)
from workbench.data.inspect import format_report, histogram, inspect_dataset, stats

WORDS = (
    "river", "light", "energy", "water", "system", "learn", "small", "large", "quickly", "slowly",
    "because", "however", "therefore", "example", "result", "model", "data", "train", "answer",
    "question", "city", "history",
)


def paragraph(rng: random.Random, n: int = 120) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def near_copy(rng: random.Random, text: str, changes: int = 2) -> str:
    words = text.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- the batch normalizer ------------------------------------------------------------------------


def test_normalize_batch_equals_normalize_text():
    rng = random.Random(0)
    alphabet = "aZ \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f.\x01"
    for _ in range(2000):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
                 for _ in range(rng.randint(1, 5))]
        assert normalize_batch(texts) == [normalize_text(t).encode() for t in texts], texts
    # Non-ASCII, a NUL inside a text and a lone surrogate take the row-by-row path.
    odd = ["Caf\u00c9\u00a0 AU\u2003lait ", "a\x00B", "x\ud800 y", ""]
    assert normalize_batch(odd) == [normalize_text(t).encode("utf-8", "surrogatepass") for t in odd]


# -- the exact index -----------------------------------------------------------------------------


def test_exact_index_gives_first_row_and_stays_compact():
    rng = random.Random(1)
    index, first = ExactIndex(), {}
    for b in range(400):  # many batches: the sorted runs merge
        keys = np.array([rng.randrange(3000) for _ in range(40)], dtype=np.uint64)
        rows = np.arange(b * 40, b * 40 + 40)
        got = index.add(keys, rows)
        assert got.tolist() == [first.setdefault(int(k), int(r)) for k, r in zip(keys, rows)]
    assert index.distinct == len(first)
    assert index.nbytes == 12 * len(first)  # 8-byte key + 4-byte row, nothing per copy
    assert len(index._runs) <= 12


# -- the bounded MinHash index -------------------------------------------------------------------


def test_bounded_index_checks_later_rows_against_it():
    rng = random.Random(2)
    base = [paragraph(rng) for _ in range(6)]
    texts = base + [near_copy(rng, base[1]), near_copy(rng, base[4])]  # 6, 7: copies of 1 and 4
    late = paragraph(rng)
    texts += [late, near_copy(rng, late)]  # 8, 9: both past the bound
    unbounded = MinHashLSH()
    unbounded.add(texts)
    assert unbounded.groups() == [[1, 6], [4, 7], [8, 9]]

    bounded = MinHashLSH(max_rows=6)
    bounded.add(texts[:4])
    bounded.add(texts[4:])  # the bound falls inside a batch
    assert bounded.indexed == 6 and bounded.queried == 4
    # Past the bound: 6 and 7 are found against the index; 8 ~ 9 are not compared.
    assert bounded.groups() == [[1, 6], [4, 7]]
    size = bounded.nbytes
    bounded.add([paragraph(rng) for _ in range(50)])
    assert bounded.indexed == 6 and bounded.nbytes == size  # no growth past the bound


def test_near_duplicate_groups_unchanged_for_callers():
    rng = random.Random(3)
    a = paragraph(rng)
    assert near_duplicate_groups([a, paragraph(rng), near_copy(rng, a), "", "short"]) == [[0, 2]]


def test_inspect_reports_dedup_memory_and_the_bound(tmp_path):
    rng = random.Random(4)
    rows = [{"instruction": f"q{i}", "output": paragraph(rng)} for i in range(30)]
    rows.append({"instruction": "q3", "output": near_copy(rng, rows[3]["output"])})  # vs the index
    late = paragraph(rng)
    rows += [{"instruction": "a", "output": late}, {"instruction": "a", "output": near_copy(rng, late)}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)

    full = inspect_dataset(path).to_json()["near_duplicates"]
    assert full["rows_removable"] == 2 and full["rows_past_bound"] == 0
    assert full["max_rows"] == inspect_mod.NEAR_DUP_MAX_ROWS

    r = inspect_dataset(path, near_dup_max_rows=30).to_json()
    nd = r["near_duplicates"]
    assert (nd["rows_indexed"], nd["rows_past_bound"], nd["max_rows"]) == (30, 3, 30)
    assert nd["rows_removable"] == 1  # 30 (line 31) against line 4; 31 ~ 32 both past the bound
    assert [s["row"] for s in nd["examples"][0]] == [4, 31]
    assert nd["memory_bytes"] > 0 and r["exact_duplicates"]["memory_bytes"] >= 12 * 33
    text = format_report(r)
    assert "MinHash index memory" in text and "index memory" in text
    assert "3 rows past the bound were checked against the first 30 only" in text


# -- same results as the row-by-row detectors ----------------------------------------------------


def test_prefilter_never_hides_a_finding(tmp_path):
    """Rows the batch pre-filter lets skip a detector must be rows where it finds nothing: every
    count equals running checks.py on each row."""
    specials = [
        "call +44 20 7946 0958 today", "or (555) 123-4567", "server 8.8.8.8 is up",
        "mail jane.roe@corp-mail.com", "digits \u0661\u0662\u0663-\u0664\u0665\u0666-\u0667\u0668\u0669\u0660",
        "key sk-proj-abc123DEF456ghi789JKL012mno", "AKIAIOSFODNN7EXAMPLE1 here",
        "hf_abcdefghijklmnopqrstuvwxyz1234567", "ghp_" + "a1B2" * 9, "xoxb-1234567890-abcdef",
        'password = "Zq8#kP2$wL9@xR4!"', 'API_KEY: "a8f3K2m9Q7x1Z5c4"', "\u212aey = 'Zq8kP2wL9xR4mN7b'",
        "-----BEGIN RSA PRIVATE KEY-----", "bell\x07 char", "caf\u00c3\u00a9", "zero\u200bwidth",
        "rep\ufffdlaced", "plain words only", "",
    ]
    rng = random.Random(5)
    rows = [{"instruction": rng.choice(WORDS), "output": s + " " + rng.choice(WORDS)} for s in specials]
    rows += [{"instruction": "w", "output": paragraph(rng, 20)} for _ in range(40)]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    r = inspect_dataset(path).to_json()
    from workbench.data.dedup import record_text
    from workbench.data.load import iter_records

    texts = [record_text(rec) for rec in iter_records(path)]
    assert r["pii"]["rows"] == sum(bool(find_pii(t)) for t in texts) > 0
    assert r["secrets"]["rows"] == sum(bool(find_secrets(t)) for t in texts) > 0
    assert r["broken_text"]["rows"] == sum(bool(broken_text_issues(t)) for t in texts) > 0
    assert sum(r["secrets"]["counts"].values()) == sum(len(find_secrets(t)) for t in texts)
    assert sum(r["pii"]["counts"].values()) == sum(len(find_pii(t)) for t in texts)


def test_length_tables_give_the_same_stats():
    rng = random.Random(6)
    values = [rng.choice([0, 1, 5, 700, 701, 9000]) + rng.randrange(50) for _ in range(5001)]
    table = inspect_mod._Lengths()
    for i in range(0, len(values), 700):
        table.add(values[i : i + 700])
    assert table.summary() == {**stats(values), "histogram": histogram(np.array(values))}
    assert inspect_mod._Lengths().summary()["count"] == 0


# -- the worker process --------------------------------------------------------------------------


def test_worker_process_gives_the_same_report(tmp_path, monkeypatch):
    rng = random.Random(7)
    rows = []
    for i in range(3000):
        roll = rng.random()
        if rows and roll < 0.05:
            rows.append(dict(rng.choice(rows)))
        elif rows and roll < 0.1:
            base = rng.choice(rows)
            rows.append({**base, "output": near_copy(rng, base["output"], 3)})
        else:
            rows.append({"instruction": f"q{i}", "output": paragraph(rng, 60), "system": "S" if i % 7 == 0 else ""})
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    in_thread = inspect_dataset(path).to_json()
    started = []

    class Spy(inspect_mod.MinHashProcess):
        def __init__(self, *args, **kwargs):
            started.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(inspect_mod, "_PROCESS_BYTES", 0)
    monkeypatch.setattr(inspect_mod, "MinHashProcess", Spy)
    in_process = inspect_dataset(path).to_json()
    assert len(started) == 1 and started[0]._proc.returncode == 0  # the worker ran and exited
    for key in ("exact_duplicates", "near_duplicates"):
        for field in ("groups", "rows_removable", "examples"):
            assert in_process[key][field] == in_thread[key][field], (key, field)
    assert in_thread["near_duplicates"]["rows_removable"] > 50


# -- sampling ------------------------------------------------------------------------------------


def test_sample_rows_reads_the_first_rows_and_says_so(tmp_path, capsys):
    rng = random.Random(8)
    rows = [{"instruction": f"q{i}", "output": paragraph(rng, 10)} for i in range(50)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    r = inspect_dataset(path, sample_rows=20).to_json()
    assert (r["rows"], r["sample_rows"], r["rows_read"]) == (20, 20, 20)
    assert r["rows_by_file"] == {str(path): 20}
    assert "a sample of the first 20 rows" in format_report(r)
    whole = inspect_dataset(path, sample_rows=50).to_json()  # the data has no more: not a sample
    assert (whole["rows"], whole["sample_rows"]) == (50, None)
    assert "a sample" not in format_report(whole)
    with pytest.raises(ValueError):
        inspect_dataset(path, sample_rows=0)

    assert data_main(["data", "inspect", str(path), "--sample", "5"]) == 0
    assert "a sample of the first 5 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        data_main(["data", "inspect", str(path), "--sample", "0"])
    assert "expected a number of rows" in capsys.readouterr().err
