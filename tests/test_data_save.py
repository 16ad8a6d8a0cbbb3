"""Saved dataset folders: files, manifest, parquet twins, atomic writes, no silent overwrite."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import TINY_MODEL
from workbench.data import DataError, load_records
from workbench.data import save as save_module
from workbench.data.save import (
    describe_sources,
    describe_tokenizer,
    is_saved_dataset,
    load_manifest,
    manifest_hash,
    save_splits,
    saved_split_files,
)


def rec(row, answer="an answer", file="d.jsonl"):
    return {"messages": [{"role": "user", "content": f"q{row} — é"}, {"role": "assistant", "content": answer}],
            "source": {"file": file, "row": row}}


SPLITS = {"train": [rec(1), rec(2), rec(3)], "validation": [rec(4)], "test": [rec(5)]}


def test_writes_jsonl_parquet_and_manifest(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in sum(SPLITS.values(), [])), encoding="utf-8")
    extra = {"sources": describe_sources([src], {str(src): "messages"}), "seed": 42,
             "operations": [{"name": "dedup_exact", "removed": 0}], "tokenizer": describe_tokenizer(None)}
    out = save_splits(tmp_path / "out", SPLITS, extra)
    assert out == tmp_path / "out"
    for name in ("train", "validation", "test"):
        assert (out / f"{name}.jsonl").is_file() and (out / f"{name}.parquet").is_file()
    assert load_records(out / "train.jsonl")[0]["messages"] == SPLITS["train"][0]["messages"]
    raw = json.loads((out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert raw["source"] == {"file": "d.jsonl", "row": 1}

    manifest = load_manifest(out)
    assert manifest["schema_version"] == 1 and manifest["workbench_version"]
    assert manifest["created_at"].endswith("+00:00")
    assert manifest["splits"]["train"]["rows"] == 3 and manifest["splits"]["test"]["fraction"] == 0.2
    assert manifest["seed"] == 42 and manifest["operations"][0]["name"] == "dedup_exact"
    (source,) = manifest["sources"]
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert len(source["dataset_hash"]) == 64 and source["format"] == "messages"
    assert manifest_hash(out) == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert is_saved_dataset(out) and not is_saved_dataset(src) and not is_saved_dataset(tmp_path)
    assert set(saved_split_files(out)) == {"train", "validation", "test"}


def test_parquet_has_messages_struct_and_source_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = save_splits(tmp_path / "out", SPLITS)
    table = pq.read_table(out / "train.parquet")
    assert table.schema.field("messages").type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    rows = table.to_pylist()
    assert rows[0]["messages"][0] == {"role": "user", "content": "q1 — é"}
    assert (rows[2]["source_file"], rows[2]["source_row"]) == ("d.jsonl", 3)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = save_splits(tmp_path / "out", SPLITS)
    with pytest.raises(DataError, match="not empty"):
        save_splits(out, {"train": [rec(9)]})
    assert len(load_records(out / "train.jsonl")) == 3
    save_splits(out, {"train": [rec(9)]}, overwrite=True)
    assert len(load_records(out / "train.jsonl")) == 1 and not (out / "test.jsonl").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    save_splits(empty, SPLITS)  # an empty folder is fine
    assert is_saved_dataset(empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]  # no temp or backup left


def test_a_failed_save_leaves_no_folder(tmp_path, monkeypatch):
    real = save_module._write_parquet

    def fail_on_test(path, rows):
        if path.name == "test.parquet":
            raise OSError("disk full")
        real(path, rows)

    monkeypatch.setattr(save_module, "_write_parquet", fail_on_test)
    with pytest.raises(OSError, match="disk full"):
        save_splits(tmp_path / "out", SPLITS)
    assert list(tmp_path.iterdir()) == []
    # ...and a failed overwrite keeps the old data
    monkeypatch.setattr(save_module, "_write_parquet", real)
    save_splits(tmp_path / "out", SPLITS)
    monkeypatch.setattr(save_module, "_write_parquet", fail_on_test)
    with pytest.raises(OSError):
        save_splits(tmp_path / "out", {"train": [rec(9)], "test": [rec(10)]}, overwrite=True)
    assert len(load_records(tmp_path / "out" / "train.jsonl")) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_load_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="not a saved dataset"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_describe_tokenizer_hashes_local_files():
    if not (TINY_MODEL / "tokenizer.json").exists():
        pytest.skip("assets/tiny-model is missing")
    info = describe_tokenizer(str(TINY_MODEL))
    assert info["local"] and "tokenizer.json" in info["files"] and len(info["sha256"]) == 64
    assert describe_tokenizer("org/model") == {"name_or_path": "org/model", "local": False, "sha256": None}
