"""Issue 25: tokenized data is cached on disk by (data, tokenizer, template, settings), so a
second run, a sweep's trials and every rank of a distributed run read it back.

Hit on the second plan (nothing is rendered, the plan is the same plan, notes included); miss
when the data, the tokenizer, the chat template or a setting that changes tokens changes, hit
when only a setting that does not (the learning rate a sweep varies) changes; a damaged entry
is rebuilt; two writers of one key leave one whole entry; the least recently used entries go
over the size limit. Each test has its own cache directory (conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO_DATA, REPO, TINY_MODEL, workbench

from workbench.data import token_cache

DEMO = REPO / "profiles" / "demo.toml"
DPO_DEMO = REPO / "profiles" / "dpo-demo.toml"
GRPO_DEMO = REPO / "profiles" / "grpo-demo.toml"
# Where each method's renderer lives: the methods import it when they run, so a counting
# wrapper on the module attribute sees every call.
RENDERERS = {"sft": ("workbench.data.render", "render_dataset"),
             "dpo": ("workbench.data.preference_render", "render_preference_dataset"),
             "grpo": ("workbench.data.prompts", "render_prompts")}


@pytest.fixture
def renders(monkeypatch):
    """How many times each method's renderer ran (the real one runs every time)."""
    import importlib

    calls = {name: 0 for name in RENDERERS}
    for name, (module_name, attr) in RENDERERS.items():
        module = importlib.import_module(module_name)
        real = getattr(module, attr)

        def counting(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, attr, counting)
    return calls


def plan(profile=DEMO, *overrides: str, said: list | None = None):
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run

    return plan_run(load_profile(profile, list(overrides)),
                    log=said.append if said is not None else (lambda s: None))


def cache_entries() -> list[Path]:
    root = token_cache.cache_dir()
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


# ---- hits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,profile", [("sft", DEMO), ("dpo", DPO_DEMO), ("grpo", GRPO_DEMO)])
def test_the_second_plan_reads_the_cache_and_is_the_same_plan(method, profile, renders,
                                                              needs_tiny_model):
    said: list[str] = []
    first = plan(profile, said=said)
    rendered = renders[method]
    assert rendered >= 1 and "tokenized" in first.data_source and "cached for the next run" in \
        first.data_source, first.data_source
    assert len(cache_entries()) == 1

    said.clear()
    second = plan(profile, said=said)
    assert renders[method] == rendered, "the second plan rendered the data again"
    assert second.data_source.startswith("tokenized data from the cache (")
    rows = len(first.train_rows) + len(first.eval_rows)
    assert f"({rows} rows, key " in second.data_source
    assert said == [second.data_source]  # no "loading ..." either: nothing was read
    assert second.notes == first.notes  # word for word, the render notes included
    assert second.train_rows == first.train_rows and second.eval_rows == first.eval_rows
    assert type(second.train_rows[0]) is dict and list(second.train_rows[0]) == list(first.train_rows[0])
    assert (second.dataset_hash, second.manifest_hash) == (first.dataset_hash, first.manifest_hash)
    assert len(cache_entries()) == 1


def test_notes_the_chat_format_made_while_rendering_come_back(tmp_path, renders,
                                                             needs_tiny_model):
    """The tiny model's template renders no tool calls: rendering a call says so in a chat
    format note, which the plan reads after prepare_data; a cached plan says it too."""
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps({"conversations": [
        {"from": "human", "value": f"call f with {i}"},
        {"from": "function_call", "value": json.dumps({"name": "f", "arguments": {"x": i}})},
        {"from": "gpt", "value": f"done {i}"}]}) + "\n" for i in range(20)), encoding="utf-8")
    first = plan(DEMO, f'data.train="{data}"')
    second = plan(DEMO, f'data.train="{data}"')
    assert second.data_source.startswith("tokenized data from the cache") and renders["sft"] == 2
    assert any("does not render tool calls" in n for n in first.notes), first.notes
    assert second.notes == first.notes


def test_settings_that_do_not_change_tokens_still_hit(renders, needs_tiny_model):
    """What a sweep varies (learning rate, LoRA rank, steps) shares one entry."""
    plan(DEMO)
    before = renders["sft"]
    for override in ("train.learning_rate=5e-4", "lora.r=4", "train.max_steps=3",
                     "train.packing=false", "eval.max_new_tokens=8"):
        assert plan(DEMO, override).data_source.startswith("tokenized data from the cache"), override
    assert renders["sft"] == before
    assert len(cache_entries()) == 1


# ---- misses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("override", [
    "train.max_seq_len=48", "data.train_on=\"all\"", "data.system_prompt=\"Be brief.\"",
    "train.seed=7", "data.validation_split=0.2", "data.system=\"drop\""])
