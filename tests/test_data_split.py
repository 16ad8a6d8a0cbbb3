"""Splits keep duplicate groups on one side; leakage across splits is detected."""

from __future__ import annotations

import random

import pytest

from workbench.data import DataError
from workbench.data.split import format_leakage, leakage_report, parse_fractions, split_records

WORDS = ("river stone cloud lamp garden window copper violin harbor meadow tiger orange pencil "
         "planet winter candle mirror forest rocket silver ladder cotton bridge falcon").split()


def rec(row, answer, user=None):
    return {"messages": [{"role": "user", "content": user or f"question number {row}"},
                         {"role": "assistant", "content": answer}],
            "source": {"file": "d.jsonl", "row": row}}


def dataset(n=200, groups=20, seed=0):
    """n distinct rows, then for the first `groups` rows a near copy and an exact copy each."""
    rng = random.Random(seed)
    rows = [rec(i, " ".join(rng.choice(WORDS) for _ in range(40))) for i in range(n)]
    for k in range(groups):
        question, answer = rows[k]["messages"][0]["content"], rows[k]["messages"][1]["content"]
        rows.append(rec(1000 + k, answer + " indeed", user=question))  # near copy
        rows.append(rec(2000 + k, answer, user=question))  # exact copy
    return rows


def rows_of(records):
    return [r["source"]["row"] for r in records]


def test_grouped_split_has_no_leakage_and_keeps_groups_together():
    data = dataset()
    result = split_records(data, (0.8, 0.1, 0.1), seed=42)
    leak = result.report["leakage"]
    assert leak["clean"] and leak["exact_pairs"] == 0 and leak["near_pairs"] == 0
    assert leak["examples_total"] == 0
    side = {row: name for name, part in result.as_dict().items() for row in rows_of(part)}
    for k in range(20):
        assert side[k] == side[1000 + k] == side[2000 + k]
    assert result.report["duplicate_groups"] == 20 and result.report["rows_in_duplicate_groups"] == 60
    assert "leakage: none" in format_leakage(leak)


def test_sizes_follow_the_fractions():
    data = dataset(n=300, groups=0)
    result = split_records(data, "0.8,0.1,0.1", seed=1)
    assert result.report["sizes"] == {"train": 240, "validation": 30, "test": 30}
    result = split_records(dataset(), (0.8, 0.1, 0.1), seed=1)
    sizes = result.report["sizes"]
    assert sum(sizes.values()) == 240
    assert abs(sizes["validation"] - 24) <= 3 and abs(sizes["test"] - 24) <= 3
    two = split_records(data, (0.9, 0.1), seed=1)
    assert two.test == [] and len(two.validation) == 30


def test_naive_split_leaks_and_is_detected():
    data = dataset()
    random.Random(3).shuffle(data)
    naive = {"train": data[:192], "validation": data[192:216], "test": data[216:]}
    leak = leakage_report(naive, near_dup_threshold=0.85)
    assert not leak["clean"]
    assert leak["exact_pairs"] > 0 and leak["near_pairs"] > 0
    assert leak["examples_total"] > 0 and sum(leak["examples"].values()) == leak["examples_total"]
    assert set(leak["pairs_by_splits"]) <= {"train/validation", "train/test", "validation/test"}
    assert "shared between splits" in format_leakage(leak)
    exact_only = leakage_report(naive, near_dup_threshold=None)
    assert exact_only["near_pairs"] == 0 and exact_only["exact_pairs"] == leak["exact_pairs"]


def test_leakage_between_user_files_counts_pairs_and_examples():
    train = [rec(1, "alpha beta gamma " * 10), rec(2, "delta epsilon " * 10)]
    validation = [rec(1, "alpha beta gamma " * 10), rec(2, "something quite different here")]
    leak = leakage_report({"train": train, "validation": validation})
    assert leak["exact_pairs"] == 1 and leak["near_pairs"] == 0
    assert leak["examples"] == {"train": 1, "validation": 1}
    # duplicates inside one split are not leakage
    assert leakage_report({"train": train + train, "validation": validation[1:]})["clean"]


def test_seeded_and_deterministic():
    data = dataset()
    a = split_records(data, seed=7)
    b = split_records(data, seed=7)
    c = split_records(data, seed=8)
    assert [rows_of(p) for p in a.as_dict().values()] == [rows_of(p) for p in b.as_dict().values()]
    assert rows_of(a.validation) != rows_of(c.validation)
    assert a.report["seed"] == 7


def test_within_a_split_input_order_is_kept():
    result = split_records(dataset(n=50, groups=0), seed=3)
    for part in result.as_dict().values():
        assert rows_of(part) == sorted(rows_of(part))


@pytest.mark.parametrize("bad", ["0.8,0.1", "0.5,0.6,0.1", "a,b,c", "0.5,0.2,0.2,0.1", "0,0.5,0.5", "1.1,-0.1"])
def test_bad_fractions_are_errors(bad):
    if bad == "0.8,0.1":
        with pytest.raises(DataError, match="add up to 1"):
            parse_fractions(bad)
        return
    with pytest.raises(DataError):
        parse_fractions(bad)


def test_parse_fractions_accepts_two_or_three():
    assert parse_fractions("0.9,0.1") == (0.9, 0.1, 0.0)
    assert parse_fractions([0.8, 0.1, 0.1]) == (0.8, 0.1, 0.1)
