"""Profiles: the shipped presets load, defaults and overrides apply, and every malformed
profile gets a message that names the line, the key and what was expected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench import profile as P
from workbench.profile import (
    ProfileError,
    check_paths,
    diff_profiles,
    format_diff,
    format_profile,
    list_profiles,
    load_profile,
    profile_from_dict,
    save_profile,
)

SHIPPED = sorted(p.stem for p in (Path(P.__file__).resolve().parent.parent / "profiles").glob("*.toml"))

MINIMAL = '[model]\nname_or_path = "org/model"\n\n[data]\ntrain = "train.jsonl"\n'


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(path: Path, overrides=()) -> list[P.ProfileIssue]:
    with pytest.raises(ProfileError) as info:
        load_profile(path, overrides)
    return info.value.issues


# ---------------------------------------------------------------------------------------------
# Good profiles


def test_presets_are_shipped():
    assert {"demo", "llama3.1-8b-qlora", "mistral-7b-lora", "qwen2.5-7b-qlora",
            "qwen2.5-0.5b-lora", "smollm2-360m-lora"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_loads_by_name(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.model.name_or_path
    # Each preset starts with a comment saying what it is for.
    assert profile.source and Path(P.shipped_profiles_dir() / f"{name}.toml").read_text().startswith("#")


def test_demo_preset_values():
    p = load_profile("demo")
    assert p.train.device == "cpu" and p.train.precision == "fp32"
    assert p.train.gradient_checkpointing is False
    assert p.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    root = Path(P.__file__).resolve().parent.parent
    assert p.model.name_or_path == str(root / "assets" / "tiny-model")
    assert p.data.train == str(root / "assets" / "demo" / "translate_en_fr.jsonl")
    assert p.eval.prompts == str(root / "assets" / "demo" / "prompts.jsonl")


def test_minimal_profile_gets_defaults(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL, "mini.toml"))
    assert p.name == "mini"  # default name: the file stem
    assert p.description == ""
    assert p.model.revision == "main" and p.model.attn_implementation == "sdpa"
    assert p.data.validation_split == 0.1 and p.data.format == "auto"
    assert p.lora == P.LoraSection()
    assert p.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert p.train.learning_rate == 2e-4 and p.train.max_steps == -1
    assert p.train.gradient_checkpointing == "auto" and p.train.report_to == []
    assert p.train.runs_dir == "runs"  # kept relative: resolved when a run starts
    assert p.eval.metric == "auto" and p.eval.metrics == [] and p.export.formats == ["merged"]
    assert p.budget.gpu_hourly_usd == 0.0


def test_integers_accepted_for_floats(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL + "[train]\nepochs = 2\nlearning_rate = 1\n"))
    assert p.train.epochs == 2.0 and isinstance(p.train.epochs, float)


def test_relative_paths_resolve_against_profile_folder(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    text = ('[model]\nname_or_path = "models/mine"\nchat_template = "t.jinja"\n'
            '[data]\ntrain = "data/train.jsonl"\nvalidation = "../v.jsonl"\n'
            '[eval]\nprompts = "./prompts.jsonl"\n')
    p = load_profile(write(tmp_path, text))
    assert p.model.name_or_path == str(tmp_path / "models" / "mine")  # exists -> local
    assert p.model.chat_template == str(tmp_path / "t.jinja")
    assert p.data.train == str(tmp_path / "data" / "train.jsonl")
    assert p.data.validation == str(tmp_path.parent / "v.jsonl")
    assert p.eval.prompts == str(tmp_path / "prompts.jsonl")


def test_hub_id_is_left_alone(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL.replace("org/model", "meta-llama/Llama-3.1-8B")))
    assert p.model.name_or_path == "meta-llama/Llama-3.1-8B"


def test_dot_prefixed_model_path_is_resolved(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL.replace("org/model", "./tiny")))
    assert p.model.name_or_path == str(tmp_path / "tiny")


def test_overrides_parse_toml_values_and_plain_strings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = load_profile(write(tmp_path, MINIMAL, "sub.toml"), [
        "train.learning_rate=1e-4", "train.batch_size=8", "train.packing=true",
        'train.report_to=["wandb"]', "model.name_or_path=foo/bar", "lora.target_modules=all-linear",
        "description=hello world", "train.gradient_checkpointing=auto", 'data.format="alpaca"',
    ])
    assert p.train.learning_rate == 1e-4 and p.train.batch_size == 8 and p.train.packing is True
    assert p.train.report_to == ["wandb"]
    assert p.model.name_or_path == "foo/bar"
    assert p.lora.target_modules == "all-linear"
    assert p.description == "hello world"
    assert p.data.format == "alpaca"


def test_override_paths_are_relative_to_current_directory(tmp_path, monkeypatch):
    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    p = load_profile(write(profile_dir, MINIMAL), ["data.train=mine.jsonl"])
    assert p.data.train == str(work / "mine.jsonl")


def test_override_supplies_missing_required_key(tmp_path):
    p = load_profile(write(tmp_path, '[model]\nname_or_path = "a/b"\n'), ["data.train=/x.jsonl"])
    assert p.data.train == "/x.jsonl"


def test_with_overrides_revalidates():
    p = load_profile("demo")
    q = p.with_overrides(["train.epochs=1"])
    assert q.train.epochs == 1.0 and p.train.epochs == 8.0
    with pytest.raises(ProfileError, match=r"--set train.epochs: expected a number > 0"):
        p.with_overrides(["train.epochs=0"])


def test_lookup_user_dir_via_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path))
    write(tmp_path, MINIMAL, "mine.toml")
    p = load_profile("mine")
    assert p.name == "mine" and p.source.endswith("mine.toml")
    assert "mine" in list_profiles() and "demo" in list_profiles()


def test_lookup_user_dir_via_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_PROFILE_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    folder = tmp_path / "workbench" / "profiles"
    folder.mkdir(parents=True)
    write(folder, MINIMAL, "xdg.toml")
    assert P.user_profiles_dir() == folder
    assert load_profile("xdg").name == "xdg"


def test_shipped_profiles_win_a_name_clash(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path))
    write(tmp_path, MINIMAL, "demo.toml")
    assert load_profile("demo").train.device == "cpu"


def test_explicit_search_dirs(tmp_path):
    write(tmp_path, MINIMAL, "only.toml")
    assert load_profile("only", search_dirs=[tmp_path]).name == "only"


@pytest.mark.parametrize("name", SHIPPED)
def test_to_toml_round_trips(name, tmp_path):
    p = load_profile(name)
    import tomllib
    again = profile_from_dict(tomllib.loads(p.to_toml()))
    assert again == p
    save_profile(p, tmp_path / "run" / "profile.toml")
    assert load_profile(tmp_path / "run" / "profile.toml") == p
    assert not [f for f in (tmp_path / "run").iterdir() if f.name != "profile.toml"]  # no temp left


def test_resolved_table_is_kept_and_not_validated(tmp_path):
    p = load_profile("demo")
    d = p.to_dict()
    d["resolved"] = {"versions": {"torch": "2.9.0"}, "dataset_sha256": "ab12", "seed": 42}
    q = profile_from_dict(d, source=str(tmp_path / "profile.toml"))
    assert q.resolved["versions"]["torch"] == "2.9.0"
    save_profile(q, tmp_path / "profile.toml")
    assert load_profile(tmp_path / "profile.toml").resolved == q.resolved


def test_get_dotted_keys():
    p = load_profile("demo")
    assert p.get("train.learning_rate") == 1e-3
    assert p.get("name") == "demo"
    with pytest.raises(KeyError, match="did you mean 'train.learning_rate'"):
        p.get("train.lerning_rate")


def test_diff_profiles():
    a = load_profile("demo")
    b = a.with_overrides(["train.learning_rate=5e-4", "lora.r=8"])
    diff = diff_profiles(a, b)
    assert diff == [("lora.r", 16, 8), ("train.learning_rate", 1e-3, 5e-4)]
    text = format_diff(diff, "demo", "tuned")
    assert "lora.r" in text and "16 -> 8" in text
    assert diff_profiles(a, a) == [] and "same" in format_diff([])


def test_format_profile_shows_every_key():
    text = format_profile(load_profile("demo"))
    for dotted, *_ in P.iter_schema():
        # tables (data.columns, clean.placeholders) are written as [section.key] headers
        assert dotted.rpartition(".")[2] + " =" in text or f"[{dotted}]" in text


def test_check_paths(tmp_path):
    (tmp_path / "model").mkdir()
    text = ('[model]\nname_or_path = "./model"\n\n[data]\ntrain = "missing.jsonl"\n'
            '[eval]\nprompts = "p.jsonl"\n')
    p = load_profile(write(tmp_path, text))
    found = {i.key: i for i in check_paths(p)}
    assert found["model.name_or_path"].line == 2 and "config.json" in found["model.name_or_path"].message
    assert found["data.train"].line == 5 and "file not found" in found["data.train"].message
    assert found["eval.prompts"].line == 7
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "missing.jsonl").write_text("")
    (tmp_path / "p.jsonl").write_text("")
    assert check_paths(p) == []


def test_check_paths_accepts_hub_id(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    assert check_paths(load_profile(write(tmp_path, MINIMAL))) == []


def test_check_hub_ids_warns_about_what_a_run_would_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    text = '[model]\nname_or_path = "org/model"\n\n[data]\ntrain = "someone/data"\n'
    found = {i.key: i for i in P.check_hub_ids(load_profile(write(tmp_path, text)))}
    model = found["model.name_or_path"]
    assert model.line == 2 and "'org/model' is not in the Hugging Face cache" in model.message
    assert str(tmp_path / "empty-cache") in model.message
    assert found["data.train"].line == 5 and "read as a Hugging Face Hub dataset id" in found["data.train"].message
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "train.jsonl").write_text("")
    local = '[model]\nname_or_path = "./model"\n\n[data]\ntrain = "train.jsonl"\n'
    assert P.check_hub_ids(load_profile(write(tmp_path, local))) == []


# ---------------------------------------------------------------------------------------------
# Malformed profiles: (text, expected fragment, expected line)

BAD = {
    "key typo": (MINIMAL + "[train]\nlerning_rate = 1e-3\n",
                 "train.lerning_rate: unknown key; did you mean 'learning_rate'?", 7),
    "section typo": (MINIMAL + "[trian]\nepochs = 1\n", "unknown section [trian]; did you mean [train]?", 6),
    "string for int": (MINIMAL + '[train]\nbatch_size = "four"\n',
                       'train.batch_size: expected an integer >= 1, got "four" (a string)', 7),
    "bool for int": (MINIMAL + "[train]\nbatch_size = true\n", "got true (a boolean)", 7),
    "float for int": (MINIMAL + "[lora]\nr = 8.5\n", "lora.r: expected an integer >= 1, got 8.5 (a float)", 7),
    "bool for float": (MINIMAL + "[train]\nepochs = true\n", "expected a number > 0, got true (a boolean)", 7),
    "r zero": (MINIMAL + "[lora]\nr = 0\n", "lora.r: expected an integer >= 1, got 0", 7),
    "dropout range": (MINIMAL + "[lora]\ndropout = 1.5\n", "expected a number in [0, 1), got 1.5", 7),
    "validation_split range": (MINIMAL.replace('train.jsonl"', 'train.jsonl"\nvalidation_split = 0.9'),
                               "data.validation_split: expected a number in [0, 0.5], got 0.9", 6),
    "nan learning rate": (MINIMAL + "[train]\nlearning_rate = nan\n", "expected a number > 0, got nan", 7),
    "bad enum": (MINIMAL + '[lora]\nmethod = "qlorra"\n',
                 'lora.method: expected one of "lora", "qlora", "dora", got "qlorra"; did you mean "qlora"?', 7),
    "enum case": (MINIMAL + '[train]\nprecision = "BF16"\n', 'did you mean "bf16"?', 7),
    "system mode": (MINIMAL.replace('train.jsonl"', 'train.jsonl"\nsystem = "folded"'),
                    'data.system: expected one of "auto", "keep", "fold", "drop", got "folded"; '
                    'did you mean "fold"?', 6),
    "reasoning mode": (MINIMAL.replace('train.jsonl"', 'train.jsonl"\nreasoning = "remove"'),
                       'data.reasoning: expected one of "keep", "drop", got "remove"', 6),
    "missing name_or_path": ('# a comment\n[model]\nrevision = "main"\n[data]\ntrain = "t.jsonl"\n',
                             "model.name_or_path: required key is missing; add `name_or_path = \"...\"` under [model]", 2),
    "missing data section": ('\n[model]\nname_or_path = "a/b"\n',
                             "data.train: required key is missing; add a [data] section", 1),
    "empty name_or_path": ('[model]\nname_or_path = ""\n[data]\ntrain = "t"\n',
                           "expected a Hugging Face hub id or a local model folder", 2),
    "syntax error": (MINIMAL + "[train]\nbatch_size = 4 4\n", "p.toml:7:16: invalid TOML", 7),
    "unquoted string": (MINIMAL + "[train]\nscheduler = cosine\n", "text values need quotes", 7),
    "duplicate key": (MINIMAL + "[train]\nepochs = 1\nseed = 1\nepochs = 2\n",
                      "train.epochs: set twice (invalid TOML); keep one of them", 9),
    "duplicate section": (MINIMAL + "[train]\nepochs = 1\n[train]\nseed = 2\n", "invalid TOML: [train] is declared twice; a [section] appears twice", 8),
    "target_modules empty": (MINIMAL + "[lora]\ntarget_modules = []\n",
                             'lora.target_modules: expected a non-empty list of module names', 7),
    "target_modules element type": (MINIMAL + '[lora]\ntarget_modules = ["q_proj", 3]\n',
                                    "lora.target_modules[1]: expected a module name (a string), got 3 (an integer)", 7),
    "target_modules typo": (MINIMAL + '[lora]\ntarget_modules = "all_linear"\n', 'did you mean "all-linear"?', 7),
    "max_steps zero": (MINIMAL + "[train]\nmax_steps = 0\n",
                       "train.max_steps: expected -1 (train for `epochs`) or an integer >= 1, got 0", 7),
    "early stopping without eval": (MINIMAL + "[train]\neval_steps = 0\nearly_stopping_patience = 3\n",
                                    "early stopping needs evaluation", 8),
    "early stopping save/eval mismatch": (MINIMAL + "[train]\neval_steps = 30\nsave_steps = 100\n"
                                          + "early_stopping_patience = 2\n",
                                          "save_steps must be a multiple of eval_steps", 8),
    "report_to unknown": (MINIMAL + '[train]\nreport_to = ["tensorbord"]\n',
                          ('train.report_to[0]: expected one of "tensorboard", "wandb", "mlflow", '
                           'got "tensorbord"; did you mean "tensorboard"?'), 7),
    "report_to string": (MINIMAL + '[train]\nreport_to = "wandb"\n', 'got "wandb" (a string)', 7),
    "unknown top-level key": ("foo = 1\n" + MINIMAL, "foo: unknown top-level key", 1),
    "section key at top level": ("learning_rate = 1e-3\n" + MINIMAL, "it belongs under [train]", 1),
    "key in wrong section": (MINIMAL + "[lora]\nepochs = 2\n", "'epochs' belongs under [train]", 7),
    "section as string": ('model = "a/b"\n[data]\ntrain = "t"\n',
                          'expected a table [model], got "a/b" (a string); write it as a table', 1),
    "dotted keys repeat their prefix": ('lora.r = 8\nlora.alpha = 0\n' + MINIMAL,
                                        "lora.alpha: expected a number > 0, got 0", 2),
    "dotted key at top level": ('lora.r = 0\n' + MINIMAL, "lora.r: expected an integer >= 1, got 0", 1),
    "inline table": ('lora = { r = 0 }\n' + MINIMAL, "lora.r: expected an integer >= 1", 1),
    "gradient_checkpointing": (MINIMAL + '[train]\ngradient_checkpointing = "yes"\n',
                               'expected "auto", true or false, got "yes"', 7),
    "qlora on cpu": (MINIMAL + '[lora]\nmethod = "qlora"\n[train]\ndevice = "cpu"\n', "QLoRA needs a CUDA GPU", 7),
    "name with slash": ('name = "a/b"\n' + MINIMAL, "name: expected a non-empty name without '/'", 1),
    "empty file": ("", "model.name_or_path: required key is missing; add a [model] section", 1),
    "multiline string does not confuse lines": (
        'description = """\nseed = 1\n"""\n' + MINIMAL + "[train]\nseed = \"x\"\n",
        'train.seed: expected an integer, got "x" (a string)', 10),
}


@pytest.mark.parametrize("text, fragment, line", BAD.values(), ids=BAD.keys())
def test_malformed_profile(tmp_path, text, fragment, line):
    path = write(tmp_path, text)
    issues = issues_of(path)
    matching = [i for i in issues if fragment in str(i)]
    assert matching, f"no issue contains {fragment!r}; got:\n" + "\n".join(map(str, issues))
    assert matching[0].line == line, str(matching[0])
    # Every issue names the file and its line, like a compiler does.
    assert str(matching[0]).startswith(f"{path}:{line}:")


def test_issue_format_is_file_line_key_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    write(tmp_path / "profiles", MINIMAL + "[train]\nlerning_rate = 1e-3\n", "demo.toml")
    with pytest.raises(ProfileError) as info:
        load_profile("profiles/demo.toml")
    assert str(info.value) == ("profiles/demo.toml:7: train.lerning_rate: unknown key; "
                               "did you mean 'learning_rate'?")


def test_all_issues_collected_in_one_pass(tmp_path):
    text = ('[model]\nname_or_path = "a/b"\nattn_implementation = "flash"\n'
            '[lora]\nr = 0\ndropout = 2\n[train]\nbatch_size = "x"\nlerning_rate = 1\n')
    issues = issues_of(write(tmp_path, text))
    assert [(i.key, i.line) for i in issues] == [
        ("data.train", 1), ("model.attn_implementation", 3), ("lora.r", 5), ("lora.dropout", 6),
        ("train.batch_size", 8), ("train.lerning_rate", 9)]


def test_override_unknown_key(tmp_path):
    issues = issues_of(write(tmp_path, MINIMAL), ["train.lerning_rate=1e-3", "trian.epochs=1"])
    text = "\n".join(map(str, issues))
    assert "--set train.lerning_rate: unknown key; did you mean 'learning_rate'?" in text
    assert "--set trian.epochs: unknown section [trian]; did you mean [train]?" in text
    assert all(i.file == "--set" and i.line is None for i in issues)


def test_override_bad_value(tmp_path):
    issues = issues_of(write(tmp_path, MINIMAL), ["train.batch_size=four"])
    assert str(issues[0]) == '--set train.batch_size: expected an integer >= 1, got "four" (a string)'


def test_override_without_equals_or_section(tmp_path):
    issues = issues_of(write(tmp_path, MINIMAL), ["train.batch_size", "a.b.c=1"])
    assert "expected section.key=value" in str(issues[0])
    assert "expected section.key=value" in str(issues[1])


def test_file_and_override_issues_reported_together(tmp_path):
    issues = issues_of(write(tmp_path, MINIMAL + "[lora]\nr = 0\n"), ["train.seed=x"])
    assert [i.file for i in issues] == [str(tmp_path / "p.toml"), "--set"]


def test_profile_not_found_lists_and_suggests(tmp_path):
    write(tmp_path, MINIMAL, "llama-mine.toml")
    with pytest.raises(ProfileError) as info:
        load_profile("deom", search_dirs=[P.shipped_profiles_dir(), tmp_path, tmp_path / "nope"])
    message = str(info.value)
    assert "no profile named 'deom'" in message
    assert str(P.shipped_profiles_dir()) in message and "(missing)" in message
    assert "llama-mine" in message and "demo" in message
    assert "did you mean 'demo'?" in message


def test_section_given_as_string_reports_once(tmp_path):
    issues = issues_of(write(tmp_path, 'model = "a/b"\n[data]\ntrain = "t"\n'))
    assert [i.key for i in issues] == ["model"]


def test_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert load_profile("demo").train.device == "cpu"


def test_missing_file_path(tmp_path):
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "nope.toml")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.encode() + b'[data]\nsystem_prompt = "caf\xe9"\n')
    issues = issues_of(path)
    assert issues[0].line == 7 and "not UTF-8" in issues[0].message


def test_directory_given_as_path(tmp_path):
    write(tmp_path, MINIMAL, "inside.toml")
    with pytest.raises(ProfileError, match=r"is a folder, not a profile file.*inside\.toml"):
        load_profile(tmp_path)


def test_profile_from_dict_validates():
    with pytest.raises(ProfileError) as info:
        profile_from_dict({"model": {"name_or_path": "a/b"}, "data": {"train": "t", "frmat": "x"}},
                          source="run/profile.toml")
    assert str(info.value) == "run/profile.toml: data.frmat: unknown key; did you mean 'format'?"


def test_profile_module_imports_no_heavy_libraries():
    import subprocess
    import sys
    code = ("import sys, workbench.profile; "
            "bad = [m for m in ('torch', 'transformers', 'textual', 'tomli_w') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(P.__file__).resolve().parent.parent, env={**os.environ})


def test_hub_ids_for_data_and_model_stay_as_written():
    p = load_profile("demo", ["data.train=tatsu-lab/alpaca", "model.name_or_path=gpt2"])
    assert p.data.train == "tatsu-lab/alpaca" and p.model.name_or_path == "gpt2"
    assert P.check_paths(p) == []
    p = load_profile("demo", ["data.train=missing.jsonl"])
    assert Path(p.data.train).is_absolute()
    assert "file not found" in str(P.check_paths(p)[0])


@pytest.mark.parametrize("override, fragment", [
    ("clean.steps=['dedup_exakt']", 'did you mean "dedup_exact"'),
    ("data.split=[0.8, 0.3, 0.1]", "add up to 1"),
    ("data.columns={instruction = 3}", "data.columns.instruction: expected a string"),
    ("data.on_bad_rows='ignore'", '"error", "skip"'),
])
def test_data_and_clean_keys_are_validated(override, fragment):
    with pytest.raises(ProfileError) as err:
        load_profile("demo", [override])
    assert fragment in str(err.value)
