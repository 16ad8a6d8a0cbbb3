"""GRPO: the profile's [grpo] / [rewards], prompt data, reward functions that misbehave, the
diagnosis of sampled rewards, and (slow) the reward test and GRPO runs on the tiny model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO

DEMO = REPO / "profiles" / "grpo-demo.toml"
PROMPTS = REPO / "assets" / "demo" / "translate_en_fr_prompts.jsonl"


def _profile(overrides: list[str] = (), path: Path = DEMO):
    from workbench.profile import load_profile

    return load_profile(path, list(overrides))


def _errors(overrides: list[str]) -> str:
    from workbench.profile import ProfileError

    with pytest.raises(ProfileError) as err:
        _profile(overrides)
    return str(err.value)


# ---- the profile ------------------------------------------------------------------------


def test_demo_profile_resolves_the_reward_file_next_to_the_profile():
    p = _profile()
    assert p.train.method == "grpo"
    file, _, func = p.rewards.functions[0].rpartition(":")
    assert func == "french_overlap" and Path(file) == REPO / "assets" / "demo" / "rewards.py"
    assert p.rewards.weights == [1.0, 0.5]


@pytest.mark.parametrize("override, expected", [
    ('rewards.functions=[]', "name at least one"),
    ("rewards.weights=[1.0]", "1 weights for 2 reward functions"),
    ("grpo.num_generations=3", "make it a multiple of 3"),
    ('rewards.functions=["answer:exactly"]', "answer:exact"),  # the suggestion
    ('rewards.functions=["rewards.py:not a name"]', "FILE.py:FUNCTION"),
    ("grpo.num_generations=1", "grpo.num_generations"),
])
def test_profile_mistakes_are_named(override, expected):
    assert expected in _errors([override])


def test_a_missing_reward_file_is_reported_with_the_key():
    from workbench.profile import check_paths

    issues = check_paths(_profile(['rewards.functions=["nowhere.py:f"]', "rewards.weights=[]"]))
    assert any(i.key == "rewards.functions" and "nowhere.py" in i.message for i in issues)


# ---- prompt data ------------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_rows_in_every_shape_keep_their_reference_columns(tmp_path):
    from workbench.data.prompts import load_prompt_records

    cases = {
        "prompt": ({"prompt": "2+2?", "answer": 4}, "2+2?", {"answer": 4}),
        "question": ({"question": "Q", "answer": "#### 3"}, "Q", {"answer": "#### 3"}),
        "alpaca": ({"instruction": "Add", "input": "1 2", "output": "3"}, "Add\n\n1 2",
                   {"answer": "3"}),
        "messages": ({"messages": [{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "hello"}], "tests": [1]},
                     "hi", {"answer": "hello", "tests": [1]}),
    }
    for name, (row, prompt, columns) in cases.items():
        [record] = load_prompt_records(_write(tmp_path / f"{name}.jsonl", [row]))
        assert record["prompt"][-1] == {"role": "user", "content": prompt}, name
        assert record["columns"] == columns, name


def test_a_prompt_that_ends_with_the_answer_is_a_bad_row_named_by_line(tmp_path):
    from workbench.data import DataError
    from workbench.data.prompts import load_prompt_records

    path = _write(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataError, match=r"p\.jsonl:2.*user \(or tool\) turn"):
        load_prompt_records(path)


def test_the_split_keeps_every_copy_of_a_prompt_on_one_side_and_reports_repeats(tmp_path):
    from workbench.data.prompts import load_prompt_training_data, prompt_key

    rows = [{"prompt": f"q{i % 30}", "answer": str(i)} for i in range(60)]
    path = _write(tmp_path / "p.jsonl", rows)
    data = load_prompt_training_data(_profile([f'data.train="{path}"',
                                               "data.validation_split=0.2"]))
    assert len(data.dropped) == 30 and all("repeats" in why for *_, why in data.dropped)
    assert len(data.train) + len(data.validation) == 30 and len(data.validation) == 6
    assert not {prompt_key(r) for r in data.train} & {prompt_key(r) for r in data.validation}


# ---- reward functions that misbehave ------------------------------------------------------


def _rewards(tmp_path: Path, body: str, func: str = "reward"):
    from workbench.rewards.functions import load_rewards

    file = tmp_path / "my_rewards.py"
    file.write_text(textwrap.dedent(body))
    section = SimpleNamespace(functions=[f"{file}:{func}"], weights=[])
    return load_rewards(section), file


def _score(rewards, completions=("good", "bad answer")):
    return rewards.score(["p"] * len(completions), list(completions),
                         {"answer": ["x"] * len(completions)},
                         [f"data.jsonl:{i + 7}" for i in range(len(completions))])


def test_a_reward_that_raises_names_file_function_row_and_completion(tmp_path):
    from workbench.rewards.functions import RewardError

    rewards, file = _rewards(tmp_path, """
        def reward(prompts, completions, answer, **kw):
            return [1.0 if c == "good" else len(c) / 0 for c in completions]
        """)
    with pytest.raises(RewardError) as err:
        _score(rewards)
    message = str(err.value)
    assert f"{file}:3: reward()" in message  # the line that raised and "ZeroDivisionError" in message
    assert "data.jsonl:8" in message and "'bad answer'" in message
    assert "rewards test" in err.value.hint


@pytest.mark.parametrize("returns, expected", [
    ("[1.0]", "returned 1 values for 2 completions"),
    ("[1.0, None]", "returned None (NoneType) for data.jsonl:8"),
    ("[1.0, 'high']", "returned 'high' (str)"),
    ("[1.0, float('nan')]", "returned nan"),
    ("1.0", "returned float, expected a list of 2 numbers"),
])
def test_a_reward_returning_the_wrong_thing_is_refused(tmp_path, returns, expected):
    from workbench.rewards.functions import RewardError

    rewards, _ = _rewards(tmp_path, f"""
        def reward(prompts, completions, **kw):
            return {returns}
        """)
    with pytest.raises(RewardError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        _score(rewards)


def test_numpy_and_integer_rewards_are_numbers(tmp_path):
    rewards, _ = _rewards(tmp_path, """
        import numpy as np

        def reward(prompts, completions, **kw):
            return [np.float32(0.5), 1]
        """)
    assert _score(rewards) == [[0.5], [1.0]]


def test_a_reward_file_that_does_not_import_or_lacks_the_function_says_where(tmp_path):
    from workbench.rewards.functions import RewardError

    with pytest.raises(RewardError, match=r"my_rewards\.py:3: importing the reward file raised "
                                          "NameError"):
        _rewards(tmp_path, """
            x = 1
            y = undefined_name
            """)
    with pytest.raises(RewardError, match="no function 'reward' \\(it defines other\\)"):
        _rewards(tmp_path, """
            def other(prompts, completions, **kw):
                return [0.0] * len(completions)
            """)


# ---- the diagnosis ----------------------------------------------------------------------


def _group(totals, names=1, truncated=None):
    from workbench.rewards.diagnose import Group

    return Group("p", ["c"] * len(totals), [[t] * names for t in totals], list(totals),
                 truncated or [False] * len(totals))


def test_a_constant_reward_and_flat_groups_are_flagged_with_a_verdict_that_says_what_to_do():
    from workbench.rewards.diagnose import diagnose

    result = diagnose([_group([1.0, 1.0]), _group([1.0, 1.0])], ["always_one"], 32)
    kinds = {f["kind"] for f in result["flags"]}
    assert kinds == {"constant", "zero_variance"}
    assert result["first_steps"]["fraction_with_signal"] == 0
    assert not result["verdict"]["ok"]
    assert "no group has any reward variance" in result["verdict"]["text"]
    assert "Raise grpo.temperature" in result["verdict"]["text"]


def test_a_reward_that_never_fires_and_cut_completions_are_flagged():
    from workbench.rewards.diagnose import diagnose

    result = diagnose([_group([0.0, 0.0], truncated=[True, False])], ["exact"], 16)
    messages = " ".join(f["message"] for f in result["flags"])
    assert "exact never fires" in messages and "1 of 2 completions were cut off at" in messages
    assert "out of the model's reach" in result["verdict"]["text"]


def test_groups_with_variance_are_ready_to_train():
    from workbench.rewards.diagnose import diagnose

    result = diagnose([_group([0.0, 1.0]), _group([0.2, 0.4]), _group([0.5, 0.5])], ["f1"], 32)
    assert result["first_steps"]["groups_with_signal"] == 2
    assert result["first_steps"]["mean_reward"] == pytest.approx(0.4333, abs=1e-4)
    assert result["verdict"]["ok"] and "ready to train" in result["verdict"]["text"]
    assert [f["kind"] for f in result["flags"]] == ["zero_variance"]


def test_data_inspect_reports_prompt_lengths_against_the_limit_and_reference_columns(tmp_path):
    from conftest import TINY_MODEL, workbench

    rows = [{"prompt": "Translate to French: the cat", "answer": "le chat"},
            {"prompt": "Translate to French: " + "the big black dog sleeps " * 6, "answer": "x"},
            {"prompt": "Translate to French: the cat", "answer": "le chat"}]
    path = _write(tmp_path / "p.jsonl", rows)
    out = workbench("data", "inspect", str(path), "--format", "prompts", "--model",
                    str(TINY_MODEL), "--max-prompt-len", "30", cwd=tmp_path, check=True).stdout
    assert "2 prompts from 3 rows" in out and "p.jsonl:3: repeats an earlier prompt" in out
    assert "answer" in out and "2 of 2 rows" in out
    assert "1 prompts longer than max_prompt_len = 30 (dropped by training: " in out
    assert f"{path}:2" in out


def test_runs_compare_ranks_a_grpo_run_by_its_held_out_reward(tmp_path):
    from workbench.sweep.compare import REWARD_QUALITY, RunRow, _read_evaluation

    total = {"base": 0.0637, "fine-tuned": 0.4217, "delta": 0.358, "ci95": [0.30, 0.41]}
    (tmp_path / "report.json").write_text(json.dumps({
        "verdict": "GRPO raised the held-out reward from 0.064 to 0.42",
        "evaluation": {"rewards": {"greedy": {"total": total, "rewards": {}}}}}))
    row = RunRow("r", str(tmp_path), "finished")
    _read_evaluation(SimpleNamespace(path=tmp_path), row)
    assert (row.metric_name, row.metric) == (REWARD_QUALITY, 0.4217)
    assert row.three_way == {"base": 0.0637, "fine-tuned": 0.4217}
    assert row.verdict.startswith("GRPO raised")


def test_an_edited_reward_file_is_imported_again(tmp_path):
    import os

    rewards, file = _rewards(tmp_path, """
        def reward(prompts, completions, **kw):
            return [0.0] * len(completions)
        """)
    assert _score(rewards) == [[0.0], [0.0]]
    file.write_text("def reward(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    from workbench.rewards.functions import load_rewards

    again = load_rewards(SimpleNamespace(functions=[f"{file}:reward"], weights=[]))
    assert _score(again) == [[1.0], [1.0]]
