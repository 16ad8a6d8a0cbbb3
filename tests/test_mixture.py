"""Issue 27, item 2: several sources mixed by weight ([[data.sources]]).

On the shared samples (alpaca_en_demo 999 rows, identity 91, glaive_toolcall_en_demo 300): the
shares match the weights within 1%; the same seed draws the same rows and another seed others;
validation rows come only from held-out sources and never also sit in train (upsampled or a
near copy in another source); a source's train_on reaches the labels; `data inspect --profile`
reports each source, what cleaning takes from each and the duplicates across sources; a mixture
profile plans (cached the second time, sources kept), trains the tiny model and its run records
every source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
from conftest import SHARED_DATA, TINY_MODEL, workbench

from workbench.data.mixture import (
    draw_mixture,
    largest_remainder,
    load_mixture,
    load_sources,
)
from workbench.data.sources import SourceSpec
from workbench.profile import load_profile

ALPACA = SHARED_DATA / "alpaca_en_demo.json"
IDENTITY = SHARED_DATA / "identity.json"
GLAIVE = SHARED_DATA / "glaive_toolcall_en_demo.json"

pytestmark = pytest.mark.skipif(not all(p.is_file() for p in (ALPACA, IDENTITY, GLAIVE)),
                                reason="the shared sample data (../shared/data) is absent")

WEIGHTS = {"alpaca": 0.6, "identity": 0.3, "glaive": 0.1}


def specs(**changes) -> list[SourceSpec]:
    base = {"alpaca": {"path": str(ALPACA), "weight": 0.6},
            "identity": {"path": str(IDENTITY), "weight": 0.3, "train_on": "all"},
            "glaive": {"path": str(GLAIVE), "weight": 0.1, "held_out": False}}
    return [SourceSpec(label, **{**kw, **changes.get(label, {})}) for label, kw in base.items()]


@pytest.fixture(scope="module")
def loaded():
    return load_sources(specs())


def ids(records) -> list[tuple[str, int]]:
    return [(r["source"]["label"], r["source"]["row"]) for r in records]


def write_profile(folder: Path, sources: str, extra: str = "") -> Path:
    path = folder / "mix.toml"
    path.write_text(f"""