def test_a_setting_that_changes_tokens_or_the_split_misses(override, renders, needs_tiny_model):
    first = plan(DEMO)
    calls = renders["sft"]
    changed = plan(DEMO, override)
    assert renders["sft"] > calls, f"{override} was served from the cache"
    assert "cached for the next run" in changed.data_source
    assert len(cache_entries()) == 2
    assert plan(DEMO).notes == first.notes  # the first entry is still there, and still right


def test_changed_data_misses_and_the_same_bytes_hit(tmp_path, renders, needs_tiny_model):
    data = tmp_path / "data.jsonl"
    shutil.copy(DEMO_DATA, data)
    on = f'data.train="{data}"'
    plan(DEMO, on)
    assert plan(DEMO, on).data_source.startswith("tokenized data from the cache")
    calls = renders["sft"]

    lines = data.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("the city eats", "the city sleeps")  # same size, other bytes
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    again = plan(DEMO, on)
    assert renders["sft"] > calls and "cached for the next run" in again.data_source

    copy = tmp_path / "copy"  # a copy elsewhere is other data by name: the notes quote the path
    copy.mkdir()
    shutil.copy(data, copy / "data.jsonl")
    assert "cached for the next run" in plan(DEMO, f'data.train="{copy / "data.jsonl"}"').data_source


def test_a_saved_dataset_folder_is_cached_by_its_files(tmp_path, renders, needs_tiny_model):
    saved = tmp_path / "saved"
    workbench("data", "split", str(DEMO_DATA), "-o", str(saved), cwd=tmp_path, check=True)
    on = f'data.train="{saved}"'
    first = plan(DEMO, on)
    assert "cached for the next run" in first.data_source
    assert plan(DEMO, on).data_source.startswith("tokenized data from the cache")
    assert plan(DEMO, on).manifest_hash == first.manifest_hash
    with (saved / "validation.jsonl").open("a", encoding="utf-8") as fh:  # one split changes
        fh.write(json.dumps({"messages": [{"role": "user", "content": "Translate to French: yes"},
                                          {"role": "assistant", "content": "oui"}]}) + "\n")
    again = plan(DEMO, on)
    assert "cached for the next run" in again.data_source
    assert len(again.eval_rows) == len(first.eval_rows) + 1


def _model_copy(folder: Path) -> Path:
    """The tiny model's config and tokenizer (planning reads no weights)."""
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "tokenizer.model", "chat_template.jinja"):
        shutil.copy(TINY_MODEL / name, folder / name)
    return folder


def test_a_changed_tokenizer_misses(tmp_path, renders, needs_tiny_model):
    from transformers import AutoTokenizer

    model = _model_copy(tmp_path / "model")
    on = f'model.name_or_path="{model}"'
    first = plan(DEMO, on)
    assert plan(DEMO, on).data_source.startswith("tokenized data from the cache")
    calls = renders["sft"]

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens(["Translate to French:"])  # one token now: other ids, same folder
    tokenizer.save_pretrained(model)
    second = plan(DEMO, on)
    assert renders["sft"] > calls and "cached for the next run" in second.data_source
    assert second.train_rows != first.train_rows


def test_tokenizer_fingerprint_is_what_it_does_not_where_it_lives(tmp_path):
    from _tokenizers import build_chatml_tokenizer
    from transformers import AutoTokenizer

    tiny = AutoTokenizer.from_pretrained(TINY_MODEL)
    moved = AutoTokenizer.from_pretrained(_model_copy(tmp_path / "elsewhere"))
    chatml = build_chatml_tokenizer(tmp_path / "chatml")
    assert token_cache.tokenizer_fingerprint(tiny) == token_cache.tokenizer_fingerprint(moved)
    assert token_cache.tokenizer_fingerprint(tiny) != token_cache.tokenizer_fingerprint(chatml)
    tiny.pad_token = tiny.eos_token  # what load_tokenizer does when there is none
    moved.pad_token = "<|endoftext|>"
    assert token_cache.tokenizer_fingerprint(tiny) != token_cache.tokenizer_fingerprint(moved)


def test_a_changed_chat_template_misses(tmp_path, renders, needs_tiny_model):
    template = tmp_path / "template.jinja"
    text = (TINY_MODEL / "chat_template.jinja").read_text(encoding="utf-8")
    template.write_text(text, encoding="utf-8")
    on = f'model.chat_template="{template}"'
    plan(DEMO, on)
    assert plan(DEMO, on).data_source.startswith("tokenized data from the cache")
    calls = renders["sft"]
    template.write_text(text.replace("| trim", ""), encoding="utf-8")
    assert "cached for the next run" in plan(DEMO, on).data_source
    assert renders["sft"] > calls


