"""Preference methods on the bundled tiny model (CPU): each run finishes through the same
runner as SFT, records its own signals, and a stopped DPO run resumes to exactly the result
of an uninterrupted one. Starting DPO from an SFT run's adapter keeps that adapter as the
reference."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import REPO, TINY_MODEL, workbench

pytestmark = pytest.mark.slow

PAIRS = REPO / "assets" / "demo" / "translate_en_fr_pairs.jsonl"
QUICK = ["train.eval_steps=0", "eval.after_training=false", "train.logging_steps=1",
         "train.save_steps=4", "train.max_steps=8"]


def _plan(overrides: list[str], runs: Path):
    from workbench.profile import load_profile
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run

    plan = plan_run(load_profile(REPO / "profiles" / "dpo-demo.toml",
                                 overrides + [f'train.runs_dir="{runs}"']))
    return plan, create_run(plan, runs)


def _events(run_path: Path, kind: str) -> list[dict]:
    lines = (run_path / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == kind]


def _adapter(run_path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_path / "adapter" / "adapter_model.safetensors"))


def test_dpo_run_finishes_and_the_reward_margin_grows(tmp_path):
    from workbench.pipeline.run import run_pipeline

    plan, run = _plan(QUICK + ["train.max_steps=16", "train.logging_steps=4"], tmp_path)
    assert all(set(r) >= {"prompt_ids", "chosen_ids", "rejected_ids"} for r in plan.train_rows)
    assert run_pipeline(run, plan) == "finished"
    logs = _events(run.path, "log")
    margins = [e["signals"]["rewards/margins"] for e in logs]
    assert margins[0] == 0.0  # a fresh adapter is the reference: no margin yet
    assert margins[-1] > 0.05, margins
    assert logs[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # -log sigmoid(0)
    assert logs[-1]["loss"] < 0.66
    assert set(logs[-1]["signals"]) >= {"rewards/chosen", "rewards/rejected",
                                          "rewards/accuracies"}


@pytest.mark.parametrize("method, signal_name", [("orpo", "log_odds_ratio"),
                                                  ("simpo", "rewards/margins")])
def test_orpo_and_simpo_runs_finish(tmp_path, method, signal_name):
    from workbench.pipeline.run import run_pipeline

    plan, run = _plan(QUICK + [f'train.method="{method}"', "train.max_steps=4"], tmp_path)
    assert run_pipeline(run, plan) == "finished"
    logs = _events(run.path, "log")
    assert len(logs) == 4 and all(signal_name in e["signals"] for e in logs)
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()


def test_kto_runs_on_unpaired_data(tmp_path):
    from workbench.pipeline.run import run_pipeline

    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()[:80]]
    unpaired = tmp_path / "unpaired.jsonl"
    with unpaired.open("w") as fh:
        for i, r in enumerate(rows):  # TRL's unpaired format: prompt, completion, label
            side, label = ("chosen", True) if i % 2 else ("rejected", False)
            fh.write(json.dumps({"prompt": r["prompt"], "completion": r[side], "label": label}) + "\n")
    plan, run = _plan(QUICK + ['train.method="kto"', f'data.train="{unpaired}"',
                               "train.max_steps=4"], tmp_path)
    assert {r["label"] for r in plan.train_rows} == {True, False}
    assert run_pipeline(run, plan) == "finished"
    assert all("kl" in e["signals"] for e in _events(run.path, "log"))


def test_pairs_only_methods_refuse_unpaired_data_with_a_hint(tmp_path):
    from workbench.train.plan import RunError

    unpaired = tmp_path / "unpaired.jsonl"
    unpaired.write_text(json.dumps({"prompt": "hi", "completion": "hello", "label": True}) + "\n"
                        + json.dumps({"prompt": "yo", "completion": "bye", "label": False}) + "\n")
    with pytest.raises(RunError) as err:
        _plan([f'data.train="{unpaired}"'], tmp_path)
    assert 'train.method = "kto"' in err.value.hint


def test_stopped_dpo_run_resumes_to_the_uninterrupted_result(tmp_path):
    from workbench.pipeline.run import run_pipeline

    plan, straight = _plan(QUICK, tmp_path / "a")
    assert run_pipeline(straight, plan) == "finished"

    plan, run = _plan(QUICK, tmp_path / "b")

    def stop_after_step_4(event: dict) -> None:
        if event.get("type") == "log" and event.get("step") == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # what `workbench stop` sends

    assert run_pipeline(run, plan, on_event=stop_after_step_4) == "stopped"
    stopped_at = run.read_status()["step"]
    assert 4 <= stopped_at < 8
    assert run_pipeline(run, plan, resume=True) == "finished"

    a, b = _adapter(straight.path), _adapter(run.path)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-5, name
    losses = {e["step"]: e["loss"] for e in _events(straight.path, "log")}
    resumed = {e["step"]: e["loss"] for e in _events(run.path, "log") if e["step"] > stopped_at}
    assert resumed and all(resumed[s] == pytest.approx(losses[s], abs=1e-5) for s in resumed)


def test_dpo_from_an_sft_run_uses_that_adapter_as_reference(tmp_path):
    """SFT then DPO: the DPO run starts from the SFT adapter, and its reference is the SFT
    model (the frozen "ref" copy), so its first step's margin is zero, not the SFT-vs-base gap."""
    sft_profile = tmp_path / "sft.toml"
    sft_profile.write_text(f"""
name = "sft-first"
[model]
name_or_path = "{TINY_MODEL}"
[data]
train = "{REPO / 'assets' / 'demo' / 'translate_en_fr.jsonl'}"
[train]
max_steps = 6
batch_size = 4
grad_accum = 1
learning_rate = 1e-3
eval_steps = 0
max_seq_len = 64
device = "cpu"
precision = "fp32"
[eval]
after_training = false
""")
    workbench("run", str(sft_profile), "--runs-dir", "runs", cwd=tmp_path, check=True)
    sft_run = next((tmp_path / "runs").iterdir())

    from workbench.pipeline.run import run_pipeline

    plan, run = _plan(QUICK + [f'model.adapter="{sft_run.name}"', "train.max_steps=2"],
                      tmp_path / "runs")
    assert plan.start_adapter == str(sft_run / "adapter")
    assert run_pipeline(run, plan) == "finished"
    first = _events(run.path, "log")[0]
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert first["signals"]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    saved = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 16
    assert not (run.path / "adapter" / "ref").exists()  # the reference copy is never saved


def test_dpo_on_two_cpu_processes_finishes_as_one_run(tmp_path):
    """torchrun, gloo: the same launcher and run folder as SFT's distributed runs."""
    proc = workbench("run", str(REPO / "profiles" / "dpo-demo.toml"), "--procs", "2",
                     "--runs-dir", "runs", "--set", "train.max_steps=2", "--set",
                     "train.logging_steps=1", "--set", "train.eval_steps=0", "--set",
                     "eval.after_training=false", cwd=tmp_path, timeout=600, check=True)
    run = next((tmp_path / "runs").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 2, proc.stdout
    assert status["method"] == "dpo"
    logs = _events(run, "log")
    assert [e["step"] for e in logs] == [1, 2]
    assert all("rewards/margins" in e["signals"] for e in logs)
    assert sorted(p.name for p in (run / "ranks").glob("rank-*.json")) == ["rank-0.json",
                                                                         "rank-1.json"]