name = "mix"
[model]
name_or_path = "{TINY_MODEL}"
[data]
validation_split = 0.1
mix_rows = 80
{sources}
[lora]
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
[train]
max_seq_len = 128
device = "cpu"
precision = "fp32"
gradient_checkpointing = false
seed = 7
{extra}""", encoding="utf-8")
    return path


THREE = f"""
[[data.sources]]
path = "{ALPACA}"
label = "alpaca"
weight = 0.6
[[data.sources]]
path = "{IDENTITY}"
label = "identity"
weight = 0.3
train_on = "all"
[[data.sources]]
path = "{GLAIVE}"
label = "glaive"
weight = 0.1
held_out = false
"""


# ---- drawing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mix_rows", [0, 1000, 3000])
def test_shares_match_the_weights_within_one_percent(loaded, mix_rows):
    mixture = draw_mixture(loaded, seed=42, mix_rows=mix_rows, fractions=(0.9, 0.1, 0.0))
    total = len(mixture.train)
    assert total == (mix_rows or sum(d.available for d in mixture.sources))
    counts = {label: 0 for label in WEIGHTS}
    for label, _ in ids(mixture.train):
        counts[label] += 1
    for label, weight in WEIGHTS.items():
        assert abs(counts[label] / total - weight) < 0.01, (label, counts)
    for draw in mixture.sources:
        assert draw.share == pytest.approx(WEIGHTS[draw.spec.label], abs=0.01)
        assert draw.drawn == counts[draw.spec.label]
    # identity has 82 training rows for a 30% share: repeated, and said
    assert any("identity is repeated (upsampled)" in n for n in mixture.notes), mixture.notes


def test_largest_remainder_adds_up_and_stays_within_one_row():
    for total, weights in [(10, [1, 1, 1]), (1000, [0.6, 0.3, 0.1]), (7, [5, 0.01, 2])]:
        counts = largest_remainder(total, weights)
        assert sum(counts) == total
        for n, w in zip(counts, weights):
            assert abs(n - total * w / sum(weights)) < 1


def test_the_same_seed_draws_the_same_rows_and_another_seed_others(loaded):
    first = draw_mixture(loaded, seed=42, mix_rows=600, fractions=(0.9, 0.1, 0.0))
    again = draw_mixture(load_sources(specs()), seed=42, mix_rows=600, fractions=(0.9, 0.1, 0.0))
    other = draw_mixture(loaded, seed=43, mix_rows=600, fractions=(0.9, 0.1, 0.0))
    assert ids(first.train) == ids(again.train)
    assert ids(first.validation) == ids(again.validation)
    assert first.dataset_hash == again.dataset_hash
    assert ids(first.train) != ids(other.train)
    assert sorted(ids(first.train)) != sorted(ids(other.train))  # other rows, not only reordered


def test_rows_and_no_weights():
    fixed = draw_mixture(load_sources(specs(alpaca={"weight": None, "rows": 50},
                                            identity={"weight": None, "rows": 200},
                                            glaive={"weight": None, "rows": 10})), seed=1)
    assert [d.drawn for d in fixed.sources] == [50, 200, 10]
    assert len(set(ids(fixed.train))) == 50 + 91 + 10  # identity: all 91 rows, some twice
    plain = draw_mixture(load_sources(specs(alpaca={"weight": None}, identity={"weight": None},
                                            glaive={"weight": None})), seed=1)
    assert sorted(ids(plain.train)) == sorted(set(ids(plain.train)))  # every row once
    assert len(plain.train) == 999 + 91 + 300


def test_validation_comes_only_from_held_out_sources_and_never_sits_in_train(loaded):
    mixture = draw_mixture(loaded, seed=42, mix_rows=3000, fractions=(0.9, 0.1, 0.0))
    held = ids(mixture.validation)
    assert {label for label, _ in held} == {"alpaca", "identity"}
    assert not set(held) & set(ids(mixture.train))  # identity is upsampled 10x; none of it leaks
    by = {d.spec.label: d for d in mixture.sources}
    assert by["glaive"].validation == 0 and by["alpaca"].validation == 100
    assert any("no validation rows from glaive (held_out = false)" in n for n in mixture.notes)


def test_a_copy_in_a_source_without_held_out_rows_keeps_its_row_out_of_validation(tmp_path):
    """A near copy of every alpaca row sits in a held_out = false source: no alpaca row may
    then be held out (its copy trains), so alpaca gives no validation rows."""
    rows = json.loads(ALPACA.read_text())[:60]
    copies = tmp_path / "copies.json"
    copies.write_text(json.dumps([{**r, "output": r["output"] + " "} for r in rows]))
    original = tmp_path / "original.json"
    original.write_text(json.dumps(rows))
    loaded = load_sources([SourceSpec("original", path=str(original), weight=1),
                           SourceSpec("copies", path=str(copies), weight=1, held_out=False)])
    mixture = draw_mixture(loaded, seed=3, fractions=(0.8, 0.2, 0.0))
    assert mixture.validation == []


def test_a_source_system_prompt_reaches_its_rows_only():
    mixture = draw_mixture(load_sources(specs(identity={"system_prompt": "You are Bob."})),
                           seed=1, mix_rows=200)
    for record in mixture.train:
        first = record["messages"][0]
        if record["source"]["label"] == "identity":
            assert first == {"role": "system", "content": "You are Bob."}
        elif record["source"]["label"] == "alpaca":
            assert first["role"] == "user"


def test_a_source_train_on_reaches_the_labels(loaded):
    from transformers import AutoTokenizer

    from workbench.data.render import render_dataset
    from workbench.train.methods.sft import with_labels

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    mixture = draw_mixture(loaded, seed=42, mix_rows=100)
    one = {label: next(r for r in mixture.train if r["source"]["label"] == label)
           for label in ("alpaca", "identity")}
    for label, record in one.items():
        assert record["train_on"] == ("all" if label == "identity" else "assistant")
    rows, _ = render_dataset(tokenizer, [one["alpaca"], one["identity"]], "assistant", 512)
    alpaca, identity = with_labels(rows)
    trained = [sum(1 for x in r["labels"] if x != -100) for r in (alpaca, identity)]
    assert trained[1] == len(identity["input_ids"]) - 1  # all of it (the first never is)
    assert 0 < trained[0] < len(alpaca["input_ids"]) - 1  # the answer only


# ---- the profile, inspection, training -----------------------------------------------------------

def test_the_profile_mixture_is_the_training_data(tmp_path):
    from workbench.train.plan import load_training_data

    profile = load_profile(write_profile(tmp_path, THREE))
    data = load_training_data(profile)
    mixture = load_mixture(profile)
    assert ids(data.train) == ids(mixture.train) and len(data.train) == 80
    assert [s["label"] for s in data.sources] == ["alpaca", "identity", "glaive"]
    assert {s["label"]: s["rows_drawn"] for s in data.sources} == {
        "alpaca": 48, "identity": 24, "glaive": 8}
    assert data.dataset_hash == mixture.dataset_hash
    reweighted = load_profile(write_profile(tmp_path, THREE.replace("weight = 0.6",
                                                                   "weight = 0.5")))
    assert load_training_data(reweighted).dataset_hash != data.dataset_hash


def test_data_inspect_profile_shows_each_source(tmp_path, capsys):
    """A fourth source repeats 20 alpaca rows: exact duplicates across sources, and dedup_exact
    takes them from the copy (the first source keeps its rows)."""
    from workbench.data.cli import data_main

    copies = tmp_path / "copies.json"
    copies.write_text(json.dumps(json.loads(ALPACA.read_text())[:20]))
    sources = THREE + f'[[data.sources]]\npath = "{copies}"\nlabel = "copies"\nweight = 0.1\n'
    path = write_profile(tmp_path, sources,
                         '[clean]\nsteps = ["drop_empty", "dedup_exact"]\n')
    assert data_main(["data", "inspect", "--profile", str(path)]) == 0
    text = capsys.readouterr().out
    for label in ("alpaca", "identity", "glaive", "copies", "share before", "share after",
                  "dedup_exact", "duplicates across sources"):
        assert label in text, text
    assert data_main(["data", "inspect", "--profile", str(path), "--json",
                      "--model", str(TINY_MODEL)]) == 0
    report = json.loads(capsys.readouterr().out)
    by = {s["label"]: s for s in report["sources"]}
    assert [s["rows"] for s in report["sources"]] == [999, 91, 300, 20]
    # the copy loses all its rows; alpaca only the copies it holds of its own rows
    from workbench.data import dedup
    from workbench.data.load import load_records

    own = dedup.exact_duplicate_groups(dedup.record_text(r) for r in load_records(ALPACA))
    assert by["copies"]["lost"]["dedup_exact"] == 20
    assert by["alpaca"]["lost"]["dedup_exact"] == sum(len(g) - 1 for g in own)
    # cleaning empties the copy: it gives nothing after cleaning, the others share its part
    assert by["copies"]["after"]["rows"] == 0 and by["copies"]["after"]["share"] == 0
    assert by["alpaca"]["after"]["share"] == pytest.approx(0.6, abs=0.01)
    assert any("no rows in copies" in n for n in report["notes"])
    assert report["cross_source_duplicates"]["exact"]["pairs"] == {"alpaca + copies": 20}
    assert all(s["tokens"]["total"] > 0 for s in report["sources"])
    assert abs(by["alpaca"]["before"]["share"] - 0.6 / 1.1) < 0.01


def test_a_mixture_plans_from_the_cache_and_its_run_records_every_source(tmp_path,
                                                                         needs_tiny_model):
    from workbench.train.plan import plan_run

    path = write_profile(tmp_path, THREE)
    first = plan_run(load_profile(path))
    second = plan_run(load_profile(path))
    assert "from the cache" in second.data_source, second.data_source
    assert second.sources == first.sources and len(first.sources) == 3

    proc = workbench("run", str(path), "--runs-dir", "runs", "--set", "train.max_steps=2",
                     "--set", "train.eval_steps=0", "--set", "train.grad_accum=1",
                     "--set", "eval.after_training=false", cwd=tmp_path, check=True)
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert json.loads((run / "status.json").read_text())["state"] == "finished", proc.stdout
    resolved = tomllib.loads((run / "profile.toml").read_text())["resolved"]
    recorded = resolved["sources"]
    assert [s["label"] for s in recorded] == ["alpaca", "identity", "glaive"]
    for source, path_ in zip(recorded, (ALPACA, IDENTITY, GLAIVE)):
        assert source["path"] == str(path_) and len(source["hash"]) == 64
        assert source["share"] == pytest.approx(source["weight"], abs=0.01)
    assert recorded[2]["held_out"] is False and recorded[2]["rows_validation"] == 0
    assert sum(s["rows_validation"] for s in recorded) == 100 + 9
    assert resolved["train_rows"] > 0 and resolved["eval_rows"] > 0
    # The run's profile loads back (resume, eval and export read it) with the same sources,
    # and the evaluation's test split is the mixture's held-out rows.
    from workbench.evaluate.testset import load_splits

    again = load_profile(run / "profile.toml")
    assert again.data.sources == load_profile(path).data.sources and again.data.train == ""
    splits = load_splits(again)
    assert splits.source == "validation split" and len(splits.test) == 109
    assert {r["source"]["label"] for r in splits.test} == {"alpaca", "identity"}


def test_the_export_proof_takes_its_prompts_from_every_source(tmp_path):
    """Without eval.prompts the merge proof uses the training data's first user turns: a
    mixture's come from each of its sources (it has no data.train to read)."""
    from workbench.export.verify import proof_conversations

    profile = load_profile(write_profile(tmp_path, THREE, '[eval]\nprompts = ""\n'))
    convs, source = proof_conversations(profile, limit=6)
    assert len(convs) == 6 and "alpaca, identity, glaive" in source
    users = [c[-1]["content"] for c in convs]
    assert users[2] in {r["instruction"] for r in json.loads(IDENTITY.read_text())}


