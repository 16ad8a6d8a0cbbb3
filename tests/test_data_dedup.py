"""Exact and near-duplicate detection."""

from workbench.data.dedup import (
    MinHashLSH, exact_duplicate_groups, exact_key, lsh_params, near_duplicate_groups, record_text,
)

BASE = ("The quick brown fox jumps over the lazy dog while the farmer watches from the porch, "
        "sipping coffee and thinking about the harvest that will come in the autumn months. "
        "Meanwhile the children play by the river, building small dams out of stones and mud.")


def test_record_text_and_exact_key_normalize():
    rec = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Yo"}]}
    assert record_text(rec) == "system: S\nuser: Hi\nassistant: Yo"
    assert record_text(rec, include_system=False) == "user: Hi\nassistant: Yo"
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello world!")
    assert len(exact_key("x")) == 16


def test_exact_groups_first_index_kept():
    texts = ["a b", "c", "A  B", "d", "c", "a b"]
    assert exact_duplicate_groups(texts) == [[0, 2, 5], [1, 4]]
    assert exact_duplicate_groups(["x", "y"]) == []


def test_near_duplicates_found_and_unrelated_not_grouped():
    paraphrase = BASE.replace("coffee", "tea")  # true Jaccard of 5-grams ~0.93
    unrelated = ("Quantum computers use qubits that can exist in superpositions, letting certain "
                 "algorithms such as Shor's factor large integers far faster than classical ones.")
    texts = [BASE, unrelated, paraphrase, "short one", "", ""]
    assert near_duplicate_groups(texts) == [[0, 2]]


def test_threshold_and_determinism():
    texts = [BASE, BASE.replace("quick", "fast"), BASE[: len(BASE) // 2]]
    assert near_duplicate_groups(texts, threshold=0.99) == []
    assert near_duplicate_groups(texts, seed=3) == near_duplicate_groups(texts, seed=3)
    a, b = MinHashLSH(seed=1).signatures(texts), MinHashLSH(seed=1).signatures(texts)
    assert (a == b).all()
    bands, rows = lsh_params(0.85, 128)
    assert bands * rows <= 128


def test_streaming_add_and_progress_cancel():
    calls = []

    class Stop:
        def is_set(self):
            return True

    texts = [BASE] * 3000
    groups = near_duplicate_groups(texts, progress=lambda d, t: calls.append(d), cancel=Stop())
    assert calls == [2048] and groups == [list(range(2048))]
