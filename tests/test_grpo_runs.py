"""GRPO on the bundled tiny model (CPU): the reward test flags rewards that cannot teach, the demo
run learns (its mean reward goes up), a stopped run resumes, and a reward that breaks mid-run
fails the run with the file, function and row."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, workbench

pytestmark = pytest.mark.slow

DEMO = REPO / "profiles" / "grpo-demo.toml"
QUICK = ["eval.after_training=false", "train.logging_steps=1", "train.save_steps=4",
         "train.max_steps=6"]


def _profile(overrides):
    from workbench.profile import load_profile

    return load_profile(DEMO, list(overrides))


def _plan(overrides, runs: Path):
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run

    plan = plan_run(_profile(list(overrides) + [f'train.runs_dir="{runs}"']))
    return plan, create_run(plan, runs)


def _events(run_path: Path, kind: str) -> list[dict]:
    lines = (run_path / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == kind]


@pytest.fixture(scope="module")
def engine():
    from workbench.evaluate.reward_trial import load_trial_engine

    return load_trial_engine(_profile([]), "cpu")


def test_rewards_test_on_the_demo_finds_signal(engine):
    from workbench.evaluate.reward_trial import format_trial, try_rewards

    result = try_rewards(_profile([]), engine=engine, prompts=4)
    assert len(result["groups"]) == 4 and all(len(g["completions"]) == 4 for g in result["groups"])
    assert result["first_steps"]["groups_with_signal"] >= 1
    # The untuned model never translates exactly: answer:exact is flagged as adding nothing.
    assert any(f["kind"] == "never_fires" and f["function"] == "answer:exact"
               for f in result["flags"])
    table = format_trial(result)
    assert "french_overlap" in table and "verdict:" in table


def test_rewards_test_flags_a_constant_reward_and_an_unsolvable_task(engine, tmp_path):
    from workbench.evaluate.reward_trial import try_rewards

    file = tmp_path / "const.py"
    file.write_text("def one(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    result = try_rewards(_profile([f'rewards.functions=["{file}:one"]', "rewards.weights=[]"]),
                         engine=engine, prompts=3)
    assert {f["kind"] for f in result["flags"]} >= {"constant", "zero_variance"}
    assert not result["verdict"]["ok"]
    assert result["first_steps"]["fraction_with_signal"] == 0

    # A task the model can never solve: nothing fires, no group has variance.
    result = try_rewards(_profile(['rewards.functions=["answer:exact"]', "rewards.weights=[]"]),
                         engine=engine, prompts=3)
    assert {f["kind"] for f in result["flags"]} >= {"never_fires", "zero_variance"}
    assert "out of the model's reach" in result["verdict"]["text"]


def test_rewards_test_command_prints_the_table_and_verdict(tmp_path):
    out = workbench("rewards", "test", str(DEMO), "--prompts", "2", "--samples", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "rewards test: 2 prompts x 3 completions" in out.stdout
    assert "verdict:" in out.stdout


def test_demo_grpo_run_raises_the_mean_reward(tmp_path):
    """The shipped demo, shortened to 60 of its 100 steps (bench/grpo_demo.md has the whole
    run: mean reward 0.10 over steps 1-20, 0.36 over steps 81-100; here, by step 60, about
    0.25, and the test asks for +0.05 over the first logs)."""
    from workbench.pipeline.run import run_pipeline

    plan, run = _plan(["eval.after_training=false", "train.max_steps=60"], tmp_path)
    assert all(len(r["prompt_ids"]) <= 64 for r in plan.train_rows)
    assert run_pipeline(run, plan) == "finished"
    logs = _events(run.path, "log")
    rewards = [e["signals"]["reward"] for e in logs]
    k = max(3, len(rewards) // 5)
    first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    assert last > first + 0.05, (first, last, rewards)
    assert {"reward_std", "frac_reward_zero_std", "completions/mean_length",
            "rewards/rewards.py:french_overlap/mean", "rewards/answer:exact/mean"} <= set(
        logs[-1]["signals"])
    samples = _events(run.path, "samples")
    assert samples and all({"prompt", "completion", "rewards", "total", "advantage"}
                           <= set(s) for s in samples[-1]["samples"])


def test_a_stopped_grpo_run_resumes_and_finishes(tmp_path):
    from workbench.pipeline.run import run_pipeline

    plan, run = _plan(QUICK, tmp_path)

    def stop_after_step_4(event: dict) -> None:
        if event.get("type") == "log" and event.get("step") == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # what `workbench stop` sends

    assert run_pipeline(run, plan, on_event=stop_after_step_4) == "stopped"
    stopped_at = run.read_status()["step"]
    assert 4 <= stopped_at < 6
    assert run_pipeline(run, plan, resume=True) == "finished"
    steps = [e["step"] for e in _events(run.path, "log")]
    assert steps[-1] == 6 and max(steps[:steps.index(stopped_at) + 1]) == stopped_at
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_reward_that_breaks_mid_run_fails_it_with_file_function_and_row(tmp_path):
    from workbench.pipeline.run import run_pipeline

    file = tmp_path / "fragile.py"
    file.write_text(textwrap.dedent("""
        def fragile(prompts, completions, answer, trainer_state=None, **kw):
            if trainer_state.global_step >= 2:
                raise KeyError("score")
            return [0.0] * len(completions)
        """))
    plan, run = _plan(QUICK + [f'rewards.functions=["{file}:fragile"]', "rewards.weights=[]"],
                      tmp_path)
    assert run_pipeline(run, plan) == "failed"
    status = run.read_status()
    assert f"{file}:4: fragile() raised KeyError" in status["message"]  # the raising line
    assert "translate_en_fr_prompts.jsonl:" in status["message"]
    assert "rewards test" in status["hint"]


def test_kl_against_the_start_a_fresh_adapter_is_switched_off_a_run_adapter_is_copied(tmp_path):
    from workbench.pipeline.run import run_pipeline
    from workbench.train.runner import add_adapters, load_model

    kl = ["grpo.beta=0.04", "train.max_steps=2"]
    plan, run = _plan(QUICK + kl, tmp_path / "a")
    assert run_pipeline(run, plan) == "finished"
    assert all("kl" in e["signals"] for e in _events(run.path, "log"))

    def adapters(plan) -> set[str]:
        trainer = plan.method.build_trainer(add_adapters(load_model(plan), plan), plan, run, [])
        return set(trainer.model.peft_config)

    assert adapters(plan) == {"default"}  # the reference is the base: the adapter off
    from_run, _ = _plan(QUICK + kl + [f'model.adapter="{run.path}"'], tmp_path / "b")
    assert from_run.start_adapter and adapters(from_run) == {"default", "ref"}


def test_grpo_on_two_cpu_processes_finishes_as_one_run(tmp_path):
    """torchrun, gloo: each rank samples its share of the groups; rank 0 records them."""
    proc = workbench("run", str(DEMO), "--procs", "2", "--runs-dir", "runs", "--set",
                     "train.max_steps=2", "--set", "train.logging_steps=1", "--set",
                     "eval.after_training=false", cwd=tmp_path, timeout=600, check=True)
    run = next((tmp_path / "runs").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 2, proc.stdout
    assert status["method"] == "grpo"
    logs = _events(run, "log")
    assert [e["step"] for e in logs] == [1, 2] and all("reward" in e["signals"] for e in logs)
    assert len(_events(run, "samples")) == 2
    assert sorted(p.name for p in (run / "ranks").glob("rank-*.json")) == ["rank-0.json",
                                                                         "rank-1.json"]