def test_grpo_notes_settings_miss_and_kto_still_refuses_a_batch_of_one(renders, needs_tiny_model):
    """The plan's notes say GRPO's beta: a cached note must not say the old one. KTO's check of
    train.batch_size runs in prepare_data: a cached KTO plan must not skip it."""
    from workbench.train.plan import RunError

    plan(GRPO_DEMO)
    beta = plan(GRPO_DEMO, "grpo.beta=0.04")
    assert "cached for the next run" in beta.data_source
    assert any("KL to the start, beta 0.04" in n for n in beta.notes), beta.notes
    assert plan(GRPO_DEMO, "grpo.temperature=0.7").data_source.startswith("tokenized data from")

    plan(DPO_DEMO, "train.method=\"kto\"", "train.batch_size=2")
    with pytest.raises(RunError, match="KTO needs train.batch_size >= 2"):
        plan(DPO_DEMO, "train.method=\"kto\"", "train.batch_size=1")


def test_a_hub_dataset_id_is_not_cached():
    """A Hub id names data that can change under the same name (data.* pins no revision)."""
    assert token_cache.data_fingerprint(["someone/some-dataset"]) is None
    assert token_cache.data_fingerprint([DEMO_DATA]) == token_cache.data_fingerprint([str(DEMO_DATA)])


def test_the_cache_can_be_turned_off(monkeypatch, renders, needs_tiny_model):
    monkeypatch.setenv("WORKBENCH_CACHE_MAX_GB", "0")
    plan(DEMO)
    second = plan(DEMO)
    assert renders["sft"] == 4 and "not cached: the cache is off" in second.data_source
    assert cache_entries() == []


# ---- damage and concurrency ----------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "delete", "meta"])
def test_a_damaged_entry_is_rebuilt_not_a_crash(damage, renders, needs_tiny_model):
    first = plan(DEMO)
    (entry,) = cache_entries()
    if damage == "truncate":
        ids = entry / "train.ids0.npy"
        ids.write_bytes(ids.read_bytes()[: ids.stat().st_size // 2])
    elif damage == "delete":
        (entry / "train.json").unlink()
    else:
        (entry / "meta.json").write_text("{", encoding="utf-8")
    calls = renders["sft"]
    said: list[str] = []
    rebuilt = plan(DEMO, said=said)
    assert renders["sft"] > calls
    assert any("could not be read" in s and "tokenizing again" in s for s in said), said
    assert rebuilt.train_rows == first.train_rows and rebuilt.notes == first.notes
    assert plan(DEMO).data_source.startswith("tokenized data from the cache")  # whole again


def _rows(n: int) -> list[dict]:
    return [{"input_ids": list(range(i % 50, i % 50 + 300)), "assistant_masks": [0] * 100 + [1] * 200,
             "source": {"file": "x.jsonl", "row": i}} for i in range(n)]


WRITER = """
import sys, time
from workbench.data import token_cache
start, key, n = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = [{"input_ids": list(range(i % 50, i % 50 + 300)), "assistant_masks": [0] * 100 + [1] * 200,
         "source": {"file": "x.jsonl", "row": i}} for i in range(n)]
time.sleep(max(0.0, start - time.time()))
print(repr(token_cache.store(key, {"train": rows, "eval": rows[:10]}, {"writer": sys.argv[4]})))
"""


def test_two_processes_writing_one_key_leave_one_whole_entry(tmp_path):
    key = "ab" * 32
    start = time.time() + 3.0  # both importers are done by then; then they write together
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(start), key, "20000", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ))
             for name in ("one", "two")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == ["''", "''"], outs  # both: "it is in the cache"
    root = token_cache.cache_dir()
    assert [p.name for p in root.iterdir()] == [key]  # no temporary folder left behind
    entry, damage = token_cache.lookup(key)
    assert damage == "" and entry is not None and entry.meta["writer"] in ("one", "two")
    assert entry.splits["train"] == _rows(20000) and entry.splits["eval"] == _rows(10)


# ---- the store -----------------------------------------------------------------------------------