def test_a_local_folder_in_the_hubs_layout_is_a_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "hub-layout"
    (folder / "data").mkdir(parents=True)
    # rows of their own (alpaca's reversed), so none is a copy of another source's
    rows = [{k: v[::-1] for k, v in r.items()} for r in json.loads(ALPACA.read_text())[500:600]]
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    sources = THREE + f'[[data.sources]]\npath = "{folder}"\nlabel = "folder"\nweight = 0.2\n'
    mixture = load_mixture(load_profile(write_profile(tmp_path, sources)))
    by = {d.spec.label: d for d in mixture.sources}
    assert by["folder"].rows_loaded == 100 and by["folder"].validation == 10
    assert by["folder"].share == pytest.approx(0.2 / 1.2, abs=0.01)
    assert len(by["folder"].hash) == 64


def test_the_example_profile_mixes_its_three_sources():
    example = Path(__file__).parents[1] / "profiles" / "examples" / "mixture.toml"
    profile = load_profile(example)
    mixture = load_mixture(profile)
    assert len(mixture.train) == profile.data.mix_rows == 1200
    assert [round(d.share, 2) for d in mixture.sources] == [0.6, 0.3, 0.1]


def test_a_validation_file_replaces_the_held_out_rows(tmp_path):
    from workbench.train.plan import load_training_data

    held = tmp_path / "held.json"
    held.write_text(json.dumps(json.loads(ALPACA.read_text())[:7]))
    path = write_profile(tmp_path, THREE.replace("[[data.sources]]",
                                                 f'validation = "{held}"\n[[data.sources]]', 1))
    data = load_training_data(load_profile(path))
    assert len(data.validation) == 7 and all(s["rows_validation"] == 0 for s in data.sources)
    assert sum(s["rows_available"] for s in data.sources) == 999 + 91 + 300