def test_values_round_trip_exactly_or_are_not_kept():
    rows = [{"ids": [1, 2, 70000], "mask": [True, False, True], "label": True, "small": [0, 255],
             "big": [2 ** 40], "empty": [], "prompt": [{"role": "user", "content": "é"}],
             "score": 0.5},
            {"ids": [], "mask": [], "label": False, "small": [], "big": [-1], "empty": [],
             "prompt": [], "score": None}]
    assert token_cache.store("k1", {"train": rows}, {}) == ""
    entry, _ = token_cache.lookup("k1")
    back = entry.splits["train"]
    assert back == rows and [list(r) for r in back] == [list(r) for r in rows]
    assert [type(v) for v in back[0]["mask"]] == [bool] * 3 and type(back[0]["ids"][0]) is int
    meta = json.loads((token_cache.cache_dir() / "k1" / "meta.json").read_text())
    assert meta["splits"]["train"]["ids"] == ["ids", "mask", "small", "big", "empty"]

    uneven = [{"a": [1], "b": "x"}, {"b": "y", "a": [2], "c": 1}]  # fields differ row to row
    assert token_cache.store("k2", {"train": uneven}, {}) == ""
    assert token_cache.lookup("k2")[0].splits["train"] == uneven
    mixed = [{"a": [1, True]}]  # a bool among ints would come back an int: kept as JSON
    assert token_cache.store("k3", {"train": mixed}, {}) == ""
    assert type(token_cache.lookup("k3")[0].splits["train"][0]["a"][1]) is bool
    assert "JSON" in token_cache.store("k4", {"train": [{"a": (1, 2)}]}, {})  # a tuple: not kept
    assert "JSON" in token_cache.store("k5", {"train": [{"a": float("nan")}]}, {})
    assert {p.name for p in token_cache.cache_dir().iterdir()} == {"k1", "k2", "k3"}


def test_least_recently_used_entries_go_over_the_limit(monkeypatch):
    rows = _rows(100)  # about 90 KB an entry
    assert token_cache.store("old", {"train": rows}, {}) == ""
    size = sum(f.stat().st_size for f in (token_cache.cache_dir() / "old").iterdir())
    monkeypatch.setenv("WORKBENCH_CACHE_MAX_GB", str(2.5 * size / 1e9))  # room for two
    assert token_cache.store("used", {"train": rows}, {}) == ""
    past = time.time() - 100
    os.utime(token_cache.cache_dir() / "old", (past, past))
    os.utime(token_cache.cache_dir() / "used", (past - 50, past - 50))
    assert token_cache.lookup("used")[0] is not None  # read now: the most recent
    assert token_cache.store("new", {"train": rows}, {}) == ""
    assert sorted(p.name for p in cache_entries()) == ["new", "used"]
    monkeypatch.setenv("WORKBENCH_CACHE_MAX_GB", str(0.5 * size / 1e9))
    assert "over the cache's limit" in token_cache.store("huge", {"train": rows}, {})


def test_token_ids_are_stored_as_arrays_not_json():
    """The reason the cache is fast (bench/token_cache.md has the timings, which are not this
    test's business on a busy machine): token ids and masks are packed numpy columns of the
    narrowest exact type, and the JSON holds only the rest."""
    rows = _rows(10000)
    token_cache.store("fast", {"train": rows}, {})
    folder = token_cache.cache_dir() / "fast"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["splits"]["train"]["ids"] == ["input_ids", "assistant_masks"]
    assert (folder / "train.ids0.npy").stat().st_size < 4 * 300 * 10000 + 1000  # int32
    assert (folder / "train.ids1.npy").stat().st_size < 300 * 10000 + 1000  # uint8
    assert (folder / "train.json").stat().st_size < 50 * 10000  # the sources only
    assert token_cache.lookup("fast")[0].splits["train"] == rows


# ---- the command line ----------------------------------------------------------------------------

FAST = ["--set", "train.max_steps=2", "--set", "train.eval_steps=0", "--set", "train.grad_accum=1",
        "--set", "eval.after_training=false"]


def test_a_second_run_says_it_used_the_cache(tmp_path, needs_tiny_model):
    """A foreground run tokenizes and keeps the rows; a detached second run is planned twice
    (the command line, then its runner) and both read the cache, as the console, the run's
    log and its events (what the app shows while a run starts) say."""
    first = workbench("run", "demo", "--runs-dir", "runs", *FAST, cwd=tmp_path, check=True)
    assert "cached for the next run" in first.stdout
    second = workbench("run", "demo", "--runs-dir", "runs", "--detach", *FAST, cwd=tmp_path,
                       check=True)
    assert "tokenized data from the cache (600 rows" in second.stdout, second.stdout
    folder = Path(next(l for l in second.stdout.splitlines()
                       if l.strip().startswith("folder:")).split(":", 1)[1].strip())
    deadline = time.time() + 300
    while json.loads((folder / "status.json").read_text()).get("state") not in (
            "finished", "failed", "stopped"):
        assert time.time() < deadline, "the detached run did not end"
        time.sleep(0.5)
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"
    log = (folder / "stdout.log").read_text(encoding="utf-8")
    assert log.count("tokenized data from the cache (600 rows") == 2, log  # planned, runner
    events = [json.loads(l) for l in (folder / "events.jsonl").read_text().splitlines()]
    said = [e for e in events if e["type"] == "status" and e.get("state") == "starting"
            and (e.get("message") or "").startswith("tokenized data from the cache")]
    assert len(said) == 1, events[:5]
    first_log = next(p for p in (tmp_path / "runs").iterdir() if p != folder) / "stdout.log"
    assert "cached for the next run" in first_log.read_text(encoding="utf-8")
